"""Gemini API wire format: `models/{model}:generateContent` and `models/{model}` under both
API versions, /v1beta and /v1 (google-genai 3.x calls /v1 by default); no rate-limit
headers; a 429 carries `RetryInfo.retryDelay` and a `QuotaFailure` in its body;
`candidateCount` limited to 1..8.

`systemInstruction` is part of the prompt and counted; usage reports
`promptTokensDetails` (and `cacheTokensDetails` on a hit) per modality, like the API.
Thinking is checked against the model's family (omniopd/providers.py; sources in
docs/field-notes.md, "Gemini"): a budget and a level together, a level on a Gemini 2.5
model, a budget of 0 where thinking cannot be turned off (gemini-2.5-pro), a budget out
of range, or a level the model does not have are 400s.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from omniopd.teachers.emulator.core import Emulator, EmuRequest, EmuResult, chat_text

VERSIONS = ("v1beta", "v1")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
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
    if result.error == "prefill_rejected":
        return error_response(400, "Please ensure that multiturn requests ends with a user role or a function response.")
    if result.error == "context":
        d = result.detail
        return error_response(400, f"The input token count ({d['tokens']}) exceeds the maximum number of tokens allowed ({d['limit']}).")
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


def field(obj: dict[str, Any], name: str) -> Any:
    """A JSON field by its lowerCamelCase name or its proto name: the API accepts both, and
    google-genai sends `thinkingConfig`'s fields as `thinking_level` / `thinking_budget`."""
    if name in obj:
        return obj[name]
    return obj.get("".join(f"_{c.lower()}" if c.isupper() else c for c in name))


def thinking_problem(emu: Emulator, model: str, config: dict[str, Any]) -> str | None:
    """What the API says about a `thinkingConfig` for `model` (None: accepted). Wording
    marked "unconfirmed" in docs/field-notes.md is ours, the refusal itself is not."""
    budget, level = field(config, "thinkingBudget"), field(config, "thinkingLevel")
    if budget is not None and level is not None:
        return "You can only set one of thinking budget and thinking level."
    rules = emu.spec.model_rules(model)
    if level is not None:
        if rules.thinking != "level":
            return "Thinking level is not supported for this model."
        if str(level).lower() not in rules.levels:
            return f"Thinking level {level} is not supported for this model."
    if budget is not None and rules.thinking == "budget":
        if budget == 0 and not rules.budget_off:
            return "Budget 0 is invalid. This model only works in thinking mode."
        low = max(rules.budget_min, 1)
        if budget not in (0, -1) and not low <= budget <= rules.budget_max:
            return f"The thinking budget {budget} is invalid. Please choose a value between {low} and {rules.budget_max}."
    return None


def _system_text(body: dict[str, Any]) -> str:
    system = field(body, "systemInstruction")
    if not isinstance(system, dict):
        return ""
    return "".join(p.get("text", "") for p in system.get("parts") or [])


def routes(emu: Emulator) -> list[web.RouteDef]:
    def refuse(request: web.Request, model: str, body: dict[str, Any], message: str) -> web.Response:
        emu.refuse(request.path, model, body, 400, "bad_request")
        return error_response(400, message)

    async def generate(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "Invalid JSON payload received.")
        gen = body.get("generationConfig") or {}
        count = int(gen.get("candidateCount") or 1)
        if not 1 <= count <= emu.spec.max_candidates:
            return refuse(request, model, body, f"* GenerateContentRequest.generation_config.candidate_count: must be in [1, {emu.spec.max_candidates}], got {count}")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return refuse(request, model, body, "* GenerateContentRequest.contents: contents is not specified")
        turns = []
        system = _system_text(body)
        if system:
            turns.append(("system", system))
        for i, content in enumerate(contents):
            role = content.get("role", "user")
            if role not in ("user", "model"):
                return refuse(request, model, body, f"* contents[{i}].role: must be user or model")
            text = "".join(p.get("text", "") for p in content.get("parts") or [])
            if not text:
                return refuse(request, model, body, f"* contents[{i}].parts: must contain non-empty text")
            turns.append(("assistant" if role == "model" else "user", text))
        thinking = field(gen, "thinkingConfig") or {}
        problem = thinking_problem(emu, model, thinking)
        if problem is not None:
            return refuse(request, model, body, problem)
        budget, level = field(thinking, "thinkingBudget"), field(thinking, "thinkingLevel")
        emu_req = EmuRequest(
            model=model, n=count, max_tokens=int(gen.get("maxOutputTokens") or 8192),
            prompt_text=chat_text(turns, continue_last=True), temperature=gen.get("temperature"), seed=gen.get("seed"),
            stop=list(gen.get("stopSequences") or []), has_prefill=turns[-1][0] == "assistant",
            api_key=request.headers.get("x-goog-api-key") or request.query.get("key"), body=body,
            thinking_budget=budget if isinstance(budget, int) and budget >= 0 else None,
            thinking_level=str(level).lower() if level is not None else None,
        )
        result = await emu.handle(emu_req, request.path)
        if result.status != 200:
            return _error(result, emu.config.limits.retry_after)
        usage: dict[str, Any] = {
            "promptTokenCount": result.cache.total,
            "candidatesTokenCount": result.output_tokens,
            "totalTokenCount": result.cache.total + result.output_tokens + result.reasoning_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": result.cache.total}],
        }
        if result.cache.read:
            usage["cachedContentTokenCount"] = result.cache.read
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": result.cache.read}]
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

    async def stream(request: web.Request) -> web.Response:
        # OmniOPD's Gemini adapter does not stream; say so instead of a bare 404.
        return error_response(400, "the OmniOPD emulator does not serve streamGenerateContent; use generateContent")

    return [
        route
        for version in VERSIONS
        for route in (
            web.post(f"/{version}/models/{{model:[^/:]+}}:generateContent", generate),
            web.post(f"/{version}/models/{{model:[^/:]+}}:streamGenerateContent", stream),
            web.get(f"/{version}/models/{{model:[^/:]+}}", model_info),
        )
    ]
