"""Settings of the provider emulator (a test tool, so not part of a run's OmniConfig)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from omniopd.config import ProviderKind

FAULTS = (
    "ok", "429", "429_no_retry_after", "500", "529", "timeout", "malformed", "truncated",
    "empty", "quota_day", "refuse",
)
"""Names accepted in `faults.script` (forced outcomes, consumed one per request)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)


class EmulatorLimits(_Section):
    requests_per_min: float | None = Field(None, gt=0)
    """Requests per minute before 429 (None = unlimited)."""
    input_tokens_per_min: float | None = Field(None, gt=0)
    """Input tokens per minute (counted on arrival)."""
    output_tokens_per_min: float | None = Field(None, gt=0)
    """Output tokens per minute (max_tokens x n debited on arrival, unused part refunded)."""
    tokens_per_min: float | None = Field(None, gt=0)
    """Input + output tokens per minute (OpenAI's TPM)."""
    burst_s: float = Field(60.0, gt=0)
    """Bucket depth in seconds of the limit (providers: a full minute)."""
    retry_after: bool = True
    """Send Retry-After (and retry-after-ms on openai) with 429s."""
    daily_requests: int | None = Field(None, ge=0)
    """Requests per day; beyond it a fatal per-day quota 429 (the Gemini free-tier behaviour)."""


class EmulatorCache(_Section):
    enabled: bool = True
    """Account prompt caching by the provider's rules."""
    min_tokens: int | None = Field(None, ge=0)
    """Minimum cacheable prefix; default: the provider's cache rule in omniopd/providers.py."""
    granularity: int | None = Field(None, ge=1)
    """Implicit caches hit in steps of this many tokens past the minimum; default: the provider's cache rule."""
    ttl_s: float = Field(300.0, gt=0)
    """Entry lifetime, refreshed on every hit (Anthropic: 5 minutes; its `ttl: "1h"` breakpoints live an hour)."""


class EmulatorLatency(_Section):
    ttft_s: float = Field(0.0, ge=0)
    """Time to first token (prefill); cache entries become usable at this point."""
    ttft_jitter_s: float = Field(0.0, ge=0)
    """Uniform extra time to first token, 0..jitter."""
    per_token_s: float = Field(0.0, ge=0)
    """Decode time per output token (of the longest candidate)."""


class EmulatorFaults(_Section):
    error_rate: float = Field(0.0, ge=0, le=1)
    """Probability of a 5xx (500; 529 overloaded on anthropic)."""
    timeout_rate: float = Field(0.0, ge=0, le=1)
    """Probability of hanging `hang_s` before answering (client-side timeout)."""
    hang_s: float = Field(600.0, gt=0)
    """How long a timed-out request hangs."""
    malformed_rate: float = Field(0.0, ge=0, le=1)
    """Probability of a 200 whose body is not JSON (usage billed, unreadable)."""
    truncated_rate: float = Field(0.0, ge=0, le=1)
    """Probability of a 200 whose JSON body is cut off."""
    empty_rate: float = Field(0.0, ge=0, le=1)
    """Probability that every candidate of a response is empty."""
    script: list[str] = []
    """Forced outcomes consumed one per request before random faults apply (see FAULTS)."""
    reject_prefill: bool | list[str] = False
    """Reject assistant prefill with a 400 (true: every model; a list: those models)."""
    reject_temperature: bool = False
    """Reject requests that send temperature (like gpt-5-mini)."""
    reasoning_tokens: int = Field(0, ge=0)
    """Reasoning tokens the model spends before answering (reasoning models)."""
    extra_billed_output_tokens: int = Field(0, ge=0)
    """Output tokens billed per candidate beyond what it generated and beyond the output limit sent: a provider
    billing above the worst case (tests of the overbilling alarm)."""


class EmulatorConfig(_Section):
    provider: ProviderKind = "openai_compat"
    """Provider to stand in for (a kind of omniopd/providers.py): its wire format and rules."""
    api_key: str | None = None
    """Accept only this key (None: any non-empty key; none at all where the provider needs no key, e.g. openai_compat)."""
    seed: int = 0
    """Seed of fault draws, latency jitter and the lorem generator."""
    generator: str = "lorem"
    """Text generator: echo, lorem, scripted:FILE (JSON list or one text per line), hf:MODEL_DIR, py:MODULE:FACTORY."""
    models: list[str] = []
    """Model names served. openai_compat (vLLM) serves only these and answers any other name with vLLM's 404; if
    empty, the first name asked for becomes the one served model. Hosted providers serve any name; these are listed."""
    context_window: int = Field(131072, ge=1)
    """Context length reported by the models endpoint; longer prompts get a 400."""
    limits: EmulatorLimits = EmulatorLimits()
    """Rate limits enforced with real 429s."""
    cache: EmulatorCache = EmulatorCache()
    """Prompt-cache accounting."""
    latency: EmulatorLatency = EmulatorLatency()
    """Response timing."""
    faults: EmulatorFaults = EmulatorFaults()
    """Fault injection."""
