"""Reading what providers say in headers and error bodies: retry delays, reset times,
error messages, and the common classification of HTTP errors into retryable or not."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omniopd.teachers.wire import ProviderError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_PREFILL_REJECTION = re.compile(
    r"prefill|final assistant|must end with a user|last message must|ends? with an? (?:assistant|model)|"
    r"trailing (?:assistant|model)|model turn|ends? with a user role",
    re.IGNORECASE,
)
# 400s that are about this request's size: the chunk fails, the teacher goes on.
_TOO_LONG = re.compile(
    r"context (?:window|length|limit)|too long|maximum (?:context|model) length|input token count|"
    r"exceeds the maximum|context_length_exceeded",
    re.IGNORECASE,
)
# 400s that are about a setting: every request would get them, so the teacher stops.
_SAMPLING = re.compile(r"temperature|top_p|top_k|sampling", re.IGNORECASE)
_THINKING = re.compile(r"thinking|reasoning", re.IGNORECASE)
_API_KEY = re.compile(r"api[ _-]?key", re.IGNORECASE)


def parse_duration(text: str) -> float | None:
    """Seconds in an OpenAI-style duration ('20ms', '1s', '6m0s', '1h2m3.5s') or a plain number."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def seconds_until(timestamp: str) -> float | None:
    """Seconds from now until an RFC 3339 timestamp (Anthropic's *-reset headers)."""
    try:
        when = datetime.fromisoformat(timestamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - time.time())


def parse_retry_after(headers: Any) -> float | None:
    """Retry delay from `retry-after-ms` (ms), `retry-after` (seconds or HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


def json_error_message(body: bytes) -> str:
    """The human message of an error body ({"error": {"message": ...}} and variants)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
    return json.dumps(data)[:200]


def looks_like_prefill_rejection(status: int, message: str) -> bool:
    return status in (400, 422) and bool(_PREFILL_REJECTION.search(message))


def classify_common(status: int, headers: Any, body: bytes, message: str) -> ProviderError:
    """429, 408/409, 5xx are retryable; 401/403 (key), 404 (model), other 4xx are not.

    A 400/422 is one of: a refused prefill (the client switches to the instruction form);
    `bad_request`, a request too long for the model (only that chunk fails);
    `sampling_refused` / `thinking_refused`, a setting the model or API version refuses; or
    `refused`, anything else. The last three would refuse every request alike, so they stop
    the teacher's audits (workers/audit/service.py) with the provider's message and the
    config keys to look at."""
    from omniopd.teachers.wire import ProviderError

    if status == 429:
        return ProviderError("rate_limited", message, True, parse_retry_after(headers))
    if status in (408, 409):
        return ProviderError("timeout" if status == 408 else "conflict", message, True, parse_retry_after(headers))
    if status >= 500:
        return ProviderError("server_error", message, True, parse_retry_after(headers))
    if status in (401, 403) or (status == 400 and _API_KEY.search(message)):  # Gemini: a bad key is a 400
        return ProviderError("auth", f"{message} (check the API key in the teacher's api_key_env)", False)
    if status == 404:
        return ProviderError("not_found", f"{message} (check the teacher's model and base_url)", False)
    if status == 413:
        return ProviderError("bad_request", f"{message} (request larger than the model accepts)", False)
    if looks_like_prefill_rejection(status, message):
        return ProviderError("bad_request", message, False, prefill_rejected=True)
    if _TOO_LONG.search(message):
        return ProviderError("bad_request", message, False)
    if _SAMPLING.search(message):
        return ProviderError(
            "sampling_refused", f"{message} (the model or API version refuses this sampling setting: "
            "change the teacher's `temperature` or `api_version`)", False,
        )
    if _THINKING.search(message):
        return ProviderError(
            "thinking_refused", f"{message} (the model refuses this thinking setting: change the teacher's "
            "`reasoning_tokens` or `thinking_level`)", False,
        )
    return ProviderError(
        "refused", f"{message} (a refusal OmniOPD does not recognise: check the teacher's config against the "
        "provider's documentation; docs/teachers.md lists what each model accepts)", False,
    )
