"""Gemini API wire format: /v1beta/models/{model}:generateContent, /v1beta/models/{model};
no rate-limit headers; a 429 carries `RetryInfo.retryDelay` and a `QuotaFailure` in its
body; `candidateCount` limited to 1..8."""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from omniopd.teachers.emulator.core import Emulator, EmuRequest, EmuResult, chat_text

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_FINISH = {"length": "MAX_TOKENS", "stop": "STOP"}
_QUOTA_ID = {
    "rate_limited": "GenerateRequestsPerMinutePerProjectPerModel",
    "quota_day": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
}


def error_response(status: int, message: str, details: list[dict[str, Any]] | None = None) -> web.Response:
    body = {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN"), "details": details or []}}
    return web.json_response(body, status=status)


def _error(result: EmuResult, retry_after: bool) -> web.Response:
    if result.error == "auth":
        # Gemini answers a bad key with 400 INVALID_ARGUMENT and does not echo the key.
        return error_response(400, "API key not valid. Please pass a valid API key.")
    status = 503 if result.error == "overloaded" else result.status
    details: list[dict[str, Any]] = []
    if result.status == 429:
        details.append({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests", "quotaId": _QUOTA_ID.get(result.error or "", "")}],
        })
        if result.retry_after_s is not None and retry_after:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{math.ceil(result.retry_after_s)}s"})
    return error_response(status, result.message, details)


def routes(emu: Emulator) -> list[web.RouteDef]:
    async def generate(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "Invalid JSON payload received.")
        gen = body.get("generationConfig") or {}
        count = int(gen.get("candidateCount") or 1)
        if not 1 <= count <= emu.spec.max_candidates:
            return error_response(400, f"* GenerateContentRequest.generation_config.candidate_count: must be in [1, {emu.spec.max_candidates}], got {count}")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return error_response(400, "* GenerateContentRequest.contents: contents is not specified")
        turns = []
        for i, content in enumerate(contents):
            role = content.get("role", "user")
            if role not in ("user", "model"):
                return error_response(400, f"* contents[{i}].role: must be user or model")
            text = "".join(p.get("text", "") for p in content.get("parts") or [])
            if not text:
                return error_response(400, f"* contents[{i}].parts: must contain non-empty text")
            turns.append(("assistant" if role == "model" else "user", text))
        prefill = turns[-1][0] == "assistant"
        thinking = (gen.get("thinkingConfig") or {}).get("thinkingBudget")
        emu_req = EmuRequest(
            model=model, n=count, max_tokens=int(gen.get("maxOutputTokens") or 8192),
            prompt_text=chat_text(turns, continue_last=True), temperature=gen.get("temperature"), seed=gen.get("seed"),
            stop=list(gen.get("stopSequences") or []), has_prefill=prefill,
            api_key=request.headers.get("x-goog-api-key") or request.query.get("key"), body=body,
            thinking_budget=thinking if isinstance(thinking, int) and thinking >= 0 else None,
        )
        result = await emu.handle(emu_req, request.path)
        if result.status != 200:
            return _error(result, emu.config.limits.retry_after)
        usage: dict[str, int] = {
            "promptTokenCount": result.cache.total,
            "candidatesTokenCount": result.output_tokens,
            "totalTokenCount": result.cache.total + result.output_tokens + result.reasoning_tokens,
        }
        if result.cache.read:
            usage["cachedContentTokenCount"] = result.cache.read
        if result.reasoning_tokens:
            usage["thoughtsTokenCount"] = result.reasoning_tokens
        payload = {
            "candidates": [
                {"content": {"parts": [{"text": t}], "role": "model"}, "finishReason": _FINISH.get(r, "STOP"), "index": i}
                for i, (t, r) in enumerate(zip(result.texts, result.finish_reasons, strict=True))
            ],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": result.request_id,
        }
        text = json.dumps(payload)
        if result.body_fault == "malformed":
            text = "<!DOCTYPE html><title>502 Bad Gateway</title>"
        elif result.body_fault == "truncated":
            text = text[: len(text) // 2]
        return web.Response(text=text, content_type="application/json", headers={"x-request-id": result.request_id})

    async def model_info(request: web.Request) -> web.Response:
        model = request.match_info["model"]
        return web.json_response({
            "name": f"models/{model}", "displayName": model,
            "inputTokenLimit": emu.config.context_window, "outputTokenLimit": 65536,
        })

    return [
        web.post("/v1beta/models/{model:[^/:]+}:generateContent", generate),
        web.get("/v1beta/models/{model:[^/:]+}", model_info),
    ]
