"""Contract tests: the request OmniOPD's adapter builds is the request the provider's
official SDK builds from the same fields — method, path, the headers that matter (content
type, credentials, API version) and the JSON body field by field.

Each adapter request is captured by a local recorder (tests/teachers/wire_recorder.py),
then its body is handed to the SDK's own typed call (`openai`, `anthropic`,
`google-genai`, the versions this project pins in the `dev` extra). An SDK raises on a
parameter its API does not have, so a field the adapter invents fails here; a field the
SDK renames or drops shows up in the body diff. vLLM's extensions
(`continue_final_message`, `add_generation_prompt`) are the only fields passed as
`extra_body`, and a temperature under Anthropic's 2023-06-01 (the SDK, at 2026-10-21, no
longer has the parameter)."""

from __future__ import annotations

import re
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from tests.teachers.conftest import KEY, call, make_client, run
from tests.teachers.wire_recorder import Recorded, WireRecorder

VLLM_EXTENSIONS = ("continue_final_message", "add_generation_prompt")


@pytest.fixture
def recorder():
    with WireRecorder() as rec:
        yield rec


def diff(ours: Any, sdk: Any, path: str = "body") -> list[str]:
    """Every field where the two JSON documents differ, as `path: ours != sdk`."""
    if isinstance(ours, dict) and isinstance(sdk, dict):
        out = []
        for key in sorted(set(ours) | set(sdk)):
            if key not in sdk:
                out.append(f"{path}.{key}: sent by OmniOPD only ({ours[key]!r})")
            elif key not in ours:
                out.append(f"{path}.{key}: sent by the SDK only ({sdk[key]!r})")
            else:
                out += diff(ours[key], sdk[key], f"{path}.{key}")
        return out
    if isinstance(ours, list) and isinstance(sdk, list) and len(ours) == len(sdk):
        return [d for i, (a, b) in enumerate(zip(ours, sdk, strict=True)) for d in diff(a, b, f"{path}[{i}]")]
    return [] if ours == sdk else [f"{path}: {ours!r} != {sdk!r}"]


def assert_same_request(ours: Recorded, sdk: Recorded, headers: tuple[str, ...]) -> None:
    assert (ours.method, ours.path) == (sdk.method, sdk.path)
    for name in headers:
        assert ours.headers.get(name) == sdk.headers.get(name), name
    assert ours.headers["content-type"].startswith("application/json") and sdk.headers["content-type"].startswith("application/json")
    problems = diff(ours.body, sdk.body)
    assert not problems, "\n".join(problems)


def adapter_requests(rec: WireRecorder, kind: str, *, n: int = 1, prefix: str = "The answer is", **settings) -> list[Recorded]:
    run(call(make_client(kind, rec.url, **settings), prompt="What is 2+2?", prefix=prefix, n=n, stop=("\n\n",), seed=7))
    return rec.take()


# -------------------------------------------------------------------- OpenAI


def openai_sdk(rec: WireRecorder, body: dict[str, Any]) -> Recorded:
    client = openai.OpenAI(base_url=f"{rec.url}/v1", api_key=KEY, max_retries=0)
    fields = {k: v for k, v in body.items() if k not in VLLM_EXTENSIONS}
    extra = {k: body[k] for k in VLLM_EXTENSIONS if k in body}
    if "messages" in body:
        client.chat.completions.create(**fields, **({"extra_body": extra} if extra else {}))
    else:
        client.completions.create(**fields)
    [request] = rec.take()
    return request


@pytest.mark.parametrize(("kind", "settings"), [
    ("openai", {"model": "gpt-4.1-mini", "temperature": 0.7}),  # instruction, n, stop, seed, prompt_cache_key
    ("openai", {"model": "gpt-5-mini", "reasoning_tokens": 64}),  # the default temperature is not sent
    ("openai", {"model": "gpt-6-luna", "reasoning_tokens": 64, "cache": False}),
    ("openai_compat", {"model": "Qwen/Qwen3-32B", "mode": "prefill", "temperature": 0.6}),  # vLLM's chat extension
])
def test_openai_chat_requests_are_what_the_sdk_sends(recorder, kind, settings):
    [ours] = adapter_requests(recorder, kind, n=3, **settings)
    assert ours.path == "/v1/chat/completions"
    assert_same_request(ours, openai_sdk(recorder, ours.body), ("authorization",))
    assert ours.headers["authorization"] == f"Bearer {KEY}"


def test_openai_compat_raw_mode_is_a_completions_request_the_sdk_sends_alike(recorder, tmp_path):
    from omniopd.teachers.prompting import ChatTemplate

    template = tmp_path / "chatml.jinja"
    template.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                        "<|im_start|>assistant\n")
    [ours] = adapter_requests(recorder, "openai_compat", n=4, model="Qwen/Qwen3-32B", mode="raw",
                              chat_template=ChatTemplate(str(template)), temperature=1.0)
    assert ours.path == "/v1/completions" and ours.body["temperature"] == 1.0  # vLLM: always sent
    assert_same_request(ours, openai_sdk(recorder, ours.body), ("authorization",))


# ----------------------------------------------------------------- Anthropic


def anthropic_sdk(rec: WireRecorder, body: dict[str, Any], version: str | None = None) -> Recorded:
    client = anthropic.Anthropic(base_url=rec.url, api_key=KEY, max_retries=0)
    fields = {k: v for k, v in body.items() if k != "temperature"}
    extra: dict[str, Any] = {}
    if "temperature" in body:  # gone from SDK 2.x, which speaks 2026-10-21
        extra["extra_body"] = {"temperature": body["temperature"]}
    if version is not None:
        extra["extra_headers"] = {"anthropic-version": version}
    result = client.messages.create(**fields, **extra)
    if body.get("stream"):
        for _ in result:  # drain the event stream
            pass
    [request] = rec.take()
    return request


def test_anthropic_version_header_is_the_sdk_default(recorder):
    anthropic.Anthropic(base_url=recorder.url, api_key=KEY, max_retries=0).messages.create(
        model="claude-haiku-4-5", max_tokens=1, messages=[{"role": "user", "content": "hi"}])
    [sdk] = recorder.take()
    [ours] = adapter_requests(recorder, "anthropic", model="claude-haiku-4-5", cache=False)
    assert ours.headers["anthropic-version"] == sdk.headers["anthropic-version"] == "2026-10-21"
    # the SDK sends the key as a bearer token, the adapter as x-api-key; the API takes either
    assert ours.headers["x-api-key"] == KEY and sdk.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(("settings", "version"), [
    ({"model": "claude-haiku-4-5"}, None),  # prefill, cache breakpoints, first request streamed
    ({"model": "claude-opus-4-8", "temperature": 1.0}, None),  # refuses prefill: instruction form
    ({"model": "claude-haiku-4-5", "api_version": "2023-06-01", "temperature": 0.5, "cache": False}, "2023-06-01"),
    ({"model": "claude-sonnet-5-5", "reasoning_tokens": 256, "cache": False}, None),
])
def test_anthropic_requests_are_what_the_sdk_sends(recorder, settings, version):
    requests = adapter_requests(recorder, "anthropic", n=2, prefix="The answer is " + "x " * 30, **settings)
    assert len(requests) == 2  # no `n`: one request per continuation
    for ours in requests:
        assert ours.path == "/v1/messages"
        assert ("temperature" in ours.body) == (version == "2023-06-01")  # only where the version has it
        sdk = anthropic_sdk(recorder, ours.body, version)
        assert_same_request(ours, sdk, ("anthropic-version",))


# -------------------------------------------------------------------- Gemini


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), name)


def _camel(obj: Any) -> Any:
    """Proto field names to lowerCamelCase (the API accepts both; google-genai sends some snake_case)."""
    if isinstance(obj, dict):
        return {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): _camel(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_camel(v) for v in obj]
    return obj


def gemini_sdk(rec: WireRecorder, model: str, body: dict[str, Any], version: str | None) -> Recorded:
    options = genai_types.HttpOptions(base_url=rec.url, **({"api_version": version} if version else {}))
    client = genai.Client(api_key=KEY, http_options=options)
    config = {}
    for key, value in body.get("generationConfig", {}).items():
        config[_snake(key)] = genai_types.ThinkingConfig(**{_snake(k): v for k, v in value.items()}) if key == "thinkingConfig" else value
    client.models.generate_content(model=model, contents=body["contents"], config=genai_types.GenerateContentConfig(**config))
    [request] = rec.take()
    return Recorded(request.method, request.path, request.headers, _camel(request.body))


@pytest.mark.parametrize(("settings", "sdk_version"), [
    ({"model": "gemini-2.5-flash"}, "v1beta"),  # thinkingBudget 0, prefill turn, 8 + 2 candidates
    ({"model": "gemini-3.5-flash", "api_version": "v1"}, None),  # thinkingLevel MINIMAL, /v1 = the SDK default
    ({"model": "gemini-3.1-pro-preview", "reasoning_tokens": 512, "thinking_level": "medium", "mode": "instruction"}, "v1beta"),
    ({"model": "gemini-2.5-pro", "reasoning_tokens": 128, "temperature": 0.7}, "v1beta"),
])
def test_gemini_requests_are_what_the_sdk_sends(recorder, settings, sdk_version):
    requests = adapter_requests(recorder, "gemini", n=10, **settings)
    assert sorted(r.body["generationConfig"]["candidateCount"] for r in requests) == [2, 8]
    for ours in requests:
        sdk = gemini_sdk(recorder, settings["model"], ours.body, sdk_version)
        assert_same_request(ours, sdk, ("x-goog-api-key",))
        assert ours.headers["x-goog-api-key"] == KEY and "key=" not in ours.path
