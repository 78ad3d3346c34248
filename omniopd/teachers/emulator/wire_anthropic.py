"""Anthropic Messages wire format: /v1/messages (JSON or server-sent events),
/v1/models/{id}; `anthropic-ratelimit-*` headers on every response, `retry-after` on
429s; `{"type": "error"}` bodies.

Refuses what the real API refuses and our adapter could get wrong (each rule, its source
and date: docs/field-notes.md, "Anthropic"): a missing or unknown `anthropic-version`;
temperature, top_p or top_k under version 2026-10-21 ("Extra inputs are not permitted");
a non-default one for a model whose family deprecated them ("`temperature` is deprecated
for this model."); temperature outside [0, 1]; `max_tokens` missing; empty text blocks;
more than 4 cache breakpoints; a final assistant turn ending in whitespace; prefill for
the models that refuse it. Caching: `cache_control` breakpoints on blocks and at the top
level (automatic caching: a breakpoint on the last block), each with `ttl` "5m" (the
emulator's `cache.ttl_s`) or "1h"; usage reports `cache_creation` split by lifetime.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from omniopd.providers import SettingRefused
from omniopd.teachers.emulator.cache import LONG_TTL_S
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
_SAMPLING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": None}  # top_k has no neutral value
# Headers of an account whose limits the emulator does not enforce (`limits` unset): the
# real API sends rate-limit headers on every response.
_NOMINAL = {"requests": 1_000_000, "input-tokens": 1_000_000_000, "output-tokens": 1_000_000_000, "tokens": 1_000_000_000}


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": _ERROR_TYPES.get(kind, "invalid_request_error"), "message": message}}
    return web.json_response(body, status=status, headers=headers or {})


def _message(result: EmuResult) -> str:
    """The API's wording of the core's refusals."""
    if result.error == "context":
        d = result.detail
        if d["tokens"] > d["limit"]:
            return f"prompt is too long: {d['tokens']} tokens > {d['limit']} maximum"
        return (f"input length and `max_tokens` exceed context limit: {d['tokens']} + {d['max_tokens']} > {d['limit']}, "
                "decrease input length or `max_tokens` and try again")
    return result.message


def _headers(result: EmuResult, retry_after: bool) -> dict[str, str]:
    headers = {"request-id": result.request_id}
    now = datetime.now(UTC)
    for name, index in _DIMS:
        if result.buckets:
            rate, cap, level = result.buckets[index]
            if not rate:
                continue
            limit, remaining, seconds = int(rate * 60), max(0, int(level)), max(0.0, cap - level) / rate
        else:
            limit, remaining, seconds = _NOMINAL[name], _NOMINAL[name], 0.0
        headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
        headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
        headers[f"anthropic-ratelimit-{name}-reset"] = (now + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    if result.status == 429 and result.retry_after_s is not None and retry_after:
        headers["retry-after"] = str(max(1, math.ceil(result.retry_after_s)))
    return headers


def _usage(result: EmuResult) -> dict[str, Any]:
    return {
        "input_tokens": result.cache.uncached,
        "cache_creation_input_tokens": result.cache.write,
        "cache_read_input_tokens": result.cache.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": result.cache.write - result.cache.write_long,
            "ephemeral_1h_input_tokens": result.cache.write_long,
        },
        "output_tokens": result.output_tokens + result.reasoning_tokens,
    }


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise ValueError("content must be a string or a list of blocks")
    return content


def _ttl(control: Any, where: str, short_s: float) -> float:
    """The lifetime of a `cache_control` breakpoint, in seconds."""
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise ValueError(f"{where}.cache_control.type: Input should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        raise ValueError(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
    return LONG_TTL_S if ttl == "1h" else short_s


def parse_messages(body: dict[str, Any], short_ttl_s: float = 300.0) -> tuple[list[tuple[str, float | None]], bool]:
    """(cache pieces: text and the lifetime of the breakpoint it ends in, has_prefill);
    raises ValueError with the API's kind of message."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: at least one message is required")
    if messages[0].get("role") != "user":
        raise ValueError("messages: first message must use the \"user\" role")
    pieces: list[tuple[str, float | None]] = []
    last_block = -1  # index in `pieces` of the last content block (automatic caching marks it)

    def block(text: str, control: Any, where: str) -> None:
        nonlocal last_block
        pieces.append((text, None if control is None else _ttl(control, where, short_ttl_s)))
        last_block = len(pieces) - 1

    system = body.get("system")
    if system:
        pieces.append(("<|system|>\n", None))
        for j, item in enumerate(_blocks(system)):
            block(item.get("text", ""), item.get("cache_control"), f"system.{j}")
        pieces.append(("\n", None))
    prefill = messages[-1].get("role") == "assistant"
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise ValueError(f"messages.{i}.role: must be user or assistant")
        pieces.append((f"<|{role}|>\n", None))
        blocks = _blocks(message.get("content"))
        for j, item in enumerate(blocks):
            text = item.get("text", "")
            if item.get("type") != "text":
                raise ValueError(f"messages.{i}.content.{j}: the emulator handles text blocks only")
            if not text.strip():
                raise ValueError(f"messages.{i}.content.{j}: text content blocks must contain non-whitespace text")
            block(text, item.get("cache_control"), f"messages.{i}.content.{j}")
        last = i == len(messages) - 1
        if last and prefill:
            final = "".join(b.get("text", "") for b in blocks)
            if final != final.rstrip():
                raise ValueError("messages: final assistant content cannot end with trailing whitespace")
        else:
            pieces.append(("\n", None))
    if not prefill:
        pieces.append(("<|assistant|>\n", None))
    automatic = body.get("cache_control")
    if automatic is not None and pieces[last_block][1] is None:
        pieces[last_block] = (pieces[last_block][0], _ttl(automatic, "cache_control", short_ttl_s))
    breakpoints = sum(ttl is not None for _, ttl in pieces)
    if breakpoints > 4:
        raise ValueError(f"A maximum of 4 blocks with cache_control may be provided. Found {breakpoints}.")
    return pieces, prefill


def _key(request: web.Request) -> str | None:
    """x-api-key, or a bearer token (the anthropic SDK 2.x sends its key that way)."""
    auth = request.headers.get("authorization", "")
    return request.headers.get("x-api-key") or (auth[7:] if auth.lower().startswith("bearer ") else None)


def check_version_and_sampling(emu: Emulator, version_header: str | None, body: dict[str, Any]) -> str | None:
    """What the API says about the request's version and sampling parameters (None: fine)."""
    if not version_header:
        return "anthropic-version: header is required"
    try:
        version = emu.spec.api_version(version_header)
    except SettingRefused:
        return f"anthropic-version: {version_header!r} is not a valid version"
    assert version is not None
    rules = emu.spec.model_rules(str(body.get("model", "")))
    for param, default in _SAMPLING_DEFAULTS.items():
        if param not in body:
            continue
        if not version.sampling:
            return f"{param}: Extra inputs are not permitted"
        if rules.temperature != "any" and (default is None or body[param] != default):
            return f"`{param}` is deprecated for this model."
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        return "temperature: must be in [0, 1]"
    return None


def routes(emu: Emulator) -> list[web.RouteDef]:
    def refuse(request: web.Request, body: dict[str, Any], message: str) -> web.Response:
        rid = emu.refuse(request.path, str(body.get("model", "")), body, 400, "bad_request")
        return error_response(400, "bad_request", message, {"request-id": rid})

    async def messages(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "bad_request", "body is not valid JSON")
        problem = check_version_and_sampling(emu, request.headers.get("anthropic-version"), body)
        if problem is not None:
            return refuse(request, body, problem)
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return refuse(request, body, "max_tokens: Field required (integer >= 1)")
        if "model" not in body:
            return refuse(request, body, "model: Field required")
        try:
            pieces, prefill = parse_messages(body, emu.config.cache.ttl_s)
        except (ValueError, AttributeError) as exc:
            return refuse(request, body, str(exc))
        emu_req = EmuRequest(
            model=str(body["model"]), n=1, max_tokens=body["max_tokens"], prompt_text="".join(p for p, _ in pieces),
            temperature=body.get("temperature"), stop=list(body.get("stop_sequences") or []), stream=bool(body.get("stream")),
            has_prefill=prefill, cache_blocks=pieces, api_key=_key(request), body=body,
        )
        if emu_req.stream:
            return await _stream(emu, emu_req, request)
        result = await emu.handle(emu_req, request.path)
        headers = _headers(result, emu.config.limits.retry_after)
        if result.status != 200:
            return error_response(result.status, result.error or "", _message(result), headers)
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
        return error_response(result.status, result.error or "", _message(result), _headers(result, emu.config.limits.retry_after))
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
