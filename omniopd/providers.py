"""The provider registry: every fact about a teacher provider that code outside its adapter
needs, one frozen `ProviderSpec` per provider in one plain dict, `PROVIDER_SPECS`.

Who reads it: config validation (`TeacherConfig.kind`, the continuation modes a kind
accepts, whether an API key is required), the `omniopd teacher` CLI, the adapters in
`omniopd/teachers/providers/` (candidates per request, first request alone, base URL,
sampling rules), the cost forecast (`omniopd/teachers/forecast.py`: cache rules and
requests per chunk) and the emulator (`omniopd/teachers/emulator/`: which wire module
serves a kind, cache rules, candidate limits, whether a key is required). Nothing else
lists the providers; adding one is the short list in docs/teachers.md, "Adding a provider".

Why here and not under `omniopd/teachers/`: `omniopd.config` reads this registry, and must
stay importable without torch and aiohttp. Importing anything under `omniopd.teachers`
first runs `omniopd/teachers/__init__.py`, which imports the HTTP client (aiohttp) and
`build.py`, which imports `omniopd.config` — a cycle and a heavy import. So this module is
standard library only and imports nothing from OmniOPD. The adapter (code, aiohttp) is
named by import path (`ProviderSpec.client`) and loaded by `omniopd.teachers.providers`.

Names: `omniopd.providers` holds facts (data); `omniopd.teachers.providers` holds the
adapters (code), and its `PROVIDERS` maps a kind to its client class, built from this dict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

ContinuationMode = Literal["raw", "prefill", "instruction"]
"""How a teacher is asked to continue a partial answer (docs/teachers.md, "Providers")."""


@dataclass(frozen=True)
class CacheRule:
    """How a provider caches prompt prefixes; the forecast prices it and the emulator bills by it.

    style none: never; explicit: the client marks breakpoints (Anthropic `cache_control`),
    so caching happens only when the teacher's `cache` setting is on, and writes are billed
    at the cache-write price; implicit: the provider caches prefixes automatically, whatever
    the client does, in boundaries min_tokens, min_tokens + granularity, ... with no write
    charge. Invariant: min_tokens >= 0, granularity >= 1.
    """

    style: Literal["none", "explicit", "implicit"]
    min_tokens: int = 0
    """Shortest cacheable prefix, in tokens."""
    granularity: int = 1
    """Implicit caches hit in steps of this many tokens past `min_tokens`."""
    min_tokens_by_model: tuple[tuple[str, int], ...] = ()
    """(model-name substring, min_tokens) pairs overriding `min_tokens`; the first match wins."""

    def __post_init__(self) -> None:
        if self.min_tokens < 0 or self.granularity < 1:
            raise ValueError(f"CacheRule: min_tokens >= 0 and granularity >= 1 (got {self.min_tokens}, {self.granularity})")

    def for_model(self, model: str) -> CacheRule:
        """The rule for one model: the per-model minimum resolved, no overrides left."""
        min_tokens = next((m for part, m in self.min_tokens_by_model if part in model), self.min_tokens)
        return CacheRule(self.style, min_tokens, self.granularity)

    def boundary(self, tokens: float) -> float:
        """The longest cacheable prefix of a `tokens`-long shared prefix (0 if too short)."""
        if self.style == "none" or tokens < self.min_tokens or tokens <= 0:
            return 0.0
        if self.style == "explicit":
            return tokens
        steps = math.floor((tokens - self.min_tokens) / self.granularity)
        return float(self.min_tokens + steps * self.granularity)


@dataclass(frozen=True)
class SamplingRules:
    """Which sampling parameters a provider accepts, and how our values are fitted to it.

    A configured temperature of None is never sent, on any provider: some reasoning models
    (gpt-5-mini) reject every temperature. Everything else here is per provider.
    """

    max_temperature: float | None = None
    """Higher temperatures are clamped to this (Anthropic accepts [0, 1]); None: no bound."""
    max_stop_sequences: int | None = None
    """Stop sequences past this many are dropped (OpenAI 4, Gemini 5); None: all are sent."""
    seed: bool = True
    """Whether the API takes a sampling seed (Anthropic has none)."""

    def temperature(self, value: float | None) -> float | None:
        """The temperature to send; None means: send none."""
        if value is None or self.max_temperature is None:
            return value
        return min(value, self.max_temperature)

    def stops(self, stop: Sequence[str]) -> list[str]:
        """The stop sequences to send."""
        return list(stop)[: self.max_stop_sequences] if self.max_stop_sequences is not None else list(stop)


@dataclass(frozen=True)
class ProviderSpec:
    """One provider, as everything outside its adapter sees it.

    Invariants (checked on construction): `default_continuation` is one of `modes`;
    `max_candidates` >= 1. The adapter named by `client` declares this same entry as its
    `spec` (tests/test_providers.py checks it), and the emulator has a wire module for `wire`.
    """

    kind: str
    """The config `teachers.<name>.kind`."""
    label: str
    """What the kind means, for help texts."""
    wire: str
    """Request/response format family (openai, anthropic, gemini); the emulator serves a kind with the wire module of this family."""
    client: str
    """Import path of the adapter, `module:Class` (a string, so this module stays light)."""
    default_continuation: ContinuationMode
    """Continuation mode used when the teacher's config sets none (the tested one)."""
    modes: tuple[ContinuationMode, ...]
    """Continuation modes the provider can do; config validation rejects the others."""
    api_key_required: bool
    """Whether a request needs an API key (self-hosted servers usually run without one)."""
    default_base_url: str
    """Base URL when the teacher's config sets none (the public endpoint; localhost for self-hosted)."""
    cache: CacheRule
    """Prompt caching (the values the emulator enforces and the forecast prices)."""
    max_candidates: int
    """Continuations one request may ask for (`n`, `candidateCount`); N above it is split."""
    first_request_alone: bool
    """With caching on and N split into several requests, send the first alone and the rest once
    it has started, so they read the prefix it wrote (concurrent requests all miss the cache)."""
    sampling: SamplingRules = SamplingRules()
    """Which sampling parameters the API accepts."""
    mode_note: str = ""
    """Why a mode is missing from `modes`, appended to the error that rejects it."""

    def __post_init__(self) -> None:
        if self.default_continuation not in self.modes:
            raise ValueError(f"{self.kind}: default continuation {self.default_continuation!r} is not in its modes {self.modes}")
        if self.max_candidates < 1:
            raise ValueError(f"{self.kind}: max_candidates must be >= 1 (got {self.max_candidates})")

    def mode_error(self, mode: str) -> str | None:
        """Why `mode` cannot be used with this provider (None: it can)."""
        if mode in self.modes:
            return None
        note = f" ({self.mode_note})" if self.mode_note else ""
        return f"{self.kind} does not support continuation mode {mode!r}{note}; use one of {', '.join(self.modes)}"


# Haiku 4.5 caches only prefixes of >= 4,096 tokens, most other Claude models 1,024.
_ANTHROPIC_CACHE = CacheRule("explicit", 1024, 1, (("haiku-4-5", 4096), ("haiku-4.5", 4096)))
# OpenAI automatic caching: prefixes of >= 1,024 tokens, in 128-token steps. Self-hosted
# servers (vLLM prefix caching) are priced and emulated with the same rule.
_OPENAI_CACHE = CacheRule("implicit", 1024, 128)
# OpenAI takes at most 4 stop sequences; vLLM takes more, but the adapter is shared.
_OPENAI_SAMPLING = SamplingRules(max_stop_sequences=4)

PROVIDER_SPECS: dict[str, ProviderSpec] = {
    "openai_compat": ProviderSpec(
        kind="openai_compat",
        label="OpenAI-compatible server (vLLM, SGLang, ...)",
        wire="openai",
        client="omniopd.teachers.providers.openai:OpenAICompatClient",
        # raw is exact: the served model's chat template plus the prefix on /v1/completions.
        default_continuation="raw",
        modes=("raw", "prefill", "instruction"),
        api_key_required=False,
        default_base_url="http://127.0.0.1:8000/v1",
        cache=_OPENAI_CACHE,
        max_candidates=1024,
        first_request_alone=False,
        sampling=_OPENAI_SAMPLING,
    ),
    "openai": ProviderSpec(
        kind="openai",
        label="OpenAI",
        wire="openai",
        client="omniopd.teachers.providers.openai:OpenAIClient",
        default_continuation="instruction",
        modes=("instruction", "raw"),
        api_key_required=True,
        default_base_url="https://api.openai.com/v1",
        cache=_OPENAI_CACHE,
        max_candidates=128,  # OpenAI's limit on `n`
        first_request_alone=False,
        sampling=_OPENAI_SAMPLING,
        mode_note="OpenAI chat models do not continue a trailing assistant message, so there is no prefill; "
        "raw is for legacy completion models only",
    ),
    "anthropic": ProviderSpec(
        kind="anthropic",
        label="Anthropic",
        wire="anthropic",
        client="omniopd.teachers.providers.anthropic:AnthropicClient",
        # Claude 4.6+ reject prefill; the client then falls back to instruction by itself.
        default_continuation="prefill",
        modes=("prefill", "instruction"),
        api_key_required=True,
        default_base_url="https://api.anthropic.com",
        cache=_ANTHROPIC_CACHE,
        max_candidates=1,  # no `n`: N continuations are N requests
        # A cache entry is usable only once the response that wrote it has started.
        first_request_alone=True,
        sampling=SamplingRules(max_temperature=1.0, seed=False),
    ),
    "gemini": ProviderSpec(
        kind="gemini",
        label="Google Gemini",
        wire="gemini",
        client="omniopd.teachers.providers.gemini:GeminiClient",
        default_continuation="prefill",
        modes=("prefill", "instruction"),
        api_key_required=True,
        default_base_url="https://generativelanguage.googleapis.com",
        cache=CacheRule("implicit", 1024, 64),
        max_candidates=8,  # candidateCount limit of the 2.5 models
        # Above 8 candidates the requests share their prompt: the first populates the implicit cache.
        first_request_alone=True,
        sampling=SamplingRules(max_stop_sequences=5),
    ),
}
"""Every provider OmniOPD can audit with, by config `kind`; the one list of providers."""


def provider_spec(kind: str) -> ProviderSpec:
    """The registry entry of `kind`; a ValueError naming the known kinds if there is none."""
    spec = PROVIDER_SPECS.get(kind)
    if spec is None:
        raise ValueError(unknown_kind_message(kind))
    return spec


def unknown_kind_message(kind: str | None = None) -> str:
    """The error for a kind not in the registry (without `kind` where the caller shows the value)."""
    named = "" if kind is None else f" {kind!r}"
    return f"unknown provider kind{named}; known kinds: {', '.join(PROVIDER_SPECS)}"
