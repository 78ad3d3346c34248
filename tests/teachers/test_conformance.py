"""Each adapter against the emulator: request shape, continuation modes, usage parsing,
prompt-cache accounting."""

from __future__ import annotations

import pytest

from omniopd.teachers.emulator import scripted
from omniopd.teachers.prompting import INSTRUCTION, ChatTemplate
from tests.teachers.conftest import call, make_client, run

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def bodies(emu):
    return [e.body for e in emu.emulator.log]


# ------------------------------------------------------------- openai_compat


def test_openai_compat_raw_mode_sends_rendered_template_plus_prefix_without_end_of_turn(emulator, tmp_path):
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    emu = emulator("openai_compat", generator=scripted(["4."]))
    client = make_client("openai_compat", emu.url, mode="raw", chat_template=ChatTemplate(str(template)))
    result = run(call(client, prompt="What is 2+2?", prefix="The answer is", n=3, seed=7))
    [body] = bodies(emu)
    assert emu.emulator.log[0].path == "/v1/completions"
    assert body["prompt"] == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\nThe answer is"
    assert body["n"] == 3 and body["max_tokens"] == 8 and body["seed"] == 7
    assert result.texts == ["4."] * 3 and result.mode == "raw"


def test_openai_compat_prefill_uses_continue_final_message(emulator):
    emu = emulator("openai_compat", generator=scripted([" 4."]))
    result = run(call(make_client("openai_compat", emu.url, mode="prefill"), prefix="The answer is", n=2))
    [body] = bodies(emu)
    assert emu.emulator.log[0].path == "/v1/chat/completions"
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": "The answer is"}
    assert result.texts == [" 4.", " 4."]


def test_openai_compat_works_without_an_api_key(emulator):
    from omniopd.teachers.providers import OpenAICompatClient

    emu = emulator("openai_compat", generator=scripted(["x"]))
    client = OpenAICompatClient(model="m", base_url=emu.url, api_key=None, mode="prefill")
    assert run(call(client, n=1)).texts == ["x"]


# -------------------------------------------------------------------- openai


def test_openai_instruction_form_with_n_and_reasoning_allowance(emulator):
    emu = emulator("openai", generator=scripted(["four"]), faults={"reasoning_tokens": 30})
    client = make_client("openai", emu.url, reasoning_tokens=40, temperature=None)
    result = run(call(client, prompt="What is 2+2?", prefix="The answer is", n=4, max_new_tokens=8))
    [body] = bodies(emu)
    assert body["n"] == 4
    assert body["max_completion_tokens"] == 8 + 40
    assert "temperature" not in body  # configured None: never sent
    [message] = body["messages"]
    assert message["role"] == "user"
    assert message["content"].startswith(INSTRUCTION)
    # problem before the partial answer, partial answer last before the closing line
    assert message["content"].index("What is 2+2?") < message["content"].index("The answer is")
    assert result.texts == ["four"] * 4
    assert result.usage.reasoning == 4 * 30 and result.usage.output == 4


def test_openai_reasoning_model_without_allowance_returns_empty_and_fails_after_retries(emulator):
    emu = emulator("openai", generator=scripted(["four"]), faults={"reasoning_tokens": 30})
    client = make_client("openai", emu.url, reasoning_tokens=0)
    from omniopd.teachers.types import RetriesExhausted

    with pytest.raises(RetriesExhausted) as err:
        run(call(client, n=2, max_new_tokens=8))
    assert all(a.error_class == "empty" and a.status == "ok" for a in err.value.partial.attempts)
    assert err.value.partial.texts == []


def test_openai_usage_is_normalised_to_disjoint_counts(emulator):
    emu = emulator("openai", generator=scripted(["a b c"]), cache={"min_tokens": 16, "granularity": 8})
    client = make_client("openai", emu.url)
    long_prompt = "word " * 40
    first = run(call(client, prompt=long_prompt, n=1))
    second = run(call(make_client("openai", emu.url), prompt=long_prompt, n=1))
    entry = emu.emulator.log[1].usage
    assert second.usage.cached_input == entry["cached_input"] > 0
    assert second.usage.input == entry["input"]
    assert second.usage.input + second.usage.cached_input == first.usage.input  # same prompt
    assert second.usage.output == 3


# ----------------------------------------------------------------- anthropic


def test_anthropic_prefill_never_ends_in_whitespace_and_rejoins_it(emulator):
    emu = emulator("anthropic", generator=scripted([" 4, because"]))
    result = run(call(make_client("anthropic", emu.url, cache=False), prefix="The answer is \n", n=2))
    assert len(bodies(emu)) == 2  # no `n`: one request per continuation
    for body in bodies(emu):
        assert body["messages"][-1]["role"] == "assistant"
        assert body["messages"][-1]["content"][-1]["text"] == "The answer is"
        assert "n" not in body and body["max_tokens"] == 8
    # the continuation's leading " " duplicated the prefix's trailing " ": removed once
    assert result.texts == ["4, because"] * 2


def test_anthropic_first_request_goes_alone_then_the_rest_read_the_cache(emulator):
    emu = emulator("anthropic", generator=scripted(["x y"]), latency={"ttft_s": 0.2})
    prefix = "step " * 1100  # > 1024 emulator tokens
    result = run(call(make_client("anthropic", emu.url, model="claude-sonnet-4-5"), prefix=prefix, n=5))
    log = emu.emulator.log
    assert log[0].body.get("stream") is True
    assert all(later.t_start >= log[0].t_start + 0.2 for later in log[1:])  # waited for the start
    writes = [a.usage.cache_write for a in result.attempts]
    reads = [a.usage.cached_input for a in result.attempts]
    assert sum(1 for w in writes if w) == 1 and writes[0] > 1000
    assert reads[0] == 0 and all(r == writes[0] for r in reads[1:])
    billed = sorted(tuple(e.usage.values()) for e in log)
    reported = sorted((a.usage.input, a.usage.cached_input, a.usage.cache_write, a.usage.output, a.usage.reasoning) for a in result.attempts)
    assert billed == reported


def test_anthropic_next_chunk_reads_the_previous_chunk_prefix(emulator):
    emu = emulator("anthropic", generator=scripted(["x"]))
    client_args = dict(model="claude-haiku-4-5")
    part1 = "alpha " * 4200  # above haiku-4-5's 4,096-token minimum
    first = run(call(make_client("anthropic", emu.url, **client_args), prompt="P", prefix=part1, n=1))
    second = run(call(make_client("anthropic", emu.url, **client_args), prompt="P", prefix=part1 + "beta " * 300, n=1))
    assert first.attempts[0].usage.cache_write > 4096
    blocks = emu.emulator.log[1].body["messages"][-1]["content"]
    assert len(blocks) == 2 and all("cache_control" in b for b in blocks)
    usage = second.attempts[0].usage
    assert usage.cached_input == first.attempts[0].usage.cache_write  # the whole previous prefix is read
    assert usage.cache_write == 300 and usage.input == 0  # only the new text (300 tokens) is written


def test_anthropic_short_prefix_below_minimum_is_not_cached(emulator):
    emu = emulator("anthropic", generator=scripted(["x"]))
    result = run(call(make_client("anthropic", emu.url, model="claude-haiku-4-5"), prefix="short " * 2000, n=3))
    assert all(a.usage.cache_write == 0 and a.usage.cached_input == 0 for a in result.attempts)


def test_anthropic_cache_off_sends_no_breakpoints_and_sends_all_at_once(emulator):
    emu = emulator("anthropic", generator=scripted(["x"]))
    run(call(make_client("anthropic", emu.url, cache=False), prefix="a b", n=3))
    for body in bodies(emu):
        assert "stream" not in body
        assert all("cache_control" not in b for m in body["messages"] for b in m["content"])


def test_anthropic_empty_prefix_sends_no_assistant_turn(emulator):
    emu = emulator("anthropic", generator=scripted(["Start."]))
    result = run(call(make_client("anthropic", emu.url), prefix="", n=1))
    assert [m["role"] for m in bodies(emu)[0]["messages"]] == ["user"]
    assert result.texts == ["Start."]


# -------------------------------------------------------------------- gemini


def test_gemini_splits_candidates_above_eight_and_disables_thinking(emulator):
    emu = emulator("gemini", generator=scripted(["t"]))
    result = run(call(make_client("gemini", emu.url), n=10, seed=5))
    counts = sorted(b["generationConfig"]["candidateCount"] for b in bodies(emu))
    assert counts == [2, 8]
    for body in bodies(emu):
        assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
        assert body["contents"][-1] == {"role": "model", "parts": [{"text": "The answer is"}]}
    assert len({b["generationConfig"]["seed"] for b in bodies(emu)}) == 2  # split requests differ
    assert len(result.texts) == 10


def test_gemini_usage_counts_thoughts_as_reasoning_and_cached_separately(emulator):
    emu = emulator("gemini", generator=scripted(["a b"]), faults={"reasoning_tokens": 5}, cache={"min_tokens": 16, "granularity": 4})
    client = make_client("gemini", emu.url, reasoning_tokens=10)
    run(call(client, prompt="word " * 50, n=1))
    result = run(call(make_client("gemini", emu.url, reasoning_tokens=10), prompt="word " * 50, n=1))
    usage = result.usage
    assert usage.reasoning == 5 and usage.output == 2
    assert usage.cached_input > 0 and usage.cache_write == 0
    assert usage.input + usage.cached_input == emu.emulator.log[1].usage["input"] + emu.emulator.log[1].usage["cached_input"]


def test_gemini_instruction_mode_has_no_model_turn(emulator):
    emu = emulator("gemini", generator=scripted(["t"]))
    run(call(make_client("gemini", emu.url, mode="instruction"), n=1))
    [body] = bodies(emu)
    assert [c["role"] for c in body["contents"]] == ["user"]


# ------------------------------------------------------------ all providers


@pytest.mark.parametrize("kind", ["openai_compat", "openai", "anthropic", "gemini"])
def test_context_window_is_discovered_from_the_models_endpoint(emulator, kind):
    emu = emulator(kind, context_window=32768, models=["m"])
    client = make_client(kind, emu.url, mode="prefill" if kind == "openai_compat" else None)

    async def probe():
        async with client:
            return await client.context_window()

    assert run(probe()) == 32768


@pytest.mark.parametrize("kind", ["openai_compat", "openai", "anthropic", "gemini"])
def test_usage_per_attempt_matches_what_the_emulator_billed(emulator, kind):
    emu = emulator(kind)  # lorem: exactly max_new_tokens tokens per continuation
    mode = "prefill" if kind == "openai_compat" else None
    result = run(call(make_client(kind, emu.url, mode=mode), n=10, max_new_tokens=6))
    billed = [e.usage for e in emu.emulator.log]
    assert len(result.attempts) == len(billed)
    total = result.usage
    assert total.output == sum(b["output"] for b in billed) == 10 * 6
    assert total.total_input == sum(b["input"] + b["cached_input"] + b["cache_write"] for b in billed)
    assert all(a.status == "ok" and a.request_id for a in result.attempts)
