"""The teacher client: continue a prefix N times, one reported HTTP attempt at a time.

`TeacherClient.continue_prefix` splits N into requests of at most the provider's
`max_candidates` (omniopd/providers.py: 1 on Anthropic, 8 on Gemini), and runs each
through the same loop: rate limiter -> `guard.reserve` (the attempt's worst case R, from
the price) -> HTTP -> classify -> `guard.settle` (its charge; the store's guard writes the
ledger row) -> retry what is missing. The guard is any `BudgetGuard` (omniopd/teachers/budget.py).

Why the order limiter-then-reservation: a reservation held while waiting out a shared
cool-down would block other workers' budget for nothing; reserving right before sending
keeps reservations as short as the HTTP call itself.

Provider modules implement the wire format (`build_request`, `parse_response`,
`classify_error`, `rate_snapshot`); everything about retries, billing status, limits and
secrets lives here, so it is identical for every provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp

from omniopd.config import ContinuationMode
from omniopd.providers import ProviderSpec, SettingRefused
from omniopd.teachers import httpinfo
from omniopd.teachers.budget import BudgetGuard
from omniopd.teachers.pricing import Price, attempt_cost_micros, reservation_micros
from omniopd.teachers.prompting import (
    INSTRUCTION_TAIL,
    PREFIXES,
    instruction_head,
    rejoin,
    split_trailing_whitespace,
)
from omniopd.teachers.ratelimit import (
    NullRateLimiter,
    RateCost,
    RateLimiter,
    RateLimitSnapshot,
    backoff_delay,
)
from omniopd.teachers.tokens import estimate_tokens, upper_bound_tokens
from omniopd.teachers.types import (
    ApiKey,
    Attempt,
    AttemptEstimate,
    BudgetExhausted,
    Continuations,
    FatalProviderError,
    QuotaExhausted,
    RetriesExhausted,
    TeacherError,
    Usage,
)
from omniopd.teachers.wire import HttpRequest, Malformed, Parsed, Plan, ProviderError

log = logging.getLogger("omniopd.teachers")

_DEFAULT = object()
# Remembered prefill rejections, per (base_url, model): the fallback outlives one client.
_MODE_FALLBACK: dict[tuple[str, str], ContinuationMode] = {}


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one request after retryable failures, with jittered backoff."""

    max_retries: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    empty_stop_retries: int = 1
    """Responses whose every text is empty although the model ended its turn normally are
    retried this many times in a row; after that the end of turn is the teacher's answer
    (empty continuations: the prefix is complete as it stands, e.g. a student chunk written
    after the final answer). Empty texts cut by the length limit are always retried."""


# Finish reasons of a model that ended its turn by itself (OpenAI / vLLM, Anthropic, Gemini).
NATURAL_STOPS = frozenset({"stop", "end_turn", "stop_sequence", "STOP"})


@dataclass
class _Call:
    """State shared by the requests of one `continue_prefix` call."""

    key: str
    prompt: str
    prefix: str
    n: int
    max_new_tokens: int
    temperature: float | None
    """The temperature to send (None: send none): the requested one, fitted by the provider's
    rules (omniopd/providers.py, `ProviderSpec.temperature_to_send`)."""
    stop: tuple[str, ...]
    seed: int | None
    guard: BudgetGuard | None
    price: Price | None
    mode: ContinuationMode
    plans: dict[str, Plan] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    seq: int = 0
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)

    def result(self) -> Continuations:
        return Continuations(list(self.texts), list(self.reasons), sorted(self.attempts, key=lambda a: a.seq), self.mode)


@dataclass
class _Outcome:
    accepted: int = 0
    retry_after_s: float | None = None
    mode_switched: bool = False
    stopped: bool = False
    empty_stops: list[str] = field(default_factory=list)
    """Finish reasons of the empty texts that ended their turn normally (see RetryPolicy)."""
    limiter_actual: RateCost = field(default_factory=lambda: RateCost(0.0))
    """What the rate limiter keeps of the attempt's debit once it is over."""
    cause: str | None = None
    """Why the attempt brought back fewer texts than asked (for the message when retries run out)."""


class TeacherClient:
    """One teacher endpoint. Use as `async with client:`; safe for concurrent calls."""

    spec: ClassVar[ProviderSpec]
    """The adapter's provider facts (omniopd/providers.py): kind, modes, candidates per
    request, base URL, cache rule, sampling rules."""

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: ApiKey | None = None,
        mode: ContinuationMode,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy = RetryPolicy(),
        timeout_s: float = 120.0,
        max_connections: int = 16,
        cache: bool = True,
        reasoning_tokens: int = 0,
        temperature: float | None = 1.0,
        chat_template: Any = None,
        api_version: str | None = None,
        thinking_level: str | None = None,
    ):
        problem = self.spec.mode_error(mode)
        if problem is not None:
            raise FatalProviderError(problem)
        if mode == "prefill" and not self.spec.model_rules(model).prefill and "instruction" in self.spec.modes:
            mode = "instruction"  # the model's family refuses prefill (omniopd/providers.py)
        try:
            self.api_version = self.spec.api_version(api_version)
            self.thinking = self.spec.thinking_for(model, reasoning_tokens, thinking_level)
        except SettingRefused as exc:
            raise FatalProviderError(f"{self.spec.kind} {model}: {exc}") from None
        self.model = model
        self.base_url = self.normalise_base_url(base_url or self.spec.default_base_url)
        self.api_key = api_key
        self.mode = mode
        self.limiter = limiter or NullRateLimiter()
        self.retry = retry
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.cache = cache
        self.reasoning_tokens = reasoning_tokens
        self.temperature = temperature
        self.chat_template = chat_template
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r}, mode={self.mode!r})"

    @property
    def kind(self) -> str:
        return self.spec.kind

    # ------------------------------------------------------------ provider API

    @staticmethod
    def normalise_base_url(url: str) -> str:
        return url.rstrip("/")

    def auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def build_request(self, plan: Plan, n: int, call: _Call, seq: int, stream: bool) -> HttpRequest:
        raise NotImplementedError

    def parse_response(self, plan: Plan, body: bytes, stream: bool) -> Parsed:
        raise NotImplementedError

    def classify_error(self, status: int, headers: Any, body: bytes) -> ProviderError:
        return httpinfo.classify_common(status, headers, body, self.error_message(body))

    def error_message(self, body: bytes) -> str:
        return httpinfo.json_error_message(body)

    def rate_snapshot(self, headers: Any) -> RateLimitSnapshot | None:
        return None

    def request_id(self, headers: Any) -> str | None:
        return headers.get("x-request-id")

    def first_request_alone(self, n: int) -> bool:
        """Send one request and the rest only once it has started (cache written once).
        Asked only when N takes several requests."""
        return self.cache and self.spec.first_request_alone

    @property
    def cache_write_premium(self) -> bool:
        """Whether a request may be billed at the cache-write rate: explicit caching
        writes only where the client marks breakpoints, i.e. with caching on; some models
        bill writes of their automatic caching (omniopd/providers.py, `cache_writes_billed`)."""
        explicit = self.cache and self.spec.cache.style == "explicit"
        return explicit or self.spec.model_rules(self.model).cache_writes_billed

    async def context_window(self) -> int | None:
        """The model's context length if the provider says it; None otherwise."""
        return None

    # --------------------------------------------------------------- plumbing

    @property
    def effective_mode(self) -> ContinuationMode:
        return _MODE_FALLBACK.get((self.base_url, self.model), self.mode)

    def plan(self, prompt: str, prefix: str, mode: ContinuationMode) -> Plan:
        if mode == "instruction":
            head = instruction_head(prompt)
            body = head + prefix
            segments = PREFIXES.segments(self.model, prompt, body) if self.cache else [body]
            return Plan(mode, prompt, prefix, body, "", segments, (body, INSTRUCTION_TAIL))
        if mode == "prefill":
            body, whitespace = split_trailing_whitespace(prefix)
            segments = PREFIXES.segments(self.model, prompt, body) if self.cache and body else [body]
            return Plan(mode, prompt, prefix, body, whitespace, segments, (prompt, body))
        rendered = self.chat_template.render(prompt) if self.chat_template is not None else prompt
        return Plan(mode, prompt, prefix, rendered + prefix, "", [rendered + prefix], (rendered, prefix))

    def _session_for_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections)
            self._session = aiohttp.ClientSession(connector=connector)
            self._session_loop = loop
            self._slots = asyncio.Semaphore(self.max_connections)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
        await self.limiter.aclose()

    async def __aenter__(self) -> TeacherClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def scrub(self, text: str) -> str:
        return self.api_key.scrub(text) if self.api_key is not None else text

    @property
    def where(self) -> str:
        """The teacher's base URL for messages: scheme, host, port and path, never credentials or a query."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"

    async def get_json(self, url: str) -> dict[str, Any] | None:
        """GET a JSON document with auth (discovery calls); None on any failure."""
        session = self._session_for_loop()
        try:
            async with session.get(url, headers=self.auth_headers(), timeout=aiohttp.ClientTimeout(total=min(self.timeout_s, 30))) as resp:
                if resp.status != 200:
                    return None
                return json.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    # ---------------------------------------------------------------- the call

    async def continue_prefix(
        self,
        prompt: str,
        prefix: str,
        n: int,
        max_new_tokens: int,
        temperature: float | None = _DEFAULT,  # type: ignore[assignment]
        stop: Sequence[str] = (),
        seed: int | None = None,
        *,
        guard: BudgetGuard | None = None,
        price: Price | None = None,
        call_key: str | None = None,
    ) -> Continuations:
        """N continuations of `prompt` + `prefix`, each up to `max_new_tokens` tokens.

        Returns exactly n texts, non-empty unless the model ended its turn at once
        repeatedly (`RetryPolicy.empty_stop_retries`), or raises a `TeacherError` whose `partial`
        holds the texts obtained and every attempt made. `call_key` (unique per call, e.g.
        `chunk-17-<uuid>`) prefixes the attempts' idempotency keys `<call_key>/<seq>`.

        With a `guard`, every attempt is reserved at its worst case and settled at its
        charge, both computed from `price` (omniopd/teachers/budget.py); a refusal stops the
        call with `BudgetExhausted` once the attempts in flight have finished."""
        if n < 1 or max_new_tokens < 1:
            raise ValueError(f"n and max_new_tokens must be >= 1 (got n={n}, max_new_tokens={max_new_tokens})")
        if guard is not None and price is None:
            raise ValueError("a budget guard needs the teacher's price (price=teacher_price(...)) to reserve and settle")
        try:  # refused before any attempt: nothing is sent, nothing is charged
            temperature = self.spec.temperature_to_send(
                self.model, self.temperature if temperature is _DEFAULT else temperature,
                self.api_version.name if self.api_version is not None else None,
            )
        except SettingRefused as exc:
            raise FatalProviderError(f"{self.kind} {self.model}: {exc}", Continuations([], [], [], self.effective_mode)) from None
        call = _Call(
            key=call_key or uuid.uuid4().hex,
            prompt=prompt,
            prefix=prefix,
            n=n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop=tuple(stop),
            seed=seed,
            guard=guard,
            price=price,
            mode=self.effective_mode,
        )
        call.plans[call.mode] = self.plan(prompt, prefix, call.mode)
        per_request = self.spec.max_candidates
        sizes = [min(per_request, n - i) for i in range(0, n, per_request)]
        tasks: list[asyncio.Task] = []
        try:
            if len(sizes) > 1 and self.first_request_alone(n):
                started = asyncio.Event()
                first = asyncio.create_task(self._run_request(call, sizes[0], started))
                waiter = asyncio.create_task(started.wait())
                tasks.append(first)
                await asyncio.wait({first, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not (first.done() and first.exception() is not None):
                    tasks += [asyncio.create_task(self._run_request(call, k, None)) for k in sizes[1:]]
            else:
                tasks = [asyncio.create_task(self._run_request(call, k, None)) for k in sizes]
            results = await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise self._pick_error(errors, call.result())
        if len(call.texts) != n:  # cannot happen unless a request stopped without an error
            raise RetriesExhausted(f"got {len(call.texts)} of {n} continuations", call.result())
        return call.result()

    @staticmethod
    def _pick_error(errors: list[BaseException], partial: Continuations) -> BaseException:
        """The error that decides what the caller does: fatal > budget > retries > other."""
        for kind in (FatalProviderError, BudgetExhausted, RetriesExhausted, TeacherError):
            for err in errors:
                if isinstance(err, kind):
                    return type(err)(str(err), partial)
        err = errors[0]
        wrapped = TeacherError(f"teacher call failed: {type(err).__name__}: {err}", partial)
        wrapped.__cause__ = err
        return wrapped

    async def _run_request(self, call: _Call, want: int, started: asyncio.Event | None) -> None:
        """One logical request: attempts until `want` texts are in or the retries run out."""
        retries = empty_streak = 0
        while want > 0:
            if call.stop_event.is_set():
                return
            outcome = await self._attempt(call, want, started)
            if outcome.stopped:
                return
            want -= outcome.accepted
            if want <= 0 or outcome.mode_switched:
                continue
            empty_streak = empty_streak + 1 if outcome.accepted == 0 and len(outcome.empty_stops) >= want else 0
            if empty_streak > self.retry.empty_stop_retries:
                log.info("%s %s: the model ends its turn here %d times in a row; keeping %d empty continuation(s)",
                         self.kind, self.model, empty_streak, want)
                call.texts += [""] * want
                call.reasons += outcome.empty_stops[:want]
                return
            retries += 1
            if retries > self.retry.max_retries:
                raise RetriesExhausted(
                    f"{self.kind} {self.model}: {want} continuation(s) still missing after "
                    f"{self.retry.max_retries} retries; last attempt: {outcome.cause or 'no texts'}"
                )
            delay = backoff_delay(
                retries, base_s=self.retry.backoff_base_s, max_s=self.retry.backoff_max_s, retry_after_s=outcome.retry_after_s
            )
            log.info("%s %s: retry %d in %.2fs (%d missing)", self.kind, self.model, retries, delay, want)
            with contextlib.suppress(TimeoutError):  # woken early if the call is stopping
                await asyncio.wait_for(call.stop_event.wait(), timeout=delay)

    def _estimate(self, plan: Plan, key: str, n: int, call: _Call) -> AttemptEstimate:
        return AttemptEstimate(
            key=key,
            provider=self.kind,
            model=self.model,
            n=n,
            input_tokens_max=upper_bound_tokens(*plan.texts),
            input_tokens_est=estimate_tokens(*plan.texts),
            output_tokens_max=n * (call.max_new_tokens + self.reasoning_tokens),
            cache_write_possible=self.cache_write_premium,
        )

    async def _attempt(self, call: _Call, want: int, started: asyncio.Event | None) -> _Outcome:
        """One HTTP attempt: limiter -> connection slot -> reservation -> request -> report."""
        mode = call.mode
        if mode not in call.plans:  # after a prefill rejection
            call.plans[mode] = self.plan(call.prompt, call.prefix, mode)
        plan = call.plans[mode]
        seq = call.seq
        call.seq += 1
        estimate = self._estimate(plan, f"{call.key}/{seq}", want, call)
        debit = RateCost(1.0, estimate.input_tokens_est, estimate.output_tokens_max)
        if not await self._admit(call, debit):
            return _Outcome(stopped=True)
        # Hold a connection slot before reserving, so a reservation never waits for a
        # pooled connection (and waiting for one never eats the request's timeout).
        self._session_for_loop()
        assert self._slots is not None
        async with self._slots:
            await self._reserve(call, estimate, debit)
            record: dict[str, Any] = dict(
                key=estimate.key, provider=self.kind, model=self.model, seq=seq, mode=mode, n_requested=want, estimate=estimate
            )
            outcome = _Outcome(limiter_actual=debit)  # unknown outcomes keep the whole debit
            t0 = time.monotonic()
            try:
                request = self.build_request(plan, want, call, seq, stream=started is not None)
                fatal = await self._exchange(call, plan, want, request, started, record, outcome)
            finally:  # runs on cancellation too: every accepted start gets its end
                record.setdefault("status", "unknown")
                record.setdefault("usage", Usage())
                record["n_texts"] = outcome.accepted
                record["latency_s"] = time.monotonic() - t0
                outcome.cause = _cause(record)
                attempt = Attempt(**record)
                call.attempts.append(attempt)
                self._log_attempt(attempt)
                await self.limiter.settle(debit, outcome.limiter_actual)
                if call.guard is not None:
                    await call.guard.settle(attempt, attempt_cost_micros(attempt, call.price))
        if fatal is not None:
            call.stop_event.set()
            raise fatal
        return outcome

    async def _admit(self, call: _Call, debit: RateCost) -> bool:
        """Wait for the rate limiter; False if the call stopped meanwhile (budget, fatal).
        A wait abandoned that way leaves its debit in the buckets (a little capacity lost,
        never an excess)."""
        acquire = asyncio.ensure_future(self.limiter.acquire(debit))
        halt = asyncio.ensure_future(call.stop_event.wait())
        await asyncio.wait({acquire, halt}, return_when=asyncio.FIRST_COMPLETED)
        halt.cancel()
        if not acquire.done():
            acquire.cancel()
            return False
        acquire.result()
        return True

    async def _reserve(self, call: _Call, estimate: AttemptEstimate, debit: RateCost) -> None:
        """Reserve the attempt's worst case R; a refusal stops the whole call and refunds the
        rate limiter."""
        if call.guard is None:
            return
        try:
            await call.guard.reserve(estimate, reservation_micros(estimate, call.price))
        except BudgetExhausted:
            call.stop_event.set()
            await self.limiter.settle(debit, RateCost(0.0))
            raise

    async def _exchange(
        self, call: _Call, plan: Plan, want: int, request: HttpRequest, started: asyncio.Event | None, record: dict, outcome: _Outcome
    ) -> TeacherError | None:
        """Send and classify into `record`; returns the fatal error to raise, if any.
        Billing status: refused before sending -> failed; sent, outcome unseen -> unknown."""
        try:
            status, headers, body = await self._send(request, started)
        except asyncio.CancelledError:
            record.update(status="unknown", error_class="cancelled", error="the call was cancelled while the request was in flight")
            raise
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            if isinstance(exc, aiohttp.RedirectClientError):  # the request went out; its redirect was bad
                record.update(status="unknown", error_class="connection", error=self.scrub(f"bad redirect after sending: {exc}"))
                return None
            # aiohttp refuses such a URL before opening a socket: nothing left the machine,
            # nothing is charged, and every later request would fail the same way.
            outcome.limiter_actual = RateCost(0.0)
            message = self.scrub(f"{self.kind} {self.model}: the URL {request.url!r} is not an http(s) URL with a host; fix teachers.<name>.base_url")
            record.update(status="failed", error_class="bad_url", error=message)
            return FatalProviderError(message)
        except aiohttp.ConnectionTimeoutError:
            outcome.limiter_actual = RateCost(0.0)
            record.update(status="failed", error_class="timeout", error="connect timeout (request not sent)")
            return None
        except aiohttp.ClientConnectorError as exc:
            outcome.limiter_actual = RateCost(0.0)
            record.update(status="failed", error_class="connection", error=self.scrub(_connect_error(exc)))
            return None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            record.update(status="unknown", error_class="timeout", error=f"no complete response within {self.timeout_s}s")
            return None
        except (aiohttp.ClientError, OSError) as exc:
            record.update(status="unknown", error_class="connection", error=self.scrub(f"{type(exc).__name__} after sending"))
            return None
        record["http_status"] = status
        record["request_id"] = self.request_id(headers)
        snapshot = self.rate_snapshot(headers)
        if snapshot is not None:
            await self.limiter.observe(snapshot)
        if status == 200:
            outcome.limiter_actual = self._handle_ok(call, plan, want, body, request.stream, record, outcome)
            return None
        outcome.limiter_actual = RateCost(1.0)  # refused: the provider counted no tokens
        return await self._handle_error(call, status, headers, body, record, outcome)

    def _handle_ok(self, call: _Call, plan: Plan, want: int, body: bytes, stream: bool, record: dict, outcome: _Outcome) -> RateCost:
        try:
            parsed = self.parse_response(plan, body, stream)
        except (Malformed, ValueError, KeyError, TypeError, IndexError) as exc:
            record.update(status="unknown", error_class="malformed", error=self.scrub(f"unreadable 200 body: {exc}")[:300])
            return RateCost(1.0, record["estimate"].input_tokens_est, record["estimate"].output_tokens_max)
        texts = [rejoin(plan.whitespace, t) if plan.mode == "prefill" else t for t in parsed.texts]
        good = [(t, r) for t, r in zip(texts, parsed.finish_reasons, strict=True) if t.strip()][:want]
        for text, reason in good:
            call.texts.append(text)
            call.reasons.append(reason)
        outcome.accepted = len(good)
        outcome.empty_stops = [r for t, r in zip(texts, parsed.finish_reasons, strict=True) if not t.strip() and r in NATURAL_STOPS]
        if parsed.usage is None:
            record.update(status="unknown", error_class="malformed", error="200 without usage: billing unknown")
            usage = None
        else:
            record.update(status="ok", usage=parsed.usage)
            usage = parsed.usage
        if len(good) < want:
            missing = want - len(good)
            empty = sum(1 for t in texts if not t.strip())
            record.setdefault("error_class", "empty")
            record.setdefault("error", f"{missing} of {want} continuation(s) missing ({empty} empty)")
        if usage is None:
            return RateCost(1.0, record["estimate"].input_tokens_est, record["estimate"].output_tokens_max)
        return RateCost(1.0, usage.total_input, usage.total_output)

    async def _handle_error(self, call: _Call, status: int, headers: Any, body: bytes, record: dict, outcome: _Outcome) -> TeacherError | None:
        info = self.classify_error(status, headers, body)
        message = self.scrub(info.message)[:300]
        record.update(status="failed", error_class=info.error_class, error=message, retry_after_s=info.retry_after_s)
        outcome.retry_after_s = info.retry_after_s
        # record["mode"] is this attempt's mode: concurrent requests may all be rejected.
        if info.prefill_rejected and record["mode"] == "prefill" and "instruction" in self.spec.modes:
            if call.mode == "prefill":
                log.warning("%s %s rejects assistant prefill; using the instruction form from now on", self.kind, self.model)
            _MODE_FALLBACK[(self.base_url, self.model)] = "instruction"
            call.mode = "instruction"
            outcome.mode_switched = True
            record["error_class"] = "prefill_rejected"
            return None
        if info.quota_exhausted:
            return QuotaExhausted(f"{self.kind} {self.model} at {self.where}: quota exhausted (not retryable): {message}")
        if not info.retryable:
            return FatalProviderError(f"{self.kind} {self.model} at {self.where}: HTTP {status} {info.error_class}: {message}")
        if info.error_class == "rate_limited":
            pause = info.retry_after_s if info.retry_after_s is not None else self.retry.backoff_base_s
            await self.limiter.cool_down(pause)
        return None

    async def _send(self, request: HttpRequest, started: asyncio.Event | None) -> tuple[int, Any, bytes]:
        """POST one request (the caller holds a connection slot); (status, headers, body)."""
        session = self._session_for_loop()
        headers = {"content-type": "application/json", **self.auth_headers(), **request.headers}
        async with session.request(
            request.method,
            request.url,
            json=request.json,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s, connect=min(self.timeout_s, 10.0)),
        ) as resp:
            if started is not None and resp.status == 200:
                started.set()  # streaming: headers arrive once generation has started
            body = await resp.read()
            return resp.status, resp.headers, body

    def _log_attempt(self, attempt: Attempt) -> None:
        log.debug(
            "%s %s attempt %s: %s http=%s error=%s texts=%d/%d latency=%.3fs",
            attempt.provider, attempt.model, attempt.key, attempt.status, attempt.http_status,
            attempt.error_class, attempt.n_texts, attempt.n_requested, attempt.latency_s,
        )


def _connect_error(exc: aiohttp.ClientConnectorError) -> str:
    """What went wrong opening the connection, named: DNS, TLS, refused, unreachable."""
    where = f"{exc.host}:{exc.port}"
    reason = (exc.os_error.strerror or str(exc.os_error)) if exc.os_error is not None else str(exc)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup of {exc.host} failed ({reason}; request not sent)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of {where} rejected ({exc.certificate_error}; request not sent)"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake with {where} failed ({reason}; request not sent)"
    if isinstance(exc.os_error, ConnectionRefusedError):
        return f"connection refused by {where} (nothing listens there?; request not sent)"
    return f"cannot connect to {where} ({reason}; request not sent)"


def _cause(record: dict[str, Any]) -> str | None:
    """One line on an attempt that did not bring every text: its HTTP status and error."""
    error, kind, status = record.get("error"), record.get("error_class"), record.get("http_status")
    if error is None and kind is None:
        return None
    head = f"HTTP {status} " if status is not None else ""
    return f"{head}{kind or 'error'}: {error}" if error else f"{head}{kind}"

