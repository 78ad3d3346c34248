"""Anthropic Messages wire format: /v1/messages (JSON or server-sent events),
/v1/models/{id}; `anthropic-ratelimit-*` headers, `retry-after`; `{"type": "error"}` bodies.

Validates what the real API validates and our adapters could get wrong: `max_tokens`
required, temperature in [0, 1], non-empty text blocks, at most 4 cache breakpoints, and
no trailing whitespace in a final assistant (prefill) turn.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from omniopd.teachers.emulator.core import Emulator, EmuRequest, EmuResult

_ERROR_TYPES = {
    "rate_limited": "rate_limit_error",
    "quota_day": "rate_limit_error",
    "auth": "authentication_error",
    "server_error": "api_error",
    "overloaded": "overloaded_error",
}
_DIMS = (("requests", 0), ("input-tokens", 1), ("output-tokens", 2), ("tokens", 3))
_STOP = {"length": "max_tokens", "stop": "end_turn"}


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": _ERROR_TYPES.get(kind, "invalid_request_error"), "message": message}}
    return web.json_response(body, status=status, headers=headers or {})


def _headers(result: EmuResult, retry_after: bool) -> dict[str, str]:
    headers = {"request-id": result.request_id}
    now = datetime.now(UTC)
    for name, index in _DIMS:
        if not result.buckets:
            break
        rate, cap, level = result.buckets[index]
        if rate:
            reset = now + timedelta(seconds=max(0.0, cap - level) / rate)
            headers[f"anthropic-ratelimit-{name}-limit"] = str(int(rate * 60))
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(max(0, int(level)))
            headers[f"anthropic-ratelimit-{name}-reset"] = reset.isoformat().replace("+00:00", "Z")
    if result.status == 429 and result.retry_after_s is not None and retry_after:
        headers["retry-after"] = str(max(1, math.ceil(result.retry_after_s)))
    return headers


def _usage(result: EmuResult) -> dict[str, int]:
    return {
        "input_tokens": result.cache.uncached,
        "cache_creation_input_tokens": result.cache.write,
        "cache_read_input_tokens": result.cache.read,
        "output_tokens": result.output_tokens + result.reasoning_tokens,
    }


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise ValueError("content must be a string or a list of blocks")
    return content


def parse_messages(body: dict[str, Any]) -> tuple[list[tuple[str, bool]], bool]:
    """(cache pieces, has_prefill); raises ValueError with the API's kind of message."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: at least one message is required")
    if messages[0].get("role") != "user":
        raise ValueError("messages: first message must use the \"user\" role")
    pieces: list[tuple[str, bool]] = []
    breakpoints = 0
    system = body.get("system")
    if system:
        pieces.append(("<|system|>\n", False))
        for block in _blocks(system):
            breakpoints += "cache_control" in block
            pieces.append((block.get("text", ""), "cache_control" in block))
        pieces.append(("\n", False))
    prefill = messages[-1].get("role") == "assistant"
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise ValueError(f"messages.{i}.role: must be user or assistant")
        pieces.append((f"<|{role}|>\n", False))
        blocks = _blocks(message.get("content"))
        for j, block in enumerate(blocks):
            text = block.get("text", "")
            if block.get("type") != "text":
                raise ValueError(f"messages.{i}.content.{j}: the emulator handles text blocks only")
            if not text.strip():
                raise ValueError(f"messages.{i}.content.{j}: text content blocks must contain non-whitespace text")
            breakpoints += "cache_control" in block
            pieces.append((text, "cache_control" in block))
        last = i == len(messages) - 1
        if last and prefill:
            final = "".join(b.get("text", "") for b in blocks)
            if final != final.rstrip():
                raise ValueError("messages: final assistant content cannot end with trailing whitespace")
        else:
            pieces.append(("\n", False))
    if not prefill:
        pieces.append(("<|assistant|>\n", False))
    if breakpoints > 4:
        raise ValueError(f"A maximum of 4 blocks with cache_control may be provided. Found {breakpoints}.")
    return pieces, prefill


def _key(request: web.Request) -> str | None:
    """x-api-key, or a bearer token (the anthropic SDK 2.x sends its key that way)."""
    auth = request.headers.get("authorization", "")
    return request.headers.get("x-api-key") or (auth[7:] if auth.lower().startswith("bearer ") else None)


def routes(emu: Emulator) -> list[web.RouteDef]:
    async def messages(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "bad_request", "body is not valid JSON")
        if not request.headers.get("anthropic-version"):
            return error_response(400, "bad_request", "anthropic-version: header is required")
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return error_response(400, "bad_request", "max_tokens: Field required (integer >= 1)")
        temperature = body.get("temperature")
        if temperature is not None and not 0 <= temperature <= 1:
            return error_response(400, "bad_request", "temperature: must be in [0, 1]")
        if "model" not in body:
            return error_response(400, "bad_request", "model: Field required")
        try:
            pieces, prefill = parse_messages(body)
        except (ValueError, AttributeError) as exc:
            return error_response(400, "bad_request", str(exc))
        emu_req = EmuRequest(
            model=str(body["model"]), n=1, max_tokens=body["max_tokens"], prompt_text="".join(p for p, _ in pieces),
            temperature=temperature, stop=list(body.get("stop_sequences") or []), stream=bool(body.get("stream")),
            has_prefill=prefill, cache_blocks=pieces, api_key=_key(request), body=body,
        )
        if emu_req.stream:
            return await _stream(emu, emu_req, request)
        result = await emu.handle(emu_req, request.path)
        headers = _headers(result, emu.config.limits.retry_after)
        if result.status != 200:
            return error_response(result.status, result.error or "", result.message, headers)
        payload = {
            "id": f"msg_{result.request_id}", "type": "message", "role": "assistant", "model": emu_req.model,
            "content": [{"type": "text", "text": result.texts[0]}],
            "stop_reason": _STOP.get(result.finish_reasons[0], "end_turn"), "stop_sequence": None,
            "usage": _usage(result),
        }
        text = json.dumps(payload)
        if result.body_fault == "malformed":
            text = "upstream connect error or disconnect/reset before headers"
        elif result.body_fault == "truncated":
            text = text[: len(text) // 2]
        return web.Response(text=text, content_type="application/json", headers=headers)

    async def model(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.json_response({
            "id": name, "type": "model", "display_name": name, "created_at": "2025-10-01T00:00:00Z",
            "max_input_tokens": emu.config.context_window,
        })

    return [web.post("/v1/messages", messages), web.get("/v1/models/{name}", model)]


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


async def _stream(emu: Emulator, emu_req: EmuRequest, request: web.Request) -> web.StreamResponse:
    """Server-sent events; headers and message_start go out when generation starts, which
    is also when the request's cache entries become usable."""
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})

    async def on_start(result: EmuResult) -> None:
        for key, value in _headers(result, emu.config.limits.retry_after).items():
            response.headers[key] = value
        await response.prepare(request)
        usage = {**_usage(result), "output_tokens": 1}
        message = {
            "id": f"msg_{result.request_id}", "type": "message", "role": "assistant", "content": [],
            "model": emu_req.model, "stop_reason": None, "stop_sequence": None, "usage": usage,
        }
        await response.write(_event("message_start", {"message": message}))
        await response.write(_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))

    result = await emu.handle(emu_req, request.path, on_start)
    if result.status != 200:
        return error_response(result.status, result.error or "", result.message, _headers(result, emu.config.limits.retry_after))
    text = result.texts[0]
    for start in range(0, len(text), 40):
        await response.write(_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text[start : start + 40]}}))
    if result.body_fault == "malformed":
        await response.write(b"data: {not json\n\n")
    if result.body_fault != "truncated":
        await response.write(_event("content_block_stop", {"index": 0}))
        delta = {"stop_reason": _STOP.get(result.finish_reasons[0], "end_turn"), "stop_sequence": None}
        await response.write(_event("message_delta", {"delta": delta, "usage": {"output_tokens": result.output_tokens + result.reasoning_tokens}}))
        await response.write(_event("message_stop", {}))
    await response.write_eof()
    return response
