"""Anthropic Messages API.

No `n`: N continuations are N requests. Default mode prefill: the student prefix is a
trailing assistant turn, which the model continues; it must not end in whitespace, so
the whitespace is moved out and removed from the continuations' fronts. Models that
reject prefill (Claude 4.6+) answer 400; the client then switches to the instruction
form for that model and remembers it (docs/teachers.md, "Providers").

Caching: `cache_control` breakpoints after the prefix blocks (the previous chunk's
prefix and the new text, see `PrefixMemory`), so a chunk reads what the previous chunk
of the same trajectory wrote. A cache entry is usable only once the first response has
started, so the first request goes alone (streamed, to learn early that it started) and
the other N-1 follow: the prefix is written once and read N-1 times.

Usage: input_tokens is the uncached part; cache_creation_input_tokens and
cache_read_input_tokens are separate; output_tokens includes any thinking.

Version and sampling: the `anthropic-version` header is the teacher's `api_version`
(default 2026-10-21, which has no temperature); a temperature is sent only where the
model and version accept it, and 1.0, the API's default, never (omniopd/providers.py).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from omniopd.providers import PROVIDER_SPECS
from omniopd.teachers.client import TeacherClient, _Call
from omniopd.teachers.httpinfo import seconds_until
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

_EPHEMERAL = {"type": "ephemeral"}
_DIMS = {"requests": "requests", "input-tokens": "input", "output-tokens": "output", "tokens": "tokens"}
_SNAPSHOT_HEADERS = {
    dim: (f"anthropic-ratelimit-{name}-limit", f"anthropic-ratelimit-{name}-remaining") for name, dim in _DIMS.items()
}


def anthropic_usage(usage: dict[str, Any] | None) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    return Usage(
        input=int(usage.get("input_tokens") or 0),
        cached_input=int(usage.get("cache_read_input_tokens") or 0),
        cache_write=int(usage.get("cache_creation_input_tokens") or 0),
        output=int(usage.get("output_tokens") or 0),
    )


class AnthropicClient(TeacherClient):
    spec = PROVIDER_SPECS["anthropic"]

    @staticmethod
    def normalise_base_url(url: str) -> str:
        url = url.rstrip("/")
        return url[: -len("/v1")] if urlsplit(url).path.endswith("/v1") else url

    def auth_headers(self) -> dict[str, str]:
        # The version decides what a request may carry (2026-10-21: no temperature); it is
        # the teacher's `api_version`, by default the registry's first (omniopd/providers.py).
        assert self.api_version is not None
        headers = {"anthropic-version": self.api_version.name}
        if self.api_key is not None:
            headers["x-api-key"] = self.api_key.reveal()
        return headers

    def _blocks(self, texts: list[str], cached: int) -> list[dict[str, Any]]:
        """Text blocks; the first `cached` of them end in a cache breakpoint."""
        blocks = []
        for i, text in enumerate(texts):
            block: dict[str, Any] = {"type": "text", "text": text}
            if self.cache and i < cached:
                block["cache_control"] = _EPHEMERAL
            blocks.append(block)
        return blocks

    def build_request(self, plan: Plan, n: int, call: _Call, seq: int, stream: bool) -> HttpRequest:
        if plan.mode == "prefill":
            if plan.body:
                messages = [
                    {"role": "user", "content": self._blocks([plan.prompt], 0)},
                    {"role": "assistant", "content": self._blocks(plan.segments, len(plan.segments))},
                ]
            else:  # nothing to prefill: the answer starts from scratch
                messages = [{"role": "user", "content": self._blocks([plan.prompt], 1)}]
        else:
            texts = [*plan.segments, INSTRUCTION_TAIL]
            messages = [{"role": "user", "content": self._blocks(texts, len(plan.segments))}]
        body: dict[str, Any] = {"model": self.model, "max_tokens": call.max_new_tokens + self.reasoning_tokens, "messages": messages}
        if call.temperature is not None:  # only where model and version accept it
            body["temperature"] = call.temperature
        if call.stop:
            body["stop_sequences"] = self.spec.sampling.stops(call.stop)
        if stream:
            body["stream"] = True
        return HttpRequest("POST", f"{self.base_url}/v1/messages", body, stream=stream)

    def parse_response(self, plan: Plan, body: bytes, stream: bool) -> Parsed:
        if stream:
            return self._parse_stream(body)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise Malformed(f"not JSON ({exc})") from None
        if data.get("type") != "message" or not isinstance(data.get("content"), list):
            raise Malformed("not a `message` object")
        text = "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
        return Parsed([text], [str(data.get("stop_reason") or "")], anthropic_usage(data.get("usage")))

    def _parse_stream(self, body: bytes) -> Parsed:
        """Server-sent events: message_start (input usage), text deltas, message_delta
        (stop reason, output tokens), message_stop. An `error` event means the request
        broke off after it was billed in part: malformed, so the attempt stays unknown."""
        usage: dict[str, Any] = {}
        parts: list[str] = []
        reason = ""
        complete = False
        for line in body.decode("utf-8", "replace").splitlines():
            if not line.startswith("data:"):
                continue
            try:
                event = json.loads(line[5:].strip())
            except ValueError as exc:
                raise Malformed(f"bad event in stream ({exc})") from None
            kind = event.get("type")
            if kind == "message_start":
                usage.update(event["message"].get("usage") or {})
            elif kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
                parts.append(event["delta"]["text"])
            elif kind == "message_delta":
                reason = event.get("delta", {}).get("stop_reason") or reason
                usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            elif kind == "message_stop":
                complete = True
            elif kind == "error":
                raise Malformed(f"stream error event: {event.get('error', {}).get('type')}")
        if not complete:
            raise Malformed("stream ended before message_stop")
        return Parsed(["".join(parts)], [reason], anthropic_usage(usage))

    def error_message(self, body: bytes) -> str:
        try:
            data = json.loads(body)
            err = data.get("error") or {}
            return f"{err.get('type', 'error')}: {err.get('message', '')}"
        except (ValueError, AttributeError):
            return body[:200].decode("utf-8", "replace")

    def request_id(self, headers: Any) -> str | None:
        return headers.get("request-id")

    def rate_snapshot(self, headers: Any) -> RateLimitSnapshot | None:
        return RateLimitSnapshot.from_headers(headers, _SNAPSHOT_HEADERS)

    def classify_error(self, status: int, headers: Any, body: bytes) -> ProviderError:
        info = super().classify_error(status, headers, body)
        if status == 429 and info.retry_after_s is None:
            resets = [
                seconds_until(headers[f"anthropic-ratelimit-{name}-reset"])
                for name in _DIMS
                if headers.get(f"anthropic-ratelimit-{name}-remaining") == "0" and headers.get(f"anthropic-ratelimit-{name}-reset")
            ]
            resets = [r for r in resets if r is not None]
            if resets:
                info = replace(info, retry_after_s=max(resets))
        return info

    async def context_window(self) -> int | None:
        data = await self.get_json(f"{self.base_url}/v1/models/{self.model}")
        value = (data or {}).get("max_input_tokens")
        return value if isinstance(value, int) else None
