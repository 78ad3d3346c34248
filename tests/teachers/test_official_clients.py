"""The official `openai` and `anthropic` Python clients' basic calls work against the
emulator (so the emulator's wire format is close enough to the real one)."""

from __future__ import annotations

import anthropic
import openai
import pytest

from omniopd.teachers.emulator import scripted


def test_openai_chat_completions_with_n_and_usage(emulator):
    emu = emulator("openai", generator=scripted(["Paris."]))
    client = openai.OpenAI(base_url=f"{emu.url}/v1", api_key="k", max_retries=0)
    response = client.chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "Capital of France?"}], n=2, max_completion_tokens=5
    )
    assert [c.message.content for c in response.choices] == ["Paris.", "Paris."]
    assert response.usage.completion_tokens == 4 and response.usage.prompt_tokens > 0
    assert response.usage.prompt_tokens_details.cached_tokens == 0
    assert response.choices[0].finish_reason == "stop"


def test_openai_legacy_completions(emulator):
    emu = emulator("openai_compat", generator=scripted([" 42"]))
    client = openai.OpenAI(base_url=f"{emu.url}/v1", api_key="k", max_retries=0)
    response = client.completions.create(model="Qwen/Qwen3-32B", prompt="The answer is", max_tokens=4, n=3)
    assert [c.text for c in response.choices] == [" 42"] * 3
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_openai_client_sees_rate_limit_error_with_its_headers(emulator):
    emu = emulator("openai", faults={"script": ["429"]})
    client = openai.OpenAI(base_url=f"{emu.url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert err.value.response.headers["retry-after"] == "1"
    assert err.value.code == "rate_limit_exceeded"


def test_openai_client_retries_a_500_by_itself(emulator):
    emu = emulator("openai", generator=scripted(["ok"]), faults={"script": ["500"]})
    client = openai.OpenAI(base_url=f"{emu.url}/v1", api_key="k", max_retries=2)
    response = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert response.choices[0].message.content == "ok" and len(emu.emulator.log) == 2


def test_openai_client_auth_error(emulator):
    emu = emulator("openai", api_key="right")
    client = openai.OpenAI(base_url=f"{emu.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


def test_anthropic_messages_create_with_prefill_and_cache_usage(emulator):
    emu = emulator("anthropic", generator=scripted([" blue."]))
    client = anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0)
    long_text = "context " * 1500
    message = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=8,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": long_text, "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": "The sky is"},
        ],
    )
    assert message.content[0].text == " blue." and message.stop_reason == "end_turn"
    assert message.usage.cache_creation_input_tokens > 1000 and message.usage.cache_read_input_tokens == 0
    again = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=8,
        messages=[{"role": "user", "content": [{"type": "text", "text": long_text, "cache_control": {"type": "ephemeral"}}]}],
    )
    assert again.usage.cache_read_input_tokens == message.usage.cache_creation_input_tokens


def test_anthropic_streaming_text(emulator):
    emu = emulator("anthropic", generator=scripted(["one two three"]))
    client = anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "count"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two three"
    assert final.usage.output_tokens == 3


def test_anthropic_client_errors_map_to_its_exception_types(emulator):
    emu = emulator("anthropic", faults={"script": ["429", "529"], "reject_prefill": True})
    client = anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0)
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="m", max_tokens=4, messages=user)
    with pytest.raises(anthropic.InternalServerError):  # 529 overloaded
        client.messages.create(model="m", max_tokens=4, messages=user)
    with pytest.raises(anthropic.BadRequestError, match="prefill"):
        client.messages.create(model="m", max_tokens=4, messages=[*user, {"role": "assistant", "content": "Hi"}])
    with pytest.raises(anthropic.BadRequestError, match="trailing whitespace"):
        emu.emulator.config.faults.reject_prefill = False
        client.messages.create(model="m", max_tokens=4, messages=[*user, {"role": "assistant", "content": "Hi "}])
