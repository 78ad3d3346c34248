"""The shared Redis limiter: one Lua script per (provider, model), atomic across
processes — all-or-nothing debits, never more than the buckets allow under concurrency,
one cool-down for every process."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time

import pytest

from omniopd.config import RateLimitConfig
from omniopd.teachers.ratelimit import RateCost, RateLimitSnapshot, Rates, RedisRateLimiter

pytestmark = pytest.mark.services


def make(redis_url: str, prefix: str, **limits) -> RedisRateLimiter:
    cfg = RateLimitConfig(fraction=1.0, **limits)
    return RedisRateLimiter(Rates.from_config(cfg), redis_url, f"{prefix}rl:test:model")


async def _level(lim: RedisRateLimiter, index: int) -> float:
    lim._client()
    return float(await lim._redis.hget(lim.state_key, f"lvl{index}"))


def test_debit_beyond_the_queue_horizon_takes_nothing_from_any_bucket(redis_url, redis_prefix):
    async def go():
        lim = make(redis_url, redis_prefix, requests_per_min=60, input_tokens_per_min=60, burst_s=10)  # 1/s, caps 10
        try:
            assert (await lim.schedule(RateCost(1, 8)))[:2] == (True, 0.0)
            debited, retry, _ = await lim.schedule(RateCost(1, 70))  # would owe 68 s > 60 s horizon
            assert not debited and 7.0 < retry <= 8.0
            # 9 left after the first request; a debit of the second would leave 8 + (refill < 1)
            assert await _level(lim, 1) >= 9.0
            debited, wait, ticket = await lim.schedule(RateCost(1, 8))  # owes 6 tokens: waits its turn
            assert debited and 5.0 < wait <= 6.0
            await lim.settle(RateCost(1, 8), RateCost(1, 2))  # refund 6 tokens: debt repaid
            assert await _level(lim, 2) >= 0.0
            assert await lim.ready(ticket) == 0.0  # so its turn has come
        finally:
            await lim.aclose()

    asyncio.run(go())


def _hammer(redis_url: str, prefix: str, seconds: float, costs: list[tuple[int, int]], out) -> None:
    """Schedule attempts for `seconds`; report (send time, requests, tokens) of each."""

    async def go():
        lim = make(redis_url, prefix, requests_per_min=1200, input_tokens_per_min=12000, burst_s=1.0)
        sends = []
        deadline = time.time() + seconds
        i = 0
        while time.time() < deadline:
            req, tok = costs[i % len(costs)]
            i += 1
            # the raw reply carries the Redis server's time of the debit, so scheduling
            # noise on this loaded host does not blur the check
            reply = await lim._eval("acquire", [req, tok, 0, 0, 60.0])
            debited, wait = reply[0] == b"1", float(reply[1])
            if debited:
                sends.append((float(reply[6]) + wait, req, tok))
            # keep the queue short, as real callers do by sleeping their turn
            await asyncio.sleep(min(wait, 0.05) if debited else min(wait, 0.2))
        await lim.aclose()
        out.put(sends)

    asyncio.run(go())


def test_concurrent_processes_send_within_the_limits_in_fair_order(redis_url, redis_prefix):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    costs = [[(1, 50), (2, 10), (1, 150)], [(1, 100)], [(3, 30), (1, 5)], [(1, 200), (1, 1)]]
    procs = [ctx.Process(target=_hammer, args=(redis_url, redis_prefix, 2.0, c, out)) for c in costs]
    try:
        for p in procs:
            p.start()
        results = [out.get(timeout=90) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(results)  # no process was starved, big-request-only ones included
    sends = sorted(s for r in results for s in r)
    start = sends[0][0] - 1e-3
    requests = tokens = 0.0
    for when, req, tok in sends:
        requests += req
        tokens += tok
        # depth + rate x elapsed (20 req/s, 200 tokens/s, 1 s deep), small clock slack
        assert requests <= 20 + 20 * (when - start + 0.01)
        assert tokens <= 200 + 200 * (when - start + 0.01)
    assert tokens > 200  # the buckets refilled and were used beyond their depth


def _probe(redis_url: str, prefix: str, out) -> None:
    async def go():
        lim = make(redis_url, prefix, requests_per_min=6000)
        out.put((await lim.schedule(RateCost(1)))[:2])
        await lim.aclose()

    asyncio.run(go())


def test_cool_down_after_a_429_pauses_every_process(redis_url, redis_prefix):
    async def cool():
        lim = make(redis_url, redis_prefix, requests_per_min=6000)
        await lim.cool_down(5.0)
        remaining = await lim.cooldown_left()
        await lim.aclose()
        return remaining

    assert 4.0 < asyncio.run(cool()) <= 5.0
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_probe, args=(redis_url, redis_prefix, out))
    proc.start()
    try:
        debited, wait = out.get(timeout=60)
    finally:
        proc.join(timeout=30)
    assert not debited and 0 < wait <= 5.0  # another process is told to wait out the same pause


def test_cool_down_only_extends(redis_url, redis_prefix):
    async def go():
        lim = make(redis_url, redis_prefix, requests_per_min=6000)
        try:
            await lim.cool_down(5.0)
            await lim.cool_down(1.0)  # a shorter Retry-After does not shorten the pause
            return await lim.cooldown_left()
        finally:
            await lim.aclose()

    assert asyncio.run(go()) > 4.0


def test_reported_lower_limit_is_shared_and_slows_everyone(redis_url, redis_prefix):
    async def go():
        a = make(redis_url, redis_prefix, requests_per_min=600, burst_s=1.0)  # 10/s
        b = make(redis_url, redis_prefix, requests_per_min=600, burst_s=1.0)
        try:
            await a.observe(RateLimitSnapshot(limit={"requests": 60}, remaining={"requests": 0}))
            return (await b.schedule(RateCost(1)))[:2]
        finally:
            await a.aclose()
            await b.aclose()

    debited, wait = asyncio.run(go())
    assert debited and 0.9 < wait <= 1.0  # one request of debt at the reported 1 request/s


def test_different_models_have_independent_buckets(redis_url, redis_prefix):
    async def go():
        cfg = Rates.from_config(RateLimitConfig(requests_per_min=60, burst_s=1.0, fraction=1.0))
        a = RedisRateLimiter(cfg, redis_url, f"{redis_prefix}rl:p:model-a")
        b = RedisRateLimiter(cfg, redis_url, f"{redis_prefix}rl:p:model-b")
        try:
            assert (await a.schedule(RateCost(1)))[:2] == (True, 0.0)
            assert (await a.schedule(RateCost(1)))[1] > 0.9
            assert (await b.schedule(RateCost(1)))[:2] == (True, 0.0)
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(go())
