"""Rate limits belong to the provider account, not to the run: two runs (separate
processes, separate configs, run names and broker key prefixes) that call one provider with
one API key take from one set of buckets in Redis and together stay under the limit; with
two keys each has the whole limit."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import secrets
import time

import pytest

pytestmark = pytest.mark.services

KEY_ENV = "OMNIOPD_TEST_ACCOUNT_KEY"
PER_MIN = 240  # 4 requests/s at fraction 1: the bucket holds burst_s = 1 s of it
WINDOW_S = 6.0


def _run(run_name: str, api_key: str, redis_url: str, start_at: float, out) -> None:
    """One run's process: its own config, the teacher's limiter as an audit worker builds it
    (`teacher_limiter`); as many requests as the limiter admits until the window closes."""
    import os

    os.environ[KEY_ENV] = api_key
    from omniopd.config import parse_config
    from omniopd.teachers.build import teacher_limiter
    from omniopd.teachers.ratelimit import RateCost

    cfg = parse_config({
        "run": {"name": run_name, "output_dir": f"/tmp/{run_name}"},
        "broker": {"mode": "redis", "url": redis_url, "key_prefix": f"{run_name}:"},
        "teachers": {"t": {"kind": "gemini", "model": "gemini-2.5-flash", "base_url": "http://127.0.0.1:9/v1",
                           "api_key_env": KEY_ENV,
                           "rate_limits": {"requests_per_min": PER_MIN, "fraction": 1.0, "burst_s": 1.0}}},
        "audit": {"teacher": "t"},
    })

    async def go() -> list[float]:
        limiter = teacher_limiter(cfg.teachers["t"], redis_url=redis_url)
        admitted = []
        while time.time() < start_at:
            await asyncio.sleep(0.01)

        async def caller() -> None:
            while time.time() < start_at + WINDOW_S:
                await limiter.acquire(RateCost(requests=1))
                now = time.time()
                if now < start_at + WINDOW_S:
                    admitted.append(now - start_at)

        await asyncio.gather(*(caller() for _ in range(6)))
        await limiter.aclose()
        return admitted

    out.put((run_name, asyncio.run(go())))


def _two_runs(redis_url: str, key_a: str, key_b: str) -> dict[str, list[float]]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 8.0  # both processes import and connect first
    procs = [ctx.Process(target=_run, args=(f"run-{tag}-{secrets.token_hex(3)}", key, redis_url, start_at, out))
             for tag, key in (("a", key_a), ("b", key_b))]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    return results


def _cleanup(redis_url: str, *keys: str) -> None:
    import redis

    from omniopd.teachers.ratelimit import key_fingerprint

    client = redis.Redis.from_url(redis_url)
    for key in keys:
        for name in client.scan_iter(match=f"omniopd:ratelimit:*:{key_fingerprint(key)}:*"):
            client.delete(name)
    client.close()


def test_two_runs_on_one_api_key_share_the_limit_and_stay_under_it(redis_url):
    key = "test-" + secrets.token_hex(16)
    try:
        runs = _two_runs(redis_url, key, key)
    finally:
        _cleanup(redis_url, key)
    total = sum(len(t) for t in runs.values())
    # The account's allowance over the window: a full bucket (1 s) plus the refill.
    allowance = PER_MIN / 60 * (1.0 + WINDOW_S)
    assert total <= allowance + 1, (total, allowance, {k: len(v) for k, v in runs.items()})
    assert total >= 0.6 * allowance  # the limiter holds the limit, not far below it (a loaded machine admits less)
    assert all(len(t) >= 0.25 * allowance for t in runs.values())  # neither run starves the other
    for window_start in range(int(WINDOW_S)):  # in every second: at most one bucket plus one second of refill
        in_window = sum(window_start <= x < window_start + 1 for t in runs.values() for x in t)
        assert in_window <= 2 * PER_MIN / 60 + 1, (window_start, in_window)


def test_runs_on_two_api_keys_each_get_the_whole_limit(redis_url):
    key_a, key_b = ("test-" + secrets.token_hex(16) for _ in range(2))
    try:
        runs = _two_runs(redis_url, key_a, key_b)
    finally:
        _cleanup(redis_url, key_a, key_b)
    allowance = PER_MIN / 60 * (1.0 + WINDOW_S)
    counts = {k: len(v) for k, v in runs.items()}
    assert all(n <= allowance + 1 for n in counts.values()), counts  # each account within its own limit
    assert sum(counts.values()) > allowance + 1, counts  # together more than one account could get: independent
