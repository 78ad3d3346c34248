"""Generation for evaluation: endpoint requests (seeds, retries, errors that never show the
API key), URL forms, and local prompts rendered exactly as training renders them."""

from __future__ import annotations

import pytest

from eval.generate import EndpointError, EndpointGenerator, Request, SamplingSettings, endpoint_urls
from omniopd.teachers.emulator import EmulatorConfig, EmulatorThread, scripted

SAMPLING = SamplingSettings(max_new_tokens=32, temperature=0.7, top_p=0.9)


def requests(n: int) -> list[Request]:
    return [Request("math500", f"q{i}", i % 2, f"Question {i}", seed=1000 + i) for i in range(n)]


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_each_sample_is_one_request_with_its_own_seed_and_the_eval_sampling(api: str) -> None:
    with EmulatorThread(EmulatorConfig(provider="openai_compat"), scripted(lambda p, n: ["Answer: 1"] * n)) as emu:
        gen = EndpointGenerator(emu.url, "m", SAMPLING, api=api, concurrency=3)
        out = gen.generate(requests(5))
        bodies = [e.body for e in emu.emulator.log]
    assert [c.text for c in out] == ["Answer: 1"] * 5
    assert all(c.finish_reason == "stop" and c.completion_tokens and c.refused is None for c in out)
    assert sorted(b["seed"] for b in bodies) == [1000, 1001, 1002, 1003, 1004]
    for b in bodies:
        assert (b["n"], b["max_tokens"], b["temperature"], b["top_p"], b["model"]) == (1, 32, 0.7, 0.9, "m")
        if api == "chat":
            assert b["messages"][0]["role"] == "user" and b["messages"][0]["content"].startswith("Question ")
        else:
            assert b["prompt"].startswith("Question ")


def test_rate_limits_server_errors_and_unreadable_bodies_are_retried() -> None:
    config = EmulatorConfig(provider="openai_compat", faults={"script": ["429_no_retry_after", "500", "malformed", "timeout"], "hang_s": 5})
    with EmulatorThread(config, scripted(lambda p, n: ["ok"] * n)) as emu:
        gen = EndpointGenerator(emu.url, "m", SAMPLING, concurrency=1, retries=5, backoff_s=0.01, timeout_s=1.0)
        out = gen.generate(requests(2))
        statuses = [e.status for e in emu.emulator.log]
    assert [c.text for c in out] == ["ok", "ok"]
    assert statuses.count(200) >= 3 and 429 in statuses and 500 in statuses  # the malformed and hung ones were 200s
    assert gen.requests_sent == 6


def test_exhausted_retries_fail_with_a_message_that_says_how_to_resume() -> None:
    config = EmulatorConfig(provider="openai_compat", faults={"error_rate": 1.0})
    with EmulatorThread(config, scripted(["x"])) as emu:
        gen = EndpointGenerator(emu.url, "m", SAMPLING, retries=2, backoff_s=0.01)
        with pytest.raises(EndpointError, match=r"failed after 3 attempts \(last: HTTP 500\); rerun the same command to resume"):
            gen.generate(requests(1))


def test_a_rejected_key_fails_at_once_and_the_key_never_appears_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-do-not-print-4242"
    monkeypatch.setenv("EVAL_TEST_KEY", secret)
    with EmulatorThread(EmulatorConfig(provider="openai", api_key="the-right-key"), scripted(["x"])) as emu:
        gen = EndpointGenerator(emu.url, "m", SAMPLING, api_key_env="EVAL_TEST_KEY", retries=3, backoff_s=0.01)
        with pytest.raises(EndpointError) as info:
            gen.generate(requests(1))
        sent = [e.status for e in emu.emulator.log]
    assert sent == [401]  # a 4xx is not retried
    assert "HTTP 401" in str(info.value) and secret not in str(info.value) and "***" in str(info.value)


def test_the_key_is_sent_as_a_bearer_token_and_a_missing_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVAL_TEST_KEY", "the-right-key")
    with EmulatorThread(EmulatorConfig(provider="openai", api_key="the-right-key"), scripted(["fine"])) as emu:
        assert EndpointGenerator(emu.url, "m", SAMPLING, api_key_env="EVAL_TEST_KEY").generate(requests(1))[0].text == "fine"
    monkeypatch.delenv("EVAL_TEST_KEY")
    with pytest.raises(ValueError, match="EVAL_TEST_KEY"):
        EndpointGenerator("http://127.0.0.1:9", "m", SAMPLING, api_key_env="EVAL_TEST_KEY")


def test_the_served_model_is_asked_for_when_no_name_is_given() -> None:
    with EmulatorThread(EmulatorConfig(provider="openai_compat", models=["served/model"]), scripted(["x"])) as emu:
        assert EndpointGenerator(emu.url, None, SAMPLING).model == "served/model"
    with pytest.raises(EndpointError, match="--endpoint-model"):
        EndpointGenerator("http://127.0.0.1:9", None, SAMPLING)


@pytest.mark.parametrize(("url", "api", "expected"), [
    ("http://h:8000", "chat", ("http://h:8000/v1", "http://h:8000/v1/chat/completions")),
    ("http://h:8000/v1/", "completions", ("http://h:8000/v1", "http://h:8000/v1/completions")),
    ("http://h/v1/chat/completions", "chat", ("http://h/v1", "http://h/v1/chat/completions")),
    ("http://h/v1/completions", "completions", ("http://h/v1", "http://h/v1/completions")),
])  # fmt: skip
def test_endpoint_urls_accept_a_server_its_api_base_or_the_full_url(url: str, api: str, expected: tuple[str, str]) -> None:
    assert endpoint_urls(url, api) == expected


def test_a_full_url_of_the_other_api_is_refused() -> None:
    with pytest.raises(ValueError, match="is a completions URL"):
        endpoint_urls("http://h/v1/completions", "chat")


# ------------------------------------------------------------------ prompts: training == evaluation


def test_the_table7_template_has_one_definition_and_is_the_papers_text() -> None:
    import eval.math
    import omniopd.rollout
    from omniopd.templates import TABLE7_TEMPLATE

    assert eval.math.TABLE7_TEMPLATE is TABLE7_TEMPLATE is omniopd.rollout.TABLE7_TEMPLATE
    assert TABLE7_TEMPLATE == (
        "Solve the following math problem step by step. The last line of your response should be of the form "
        "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{Question}"
    )


def test_evaluation_renders_a_math_problem_exactly_as_training_does(tiny_model_dir: str) -> None:
    """The local generator sends the benchmark prompt as the user turn ('none'); for math
    that is Table 7, so the tokens equal the training prompt's ('table7')."""
    from eval.benchmarks import get_benchmark
    from eval.datasets import MathItem
    from omniopd.models.loading import load_tokenizer
    from omniopd.rollout import render_prompts

    tokenizer = load_tokenizer(tiny_model_dir)
    question = "Let $f(x) = {x}^2$. Find $f(3)$ and put it in \\boxed{}."
    item = MathItem("q", question, "9")
    (train,), _ = render_prompts(tokenizer, [("q", question)], "table7", 4096)
    (evaluation,), _ = render_prompts(tokenizer, [("q", get_benchmark("math500").prompt(item))], "none", 4096)
    assert evaluation.text == train.text and evaluation.token_ids == train.token_ids
    assert train.text.startswith("<|im_start|>user\nSolve the following math problem") and question in train.text


def test_local_prompts_longer_than_the_limit_are_refused_not_cut(tiny_model_dir: str) -> None:
    from eval.generate import LocalGenerator
    from omniopd.config import OmniConfig

    config = OmniConfig.model_validate({"student": {"path": tiny_model_dir, "device": "cpu"}})
    gen = LocalGenerator(config, tiny_model_dir, SamplingSettings(4), max_prompt_tokens=40)
    try:
        out = gen.generate([Request("demo", "short", 0, "2 + 3 =", 1), Request("demo", "long", 0, "2 + 3 = " * 60, 2)])
    finally:
        gen.close()
    assert out[0].refused is None and 1 <= out[0].completion_tokens <= 4
    assert out[1].text == "" and out[1].refused.startswith("prompt_too_long: ") and out[1].refused.endswith("> 40")
