"""OpenAI and OpenAI-compatible servers (vLLM, SGLang, ...).

openai_compat, default mode raw: `/v1/completions` on the prompt rendered with the
served model's chat template, the student prefix appended, no end-of-turn token; `n`
continuations in one request. Mode prefill uses vLLM's chat extension
(`continue_final_message: true, add_generation_prompt: false`).

openai, default mode instruction: `/v1/chat/completions` with `n`; a trailing assistant
message is not continued by OpenAI chat models, so the partial answer goes in
the user message. `max_completion_tokens` = tokens + the reasoning allowance (gpt-5*,
gpt-6* and the o-series reason first, so config validation requires one); temperature is
omitted when None or 1.0 (the API's default), and a model that accepts only the default
(gpt-5*, o-series) or none (gpt-6*) is refused another at config validation
(omniopd/providers.py). Mode raw is the legacy `/v1/completions` (old models only).
On openai_compat every configured temperature is sent: vLLM's default is the served
model's generation config, not 1.0.

Usage: prompt_tokens includes cached_tokens and cache_write_tokens (gpt-5.6 and later
bill cache writes), completion_tokens includes reasoning_tokens; normalised to disjoint
counts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from omniopd.providers import PROVIDER_SPECS
from omniopd.teachers.client import TeacherClient, _Call
from omniopd.teachers.httpinfo import parse_duration
from omniopd.teachers.prompting import INSTRUCTION_TAIL
from omniopd.teachers.ratelimit import RateLimitSnapshot
from omniopd.teachers.types import Usage
from omniopd.teachers.wire import (
    HttpRequest,
    Malformed,
    Parsed,
    Plan,
    ProviderError,
)

# {dimension: (limit header, remaining header)}
_SNAPSHOT_HEADERS = {dim: (f"x-ratelimit-limit-{dim}", f"x-ratelimit-remaining-{dim}") for dim in ("requests", "tokens")}


def openai_usage(data: dict[str, Any]) -> Usage | None:
    """Normalise an OpenAI `usage` object (None if absent)."""
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)  # gpt-5.6+: billed at the cache-write price
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return Usage(input=prompt - cached - written, cached_input=cached, cache_write=written,
                 output=completion - reasoning, reasoning=reasoning)


class OpenAIClient(TeacherClient):
    spec = PROVIDER_SPECS["openai"]

    @staticmethod
    def normalise_base_url(url: str) -> str:
        url = url.rstrip("/")
        return url + "/v1" if urlsplit(url).path in ("", "/") else url

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key.reveal()}"} if self.api_key is not None else {}

    def _sampling(self, n: int, call: _Call, seq: int, length_key: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "n": n, length_key: call.max_new_tokens + self.reasoning_tokens}
        rules = self.spec.sampling
        if call.temperature is not None:  # only where the model accepts it (omniopd/providers.py)
            body["temperature"] = call.temperature
        if call.stop:
            body["stop"] = rules.stops(call.stop)
        if call.seed is not None and rules.seed:
            body["seed"] = call.seed + seq
        return body

    def _length_key(self) -> str:
        return "max_completion_tokens"

    def build_request(self, plan: Plan, n: int, call: _Call, seq: int, stream: bool) -> HttpRequest:
        if plan.mode == "raw":
            body = self._sampling(n, call, seq, "max_tokens")
            body["prompt"] = plan.body
            return HttpRequest("POST", f"{self.base_url}/completions", body)
        body = self._sampling(n, call, seq, self._length_key())
        if plan.mode == "prefill":
            body["messages"] = [
                {"role": "user", "content": plan.prompt},
                {"role": "assistant", "content": plan.body},
            ]
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        else:
            body["messages"] = [{"role": "user", "content": plan.body + INSTRUCTION_TAIL}]
        self._extra(body, plan)
        return HttpRequest("POST", f"{self.base_url}/chat/completions", body)

    def _extra(self, body: dict[str, Any], plan: Plan) -> None:
        if self.cache:
            # Routes requests sharing this prompt to the same cache shard (better hit rate).
            body["prompt_cache_key"] = hashlib.sha256(plan.prompt.encode()).hexdigest()[:32]

    def parse_response(self, plan: Plan, body: bytes, stream: bool) -> Parsed:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise Malformed(f"not JSON ({exc})") from None
        choices = data.get("choices")
        if not isinstance(choices, list):
            raise Malformed("no `choices` list")
        texts, reasons = [], []
        for choice in sorted(choices, key=lambda c: c.get("index", 0)):
            if "message" in choice:
                text = (choice["message"] or {}).get("content") or ""
            else:
                text = choice.get("text") or ""
            texts.append(str(text))
            reasons.append(str(choice.get("finish_reason") or ""))
        return Parsed(texts, reasons, openai_usage(data))

    def rate_snapshot(self, headers: Any) -> RateLimitSnapshot | None:
        return RateLimitSnapshot.from_headers(headers, _SNAPSHOT_HEADERS)

    def classify_error(self, status: int, headers: Any, body: bytes) -> ProviderError:
        info = super().classify_error(status, headers, body)
        if status != 429:
            return info
        if b"insufficient_quota" in body:  # billing quota, not a rate: retrying cannot help
            return replace(info, retryable=False, quota_exhausted=True, error_class="quota")
        if info.retry_after_s is None:
            # No Retry-After: wait for the reset of whichever limit is exhausted.
            resets = []
            for name in ("requests", "tokens"):
                reset = headers.get(f"x-ratelimit-reset-{name}")
                if reset and headers.get(f"x-ratelimit-remaining-{name}") in ("0", None):
                    seconds = parse_duration(reset)
                    if seconds is not None:
                        resets.append(seconds)
            if resets:
                info = replace(info, retry_after_s=max(resets))
        return info

    async def context_window(self) -> int | None:
        """vLLM lists `max_model_len` per model; OpenAI itself does not publish it."""
        one = await self.get_json(f"{self.base_url}/models/{self.model}")
        listed = await self.get_json(f"{self.base_url}/models") if one is None else {"data": [one]}
        for model in (listed or {}).get("data", []) or []:
            if isinstance(model, dict) and model.get("id") == self.model:
                for key in ("max_model_len", "context_window", "context_length"):
                    if isinstance(model.get(key), int):
                        return model[key]
        return None


class OpenAICompatClient(OpenAIClient):
    spec = PROVIDER_SPECS["openai_compat"]

    def _length_key(self) -> str:
        return "max_tokens"  # vLLM and older servers know max_tokens on chat too

    def _extra(self, body: dict[str, Any], plan: Plan) -> None:
        return None  # self-hosted servers cache prefixes automatically (vLLM prefix caching)
