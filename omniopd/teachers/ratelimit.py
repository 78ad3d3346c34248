"""Client-side rate limiting shared by every process and run that uses one provider account.

A provider limits an account (an API key; per model for most of them), not a run: two runs
on one key share one allowance. So the buckets are keyed by the `Account` — provider, base
URL, a fingerprint of the API key and the model (`limiter_key`) — never by the run, and
every process of every run that calls with that key takes from the same buckets. The
fingerprint is an HMAC-SHA256 of the key under a fixed label, cut to 16 hex digits: it
tells two keys apart and cannot be turned back into the key (`key_fingerprint`).

Four token buckets per account: requests, input tokens, output tokens and
combined tokens (OpenAI counts input + max output against one TPM limit). Each refills
at `fraction` of its per-minute limit and holds `burst_s` seconds of that rate. An
attempt debits all four at once or none, and the limiter says how long to wait:

- A debit may drive a bucket below zero (a debt); the attempt then waits until the refill
  has repaid the debt up to its own position in the queue (its ticket: the cumulative
  debits including its own). Every process's attempts thus go in arrival order at the
  configured rate, and a large request cannot be starved by a stream of small ones (which
  plain "take it if it fits" buckets do). Waiters re-check now and then, so refunds of
  over-estimates (`settle`) move everyone behind them forward.
- A debit that would queue more than `QUEUE_HORIZON_S` of refill takes nothing from any
  bucket (all-or-nothing) and is told when to ask again; a full bucket always admits, so a
  request bigger than the whole bucket still goes, once.

Debits are conservative (input estimated from text length, output = max tokens) and
corrected with the reported usage after the response (`settle`).

After a 429 every process pauses until one shared resume time (`cool_down`), and the
buckets are emptied, because the provider just told us its own bucket is empty.
Rate-limit headers adapt the buckets (`observe`): a reported limit below the configured
one lowers the rate for ten minutes, a reported remaining below our level lowers it.

`RedisRateLimiter` keeps the state in Redis and does every step in one Lua script (atomic
across processes and hosts; time is the Redis server's clock, so host clocks may differ).
If that Redis goes away, every step of `RedisRateLimiter` waits for it (one warning naming
it, a reminder every 30 s, a line when it is back: omniopd/unreachable.py) instead of
failing: no teacher call goes out without its token, and the settle after an attempt
(which the budget's settle follows) is never skipped, so no attempt escapes the ledger.
`LocalRateLimiter` has the same semantics in one process (embedded single-process runs,
`teacher check`, and the per-process baseline of the benchmark).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from omniopd.config import RateLimitConfig, TeacherConfig
from omniopd.unreachable import Unreachable

log = logging.getLogger("omniopd.ratelimit")
REDIS_RETRY_S = 1.0  # while the rate-limit Redis is away, each step asks again this often

DIMS = ("requests", "input", "output", "tokens")
OVERRIDE_S = 600.0  # how long a lower limit reported by the provider replaces the configured one
QUEUE_HORIZON_S = 60.0  # at most this much refill time may be promised to waiting attempts


@dataclass(frozen=True)
class RateCost:
    """What one attempt takes from the buckets (tokens are counts, requests usually 1)."""

    requests: float = 1.0
    input: float = 0.0
    output: float = 0.0

    @property
    def tokens(self) -> float:
        return self.input + self.output

    def values(self) -> tuple[float, float, float, float]:
        return (self.requests, self.input, self.output, self.tokens)


@dataclass(frozen=True)
class RateLimitSnapshot:
    """Limits and remaining capacity reported by the provider's headers, per dimension
    (keys among DIMS; per-minute limits)."""

    limit: dict[str, float] = field(default_factory=dict)
    remaining: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_headers(cls, headers: Any, names: dict[str, tuple[str, str]]) -> RateLimitSnapshot | None:
        """Read `names` = {dimension: (limit header, remaining header)}; None when the response
        carries none of them (an unparseable value is skipped)."""
        limit, remaining = {}, {}
        for dim, header_pair in names.items():
            for target, header in zip((limit, remaining), header_pair, strict=True):
                raw = headers.get(header)
                if raw is not None:
                    with contextlib.suppress(ValueError):
                        target[dim] = float(raw)
        return cls(limit, remaining) if (limit or remaining) else None


@dataclass(frozen=True)
class Rates:
    """Per-second refill rate (0 = unlimited) and bucket depth in seconds, per dimension."""

    per_s: tuple[float, float, float, float]
    per_min: tuple[float, float, float, float]
    fraction: float
    burst_s: float

    @classmethod
    def from_config(cls, cfg: RateLimitConfig) -> Rates:
        limits = (cfg.requests_per_min, cfg.input_tokens_per_min, cfg.output_tokens_per_min, cfg.tokens_per_min)
        per_min = tuple(float(x or 0.0) for x in limits)
        per_s = tuple(x * cfg.fraction / 60.0 for x in per_min)
        # A bucket must hold at least one request, or nothing ever fits.
        burst = max(cfg.burst_s, 1.0 / per_s[0]) if per_s[0] else cfg.burst_s
        return cls(per_s, per_min, cfg.fraction, burst)  # type: ignore[arg-type]

    @property
    def unlimited(self) -> bool:
        return not any(self.per_s)


class RateLimiter(Protocol):
    """What a teacher client needs from a limiter."""

    async def acquire(self, cost: RateCost) -> None:
        """Wait (sleeping, jittered) until `cost` is debited from every bucket at once."""

    async def settle(self, debited: RateCost, actual: RateCost) -> None:
        """Correct a debit with the actual usage (refund or extra debit)."""

    async def cool_down(self, seconds: float) -> None:
        """Pause every user of these buckets for `seconds` (after a 429)."""

    async def observe(self, snapshot: RateLimitSnapshot) -> None:
        """Adapt to the provider's rate-limit headers."""

    async def cooldown_left(self) -> float:
        """Seconds until a shared cool-down ends (0 if none)."""

    async def aclose(self) -> None: ...


async def _acquire_loop(schedule, ready, cost: RateCost, max_sleep_s: float = 5.0) -> None:
    """`schedule(cost)` -> (debited, wait, ticket); `ready(ticket)` -> wait (cool-downs
    included). Debited: wait for our turn, re-checking as refunds move it earlier.
    Refused: ask again after `wait`."""
    while True:
        debited, wait, ticket = await schedule(cost)
        if debited:
            while wait > 1e-6:  # (float dust must not spin)
                await asyncio.sleep(wait if wait < 0.15 else max(0.1, min(wait / 3, max_sleep_s)))
                wait = await ready(ticket)
            return
        # Jitter spreads refused callers told the same time, so they do not collide.
        await asyncio.sleep(min(wait, max_sleep_s) * random.uniform(1.0, 1.15) + 0.001)


# ------------------------------------------------------------------ in-process


class LocalRateLimiter:
    """The shared-bucket semantics inside one process (asyncio; not thread-safe)."""

    def __init__(self, rates: Rates, clock=time.monotonic):
        self.rates = rates
        self._clock = clock
        self._ts = clock()
        self._override: list[float | None] = [None] * 4
        self._override_until = 0.0
        self._level = [self._cap(i) for i in range(4)]
        self._debited = [0.0] * 4  # cumulative debits: a waiter's ticket is a position in them
        self._cool_until = 0.0

    def _rate(self, i: int) -> float:
        rate = self.rates.per_s[i]
        over = self._override[i]
        if rate and over is not None and self._clock() < self._override_until:
            rate = min(rate, over)
        return rate

    def _cap(self, i: int) -> float:
        return self._rate(i) * self.rates.burst_s

    def _refill(self) -> float:
        now = self._clock()
        elapsed = max(0.0, now - self._ts)
        self._ts = now
        for i in range(4):
            if self._rate(i):
                self._level[i] = min(self._cap(i), self._level[i] + elapsed * self._rate(i))
        return now

    def try_acquire_now(self, cost: RateCost) -> float:
        """Debit `cost` if every bucket holds it (0.0) or return the seconds to wait."""
        now = self._refill()
        if self._cool_until > now:
            return self._cool_until - now
        wait = 0.0
        values = cost.values()
        for i in range(4):
            rate = self._rate(i)
            if not rate:
                continue
            need = min(values[i], self._cap(i))  # a cost above the depth goes when the bucket is full
            if self._level[i] < need:
                wait = max(wait, (need - self._level[i]) / rate)
        if wait > 0:
            return wait
        for i in range(4):
            if self._rate(i):
                self._level[i] -= values[i]
        return 0.0

    def schedule_now(self, cost: RateCost) -> tuple[bool, float, tuple[float, ...] | None]:
        """The client rule: debit all buckets (possibly into debt) and return (True, wait
        for our turn, ticket); or, beyond the queue horizon or in a cool-down, take nothing
        and return (False, when to ask again, None). `try_acquire_now` is the provider rule
        (take only what is there), which the emulator uses."""
        now = self._refill()
        if self._cool_until > now:
            return False, self._cool_until - now, None
        values = cost.values()
        retry = 0.0
        for i in range(4):
            rate = self._rate(i)
            if not rate or self._level[i] >= self._cap(i):
                continue
            floor = -rate * QUEUE_HORIZON_S
            if self._level[i] - values[i] < floor:
                retry = max(retry, (floor - (self._level[i] - values[i])) / rate)
        if retry > 0:
            return False, retry, None
        for i in range(4):
            if self._rate(i):
                self._level[i] -= values[i]
                self._debited[i] += values[i]
        ticket = tuple(self._debited)
        return True, self.ready_now(ticket), ticket

    def ready_now(self, ticket: tuple[float, ...]) -> float:
        """Seconds until the refill reaches `ticket` in every bucket (and no cool-down)."""
        now = self._refill()
        wait = max(0.0, self._cool_until - now)
        for i in range(4):
            rate = self._rate(i)
            if rate:
                credit = self._level[i] + self._debited[i]  # everything ever made available
                wait = max(wait, (ticket[i] - credit) / rate)
        return wait

    async def _schedule(self, cost: RateCost):
        return self.schedule_now(cost)

    async def _ready(self, ticket: tuple[float, ...]) -> float:
        return self.ready_now(ticket)

    async def cooldown_left(self) -> float:
        return max(0.0, self._cool_until - self._clock())

    def buckets(self) -> list[tuple[float, float, float]]:
        """(per-second rate, depth, level) per dimension, refilled to now (0 rate = unlimited)."""
        self._refill()
        return [(self._rate(i), self._cap(i), self._level[i]) for i in range(4)]

    async def acquire(self, cost: RateCost) -> None:
        if not self.rates.unlimited:
            await _acquire_loop(self._schedule, self._ready, cost)

    async def settle(self, debited: RateCost, actual: RateCost) -> None:
        self._refill()
        for i, (d, a) in enumerate(zip(debited.values(), actual.values(), strict=True)):
            if self._rate(i):
                self._level[i] = min(self._cap(i), self._level[i] + d - a)

    async def cool_down(self, seconds: float) -> None:
        now = self._refill()
        self._cool_until = max(self._cool_until, now + seconds)
        self._level = [min(level, 0.0) for level in self._level]

    async def observe(self, snapshot: RateLimitSnapshot) -> None:
        self._refill()
        for i, dim in enumerate(DIMS):
            limit = snapshot.limit.get(dim)
            if limit and self.rates.per_min[i] and limit < self.rates.per_min[i]:
                self._override[i] = limit * self.rates.fraction / 60.0
                self._override_until = self._clock() + OVERRIDE_S
            remaining = snapshot.remaining.get(dim)
            if remaining is not None and self._rate(i):
                self._level[i] = min(self._level[i], remaining)

    async def aclose(self) -> None:
        return None


class NullRateLimiter:
    """No limits (self-hosted teachers with nothing configured)."""

    async def acquire(self, cost: RateCost) -> None:
        return None

    async def settle(self, debited: RateCost, actual: RateCost) -> None:
        return None

    async def cool_down(self, seconds: float) -> None:
        await asyncio.sleep(0)

    async def observe(self, snapshot: RateLimitSnapshot) -> None:
        return None

    async def cooldown_left(self) -> float:
        return 0.0

    async def aclose(self) -> None:
        return None


# ------------------------------------------------------------------ Redis

# One script, four operations on the buckets of one account. KEYS[1]: the state
# hash, KEYS[2]: the shared cool-down (resume time, Redis server seconds). ARGV: op,
# burst_s, fraction, then 4 per-second rates, 4 per-minute limits, then op arguments.
# Numbers are returned as strings: Redis truncates Lua numbers to integers.
_LUA = """
local op = ARGV[1]
local burst = tonumber(ARGV[2])
local fraction = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local st = KEYS[1]
local h = redis.call('HGETALL', st)
local s = {}
for i = 1, #h, 2 do s[h[i]] = tonumber(h[i + 1]) end
local ts = s['ts'] or now
local over_until = s['over_until'] or 0
local rate, cap, lvl, deb = {}, {}, {}, {}
for i = 1, 4 do
  local r = tonumber(ARGV[3 + i])
  local o = s['over' .. i]
  if r > 0 and o and now < over_until and o < r then r = o end
  rate[i] = r
  cap[i] = r * burst
  local l = s['lvl' .. i] or cap[i]
  if r > 0 then l = math.min(cap[i], l + math.max(0, now - ts) * r) end
  lvl[i] = l
  deb[i] = s['deb' .. i] or 0
end
local function save()
  local args = {'ts', tostring(now)}
  for i = 1, 4 do
    table.insert(args, 'lvl' .. i); table.insert(args, tostring(lvl[i]))
    table.insert(args, 'deb' .. i); table.insert(args, tostring(deb[i]))
  end
  redis.call('HSET', st, unpack(args))
  redis.call('EXPIRE', st, 3600)
end
if op == 'acquire' then
  -- ARGV[12..15]: cost; ARGV[16]: queue horizon (s). Returns {debited, wait}.
  local cool = tonumber(redis.call('GET', KEYS[2]) or '0')
  if cool > now then save(); return {'0', tostring(cool - now)} end
  local horizon = tonumber(ARGV[16])
  local retry = 0
  for i = 1, 4 do
    if rate[i] > 0 and lvl[i] < cap[i] then
      local after = lvl[i] - tonumber(ARGV[11 + i])
      local floor = -rate[i] * horizon
      if after < floor then retry = math.max(retry, (floor - after) / rate[i]) end
    end
  end
  if retry > 0 then save(); return {'0', tostring(retry)} end
  local wait = 0
  local out = {'1', '0'}
  for i = 1, 4 do
    if rate[i] > 0 then
      lvl[i] = lvl[i] - tonumber(ARGV[11 + i])
      deb[i] = deb[i] + tonumber(ARGV[11 + i])
      if lvl[i] < 0 then wait = math.max(wait, -lvl[i] / rate[i]) end
    end
    table.insert(out, tostring(deb[i]))  -- the ticket
  end
  save()
  out[2] = tostring(wait)
  table.insert(out, tostring(now))  -- server time of the debit (for measurements)
  return out
elseif op == 'ready' then
  -- ARGV[12..15]: a ticket. Wait until the refill reaches it (and any cool-down is over).
  local cool = tonumber(redis.call('GET', KEYS[2]) or '0')
  local wait = math.max(0, cool - now)
  for i = 1, 4 do
    if rate[i] > 0 then wait = math.max(wait, (tonumber(ARGV[11 + i]) - (lvl[i] + deb[i])) / rate[i]) end
  end
  save()
  return {'1', tostring(wait)}
elseif op == 'cooldown_left' then
  local cool = tonumber(redis.call('GET', KEYS[2]) or '0')
  return {'1', tostring(math.max(0, cool - now))}
elseif op == 'adjust' then
  for i = 1, 4 do
    if rate[i] > 0 then lvl[i] = math.min(cap[i], lvl[i] + tonumber(ARGV[11 + i])) end
  end
  save()
  return {'1', '0'}
elseif op == 'cooldown' then
  local cool = tonumber(redis.call('GET', KEYS[2]) or '0')
  local resume = math.max(cool, now + tonumber(ARGV[12]))
  redis.call('SET', KEYS[2], tostring(resume), 'PX', math.ceil((resume - now) * 1000) + 1000)
  for i = 1, 4 do lvl[i] = math.min(lvl[i], 0) end
  save()
  return {'1', tostring(resume - now)}
elseif op == 'observe' then
  -- ARGV[12..15]: reported per-minute limits (-1 unknown); ARGV[16..19]: remaining (-1 unknown)
  for i = 1, 4 do
    local limit = tonumber(ARGV[11 + i])
    local configured = tonumber(ARGV[7 + i])
    if limit >= 0 and configured > 0 and limit < configured then
      redis.call('HSET', st, 'over' .. i, tostring(limit * fraction / 60), 'over_until', tostring(now + %(override)s))
      rate[i] = math.min(rate[i], limit * fraction / 60)
      cap[i] = rate[i] * burst
      lvl[i] = math.min(lvl[i], cap[i])
    end
    local remaining = tonumber(ARGV[15 + i])
    if remaining >= 0 and rate[i] > 0 then lvl[i] = math.min(lvl[i], remaining) end
  end
  save()
  return {'1', '0'}
end
return redis.error_reply('unknown op ' .. op)
""".replace("%(override)s", str(OVERRIDE_S))


class RedisRateLimiter:
    """The shared buckets of one provider account in Redis, for every process of every run."""

    def __init__(self, rates: Rates, redis_url: str, key: str):
        self.rates = rates
        self.redis_url = redis_url
        self.state_key = f"{key}:buckets"
        self.cooldown_key = f"{key}:cooldown"
        self._redis = None
        self._script = None
        self.outage = Unreachable("rate-limit Redis", log)

    def _client(self):
        if self._redis is None:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(self.redis_url)
            self._script = self._redis.register_script(_LUA)
        return self._script

    async def _eval(self, op: str, extra: list[float]) -> list[bytes]:
        """One atomic step; while Redis does not answer (connection refused or lost, timeout)
        it waits and asks again, so nothing passes the limiter unseen (module docstring)."""
        import redis

        script = self._client()
        args = [op, self.rates.burst_s, self.rates.fraction, *self.rates.per_s, *self.rates.per_min, *extra]
        args = [repr(float(a)) if not isinstance(a, str) else a for a in args]
        while True:
            try:
                reply = await script(keys=[self.state_key, self.cooldown_key], args=args)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                self.outage.failed(self.redis_url, exc, "teacher calls wait for their rate-limit token (and attempts "
                                   "that ended for their settle) until it answers")
                await asyncio.sleep(REDIS_RETRY_S)
                continue
            self.outage.succeeded(self.redis_url, "teacher calls go on")
            return reply

    async def _call(self, op: str, extra: list[float]) -> tuple[bool, float]:
        ok, value = (await self._eval(op, extra))[:2]
        return ok in (b"1", "1"), float(value)

    async def schedule(self, cost: RateCost) -> tuple[bool, float, tuple[float, ...] | None]:
        """One atomic debit: (True, wait for our turn, ticket) or (False, ask again after, None)."""
        reply = await self._eval("acquire", [*cost.values(), QUEUE_HORIZON_S])
        if reply[0] not in (b"1", "1"):
            return False, max(float(reply[1]), 1e-3), None
        return True, float(reply[1]), tuple(float(x) for x in reply[2:6])

    async def ready(self, ticket: tuple[float, ...]) -> float:
        """Seconds until `ticket`'s turn (refunds by others move it earlier)."""
        return (await self._call("ready", list(ticket)))[1]

    async def cooldown_left(self) -> float:
        return (await self._call("cooldown_left", []))[1]

    async def acquire(self, cost: RateCost) -> None:
        if not self.rates.unlimited:
            await _acquire_loop(self.schedule, self.ready, cost)

    async def settle(self, debited: RateCost, actual: RateCost) -> None:
        if self.rates.unlimited:
            return
        delta = [d - a for d, a in zip(debited.values(), actual.values(), strict=True)]
        if any(delta):
            await self._call("adjust", delta)

    async def cool_down(self, seconds: float) -> None:
        await self._call("cooldown", [max(0.0, seconds), 0.0, 0.0, 0.0])

    async def observe(self, snapshot: RateLimitSnapshot) -> None:
        if self.rates.unlimited or not (snapshot.limit or snapshot.remaining):
            return
        limits = [snapshot.limit.get(d, -1.0) for d in DIMS]
        remaining = [snapshot.remaining.get(d, -1.0) for d in DIMS]
        await self._call("observe", limits + remaining)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


_FINGERPRINT_LABEL = b"omniopd rate-limit account v1"
NO_KEY = "nokey"


def key_fingerprint(api_key: str | None) -> str:
    """A non-reversible fingerprint of an API key: HMAC-SHA256 under a fixed label, 16 hex
    digits (64 bits: two keys of one user never collide in practice, and no key can be
    recovered from it, nor guessed: API keys carry over 128 random bits). `NO_KEY` for a
    teacher called without a key (a local vLLM server)."""
    if not api_key:
        return NO_KEY
    return hmac.new(_FINGERPRINT_LABEL, api_key.encode(), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Account:
    """What a provider's rate limit belongs to: the provider, the endpoint (`base_url`, None =
    the provider's public one), the API key (as its `key_fingerprint`, never the key) and the
    model (providers limit each model of an account separately). Every run and process with
    equal accounts shares one set of buckets."""

    provider: str
    base_url: str | None
    key_fingerprint: str
    model: str

    @classmethod
    def of_teacher(cls, cfg: TeacherConfig) -> Account:
        """The account a configured teacher calls with: its kind, base URL and model, and the
        fingerprint of the key now in the environment variable `cfg.api_key_env`."""
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        return cls(cfg.kind, cfg.base_url, key_fingerprint(key), cfg.model)

    @property
    def endpoint_digest(self) -> str:
        """The base URL, normalised (no trailing slash) and hashed: a Redis key carries no URL
        (a URL may hold a password)."""
        url = (self.base_url or "default").rstrip("/")
        return hashlib.sha256(url.encode()).hexdigest()[:12]


def build_limiter(cfg: RateLimitConfig, *, account: Account, redis_url: str | None = None, key_prefix: str = "") -> RateLimiter:
    """The limiter of one provider account: shared through Redis (with every run and process
    using the account) when `redis_url` is given, in-process otherwise; a no-op when no limit
    is configured."""
    rates = Rates.from_config(cfg)
    if rates.unlimited:
        return NullRateLimiter()
    if redis_url:
        return RedisRateLimiter(rates, redis_url, limiter_key(account, key_prefix=key_prefix))
    return LocalRateLimiter(rates)


def limiter_key(account: Account, *, key_prefix: str = "") -> str:
    """The Redis key stem of one account's shared buckets (`:buckets`, `:cooldown`). No run
    name in it: the limit is the account's. `key_prefix` only separates independent
    deployments sharing one Redis (tests), never runs."""
    return (f"{key_prefix}omniopd:ratelimit:{account.provider}:{account.endpoint_digest}:"
            f"{account.key_fingerprint}:{account.model}")


@dataclass(frozen=True)
class BucketLevel:
    """One bucket as the shared limiter sees it now: its rate (per minute, after any lower
    limit the provider reported), its depth and what it holds (negative: promised to
    attempts that are waiting for their turn)."""

    dim: str
    per_min: float
    depth: float
    level: float


@dataclass(frozen=True)
class LimiterState:
    """The shared limiter of one provider account, read without changing it. `seen` is False
    while no attempt has used it (the buckets are then full); `cooldown_s` is the time left
    of the pause after a 429, `override_s` that of a lower limit reported by the provider."""

    seen: bool
    buckets: tuple[BucketLevel, ...]
    cooldown_s: float
    override_s: float


def read_limiter_state(client: Any, cfg: RateLimitConfig, *, account: Account, key_prefix: str = "") -> LimiterState:
    """Read the Redis buckets of `RedisRateLimiter` with plain reads (HGETALL, GET, TIME) and
    refill them to the server's clock the way its script does, writing nothing: a dashboard
    that watches the limiter never moves it. `client` is a synchronous redis-py client."""
    rates = Rates.from_config(cfg)
    key = limiter_key(account, key_prefix=key_prefix)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(f"{key}:buckets")
    pipe.get(f"{key}:cooldown")
    pipe.time()
    raw, cool, (sec, usec) = pipe.execute()
    now = sec + usec / 1e6
    state = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
    over_until = state.get("over_until", 0.0)
    buckets = []
    for i, dim in enumerate(DIMS):
        rate = rates.per_s[i]
        over = state.get(f"over{i + 1}")
        if rate and over is not None and now < over_until and over < rate:
            rate = over
        depth = rate * rates.burst_s
        level = state.get(f"lvl{i + 1}", depth)
        if rate:
            level = min(depth, level + max(0.0, now - state.get("ts", now)) * rate)
            buckets.append(BucketLevel(dim, rate * 60.0 / rates.fraction, depth, level))
    return LimiterState(
        seen=bool(state), buckets=tuple(buckets), cooldown_s=max(0.0, float(cool or 0.0) - now),
        override_s=max(0.0, over_until - now),
    )


def backoff_delay(retry: int, *, base_s: float, max_s: float, retry_after_s: float | None = None) -> float:
    """Delay before retry number `retry` (1, 2, ...): the provider's Retry-After plus up to
    20% (never earlier than asked, and not capped by `max_s`: an early retry only earns
    another 429), else full-jitter exponential backoff capped at `max_s`."""
    if retry_after_s is not None and retry_after_s >= 0:
        return retry_after_s * random.uniform(1.0, 1.2) + 0.01
    ceiling = min(max_s, base_s * math.pow(2, retry - 1))
    return random.uniform(0.5, 1.0) * ceiling
