"""The in-process limiter (same semantics as the Redis script), on a fake clock."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omniopd.config import RateLimitConfig
from omniopd.teachers.ratelimit import (
    NO_KEY,
    Account,
    LocalRateLimiter,
    NullRateLimiter,
    RateCost,
    RateLimitSnapshot,
    Rates,
    RedisRateLimiter,
    backoff_delay,
    build_limiter,
    key_fingerprint,
    limiter_key,
)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def limiter(**limits) -> tuple[LocalRateLimiter, Clock]:
    clock = Clock()
    cfg = RateLimitConfig(fraction=1.0, burst_s=2.0, **limits)
    return LocalRateLimiter(Rates.from_config(cfg), clock=clock), clock


def test_debit_goes_into_debt_and_says_how_long_to_wait():
    lim, _clock = limiter(requests_per_min=60, input_tokens_per_min=600)  # caps: 2 requests, 20 tokens
    assert lim.schedule_now(RateCost(1, 15))[:2] == (True, 0.0)
    debited, wait, _ = lim.schedule_now(RateCost(1, 10))
    assert debited and wait == pytest.approx(0.5)  # 5 tokens of debt at 10 tokens/s
    assert lim.buckets()[1][2] == pytest.approx(-5)


def test_large_requests_are_not_starved_by_small_ones():
    lim, _clock = limiter(input_tokens_per_min=600)  # 10 tokens/s, cap 20
    lim.schedule_now(RateCost(1, 20))  # bucket now empty
    _, big_wait, _ = lim.schedule_now(RateCost(1, 30))  # queued: its turn in 3 s
    _, small_wait, _ = lim.schedule_now(RateCost(1, 1))  # arrives later, goes later
    assert big_wait == pytest.approx(3.0) and small_wait == pytest.approx(3.1)


def test_refunds_move_the_waiters_behind_them_forward():
    lim, clock = limiter(input_tokens_per_min=600)  # 10 tokens/s, cap 20
    lim.schedule_now(RateCost(1, 20))
    _, wait_a, _ = lim.schedule_now(RateCost(1, 20))  # over-estimated: will use 5
    _, wait_b, ticket_b = lim.schedule_now(RateCost(1, 10))
    assert (wait_a, wait_b) == (pytest.approx(2.0), pytest.approx(3.0))
    asyncio.run(lim.settle(RateCost(1, 20), RateCost(1, 5)))  # 15 tokens refunded
    assert lim.ready_now(ticket_b) == pytest.approx(1.5)
    clock.now += 1.5
    assert lim.ready_now(ticket_b) == pytest.approx(0.0)


def test_acquire_waits_its_turn_and_returns(monkeypatch):
    lim, clock = limiter(requests_per_min=600)  # 10/s, cap 20
    slept = []

    async def fake_sleep(seconds):
        slept.append(seconds)
        clock.now += seconds

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)

    async def go():
        for _ in range(25):
            await lim.acquire(RateCost(1))

    asyncio.run(go())
    assert clock.now - 100.0 == pytest.approx(0.5, abs=0.05)  # 20 at once, then 5 at 10/s


def test_beyond_the_queue_horizon_nothing_is_debited():
    lim, _clock = limiter(requests_per_min=60, input_tokens_per_min=60)  # 1/s, caps 2
    assert lim.schedule_now(RateCost(1, 2))[0]
    debited, retry, _ = lim.schedule_now(RateCost(1, 100))  # would queue 100 s > 60 s horizon
    assert not debited and retry == pytest.approx(40.0)
    assert lim.buckets()[0][2] == pytest.approx(1.0)  # the request bucket was not touched either


def test_a_full_bucket_admits_a_request_bigger_than_the_whole_bucket():
    lim, _clock = limiter(input_tokens_per_min=60)  # 1 token/s, cap 2
    debited, wait, _ = lim.schedule_now(RateCost(1, 500))
    assert debited and wait == pytest.approx(498.0)


def test_provider_rule_takes_only_what_is_there():
    """`try_acquire_now` is what the emulator enforces: no debt, a 429 with the wait."""
    lim, clock = limiter(requests_per_min=60, input_tokens_per_min=600)
    assert lim.try_acquire_now(RateCost(1, 15)) == 0
    assert lim.try_acquire_now(RateCost(1, 10)) == pytest.approx(0.5)
    assert lim.buckets()[0][2] == pytest.approx(1.0)  # all-or-nothing: the request was not taken
    clock.now += 0.5
    assert lim.try_acquire_now(RateCost(1, 10)) == 0


def test_settle_refunds_the_overestimate_and_charges_an_underestimate():
    lim, _clock = limiter(input_tokens_per_min=600, output_tokens_per_min=6000)  # caps 20 / 200
    lim.schedule_now(RateCost(1, 15, 100))
    asyncio.run(lim.settle(RateCost(1, 15, 100), RateCost(1, 5, 30)))
    assert lim.buckets()[1][2] == pytest.approx(15) and lim.buckets()[2][2] == pytest.approx(170)
    asyncio.run(lim.settle(RateCost(1, 5, 0), RateCost(1, 25, 0)))
    assert lim.buckets()[1][2] == pytest.approx(-5)


def test_cool_down_pauses_everything_and_empties_the_buckets():
    lim, clock = limiter(requests_per_min=600)
    asyncio.run(lim.cool_down(3.0))
    assert lim.schedule_now(RateCost(1))[:2] == (False, pytest.approx(3.0))
    assert asyncio.run(lim.cooldown_left()) == pytest.approx(3.0)
    clock.now += 3.0
    assert lim.schedule_now(RateCost(1))[:2] == (True, 0.0)  # the bucket refilled during the pause


def test_lower_limit_or_remaining_reported_by_the_provider_slows_us_down():
    lim, _clock = limiter(requests_per_min=600)  # 10/s, cap 20
    asyncio.run(lim.observe(RateLimitSnapshot(limit={"requests": 60})))
    assert lim.buckets()[0][0] == pytest.approx(1.0)  # rate now 60/min
    lim2, _ = limiter(requests_per_min=600)
    asyncio.run(lim2.observe(RateLimitSnapshot(remaining={"requests": 3})))
    assert lim2.buckets()[0][2] == pytest.approx(3.0)


def test_combined_token_limit_counts_input_plus_output():
    lim, _clock = limiter(tokens_per_min=600)  # cap 20 combined
    assert lim.schedule_now(RateCost(1, 8, 8))[:2] == (True, 0.0)
    assert lim.schedule_now(RateCost(1, 4, 4))[1] == pytest.approx(0.4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.5), st.integers(1, 3), st.integers(0, 60), st.integers(0, 40)), min_size=1, max_size=80))
def test_sends_never_exceed_depth_plus_rate_times_elapsed(steps):
    """Whatever arrives when, the attempts' send times (admission + wait) respect every
    bucket: by any time T, at most depth + rate x (T - start) was sent (+ one oversize)."""
    lim, clock = limiter(requests_per_min=120, input_tokens_per_min=1200, output_tokens_per_min=1200)
    start = clock.now
    sends = []
    for dt, req, tok_in, tok_out in steps:
        clock.now += dt
        debited, wait, _ = lim.schedule_now(RateCost(req, tok_in, tok_out))
        if debited:
            sends.append((clock.now + wait, (req, tok_in, tok_out)))
    sends.sort()
    for i, (rate, cap) in enumerate([(2.0, 4.0), (20.0, 40.0), (20.0, 40.0)]):
        oversize = max(0.0, max(s[1 + i] for s in steps) - cap)
        total = 0.0
        for when, cost in sends:
            total += cost[i]
            assert total <= cap + rate * (when - start) + oversize + 1e-6


def test_fraction_scales_the_configured_limit():
    rates = Rates.from_config(RateLimitConfig(requests_per_min=600, fraction=0.95))
    assert rates.per_s[0] == pytest.approx(9.5)


def test_build_limiter_picks_null_local_or_redis():
    account = Account("anthropic", None, key_fingerprint("sk-ant-test"), "claude")
    assert isinstance(build_limiter(RateLimitConfig(), account=account), NullRateLimiter)
    cfg = RateLimitConfig(requests_per_min=10)
    assert isinstance(build_limiter(cfg, account=account), LocalRateLimiter)
    shared = build_limiter(cfg, account=account, redis_url="redis://x", key_prefix="t1:")
    assert isinstance(shared, RedisRateLimiter)
    assert shared.state_key == (f"t1:omniopd:ratelimit:anthropic:{account.endpoint_digest}:"
                                f"{key_fingerprint('sk-ant-test')}:claude:buckets")


def test_the_bucket_key_names_the_account_and_never_holds_the_api_key():
    key = "sk-proj-" + "Zq7" * 16
    fp = key_fingerprint(key)
    assert len(fp) == 16 and int(fp, 16) >= 0 and fp == key_fingerprint(key)  # stable across processes
    assert fp != key_fingerprint(key + "x") and key_fingerprint(None) == key_fingerprint("") == NO_KEY
    stem = limiter_key(Account("openai", "https://user:pw@api.example.com/v1/", fp, "gpt-x"))
    assert key not in stem and key[8:24] not in stem and "pw" not in stem and "example" not in stem
    # one account however the URL is written; another endpoint, key or model is another account
    same = limiter_key(Account("openai", "https://user:pw@api.example.com/v1", fp, "gpt-x"))
    assert stem == same
    assert len({stem, limiter_key(Account("openai", "https://other.example.com/v1", fp, "gpt-x")),
                limiter_key(Account("openai", "https://api.example.com/v1", key_fingerprint("k2"), "gpt-x")),
                limiter_key(Account("openai", "https://api.example.com/v1", fp, "gpt-y"))}) == 4


def test_backoff_honours_retry_after_and_jitters_otherwise():
    for _ in range(50):
        assert 30.0 <= backoff_delay(1, base_s=1, max_s=10, retry_after_s=30.0) <= 36.1
        assert 2.0 <= backoff_delay(3, base_s=1, max_s=10) <= 4.0
        assert backoff_delay(10, base_s=1, max_s=10) <= 10.0


def test_snapshots_read_each_providers_headers_and_skip_what_they_cannot_parse():
    from omniopd.teachers.providers.anthropic import _SNAPSHOT_HEADERS as ANTHROPIC
    from omniopd.teachers.providers.openai import _SNAPSHOT_HEADERS as OPENAI

    openai = RateLimitSnapshot.from_headers(
        {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-tokens": "90", "x-ratelimit-limit-tokens": "bad"}, OPENAI)
    assert openai == RateLimitSnapshot(limit={"requests": 500.0}, remaining={"tokens": 90.0})
    anthropic = RateLimitSnapshot.from_headers(
        {"anthropic-ratelimit-input-tokens-limit": "1000", "anthropic-ratelimit-requests-remaining": "3"}, ANTHROPIC)
    assert anthropic == RateLimitSnapshot(limit={"input": 1000.0}, remaining={"requests": 3.0})
    assert RateLimitSnapshot.from_headers({"content-type": "application/json"}, ANTHROPIC) is None
