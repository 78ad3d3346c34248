"""What a provider adapter exchanges with the client loop: the call's content in one
continuation mode (`Plan`), one HTTP request, a parsed 200, a classified error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omniopd.config import ContinuationMode
from omniopd.teachers.types import Usage


@dataclass(frozen=True)
class Plan:
    """The content of one call in one continuation mode (the same for all its requests)."""

    mode: ContinuationMode
    prompt: str
    prefix: str
    body: str
    """The prefix as sent: without trailing whitespace in prefill mode."""
    whitespace: str
    """Trailing whitespace moved out of the prefill; removed from continuations' fronts."""
    segments: list[str]
    """`body` (instruction mode: head + prefix) split where the previous chunk's prefix ended."""
    texts: tuple[str, ...]
    """Every text the request carries (for token estimates)."""


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    json: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False


@dataclass(frozen=True)
class Parsed:
    """A 200 response: texts in candidate order; usage None if the provider sent none."""

    texts: list[str]
    finish_reasons: list[str]
    usage: Usage | None


@dataclass(frozen=True)
class ProviderError:
    """A non-200 response, classified."""

    error_class: str
    message: str
    retryable: bool
    retry_after_s: float | None = None
    prefill_rejected: bool = False
    quota_exhausted: bool = False


class Malformed(ValueError):
    """A 200 body that is not the provider's format (truncated, not JSON, missing fields)."""
