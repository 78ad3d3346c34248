"""The official clients (openai, anthropic, google-genai) against the emulator, for every
feature OmniOPD's adapters use: n / candidateCount, prefill, caching with its usage
fields, 429 with retry-after, 5xx, streaming where the emulator serves it, and the
refusals the real APIs answer (docs/field-notes.md). If the emulator drifted from the
wire format the SDKs parse, or accepted what the API refuses, these fail."""

from __future__ import annotations

import re

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from omniopd.teachers.emulator import scripted

LONG = "context " * 1500  # above 1,024 emulator tokens
LONGER = "context " * 4200  # above 4,096


# -------------------------------------------------------------------- OpenAI


def oai(emu, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{emu.url}/v1", api_key="k", max_retries=retries)


def test_openai_chat_completions_with_n_usage_and_rate_limit_headers_on_every_response(emulator):
    emu = emulator("openai", generator=scripted(["Paris."]))
    raw = oai(emu).chat.completions.with_raw_response.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "Capital of France?"}], n=2, max_completion_tokens=5
    )
    response = raw.parse()
    assert [c.message.content for c in response.choices] == ["Paris.", "Paris."]
    assert response.usage.completion_tokens == 4 and response.usage.prompt_tokens > 0
    assert response.usage.prompt_tokens_details.cached_tokens == 0
    assert response.choices[0].finish_reason == "stop"
    # no limits configured, yet the headers are there, as on the real API
    assert int(raw.headers["x-ratelimit-limit-requests"]) > 0 and "x-ratelimit-remaining-tokens" in raw.headers


def test_openai_automatic_caching_reports_cached_tokens(emulator):
    emu = emulator("openai", generator=scripted(["ok"]))
    client = oai(emu)
    messages = [{"role": "user", "content": LONG}]
    client.chat.completions.create(model="gpt-4.1-mini", messages=messages, max_completion_tokens=3)
    again = client.chat.completions.create(model="gpt-4.1-mini", messages=messages, max_completion_tokens=3)
    assert again.usage.prompt_tokens_details.cached_tokens >= 1024


def test_openai_models_that_bill_cache_writes_report_them(emulator):
    emu = emulator("openai", generator=scripted(["ok"]))
    usage = oai(emu).chat.completions.create(
        model="gpt-5.6-luna", messages=[{"role": "user", "content": LONG}], max_completion_tokens=3
    ).usage
    assert usage.prompt_tokens_details.cache_write_tokens >= 1024 and usage.prompt_tokens_details.cached_tokens == 0


def test_openai_reasoning_models_refuse_a_non_default_temperature_and_max_tokens(emulator):
    emu = emulator("openai", generator=scripted(["ok"]))
    client = oai(emu)
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-5-mini", messages=user, temperature=0.5, max_completion_tokens=3)
    assert err.value.code == "unsupported_value" and "Only the default (1) value is supported" in str(err.value)
    client.chat.completions.create(model="gpt-5-mini", messages=user, temperature=1, max_completion_tokens=3)
    with pytest.raises(openai.BadRequestError, match="'temperature' is not supported with this model"):
        client.chat.completions.create(model="gpt-6-luna", messages=user, temperature=1, max_completion_tokens=3)
    with pytest.raises(openai.BadRequestError, match="Use 'max_completion_tokens' instead"):
        client.chat.completions.create(model="gpt-5-mini", messages=user, max_tokens=3)


def test_openai_client_sees_rate_limit_error_with_its_headers(emulator):
    emu = emulator("openai", faults={"script": ["429"]})
    with pytest.raises(openai.RateLimitError) as err:
        oai(emu).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert err.value.response.headers["retry-after"] == "1"
    assert err.value.code == "rate_limit_exceeded"


def test_openai_client_retries_a_500_by_itself(emulator):
    emu = emulator("openai", generator=scripted(["ok"]), faults={"script": ["500"]})
    response = oai(emu, retries=2).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert response.choices[0].message.content == "ok" and len(emu.emulator.log) == 2


def test_openai_client_auth_error(emulator):
    emu = emulator("openai", api_key="right")
    client = openai.OpenAI(base_url=f"{emu.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


def test_logprobs_are_refused_with_a_reason_never_returned_as_null(emulator):
    emu = emulator("openai", generator=scripted(["ok"]))
    with pytest.raises(openai.BadRequestError, match="does not produce log-probabilities"):
        oai(emu).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], logprobs=True)


# ---------------------------------------------------------------------- vLLM


def test_vllm_completions_with_n_and_no_rate_limit_headers(emulator):
    emu = emulator("openai_compat", generator=scripted([" 42"]), models=["Qwen/Qwen3-32B"])
    raw = oai(emu).completions.with_raw_response.create(model="Qwen/Qwen3-32B", prompt="The answer is", max_tokens=4, n=3)
    response = raw.parse()
    assert [c.text for c in response.choices] == [" 42"] * 3
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    assert not [h for h in raw.headers if h.startswith("x-ratelimit")]  # vLLM sends none


def test_vllm_prefill_extension_and_404_for_a_model_it_does_not_serve(emulator):
    emu = emulator("openai_compat", generator=scripted([" 4."]), models=["served"])
    client = oai(emu)
    response = client.chat.completions.create(
        model="served", messages=[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "It is"}],
        max_tokens=3, extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )
    assert response.choices[0].message.content == " 4."
    with pytest.raises(openai.NotFoundError, match=re.escape("The model `other` does not exist.")):
        client.completions.create(model="other", prompt="x", max_tokens=2)


# ----------------------------------------------------------------- Anthropic


def claude(emu) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0)


def test_anthropic_prefill_and_block_cache_breakpoints_with_usage(emulator):
    emu = emulator("anthropic", generator=scripted([" blue."]))
    client = claude(emu)
    cached = [{"type": "text", "text": LONGER, "cache_control": {"type": "ephemeral"}}]
    message = client.messages.create(
        model="claude-haiku-4-5", max_tokens=8,
        messages=[{"role": "user", "content": cached}, {"role": "assistant", "content": "The sky is"}],
    )
    assert message.content[0].text == " blue." and message.stop_reason == "end_turn"
    assert message.usage.cache_creation_input_tokens > 4096 and message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == message.usage.cache_creation_input_tokens
    again = client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": cached}])
    assert again.usage.cache_read_input_tokens == message.usage.cache_creation_input_tokens


def test_anthropic_cache_minimum_is_4096_tokens_on_opus_4_6_and_1024_on_opus_4_8(emulator):
    emu = emulator("anthropic", generator=scripted(["ok"]))
    client = claude(emu)
    blocks = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    for model, written in (("claude-opus-4-6", False), ("claude-opus-4-8", True)):
        usage = client.messages.create(model=model, max_tokens=3, messages=[{"role": "user", "content": blocks}]).usage
        assert (usage.cache_creation_input_tokens > 0) is written, model


def test_anthropic_automatic_caching_and_one_hour_entries(emulator):
    emu = emulator("anthropic", generator=scripted(["ok"]))
    client = claude(emu)
    user = [{"role": "user", "content": LONG}]
    first = client.messages.create(model="claude-opus-4-8", max_tokens=3, messages=user, cache_control={"type": "ephemeral", "ttl": "1h"})
    assert first.usage.cache_creation_input_tokens > 1024
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == first.usage.cache_creation_input_tokens
    second = client.messages.create(model="claude-opus-4-8", max_tokens=3, messages=user, cache_control={"type": "ephemeral"})
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    with pytest.raises(anthropic.BadRequestError, match="ttl"):
        client.messages.create(model="claude-opus-4-8", max_tokens=3, messages=user, cache_control={"type": "ephemeral", "ttl": "2h"})


def test_anthropic_streaming_text_and_rate_limit_headers_on_every_response(emulator):
    emu = emulator("anthropic", generator=scripted(["one two three"]))
    client = claude(emu)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "count"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two three"
    assert final.usage.output_tokens == 3
    raw = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=3, messages=[{"role": "user", "content": "hi"}])
    assert int(raw.headers["anthropic-ratelimit-input-tokens-limit"]) > 0


def test_anthropic_version_decides_whether_temperature_exists(emulator):
    emu = emulator("anthropic", generator=scripted(["ok"]))
    client = claude(emu)  # sends anthropic-version 2026-10-21, its default
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.BadRequestError, match="temperature: Extra inputs are not permitted"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=3, messages=user, extra_body={"temperature": 1.0})
    old = {"anthropic-version": "2023-06-01"}
    client.messages.create(model="claude-haiku-4-5", max_tokens=3, messages=user, extra_headers=old, extra_body={"temperature": 0.5})
    with pytest.raises(anthropic.BadRequestError, match=re.escape("`temperature` is deprecated for this model.")):
        client.messages.create(model="claude-opus-4-7", max_tokens=3, messages=user, extra_headers=old, extra_body={"temperature": 0.5})
    # the API's default is accepted for backwards compatibility under the old version
    client.messages.create(model="claude-sonnet-5-5", max_tokens=3, messages=user, extra_headers=old, extra_body={"temperature": 1.0})
    with pytest.raises(anthropic.BadRequestError, match="anthropic-version"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=3, messages=user, extra_headers={"anthropic-version": "2024-01-01"})


def test_anthropic_client_errors_map_to_its_exception_types(emulator):
    emu = emulator("anthropic", faults={"script": ["429", "529"]})
    client = claude(emu)
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(model="m", max_tokens=4, messages=user)
    assert err.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.InternalServerError):  # 529 overloaded
        client.messages.create(model="m", max_tokens=4, messages=user)
    with pytest.raises(anthropic.BadRequestError, match=re.escape("Prefilling assistant messages is not supported for this model.")):
        client.messages.create(model="claude-sonnet-4-6", max_tokens=4, messages=[*user, {"role": "assistant", "content": "Hi"}])
    with pytest.raises(anthropic.BadRequestError, match="trailing whitespace"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=4, messages=[*user, {"role": "assistant", "content": "Hi "}])


# -------------------------------------------------------------------- Gemini


def gem(emu, version: str | None = None) -> genai.Client:
    options = genai_types.HttpOptions(base_url=emu.url, api_version=version) if version else genai_types.HttpOptions(base_url=emu.url)
    return genai.Client(api_key="k" * 20, http_options=options)


def test_gemini_default_v1_and_v1beta_with_candidates_system_instruction_and_usage_details(emulator):
    emu = emulator("gemini", generator=scripted(["four."]))
    for version in (None, "v1beta"):  # google-genai 3.x defaults to /v1
        client = gem(emu, version)  # (a client that is not referenced closes its connection pool)
        response = client.models.generate_content(
            model="gemini-2.5-flash", contents="2+2?",
            config=genai_types.GenerateContentConfig(candidate_count=2, max_output_tokens=8, system_instruction="Be brief."),
        )
        assert [c.content.parts[0].text for c in response.candidates] == ["four.", "four."]
        usage = response.usage_metadata
        assert usage.prompt_tokens_details[0].token_count == usage.prompt_token_count
    assert [e.path.split("/")[1] for e in emu.emulator.log] == ["v1", "v1beta"]
    plain = client.models.generate_content(model="gemini-2.5-flash", contents="2+2?").usage_metadata
    assert usage.prompt_token_count > plain.prompt_token_count  # systemInstruction is counted


def test_gemini_prefill_turn_implicit_cache_and_thinking_levels(emulator):
    emu = emulator("gemini", generator=scripted(["ok"]), faults={"reasoning_tokens": 5})
    client = gem(emu)
    contents = [genai_types.Content(role="user", parts=[genai_types.Part(text=LONG)]),
                genai_types.Content(role="model", parts=[genai_types.Part(text="The answer is")])]
    client.models.generate_content(model="gemini-2.5-flash", contents=contents)
    again = client.models.generate_content(model="gemini-2.5-flash", contents=contents)
    assert again.usage_metadata.cached_content_token_count >= 1024 and again.usage_metadata.cache_tokens_details
    minimal = client.models.generate_content(
        model="gemini-3.5-flash", contents="x",
        config=genai_types.GenerateContentConfig(thinking_config=genai_types.ThinkingConfig(thinking_level="MINIMAL")),
    )
    assert minimal.usage_metadata.thoughts_token_count is None  # minimal: no thoughts
    low = client.models.generate_content(
        model="gemini-3.1-pro-preview", contents="x", config=genai_types.GenerateContentConfig(
            max_output_tokens=16, thinking_config=genai_types.ThinkingConfig(thinking_level="LOW")),
    )
    assert low.usage_metadata.thoughts_token_count == 5


@pytest.mark.parametrize(("model", "thinking", "words"), [
    ("gemini-2.5-pro", {"thinking_budget": 0}, "only works in thinking mode"),
    ("gemini-2.5-flash", {"thinking_level": "LOW"}, "Thinking level is not supported"),
    ("gemini-3-pro-preview", {"thinking_level": "MINIMAL"}, "not supported for this model"),
    ("gemini-3.5-flash", {"thinking_level": "LOW", "thinking_budget": 10}, "only set one of"),
    ("gemini-2.5-flash-lite", {"thinking_budget": 100}, "between 512 and 24576"),
])
def test_gemini_refuses_thinking_settings_the_model_does_not_take(emulator, model, thinking, words):
    emu = emulator("gemini", generator=scripted(["ok"]))
    config = genai_types.GenerateContentConfig(thinking_config=genai_types.ThinkingConfig(**thinking))
    client = gem(emu)
    with pytest.raises(genai_errors.ClientError, match=words) as err:
        client.models.generate_content(model=model, contents="x", config=config)
    assert err.value.code == 400


def test_gemini_rate_limit_carries_retry_info_and_5xx_is_a_server_error(emulator):
    emu = emulator("gemini", faults={"script": ["429", "500"]})
    client = gem(emu)
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert err.value.code == 429
    assert any(d.get("retryDelay") == "1s" for d in err.value.details["error"]["details"])
    with pytest.raises(genai_errors.ServerError):
        client.models.generate_content(model="gemini-2.5-flash", contents="x")
