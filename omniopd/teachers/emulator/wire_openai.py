"""OpenAI wire format (also vLLM's OpenAI-compatible server): /v1/chat/completions,
/v1/completions, /v1/models; `x-ratelimit-*` headers; `{"error": {...}}` bodies."""

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
}


def fmt_duration(seconds: float) -> str:
    """OpenAI's reset format: '20ms', '1.5s', '2m3.2s'."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3f}s" if minutes else f"{rest:.3f}s"


def error_response(status: int, kind: str, message: str, headers: dict[str, str]) -> web.Response:
    etype, code = _ERROR_TYPES.get(kind, ("invalid_request_error", None))
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _headers(result: EmuResult, retry_after: bool) -> dict[str, str]:
    headers = {"x-request-id": result.request_id}
    if result.buckets:
        for dim, index in (("requests", 0), ("tokens", 3)):
            rate, cap, level = result.buckets[index]
            if rate:
                headers[f"x-ratelimit-limit-{dim}"] = str(int(rate * 60))
                headers[f"x-ratelimit-remaining-{dim}"] = str(max(0, int(level)))
                headers[f"x-ratelimit-reset-{dim}"] = fmt_duration(max(0.0, cap - level) / rate)
    if result.status == 429 and result.retry_after_s is not None and retry_after:
        headers["retry-after"] = str(max(1, round(result.retry_after_s)))
        headers["retry-after-ms"] = str(int(result.retry_after_s * 1000))
    return headers


def _usage(result: EmuResult) -> dict[str, Any]:
    prompt = result.cache.total
    completion = result.output_tokens + result.reasoning_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": result.cache.read, "audio_tokens": 0},
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


def routes(emu: Emulator) -> list[web.RouteDef]:
    # vLLM continues a trailing assistant turn on request; OpenAI answers in a new turn.
    prefill_ok = "prefill" in emu.spec.modes
    max_n = emu.spec.max_candidates

    def key_of(request: web.Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    async def respond(emu_req: EmuRequest, path: str, build) -> web.StreamResponse:
        result = await emu.handle(emu_req, path)
        headers = _headers(result, emu.config.limits.retry_after)
        if result.status != 200:
            return error_response(result.status, result.error or "", result.message, headers)
        payload = build(result)
        payload["usage"] = _usage(result)
        text = json.dumps(payload)
        if result.body_fault == "malformed":
            text = "<html>upstream error</html>"
        elif result.body_fault == "truncated":
            text = text[: len(text) // 2]
        return web.Response(text=text, content_type="application/json", headers=headers)

    def common(body: dict[str, Any], request: web.Request, prompt_text: str, prefill: bool, max_tokens: int) -> EmuRequest:
        n = int(body.get("n") or 1)
        if not 1 <= n <= max_n:
            raise web.HTTPBadRequest(text=json.dumps({"error": {"message": f"n must be in [1, {max_n}], got {n}", "type": "invalid_request_error"}}), content_type="application/json")
        return EmuRequest(
            model=str(body["model"]), n=n, max_tokens=max_tokens, prompt_text=prompt_text,
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
        text = chat_text(turns, continue_last=prefill)
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
        emu_req = common(body, request, text, prefill, max_tokens)
        model = emu_req.model

        def build(result: EmuResult) -> dict[str, Any]:
            return {
                "id": f"chatcmpl-{result.request_id}", "object": "chat.completion", "created": int(time.time()),
                "model": model, "system_fingerprint": "emulator",
                "choices": [
                    {"index": i, "message": {"role": "assistant", "content": t, "refusal": None}, "logprobs": None, "finish_reason": r}
                    for i, (t, r) in enumerate(zip(result.texts, result.finish_reasons, strict=True))
                ],
            }

        return await respond(emu_req, request.path, build)

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return error_response(400, "bad_request", "the emulator accepts one string `prompt`", {})
        emu_req = common(body, request, prompt, False, int(body.get("max_tokens") or 16))
        model = emu_req.model

        def build(result: EmuResult) -> dict[str, Any]:
            return {
                "id": f"cmpl-{result.request_id}", "object": "text_completion", "created": int(time.time()), "model": model,
                "choices": [
                    {"index": i, "text": t, "logprobs": None, "finish_reason": r}
                    for i, (t, r) in enumerate(zip(result.texts, result.finish_reasons, strict=True))
                ],
            }

        return await respond(emu_req, request.path, build)

    async def models(request: web.Request) -> web.Response:
        seen = sorted(set(emu.config.models) | {e.model for e in emu.log})
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "emulator", "max_model_len": emu.config.context_window} for m in seen]
        return web.json_response({"object": "list", "data": data})

    async def model(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.json_response({"id": name, "object": "model", "created": 0, "owned_by": "emulator", "max_model_len": emu.config.context_window})

    return [
        web.post("/v1/chat/completions", chat),
        web.post("/v1/completions", completions),
        web.get("/v1/models", models),
        web.get("/v1/models/{name:.+}", model),
    ]


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": {"message": "body is not JSON"}}', content_type="application/json") from None
    if not isinstance(body, dict) or "model" not in body:
        raise web.HTTPBadRequest(text='{"error": {"message": "`model` is required"}}', content_type="application/json")
    return body
