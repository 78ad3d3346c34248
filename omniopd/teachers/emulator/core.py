"""The provider-independent part of the emulator: admit a request (key, faults, quotas,
rate limits), account its prompt cache, wait out its latency, generate, and report.

The wire modules translate each provider's JSON into an `EmuRequest` and an `EmuResult`
back into that provider's JSON, headers and error bodies.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from omniopd.providers import PROVIDER_SPECS
from omniopd.teachers.emulator.cache import CacheUse, PromptCache
from omniopd.teachers.emulator.config import FAULTS, EmulatorConfig
from omniopd.teachers.emulator.generators import Generate, from_spec
from omniopd.teachers.ratelimit import LocalRateLimiter, RateCost, Rates
from omniopd.teachers.tokens import count_tokens, truncate_tokens


@dataclass
class EmuRequest:
    """A provider request, parsed. `cache_blocks` is set for explicit caching (Anthropic):
    (text, lifetime in seconds of the breakpoint the piece ends in, or None) pieces whose
    concatenation is `prompt_text`."""

    model: str
    n: int
    max_tokens: int
    prompt_text: str
    temperature: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    has_prefill: bool = False
    cache_blocks: list[tuple[str, float | None]] | None = None
    api_key: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    thinking_budget: int | None = None
    thinking_level: str | None = None


@dataclass
class EmuResult:
    status: int
    request_id: str
    error: str | None = None
    """rate_limited, server_error, overloaded, auth, context, prefill_rejected, quota_day, temperature
    (the wire modules word each as their API does)."""
    message: str = ""
    retry_after_s: float | None = None
    texts: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache: CacheUse = field(default_factory=lambda: CacheUse(0))
    body_fault: str | None = None  # malformed | truncated
    buckets: list[tuple[float, float, float]] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    """Numbers the wire's wording needs (context: prompt tokens, the window, max_tokens)."""


@dataclass
class LogEntry:
    """One request as the emulator saw it (tests read these)."""

    request_id: str
    path: str
    model: str
    body: dict[str, Any]
    status: int = 0
    fault: str | None = None
    error: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    t_start: float = 0.0
    t_end: float = 0.0
    delivered: bool = False
    """A 200 whose well-formed body the server wrote to the client (the client could read its
    usage). Not one the server finished too late: a client that gave up (its timeout) records
    an unknown outcome, and the response then finds its connection closed."""


WELL_FORMED: contextvars.ContextVar[LogEntry | None] = contextvars.ContextVar("omniopd_emulator_well_formed", default=None)
"""The log entry of the well-formed 200 the current request's handler produced; the server
(server.py) takes its `delivered` back if the response cannot be written."""


def chat_text(turns: list[tuple[str, str]], continue_last: bool) -> str:
    """Render chat turns for the generator as `<|role|>\n...` lines. With `continue_last`
    a trailing assistant turn stays open (prefill); otherwise a new assistant turn opens."""
    prefill = continue_last and bool(turns) and turns[-1][0] == "assistant"
    parts = []
    for i, (role, text) in enumerate(turns):
        open_turn = prefill and i == len(turns) - 1
        parts.append(f"<|{role}|>\n{text}" + ("" if open_turn else "\n"))
    if not prefill:
        parts.append("<|assistant|>\n")
    return "".join(parts)


class Emulator:
    """Shared state of one emulated provider endpoint."""

    def __init__(self, config: EmulatorConfig, generator: Generate | None = None):
        self.config = config
        self.spec = PROVIDER_SPECS[config.provider]  # its rules: cache, candidates per request, key
        self.generator = generator or from_spec(config.generator, config.seed)
        self.rng = random.Random(config.seed)
        self.script = list(config.faults.script)
        unknown = [f for f in self.script if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown} in faults.script; known: {', '.join(FAULTS)}")
        self._limiters: dict[str, LocalRateLimiter] = {}
        self._caches: dict[str, PromptCache] = {}
        self._ids = itertools.count(1)
        self._day_requests = 0
        self._generate_lock = asyncio.Lock()
        self.log: list[LogEntry] = []
        self.t0 = time.monotonic()

    # ---------------------------------------------------------------- state

    def limiter(self, model: str) -> LocalRateLimiter | None:
        lim = self.config.limits
        per_min = (lim.requests_per_min, lim.input_tokens_per_min, lim.output_tokens_per_min, lim.tokens_per_min)
        if not any(per_min):
            return None
        if model not in self._limiters:
            values = tuple(float(x or 0.0) for x in per_min)
            rates = Rates(tuple(v / 60.0 for v in values), values, 1.0, lim.burst_s)  # type: ignore[arg-type]
            self._limiters[model] = LocalRateLimiter(rates)
        return self._limiters[model]

    def cache_for(self, model: str) -> PromptCache:
        if model not in self._caches:
            rule = self.spec.cache_rule(model)  # the model family's minimum (omniopd/providers.py)
            cfg = self.config.cache
            self._caches[model] = PromptCache(
                rule.style,
                cfg.min_tokens if cfg.min_tokens is not None else rule.min_tokens,
                cfg.granularity or rule.granularity,
                cfg.ttl_s,
                cfg.enabled,
                bill_writes=self.spec.model_rules(model).cache_writes_billed,
            )
        return self._caches[model]

    def stats(self, timeline: bool = False) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        totals = {"input": 0, "cached_input": 0, "cache_write": 0, "output": 0, "reasoning": 0}
        for entry in self.log:
            by_status[str(entry.status)] = by_status.get(str(entry.status), 0) + 1
            for k in totals:
                totals[k] += entry.usage.get(k, 0)
        out: dict[str, Any] = {"requests": len(self.log), "by_status": by_status, "usage": totals}
        # wall-clock time of the timeline's zero, so other processes can align their clocks
        out["wall_t0"] = time.time() - (time.monotonic() - self.t0)
        if timeline:
            out["timeline"] = [
                [round(e.t_start, 4), round(e.t_end, 4), e.status, e.usage.get("input", 0) + e.usage.get("cached_input", 0) + e.usage.get("cache_write", 0), e.usage.get("output", 0)]
                for e in self.log
            ]
        return out

    def reset(self) -> None:
        self.log.clear()
        self._limiters.clear()
        self._caches.clear()
        self.t0 = time.monotonic()

    # --------------------------------------------------------------- request

    def _draw_fault(self) -> str:
        if self.script:
            return self.script.pop(0)
        f = self.config.faults
        r = self.rng.random()
        for name, p in (("timeout", f.timeout_rate), ("5xx", f.error_rate), ("malformed", f.malformed_rate), ("truncated", f.truncated_rate), ("empty", f.empty_rate)):
            if r < p:
                return name
            r -= p
        return "ok"

    def _rejects_prefill(self, model: str) -> bool:
        """The model's family refuses prefill (Claude 4.6 and later), or the config says so."""
        if not self.spec.model_rules(model).prefill:
            return True
        reject = self.config.faults.reject_prefill
        return reject if isinstance(reject, bool) else model in reject

    def refuse(self, path: str, model: str, body: dict[str, Any], status: int, error: str) -> str:
        """Log a request the wire refused before `handle` (a 4xx of request validation); its id."""
        rid = f"emu-{next(self._ids)}"
        now = time.monotonic() - self.t0
        self.log.append(LogEntry(rid, path, model, body, status=status, error=error, t_start=now, t_end=now))
        return rid

    async def handle(
        self,
        req: EmuRequest,
        path: str,
        on_start: Callable[[EmuResult], Awaitable[None]] | None = None,
    ) -> EmuResult:
        """Admit, account, wait, generate. `on_start` runs when generation starts (streaming)."""
        rid = f"emu-{next(self._ids)}"
        entry = LogEntry(rid, path, req.model, req.body, t_start=time.monotonic() - self.t0)
        self.log.append(entry)
        result = await self._handle(req, rid, entry, on_start)
        entry.status = result.status
        entry.error = result.error
        entry.t_end = time.monotonic() - self.t0
        return result

    async def _handle(self, req: EmuRequest, rid: str, entry: LogEntry, on_start) -> EmuResult:
        cfg = self.config
        if not self._key_ok(req.api_key):
            return EmuResult(401, rid, "auth", f"Incorrect API key provided: {req.api_key}")
        fault = self._draw_fault()
        entry.fault = fault if fault != "ok" else None
        if fault == "refuse":  # a 400 no adapter recognises: the teacher must stop, not retry
            return EmuResult(400, rid, "refused", "This request is not permitted for this organization (injected refusal).")
        if req.has_prefill and self._rejects_prefill(req.model):
            return EmuResult(400, rid, "prefill_rejected", "Prefilling assistant messages is not supported for this model.")
        if cfg.faults.reject_temperature and req.temperature is not None:
            return EmuResult(400, rid, "temperature", "Unsupported value: 'temperature' does not support this value with this model. Only the default (1) value is supported.")
        input_tokens = count_tokens(req.prompt_text)
        if input_tokens + req.max_tokens > cfg.context_window:
            detail = {"tokens": input_tokens, "limit": cfg.context_window, "max_tokens": req.max_tokens}
            return EmuResult(400, rid, "context", f"prompt ({input_tokens} tokens) + max_tokens exceeds the context window {cfg.context_window}", detail=detail)
        if fault == "quota_day" or (cfg.limits.daily_requests is not None and self._day_requests >= cfg.limits.daily_requests):
            return EmuResult(429, rid, "quota_day", "Quota exceeded for metric: generate_content_requests per day", None)
        self._day_requests += 1
        limiter = self.limiter(req.model)
        buckets = limiter.buckets() if limiter else []
        if fault in ("429", "429_no_retry_after"):
            retry = 1.0 if fault == "429" and cfg.limits.retry_after else None
            return EmuResult(429, rid, "rate_limited", "Rate limit reached (injected).", retry, buckets=buckets)
        cache = self.cache_for(req.model)
        if req.cache_blocks is not None:
            use = cache.explicit(req.model, req.cache_blocks, time.monotonic(), touch=False)
        else:
            use = cache.implicit(req.model, req.prompt_text, time.monotonic(), touch=False)
        # Anthropic's input-tokens-per-minute limit leaves cache reads out (`CacheRule.reads_limited`).
        limited_input = input_tokens if self.spec.cache.reads_limited else input_tokens - use.read
        debit = RateCost(1.0, limited_input, req.n * req.max_tokens)
        if limiter is not None:
            wait = limiter.try_acquire_now(debit)
            if wait > 0:
                retry = wait if cfg.limits.retry_after else None
                return EmuResult(429, rid, "rate_limited", "Rate limit reached: requests or tokens per minute.", retry, buckets=limiter.buckets())
        if fault == "5xx":
            # Only Anthropic's API answers 529 overloaded_error.
            kind = "overloaded" if self.spec.wire == "anthropic" and self.rng.random() < 0.5 else "server_error"
            return await self._refund(limiter, debit, EmuResult(529 if kind == "overloaded" else 500, rid, kind, "The server had an error while processing your request."))
        if fault in ("500", "529"):
            return await self._refund(limiter, debit, EmuResult(int(fault), rid, "server_error" if fault == "500" else "overloaded", "Internal server error (injected)."))

        cache.commit(use, time.monotonic())  # admitted: the entries it read are refreshed
        if fault == "timeout":
            await asyncio.sleep(cfg.faults.hang_s)
        lat = cfg.latency
        await asyncio.sleep(lat.ttft_s + self.rng.random() * lat.ttft_jitter_s)
        cache.publish(use.pending, time.monotonic())  # usable once this response has started
        result = EmuResult(200, rid, cache=use, buckets=limiter.buckets() if limiter else [])
        if on_start is not None:
            await on_start(result)
        texts, reasons, reasoning = await self._generate(req, fault)
        result.texts, result.finish_reasons, result.reasoning_tokens = texts, reasons, reasoning
        result.output_tokens = sum(count_tokens(t) for t in texts) + self.config.faults.extra_billed_output_tokens * req.n
        await asyncio.sleep(lat.per_token_s * max((count_tokens(t) for t in texts), default=0))
        if limiter is not None:
            used = RateCost(1.0, limited_input, result.output_tokens + reasoning)
            await limiter.settle(debit, used)
            result.buckets = limiter.buckets()
        result.body_fault = fault if fault in ("malformed", "truncated") else None
        entry.usage = {
            "input": use.uncached, "cached_input": use.read, "cache_write": use.write,
            "output": result.output_tokens, "reasoning": reasoning,
        }
        entry.delivered = result.body_fault is None and fault != "timeout"
        if entry.delivered:
            WELL_FORMED.set(entry)  # taken back by the server if the body cannot be written (server.py)
        return result

    def _key_ok(self, key: str | None) -> bool:
        if self.config.api_key is not None:
            return key == self.config.api_key
        return bool(key) or not self.spec.api_key_required

    @staticmethod
    async def _refund(limiter: LocalRateLimiter | None, debit: RateCost, result: EmuResult) -> EmuResult:
        if limiter is not None:
            await limiter.settle(debit, RateCost(1.0))  # a failed request keeps its slot, not its tokens
        return result

    async def _generate(self, req: EmuRequest, fault: str) -> tuple[list[str], list[str], int]:
        """n texts cut to max_tokens after the reasoning spend and at stop sequences."""
        reasoning = self.config.faults.reasoning_tokens
        if req.thinking_budget is not None:
            reasoning = min(reasoning, req.thinking_budget)
        if req.thinking_level == "minimal":  # Gemini 3: close to no thinking
            reasoning = 0
        budget = req.max_tokens - reasoning
        if fault == "empty" or budget <= 0:
            reason = "length" if budget <= 0 else "stop"
            return [""] * req.n, [reason] * req.n, min(reasoning, req.max_tokens) * req.n
        if getattr(self.generator, "slow", False):
            async with self._generate_lock:
                raw = await asyncio.to_thread(self.generator, req.prompt_text, req.n, budget, req.temperature, req.seed)
        else:
            raw = self.generator(req.prompt_text, req.n, budget, req.temperature, req.seed)
        texts, reasons = [], []
        for text in list(raw)[: req.n]:
            reason = "length"
            for stop in req.stop:
                cut = text.find(stop)
                if cut >= 0:
                    text, reason = text[:cut], "stop"
            clipped = truncate_tokens(text, budget)
            if clipped != text:
                reason = "length"
            elif reason == "length" and count_tokens(text) < budget:
                reason = "stop"
            texts.append(clipped)
            reasons.append(reason)
        return texts, reasons, reasoning * req.n

