"""OpenAI wire format (also vLLM's OpenAI-compatible server): /v1/chat/completions,
/v1/completions, /v1/models; `{"error": {...}}` bodies.

Two servers speak it, and they differ where a client can notice (sources and dates:
docs/field-notes.md, "OpenAI" and "vLLM"):
- OpenAI sends `x-ratelimit-*` headers on every response; refuses a temperature other
  than 1 on GPT-5 and o-series models and any on GPT-6, and `max_tokens` on chat requests
  to those reasoning models ("Use 'max_completion_tokens' instead"); serves any model name.
- vLLM (`ProviderSpec.self_hosted`) sends no rate-limit headers, serves only the models it
  was started with (`EmulatorConfig.models`; another name is vLLM's 404 "The model `x`
  does not exist."), and words errors as vLLM does (`type` BadRequestError, numeric `code`).

Log-probabilities are not emulated: a request for them is a 400 that says so, never a
silent null.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from omniopd.teachers.emulator.core import Emulator, EmuRequest, EmuResult, chat_text

_ERROR_TYPES = {
    "rate_limited": ("requests", "rate_limit_exceeded"),
    "quota_day": ("insufficient_quota", "insufficient_quota"),
    "auth": ("invalid_request_error", "invalid_api_key"),
    "server_error": ("server_error", None),
    "overloaded": ("server_error", None),
    "context": ("invalid_request_error", "context_length_exceeded"),
}
_VLLM_TYPES = {400: "BadRequestError", 401: "Unauthorized", 404: "NotFoundError", 429: "TooManyRequests", 500: "InternalServerError"}
# Headers of an account whose limits the emulator does not enforce (`limits` unset).
_NOMINAL = {"requests": 1_000_000, "tokens": 1_000_000_000}


class Refusal(Exception):
    """A request the server refuses before generating (status, error kind, message, param, code)."""

    def __init__(self, status: int, message: str, kind: str = "bad_request", param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.param, self.code = status, kind, message, param, code


def fmt_duration(seconds: float) -> str:
    """OpenAI's reset format: '20ms', '1.5s', '2m3.2s'."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3f}s" if minutes else f"{rest:.3f}s"


def routes(emu: Emulator) -> list[web.RouteDef]:
    # vLLM continues a trailing assistant turn on request; OpenAI answers in a new turn.
    prefill_ok = "prefill" in emu.spec.modes
    vllm = emu.spec.self_hosted
    max_n = emu.spec.max_candidates
    served = list(emu.config.models)  # vLLM: the models the server was started with

    def error_response(status: int, kind: str, message: str, headers: dict[str, str], param: str | None = None,
                       code: str | None = None) -> web.Response:
        if vllm:
            body = {"error": {"message": message, "type": _VLLM_TYPES.get(status, "BadRequestError"), "param": param, "code": status}}
        else:
            etype, default_code = _ERROR_TYPES.get(kind, ("invalid_request_error", None))
            body = {"error": {"message": message, "type": etype, "param": param, "code": code or default_code}}
        return web.json_response(body, status=status, headers=headers)

    def headers_of(result: EmuResult) -> dict[str, str]:
        headers = {"x-request-id": result.request_id}
        if not vllm:  # OpenAI sends its limits on every response; vLLM has none
            for dim, index in (("requests", 0), ("tokens", 3)):
                if result.buckets:
                    rate, cap, level = result.buckets[index]
                    if not rate:
                        continue
                    limit, remaining, reset = int(rate * 60), max(0, int(level)), max(0.0, cap - level) / rate
                else:
                    limit, remaining, reset = _NOMINAL[dim], _NOMINAL[dim], 0.0
                headers[f"x-ratelimit-limit-{dim}"] = str(limit)
                headers[f"x-ratelimit-remaining-{dim}"] = str(remaining)
                headers[f"x-ratelimit-reset-{dim}"] = fmt_duration(reset)
        if result.status == 429 and result.retry_after_s is not None and emu.config.limits.retry_after:
            headers["retry-after"] = str(max(1, round(result.retry_after_s)))
            headers["retry-after-ms"] = str(int(result.retry_after_s * 1000))
        return headers

    def message_of(result: EmuResult) -> str:
        if result.error != "context":
            return result.message
        d = result.detail
        asked = d["tokens"] + d["max_tokens"]
        return (f"This model's maximum context length is {d['limit']} tokens. However, you requested {asked} tokens "
                f"({d['tokens']} in the messages, {d['max_tokens']} in the completion). Please reduce the length of the "
                "messages or completion.")

    def key_of(request: web.Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    def check(body: dict[str, Any], chat: bool) -> None:
        """The refusals that depend on the model (and on which server this is)."""
        model = str(body["model"])
        if vllm:
            if not served:
                served.append(model)  # the server was started with the first model asked for
            if model not in served:
                raise Refusal(404, f"The model `{model}` does not exist.", "not_found", "model")
        n = int(body.get("n") or 1)
        if not 1 <= n <= max_n:
            raise Refusal(400, f"n must be in [1, {max_n}], got {n}", param="n")
        if body.get("logprobs") or body.get("top_logprobs"):
            raise Refusal(400, "logprobs: the OmniOPD emulator does not produce log-probabilities (a real server "
                          "does); test log-probabilities against vLLM", param="logprobs")
        if vllm:
            return
        rules = emu.spec.model_rules(model)
        if chat and rules.completion_tokens_only and "max_tokens" in body:
            raise Refusal(400, "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                          "'max_completion_tokens' instead.", param="max_tokens", code="unsupported_parameter")
        temperature = body.get("temperature")
        if temperature is not None and rules.temperature == "none":
            raise Refusal(400, "Unsupported parameter: 'temperature' is not supported with this model.",
                          param="temperature", code="unsupported_parameter")
        if temperature is not None and rules.temperature == "default_only" and temperature != 1:
            raise Refusal(400, f"Unsupported value: 'temperature' does not support {temperature} with this model. Only the "
                          "default (1) value is supported.", param="temperature", code="unsupported_value")

    async def respond(request: web.Request, body: dict[str, Any], chat: bool, emu_req_of, build) -> web.StreamResponse:
        try:
            check(body, chat)
            emu_req = emu_req_of()
        except Refusal as r:
            rid = emu.refuse(request.path, str(body.get("model", "")), body, r.status, r.kind)
            return error_response(r.status, r.kind, r.message, {"x-request-id": rid}, r.param, r.code)
        result = await emu.handle(emu_req, request.path)
        headers = headers_of(result)
        if result.status != 200:
            return error_response(result.status, result.error or "", message_of(result), headers)
        payload = build(emu_req, result)
        payload["usage"] = _usage(result)
        text = json.dumps(payload)
        if result.body_fault == "malformed":
            text = "<html>upstream error</html>"
        elif result.body_fault == "truncated":
            text = text[: len(text) // 2]
        return web.Response(text=text, content_type="application/json", headers=headers)

    def emu_request(body: dict[str, Any], request: web.Request, prompt_text: str, prefill: bool, max_tokens: int) -> EmuRequest:
        return EmuRequest(
            model=str(body["model"]), n=int(body.get("n") or 1), max_tokens=max_tokens, prompt_text=prompt_text,
            temperature=body.get("temperature"), seed=body.get("seed"), stop=_stop(body),
            has_prefill=prefill, api_key=key_of(request), body=body,
        )

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        if body.get("stream"):
            return error_response(400, "bad_request", "the emulator does not stream chat completions", {})
        turns = [(m.get("role", "user"), _content(m)) for m in body.get("messages") or []]
        if not turns:
            return error_response(400, "bad_request", "messages must be a non-empty list", {})
        prefill = prefill_ok and bool(body.get("continue_final_message")) and turns[-1][0] == "assistant"
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)

        def build(emu_req: EmuRequest, result: EmuResult) -> dict[str, Any]:
            return {
                "id": f"chatcmpl-{result.request_id}", "object": "chat.completion", "created": int(time.time()),
                "model": emu_req.model, "system_fingerprint": "emulator",
                "choices": [
                    {"index": i, "message": {"role": "assistant", "content": t, "refusal": None}, "logprobs": None, "finish_reason": r}
                    for i, (t, r) in enumerate(zip(result.texts, result.finish_reasons, strict=True))
                ],
            }

        return await respond(request, body, True, lambda: emu_request(body, request, chat_text(turns, continue_last=prefill), prefill, max_tokens), build)

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return error_response(400, "bad_request", "the emulator accepts one string `prompt`", {})

        def build(emu_req: EmuRequest, result: EmuResult) -> dict[str, Any]:
            return {
                "id": f"cmpl-{result.request_id}", "object": "text_completion", "created": int(time.time()), "model": emu_req.model,
                "choices": [
                    {"index": i, "text": t, "logprobs": None, "finish_reason": r}
                    for i, (t, r) in enumerate(zip(result.texts, result.finish_reasons, strict=True))
                ],
            }

        return await respond(request, body, False, lambda: emu_request(body, request, prompt, False, int(body.get("max_tokens") or 16)), build)

    def card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "emulator", "max_model_len": emu.config.context_window}

    async def models(request: web.Request) -> web.Response:
        names = served if vllm else sorted(set(emu.config.models) | {e.model for e in emu.log if e.model})
        return web.json_response({"object": "list", "data": [card(m) for m in names]})

    async def model(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if vllm and served and name not in served:
            return error_response(404, "not_found", f"The model `{name}` does not exist.", {}, "model")
        return web.json_response(card(name))

    return [
        web.post("/v1/chat/completions", chat),
        web.post("/v1/completions", completions),
        web.get("/v1/models", models),
        web.get("/v1/models/{name:.+}", model),
    ]


def _usage(result: EmuResult) -> dict[str, Any]:
    prompt = result.cache.total
    completion = result.output_tokens + result.reasoning_tokens
    details = {"cached_tokens": result.cache.read, "audio_tokens": 0}
    if result.cache.write:  # models that bill cache writes (gpt-5.6 and later)
        details["cache_write_tokens"] = result.cache.write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": result.reasoning_tokens, "audio_tokens": 0},
    }


def _content(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop") or []
    return [stop] if isinstance(stop, str) else list(stop)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": {"message": "body is not JSON"}}', content_type="application/json") from None
    if not isinstance(body, dict) or "model" not in body:
        raise web.HTTPBadRequest(text='{"error": {"message": "`model` is required"}}', content_type="application/json")
    return body
