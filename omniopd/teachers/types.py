"""The records that cross the teacher boundary: usage, one HTTP attempt, a call's result,
and the errors a call can end with (the budget guard around every attempt is
omniopd/teachers/budget.py).

Billing rule, shared by the adapters and whoever keeps the ledger: every HTTP attempt is
reported exactly once, with a `status` that says how it is billed:

- "ok": the provider answered and reported usage; bill `usage` (even if the texts were
  empty and the attempt is retried).
- "failed": the provider refused or the request never left (429, 4xx, 5xx, connection
  refused); nothing was billed.
- "unknown": the request was sent but we cannot tell what the provider billed (timeout
  after sending, dropped connection, unparseable 200 body); the ledger keeps the attempt
  charged at its reservation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from omniopd.config import ContinuationMode

AttemptStatus = Literal["ok", "failed", "unknown"]


@dataclass(frozen=True)
class Usage:
    """Normalised token usage of one attempt. The five counts are disjoint: billed input
    is `input + cached_input + cache_write`, billed output is `output + reasoning`."""

    input: int = 0
    """Input tokens billed at the full input price (neither read from nor written to a cache)."""
    cached_input: int = 0
    """Input tokens read from the provider's prompt cache."""
    cache_write: int = 0
    """Input tokens written to the prompt cache (Anthropic bills these at a premium)."""
    output: int = 0
    """Visible output tokens."""
    reasoning: int = 0
    """Reasoning/thinking tokens (billed as output, not returned as text)."""

    @property
    def total_input(self) -> int:
        return self.input + self.cached_input + self.cache_write

    @property
    def total_output(self) -> int:
        return self.output + self.reasoning

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input + other.input,
            self.cached_input + other.cached_input,
            self.cache_write + other.cache_write,
            self.output + other.output,
            self.reasoning + other.reasoning,
        )


@dataclass(frozen=True)
class AttemptEstimate:
    """What one HTTP attempt may cost, known before it is sent (for reservations and
    rate-limit debits). `input_tokens_max` bounds the billed input of the request;
    `output_tokens_max` = n * (max new tokens + reasoning allowance)."""

    key: str
    """Idempotency key of the attempt: unique per attempt, `<call key>/<seq>`."""
    provider: str
    """Provider kind (a key of omniopd.providers.PROVIDER_SPECS)."""
    model: str
    n: int
    """Continuations requested by this attempt."""
    input_tokens_max: int
    """Upper bound of the billed input tokens (UTF-8 bytes + template allowance)."""
    input_tokens_est: int
    """Closer estimate of the input tokens (used to debit rate limits)."""
    output_tokens_max: int
    """Upper bound of the billed output tokens, reasoning included."""
    cache_write_possible: bool
    """The request may write the provider's cache (priced at the cache-write rate)."""


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt, as the ledger records it. Never holds an API key or auth header.
    `usage` is what the provider reported (all zeros unless status == "ok")."""

    key: str
    provider: str
    model: str
    seq: int
    """Position of this attempt within its call (0, 1, ...)."""
    status: AttemptStatus
    mode: ContinuationMode
    """Continuation mode the request used."""
    n_requested: int
    n_texts: int
    """Non-empty continuations this attempt produced (kept by the call)."""
    usage: Usage
    latency_s: float
    http_status: int | None = None
    error_class: str | None = None
    """rate_limited, server_error, timeout, connection, malformed, empty, prefill_rejected,
    bad_request, sampling_refused, thinking_refused, refused, auth, not_found, quota, budget,
    cancelled; None when the attempt fully succeeded (omniopd/teachers/httpinfo.py)."""
    error: str | None = None
    """Short, scrubbed description of what went wrong."""
    request_id: str | None = None
    """The provider's request id (response header), for support tickets."""
    retry_after_s: float | None = None
    """Delay the provider asked for (Retry-After, retry-after-ms, RetryInfo.retryDelay)."""
    estimate: AttemptEstimate | None = None


@dataclass(frozen=True)
class Continuations:
    """The result of one `continue_prefix` call. texts and finish_reasons have one length
    (n on success; fewer in an error's `partial`); every attempt made is in `attempts`."""

    texts: list[str]
    finish_reasons: list[str]
    attempts: list[Attempt]
    mode: ContinuationMode
    """Continuation mode of the last successful attempt (after any prefill fallback)."""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.finish_reasons):
            raise ValueError("texts and finish_reasons must have one length")

    @property
    def usage(self) -> Usage:
        """Billed usage summed over attempts with status ok."""
        total = Usage()
        for attempt in self.attempts:
            if attempt.status == "ok":
                total = total + attempt.usage
        return total


# ----------------------------------------------------------------------- errors


class TeacherError(Exception):
    """A teacher call that did not produce all its continuations. `partial` holds the
    texts obtained so far and every attempt made, so nothing paid for is lost."""

    def __init__(self, message: str, partial: Continuations | None = None):
        super().__init__(message)
        self.partial = partial


class BudgetExhausted(TeacherError):
    """A spend cap refused the reservation of the next attempt (chunk -> skipped_budget)."""


class RetriesExhausted(TeacherError):
    """Retryable failures (429, 5xx, timeouts, bad bodies, empty texts) beyond the retry limit."""


class FatalProviderError(TeacherError):
    """An error retrying cannot fix (bad key, bad request, unknown model); the message says what to fix."""


class QuotaExhausted(FatalProviderError):
    """A quota that does not refill within minutes (e.g. Gemini per-day quota)."""


# ---------------------------------------------------------------------- secrets


class ApiKey:
    """An API key that never shows itself: repr/str print '***'; `reveal()` is used only
    when building the auth header of a request."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    @classmethod
    def from_env(cls, env_name: str | None, *, required: bool = True) -> ApiKey | None:
        """Read the key from the environment variable named in the config."""
        if not env_name:
            if required:
                raise FatalProviderError("this teacher needs an API key: set `api_key_env` in its config")
            return None
        value = os.environ.get(env_name, "")
        if not value:
            if required:
                raise FatalProviderError(f"environment variable {env_name} (the teacher's api_key_env) is not set or empty")
            return None
        return cls(value)

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """`text` with every occurrence of the key (and of its long fragments) masked."""
        return scrub(text, [self._value])

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__

    def __reduce__(self):  # never pickled into task payloads or results
        raise TypeError("ApiKey cannot be pickled; pass the env var name instead")


def scrub(text: str, secrets: Sequence[str]) -> str:
    """Mask secrets in `text`, including fragments of 8+ characters (providers echo keys
    partly, e.g. 'sk-abc...wxyz')."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "***")
        if len(secret) >= 16:
            # Head and tail fragments, as error messages quote them.
            for frag in (secret[:8], secret[-8:]):
                text = text.replace(frag, "***")
    return text
