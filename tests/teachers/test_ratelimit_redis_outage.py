"""The shared limiter when its Redis goes away: every step waits for it (one warning naming
the Redis; one line when it is back) instead of raising, so no teacher call
goes out without its token and no settle (which the budget's settle follows) is skipped."""

from __future__ import annotations

import asyncio
import logging

import pytest

from omniopd.config import RateLimitConfig
from omniopd.teachers.ratelimit import RateCost, Rates, RedisRateLimiter
from workers.chaos.run import RedisServer

pytestmark = pytest.mark.services


def test_a_limiter_step_waits_for_its_redis_and_goes_on_when_it_is_back(tmp_path, caplog):
    server = RedisServer(tmp_path / "redis")  # a private one: the machine's Redis is never stopped
    server.start()

    async def go():
        lim = RedisRateLimiter(Rates.from_config(RateLimitConfig(fraction=1.0, requests_per_min=600, burst_s=2)),
                               server.url, "omniopd-test-outage:rl:m")
        try:
            await lim.acquire(RateCost(1))
            server.stop()
            waiting = asyncio.ensure_future(lim.acquire(RateCost(1)))
            settle = asyncio.ensure_future(lim.settle(RateCost(1, 10), RateCost(1, 2)))
            await asyncio.sleep(2.5)
            assert not waiting.done() and not settle.done()  # no token and no settle without Redis
            server.start()  # same port, its append-only file restores the buckets
            await asyncio.wait_for(asyncio.gather(waiting, settle), timeout=20)
        finally:
            await lim.aclose()

    with caplog.at_level(logging.WARNING, logger="omniopd.ratelimit"):
        try:
            asyncio.run(go())
        finally:
            server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "omniopd.ratelimit"]
    assert sum("rate-limit Redis unreachable at " + server.url in line for line in lines) == 1, lines
    assert any("rate-limit Redis reachable again at " + server.url in line for line in lines), lines
