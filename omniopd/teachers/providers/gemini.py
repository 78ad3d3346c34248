"""Google Gemini API (`generateContent`).

`candidateCount` is at most 8 on 2.5 models, so N above 8 is split into several requests;
with caching on, the first goes alone so the others read its implicit-cache entry.
Thinking follows the model's family (omniopd/providers.py): Gemini 2.5 takes a token
budget (`thinkingBudget`: the teacher's `reasoning_tokens`, 0 = off where the model allows
it), Gemini 3 a level (`thinkingLevel`: `thinking_level`, default the lowest). Thoughts are
billed as output and count against `maxOutputTokens`. Default mode prefill: a trailing
`model` turn holding the prefix, continued by the model; instruction form as the fallback.
The API version is the URL path: `/v1beta` by default, `/v1` with `api_version: v1`.

There are no rate-limit headers: a 429 carries `RetryInfo.retryDelay` in its body, and a
per-day quota violation (`QuotaFailure` with a *PerDay* quota id) is fatal, not
retryable, because it refills only tomorrow.

Usage: promptTokenCount includes cachedContentTokenCount (implicit caching, no write
premium); candidatesTokenCount excludes thoughtsTokenCount.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from omniopd.providers import PROVIDER_SPECS
from omniopd.teachers.client import TeacherClient, _Call
from omniopd.teachers.httpinfo import parse_duration
from omniopd.teachers.prompting import INSTRUCTION_TAIL
from omniopd.teachers.types import Usage
from omniopd.teachers.wire import (
    HttpRequest,
    Malformed,
    Parsed,
    Plan,
    ProviderError,
)


def gemini_usage(meta: dict[str, Any] | None) -> Usage | None:
    if not isinstance(meta, dict):
        return None
    prompt = int(meta.get("promptTokenCount") or 0)
    cached = int(meta.get("cachedContentTokenCount") or 0)
    return Usage(
        input=prompt - cached,
        cached_input=cached,
        output=int(meta.get("candidatesTokenCount") or 0),
        reasoning=int(meta.get("thoughtsTokenCount") or 0),
    )


class GeminiClient(TeacherClient):
    spec = PROVIDER_SPECS["gemini"]

    @property
    def root(self) -> str:
        """The versioned API root: the base URL if it names a version (/v1, /v1beta), else
        the base URL plus the teacher's `api_version` (default v1beta, omniopd/providers.py)."""
        if urlsplit(self.base_url).path.endswith(("/v1beta", "/v1")):
            return self.base_url
        assert self.api_version is not None
        return f"{self.base_url}/{self.api_version.name}"

    def auth_headers(self) -> dict[str, str]:
        # The key goes in a header, never in the URL, so URLs in errors and logs are safe.
        return {"x-goog-api-key": self.api_key.reveal()} if self.api_key is not None else {}

    def build_request(self, plan: Plan, n: int, call: _Call, seq: int, stream: bool) -> HttpRequest:
        if plan.mode == "prefill":
            contents = [{"role": "user", "parts": [{"text": plan.prompt}]}]
            if plan.body:
                contents.append({"role": "model", "parts": [{"text": plan.body}]})
        else:
            contents = [{"role": "user", "parts": [{"text": plan.body + INSTRUCTION_TAIL}]}]
        generation: dict[str, Any] = {
            "candidateCount": n,
            "maxOutputTokens": call.max_new_tokens + self.reasoning_tokens,
        }
        # Thoughts count against maxOutputTokens, so the reasoning allowance bounds the bill.
        if self.thinking.budget is not None:
            generation["thinkingConfig"] = {"thinkingBudget": self.thinking.budget}
        elif self.thinking.level is not None:
            generation["thinkingConfig"] = {"thinkingLevel": self.thinking.level.upper()}
        rules = self.spec.sampling
        if call.temperature is not None:
            generation["temperature"] = call.temperature
        if call.stop:
            generation["stopSequences"] = rules.stops(call.stop)
        if call.seed is not None and rules.seed:
            generation["seed"] = call.seed + seq
        body = {"contents": contents, "generationConfig": generation}
        return HttpRequest("POST", f"{self.root}/models/{self.model}:generateContent", body)

    def parse_response(self, plan: Plan, body: bytes, stream: bool) -> Parsed:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise Malformed(f"not JSON ({exc})") from None
        candidates = data.get("candidates")
        if not isinstance(candidates, list):
            raise Malformed("no `candidates` list")
        texts, reasons = [], []
        for cand in sorted(candidates, key=lambda c: c.get("index", 0)):
            parts = (cand.get("content") or {}).get("parts") or []
            # Thought summaries (thought: true) are not part of the answer.
            texts.append("".join(p.get("text", "") for p in parts if not p.get("thought")))
            reasons.append(str(cand.get("finishReason") or ""))
        return Parsed(texts, reasons, gemini_usage(data.get("usageMetadata")))

    def request_id(self, headers: Any) -> str | None:
        return headers.get("x-request-id") or headers.get("x-goog-request-id")

    def classify_error(self, status: int, headers: Any, body: bytes) -> ProviderError:
        info = super().classify_error(status, headers, body)
        if status != 429:
            return info
        try:
            details = (json.loads(body).get("error") or {}).get("details") or []
        except (ValueError, AttributeError):
            details = []
        for detail in details:
            kind = str(detail.get("@type", ""))
            if kind.endswith("RetryInfo") and info.retry_after_s is None:
                delay = parse_duration(str(detail.get("retryDelay", "")))
                if delay is not None:
                    info = replace(info, retry_after_s=delay)
            if kind.endswith("QuotaFailure"):
                ids = [str(v.get("quotaId", "")) for v in detail.get("violations") or []]
                if any("PerDay" in q for q in ids):
                    info = replace(info, retryable=False, quota_exhausted=True, error_class="quota")
        return info

    async def context_window(self) -> int | None:
        data = await self.get_json(f"{self.root}/models/{self.model}")
        value = (data or {}).get("inputTokenLimit")
        return value if isinstance(value, int) else None
