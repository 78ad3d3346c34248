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
    r"trailing (?:assistant|model)|model turn",
    re.IGNORECASE,
)


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
    """429, 408/409, 5xx are retryable; 401/403 (key), 404 (model), other 4xx are not."""
    from omniopd.teachers.wire import ProviderError

    if status == 429:
        return ProviderError("rate_limited", message, True, parse_retry_after(headers))
    if status in (408, 409):
        return ProviderError("timeout" if status == 408 else "conflict", message, True, parse_retry_after(headers))
    if status >= 500:
        return ProviderError("server_error", message, True, parse_retry_after(headers))
    if status in (401, 403):
        return ProviderError("auth", f"{message} (check the API key in the teacher's api_key_env)", False)
    if status == 404:
        return ProviderError("not_found", f"{message} (check the teacher's model and base_url)", False)
    if status == 413:
        return ProviderError("bad_request", f"{message} (request larger than the model accepts)", False)
    return ProviderError(
        "bad_request", message, False, prefill_rejected=looks_like_prefill_rejection(status, message)
    )
