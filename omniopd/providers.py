"""The provider registry: every fact about a teacher provider that code outside its adapter
needs, one frozen `ProviderSpec` per provider in one plain dict, `PROVIDER_SPECS`, and
the rules of each provider's model families (`ModelFamily`: which sampling and thinking
settings a model accepts, its cache minimum) and API versions (`ApiVersion`).

Who reads it: config validation (`TeacherConfig.kind`, the continuation modes a kind
accepts, whether an API key is required, which temperature, thinking settings and API
version a model accepts), the `omniopd teacher` CLI, the adapters in
`omniopd/teachers/providers/` (candidates per request, first request alone, base URL,
what to send for a model), the cost forecast (`omniopd/teachers/forecast.py`: cache rules
and requests per chunk) and the emulator (`omniopd/teachers/emulator/`: which wire module
serves a kind, and what it refuses for a model and version). Nothing else lists the
providers or branches on a model name; adding one is the short list in docs/teachers.md,
"Adding a provider". Each model-family rule's source and the date it was read are in
docs/field-notes.md, "Teacher APIs".

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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

ContinuationMode = Literal["raw", "prefill", "instruction"]
"""How a teacher is asked to continue a partial answer (docs/teachers.md, "Providers")."""

TemperaturePolicy = Literal["any", "default_only", "none"]
ThinkingControl = Literal["off", "always", "budget", "level"]


class SettingRefused(ValueError):
    """A teacher setting that the provider refuses for this model or API version; the
    message names the config key to change."""


@dataclass(frozen=True)
class CacheRule:
    """How a provider caches prompt prefixes; the forecast prices it and the emulator bills by it.

    style none: never; explicit: the client marks breakpoints (Anthropic `cache_control`),
    so caching happens only when the teacher's `cache` setting is on, and writes are billed
    at the cache-write price; implicit: the provider caches prefixes automatically, whatever
    the client does, in boundaries min_tokens, min_tokens + granularity, ... with no write
    charge. The minimum of one model is `ProviderSpec.cache_rule(model)`.
    Invariant: min_tokens >= 0, granularity >= 1.
    """

    style: Literal["none", "explicit", "implicit"]
    min_tokens: int = 0
    """Shortest cacheable prefix, in tokens (the provider's default; a model family may raise it)."""
    granularity: int = 1
    """Implicit caches hit in steps of this many tokens past `min_tokens`."""
    reads_limited: bool = True
    """Whether tokens read from the cache count against the input-tokens-per-minute limit
    (Anthropic: not for current models)."""

    def __post_init__(self) -> None:
        if self.min_tokens < 0 or self.granularity < 1:
            raise ValueError(f"CacheRule: min_tokens >= 0 and granularity >= 1 (got {self.min_tokens}, {self.granularity})")

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

    A configured temperature of None is never sent, on any provider; neither is one equal
    to the API's own default (`default_temperature`). Which other values a model accepts is
    its family's `ModelRules.temperature`.
    """

    max_temperature: float | None = None
    """Higher temperatures are clamped to this (Anthropic accepts [0, 1]); None: no bound."""
    max_stop_sequences: int | None = None
    """Stop sequences past this many are dropped (OpenAI 4, Gemini 5); None: all are sent."""
    seed: bool = True
    """Whether the API takes a sampling seed (Anthropic has none)."""
    default_temperature: float | None = None
    """The API's own default temperature: a configured value equal to it is not sent (the
    same request, and the one models that refuse sampling parameters accept). None: the
    value is always sent (vLLM's default is the served model's generation config, not 1.0)."""

    def temperature(self, value: float | None) -> float | None:
        """The temperature clamped to the API's range; None stays None."""
        if value is None or self.max_temperature is None:
            return value
        return min(value, self.max_temperature)

    def stops(self, stop: Sequence[str]) -> list[str]:
        """The stop sequences to send."""
        return list(stop)[: self.max_stop_sequences] if self.max_stop_sequences is not None else list(stop)


@dataclass(frozen=True)
class ModelRules:
    """What the models of one family accept. Adapters send only that, config validation
    refuses a setting outside it (naming the key), and the emulator answers it with the
    real API's 400. Invariant: `levels` is non-empty exactly when thinking == "level";
    0 <= budget_min <= budget_max."""

    temperature: TemperaturePolicy = "any"
    """any: every value in range; default_only: a value other than the API's default is a
    400 (the default itself is never sent); none: any temperature is a 400."""
    thinking: ThinkingControl = "off"
    """off: no thinking unless asked for (OmniOPD never asks); always: the model thinks on
    its own inside the output limit, so it needs `reasoning_tokens`; budget: a token budget
    (Gemini 2.5 `thinkingBudget`); level: a thinking level (Gemini 3 `thinkingLevel`)."""
    budget_off: bool = True
    """thinking == "budget": whether a budget of 0 turns thinking off (gemini-2.5-pro: no)."""
    budget_min: int = 0
    """thinking == "budget": the smallest budget above 0 the model accepts."""
    budget_max: int = 32768
    """thinking == "budget": the largest budget the model accepts."""
    levels: tuple[str, ...] = ()
    """thinking == "level": the levels the model accepts, lowest first ("minimal" ~ off)."""
    cache_min_tokens: int | None = None
    """Shortest cacheable prefix, where it differs from the provider's `CacheRule.min_tokens`."""
    prefill: bool = True
    """Whether the model continues a trailing assistant turn (Claude 4.6 and later refuse)."""
    completion_tokens_only: bool = False
    """OpenAI reasoning models: chat requests must bound output with `max_completion_tokens`
    (`max_tokens` is a 400)."""
    cache_writes_billed: bool = False
    """Implicit caching that bills writes (OpenAI gpt-5.6 and later: an automatic breakpoint,
    writes at the cache-write price): a request may be billed at that price whatever the
    client sends, so its reservation assumes it."""

    def __post_init__(self) -> None:
        if bool(self.levels) != (self.thinking == "level"):
            raise ValueError("ModelRules: `levels` are given exactly when thinking is 'level'")
        if not 0 <= self.budget_min <= self.budget_max:
            raise ValueError(f"ModelRules: need 0 <= budget_min <= budget_max (got {self.budget_min}, {self.budget_max})")


@dataclass(frozen=True)
class ModelFamily:
    """Models whose (lower-cased) name contains a match of `pattern` share `rules`."""

    pattern: str
    """A regular expression searched in the model name, e.g. r"claude-opus-4[-.]7"."""
    label: str
    """The family as error messages name it."""
    rules: ModelRules

    def matches(self, model: str) -> bool:
        return re.search(self.pattern, model.lower()) is not None


@dataclass(frozen=True)
class ApiVersion:
    """One version of a provider's API (the `anthropic-version` header; Gemini's URL path)."""

    name: str
    sampling: bool = True
    """Whether requests of this version may carry temperature, top_p, top_k."""


@dataclass(frozen=True)
class Thinking:
    """What an adapter sends to control thinking: a budget in tokens, a level, or neither."""

    budget: int | None = None
    level: str | None = None


@dataclass(frozen=True)
class ProviderSpec:
    """One provider, as everything outside its adapter sees it.

    Invariants (checked on construction): `default_continuation` is one of `modes`;
    `max_candidates` >= 1; API version names are unique. The adapter named by `client`
    declares this same entry as its `spec` (tests/test_providers.py checks it), and the
    emulator has a wire module for `wire`.
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
    families: tuple[ModelFamily, ...] = ()
    """Model families with their own rules; the first that matches a model name wins."""
    default_rules: ModelRules = ModelRules()
    """The rules of a model no family matches."""
    api_versions: tuple[ApiVersion, ...] = ()
    """API versions a teacher may choose (`api_version`); the first is the default. Empty:
    the provider has no versions to choose."""
    self_hosted: bool = False
    """A server the user runs (vLLM, SGLang): it serves only the models it was started with
    (any other name is a 404), sends no rate-limit headers (hosted APIs send them on every
    response) and words its errors its own way."""

    def __post_init__(self) -> None:
        if self.default_continuation not in self.modes:
            raise ValueError(f"{self.kind}: default continuation {self.default_continuation!r} is not in its modes {self.modes}")
        if self.max_candidates < 1:
            raise ValueError(f"{self.kind}: max_candidates must be >= 1 (got {self.max_candidates})")
        names = [v.name for v in self.api_versions]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.kind}: API version names must be unique (got {names})")

    def mode_error(self, mode: str) -> str | None:
        """Why `mode` cannot be used with this provider (None: it can)."""
        if mode in self.modes:
            return None
        note = f" ({self.mode_note})" if self.mode_note else ""
        return f"{self.kind} does not support continuation mode {mode!r}{note}; use one of {', '.join(self.modes)}"

    # ------------------------------------------------------------ one model's rules

    def family(self, model: str) -> ModelFamily | None:
        """The first family whose pattern matches `model` (None: the provider's default rules)."""
        return next((f for f in self.families if f.matches(model)), None)

    def model_rules(self, model: str) -> ModelRules:
        family = self.family(model)
        return family.rules if family is not None else self.default_rules

    def _named(self, model: str) -> str:
        family = self.family(model)
        return f"{model} ({family.label})" if family is not None else model

    def cache_rule(self, model: str) -> CacheRule:
        """The cache rule of one model: the provider's, with the family's minimum."""
        minimum = self.model_rules(model).cache_min_tokens
        if minimum is None:
            return self.cache
        return CacheRule(self.cache.style, minimum, self.cache.granularity, self.cache.reads_limited)

    def default_mode(self, model: str) -> ContinuationMode:
        """The continuation mode used when the teacher sets none: the provider's default,
        or instruction where the model refuses prefill."""
        mode = self.default_continuation
        if mode == "prefill" and not self.model_rules(model).prefill and "instruction" in self.modes:
            return "instruction"
        return mode

    def api_version(self, name: str | None) -> ApiVersion | None:
        """The API version named `name` (None: the default); None where the provider has none."""
        if not self.api_versions:
            if name is not None:
                raise SettingRefused(f"{self.kind} has no API versions to choose from: remove `api_version`")
            return None
        if name is None:
            return self.api_versions[0]
        for version in self.api_versions:
            if version.name == name:
                return version
        known = ", ".join(v.name for v in self.api_versions)
        raise SettingRefused(f"{self.kind} API version {name!r} is not one OmniOPD knows; set `api_version` to one of {known}")

    def temperature_to_send(self, model: str, value: float | None, api_version: str | None = None) -> float | None:
        """The temperature a request for `model` carries (None: none), or SettingRefused
        naming `temperature` / `api_version` when the provider would refuse the value."""
        if value is None:
            return None
        rules = self.sampling
        value = rules.temperature(value)
        if rules.default_temperature is not None and value == rules.default_temperature:
            return None
        version = self.api_version(api_version)
        default = rules.default_temperature
        fix = f"set `temperature: {default}` (the API's default, which is not sent) or `temperature: null`"
        if version is not None and not version.sampling:
            other = next((v.name for v in self.api_versions if v.sampling), None)
            alternative = f", or `api_version: {other}`" if other else ""
            raise SettingRefused(f"{self.kind} API version {version.name} has no temperature parameter: {fix}{alternative}")
        if self.model_rules(model).temperature != "any":
            raise SettingRefused(f"{self._named(model)} accepts only the API's default temperature: {fix}")
        return value

    def thinking_for(self, model: str, reasoning_tokens: int, level: str | None = None) -> Thinking:
        """What to send to control `model`'s thinking, given the teacher's `reasoning_tokens`
        (the output allowance for thinking) and `thinking_level`; SettingRefused naming the
        key when the model cannot do it."""
        rules = self.model_rules(model)
        named = self._named(model)
        if rules.thinking != "level" and level is not None:
            raise SettingRefused(f"{named} has no thinking levels: remove `thinking_level`")
        if rules.thinking == "off":
            return Thinking()
        if rules.thinking == "always":
            if reasoning_tokens <= 0:
                raise SettingRefused(
                    f"{named} always thinks before it answers, inside its output limit: set `reasoning_tokens` "
                    "to the allowance for its thinking (e.g. 1024), or its continuations come back empty"
                )
            return Thinking()
        if rules.thinking == "budget":
            if reasoning_tokens == 0:
                if not rules.budget_off:
                    raise SettingRefused(
                        f"{named} cannot turn thinking off (a budget of 0 is refused): set `reasoning_tokens` "
                        f"to its thinking budget, {rules.budget_min} to {rules.budget_max}"
                    )
                return Thinking(budget=0)
            low = max(rules.budget_min, 1)
            if not low <= reasoning_tokens <= rules.budget_max:
                off = "0 (thinking off) or " if rules.budget_off else ""
                raise SettingRefused(
                    f"{named} takes a thinking budget of {off}{low} to {rules.budget_max} tokens: set `reasoning_tokens` within it"
                )
            return Thinking(budget=reasoning_tokens)
        chosen = level if level is not None else ("minimal" if "minimal" in rules.levels else rules.levels[0])
        if chosen not in rules.levels:
            raise SettingRefused(f"{named} accepts thinking levels {', '.join(rules.levels)}: set `thinking_level` to one of them")
        if chosen != "minimal" and reasoning_tokens <= 0:
            raise SettingRefused(
                f"{named} thinks at level {chosen!r}, inside its output limit: set `reasoning_tokens` to the allowance "
                "for its thinking (e.g. 1024), or its continuations come back empty"
            )
        return Thinking(level=chosen)


# Model families: each rule's source and the date it was read are in docs/field-notes.md,
# "Teacher APIs". Patterns are searched in the lower-cased model name, first match wins.
_CLAUDE = (
    # Claude 5 (Sonnet 5/5.5, Opus 5/5.5, Haiku 5.5, Fable, Mythos): a non-default
    # temperature is a 400; adaptive thinking is on by default (always on for Opus 5.5 and
    # Fable 5.1); prefill is refused.
    ModelFamily(r"claude-(?:opus|sonnet|haiku|fable|mythos)-[5-9]", "Claude 5 and later",
                ModelRules(temperature="default_only", thinking="always", prefill=False)),
    # Opus 4.7/4.8: sampling parameters deprecated (a non-default temperature is a 400).
    # Opus 4.7's cache minimum is reported as 2,048 and as 4,096: the higher one is kept, so
    # the forecast never counts on a cache hit that does not happen.
    ModelFamily(r"claude-opus-4[-.]7", "Claude Opus 4.7",
                ModelRules(temperature="default_only", cache_min_tokens=4096, prefill=False)),
    ModelFamily(r"claude-opus-4[-.][89]", "Claude Opus 4.8", ModelRules(temperature="default_only", prefill=False)),
    ModelFamily(r"claude-opus-4[-.]6", "Claude Opus 4.6", ModelRules(cache_min_tokens=4096, prefill=False)),
    ModelFamily(r"claude-sonnet-4[-.]6", "Claude Sonnet 4.6", ModelRules(prefill=False)),
    ModelFamily(r"claude-(?:opus-4[-.]5|haiku-4[-.]5)", "Claude Opus 4.5 / Haiku 4.5", ModelRules(cache_min_tokens=4096)),
)
_OPENAI = (
    # GPT-6: temperature only with reasoning effort "none", which OmniOPD does not send.
    ModelFamily(r"(?:^|/)gpt-6", "GPT-6",
                ModelRules(temperature="none", thinking="always", completion_tokens_only=True, cache_writes_billed=True)),
    # GPT-5.6 and later: one automatic cache breakpoint per request, writes billed (1.25x input).
    ModelFamily(r"(?:^|/)gpt-5\.(?:[6-9]|\d\d)", "GPT-5.6 and later",
                ModelRules(temperature="default_only", thinking="always", completion_tokens_only=True,
                           cache_writes_billed=True)),
    # GPT-5 reasoning models and the o-series: temperature 1 only; they reason before answering.
    ModelFamily(r"(?:^|/)gpt-5(?!.*-chat)", "GPT-5",
                ModelRules(temperature="default_only", thinking="always", completion_tokens_only=True)),
    ModelFamily(r"(?:^|/)o[1-9](?:$|-)", "OpenAI o-series",
                ModelRules(temperature="default_only", thinking="always", completion_tokens_only=True)),
)
_GEMINI = (
    ModelFamily(r"gemini-2\.5-pro", "Gemini 2.5 Pro",
                ModelRules(thinking="budget", budget_off=False, budget_min=128, budget_max=32768)),
    ModelFamily(r"gemini-2\.5-flash-lite", "Gemini 2.5 Flash-Lite", ModelRules(thinking="budget", budget_min=512, budget_max=24576)),
    ModelFamily(r"gemini-2\.5-flash", "Gemini 2.5 Flash", ModelRules(thinking="budget", budget_min=1, budget_max=24576)),
    ModelFamily(r"gemini-3\.1-pro", "Gemini 3.1 Pro", ModelRules(thinking="level", levels=("low", "medium", "high"))),
    ModelFamily(r"gemini-3(?:\.\d+)?-pro", "Gemini 3 Pro", ModelRules(thinking="level", levels=("low", "high"))),
    # 3.7 Flash has no "minimal" level (yet); 3.8 Flash caches from 4,096 tokens, its levels unread.
    ModelFamily(r"gemini-3\.7-flash", "Gemini 3.7 Flash", ModelRules(thinking="level", levels=("low", "medium", "high"))),
    ModelFamily(r"gemini-3\.8-flash", "Gemini 3.8 Flash",
                ModelRules(thinking="level", levels=("low", "high"), cache_min_tokens=4096)),
    ModelFamily(r"gemini-3(?:\.[0-6])?-flash", "Gemini 3.x Flash / Flash-Lite",
                ModelRules(thinking="level", levels=("minimal", "low", "medium", "high"))),
    # Any later Gemini: levels, and only the two every Gemini 3 model accepts.
    ModelFamily(r"gemini-(?:[3-9]|\d\d)", "Gemini 3 and later", ModelRules(thinking="level", levels=("low", "high"))),
)

# OpenAI automatic caching: prefixes of >= 1,024 tokens, in 128-token steps. Self-hosted
# servers (vLLM prefix caching) are priced and emulated with the same rule.
_OPENAI_CACHE = CacheRule("implicit", 1024, 128)

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
        # vLLM takes more than 4 stop sequences, but the adapter is shared with OpenAI's.
        sampling=SamplingRules(max_stop_sequences=4),
        self_hosted=True,
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
        sampling=SamplingRules(max_stop_sequences=4, default_temperature=1.0),
        mode_note="OpenAI chat models do not continue a trailing assistant message, so there is no prefill; "
        "raw is for legacy completion models only",
        families=_OPENAI,
    ),
    "anthropic": ProviderSpec(
        kind="anthropic",
        label="Anthropic",
        wire="anthropic",
        client="omniopd.teachers.providers.anthropic:AnthropicClient",
        # Models that refuse prefill (Claude 4.6+) default to instruction; an unknown model
        # that refuses it switches the client to instruction by itself.
        default_continuation="prefill",
        modes=("prefill", "instruction"),
        api_key_required=True,
        default_base_url="https://api.anthropic.com",
        # Most Claude models cache prefixes of >= 1,024 tokens (families raise it); cache
        # reads do not count against the input-tokens-per-minute limit.
        cache=CacheRule("explicit", 1024, 1, reads_limited=False),
        max_candidates=1,  # no `n`: N continuations are N requests
        # A cache entry is usable only once the response that wrote it has started.
        first_request_alone=True,
        sampling=SamplingRules(max_temperature=1.0, seed=False, default_temperature=1.0),
        families=_CLAUDE,
        # 2026-10-21 (the default of current SDKs) removed temperature, top_p and top_k.
        api_versions=(ApiVersion("2026-10-21", sampling=False), ApiVersion("2023-06-01")),
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
        sampling=SamplingRules(max_stop_sequences=5, default_temperature=1.0),
        families=_GEMINI,
        # A model no family names is treated like 2.5 Flash: a token budget, 0 = off.
        default_rules=ModelRules(thinking="budget", budget_max=24576),
        # The URL path: v1beta serves every model (previews and -latest aliases too); v1 is
        # the stable API and the default of google-genai 3.x.
        api_versions=(ApiVersion("v1beta"), ApiVersion("v1")),
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
