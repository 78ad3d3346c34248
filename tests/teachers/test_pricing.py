"""Prices file, cost from usage, the worst-case reservation R, and the budget guard."""

from __future__ import annotations

import asyncio
import threading
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omniopd.config import PriceConfig, TeacherConfig
from omniopd.teachers.budget import InMemoryBudgetGuard, Settlement
from omniopd.teachers.build import teacher_price
from omniopd.teachers.pricing import (
    Price,
    PricingError,
    attempt_cost_micros,
    cost_micros,
    cost_usd,
    load_prices,
    price_for,
    reservation_micros,
)
from omniopd.teachers.tokens import count_tokens, estimate_tokens, tokenize, upper_bound_tokens
from omniopd.teachers.types import Attempt, AttemptEstimate, BudgetExhausted, Usage

HAIKU = Price(input=1.0, cached_input=0.1, cache_write=1.25, output=5.0)


def estimate(key="k", input_max=1000, output_max=500, cache=True) -> AttemptEstimate:
    return AttemptEstimate(key, "anthropic", "claude-haiku-4-5", 1, input_max, input_max // 2, output_max, cache)


def attempt(key="k", status="ok", usage=Usage()) -> Attempt:
    return Attempt(key, "anthropic", "m", 0, status, "prefill", 1, 1, usage, 0.1)


def test_prices_file_has_the_field_note_prices_with_source_and_date():
    prices = load_prices("configs/prices.yaml")
    assert prices["claude-haiku-4-5"] == Price(1.0, 0.10, 1.25, 5.0, prices["claude-haiku-4-5"].source, prices["claude-haiku-4-5"].date)
    assert (prices["gemini-2.5-flash"].input, prices["gemini-2.5-flash"].cached_input, prices["gemini-2.5-flash"].output) == (0.30, 0.03, 2.50)
    assert (prices["gpt-4.1-mini"].input, prices["gpt-4.1-mini"].output) == (0.40, 1.60)
    assert (prices["gpt-5-mini"].cached_input, prices["gpt-5-mini"].output) == (0.025, 2.00)
    assert all(p.source and p.date for p in prices.values())


def test_cost_prices_each_disjoint_count_at_its_rate():
    usage = Usage(input=1000, cached_input=9000, cache_write=2000, output=300, reasoning=100)
    # 1000*1 + 9000*0.1 + 2000*1.25 + 400*5 = 1000 + 900 + 2500 + 2000 micro-USD, exactly
    assert cost_micros(usage, HAIKU) == 6400
    assert cost_usd(usage, HAIKU) == pytest.approx(6400e-6)  # the forecasts' float twin


def test_reservation_is_all_input_at_the_write_rate_plus_max_output():
    assert reservation_micros(estimate(cache=True), HAIKU) == 1000 * 1.25 + 500 * 5
    assert reservation_micros(estimate(cache=False), HAIKU) == 1000 * 1.0 + 500 * 5


def test_amounts_round_up_to_the_next_whole_micro_dollar():
    cheap = Price(input=0.1, cached_input=0.01, cache_write=0.1, output=0.4)
    assert cost_micros(Usage(input=1), cheap) == 1  # 0.1 micro-USD, charged as 1
    assert cost_micros(Usage(input=10), cheap) == 1  # exactly 1: 10 x 0.1 is not 1.0000000000000002 here
    assert cost_micros(Usage(input=11), cheap) == 2
    assert cost_micros(Usage(), cheap) == 0
    assert reservation_micros(estimate(input_max=1, output_max=1, cache=False), cheap) == 1  # 0.5 -> 1


@given(st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 500))
def test_no_usage_within_the_estimate_costs_more_than_r(plain, cached, written, out):
    total_in = plain + cached + written
    usage = Usage(input=plain, cached_input=cached, cache_write=written, output=out)
    assert cost_micros(usage, HAIKU) <= reservation_micros(estimate(input_max=max(total_in, 1), output_max=out), HAIKU)


RATE = st.decimals(min_value=0, max_value=100, places=6)  # USD per 1M tokens, as a prices file writes them
TOKENS = st.integers(0, 2_000_000)


@given(st.tuples(RATE, RATE, RATE, RATE), TOKENS, TOKENS, TOKENS, TOKENS, TOKENS, st.integers(0, 3_000_000),
       st.booleans())
def test_reservation_is_never_below_the_exact_cost_and_charges_are_exact_to_a_micro_dollar(
    rates, plain, cached, written, out, reasoning, slack, may_write_cache
):
    """Prices have at most six decimals per 1M tokens, so tokens x rate is an exact number of
    micro-dollars (a Fraction here). The charge is that number rounded up (never below it,
    less than 1 micro-USD above), and R of any estimate the usage fits in is never below it."""
    r_in, r_cached, r_write, r_out = rates  # any rates a prices file may hold, a cache read dearer than input too
    price = Price(*(float(r) for r in (r_in, r_cached, r_write, r_out)))
    if not may_write_cache:
        written = 0  # a request that cannot write the cache reports no cache writes
    usage = Usage(input=plain, cached_input=cached, cache_write=written, output=out, reasoning=reasoning)
    f_in, f_cached, f_write, f_out = (Fraction(r) for r in (r_in, r_cached, r_write, r_out))
    exact = plain * f_in + cached * f_cached + written * f_write + (out + reasoning) * f_out  # micro-USD
    charged = cost_micros(usage, price)
    assert exact <= charged < exact + 1
    bound = AttemptEstimate(
        "k", "anthropic", "m", 1, usage.total_input + slack, 0, usage.total_output + slack, may_write_cache
    )
    assert reservation_micros(bound, price) >= charged >= exact


def test_config_override_wins_and_unknown_models_say_what_to_do():
    prices = load_prices("configs/prices.yaml")
    assert price_for("claude-haiku-4-5", prices, PriceConfig(input=2, cached_input=0.2, cache_write=2.5, output=10)).input == 2
    with pytest.raises(PricingError, match="add it to the prices file"):
        price_for("no-such-model", prices)
    cfg = TeacherConfig(kind="anthropic", model="custom", prices=PriceConfig(input=1, cached_input=1, cache_write=1, output=1))
    assert teacher_price(cfg, "does/not/matter.yaml").output == 1


def test_bad_prices_file_names_the_problem(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("models:\n  m: {input: 1, output: 2}\n")
    with pytest.raises(PricingError, match=r"models\.m: missing cached_input, cache_write"):
        load_prices(bad)


def test_attempt_cost_by_status():
    usage = Usage(input=100, output=10)
    assert attempt_cost_micros(attempt(status="ok", usage=usage), HAIKU) == 150
    assert attempt_cost_micros(attempt(status="failed"), HAIKU) == 0
    assert attempt_cost_micros(attempt(status="unknown"), HAIKU) is None


def test_prices_become_exact_integer_rates_once():
    assert HAIKU.exact.input == 1_000_000 and HAIKU.exact.cached_input == 100_000  # pico-USD per token
    assert Price(0.025, 0.0000001, 0, 0).exact.cached_input == 1  # finer than six decimals: rounded up
    with pytest.raises(PricingError, match="cached_input must be a number >= 0"):
        Price(1, -0.1, 1, 1)
    with pytest.raises(PricingError, match="output must be a number >= 0"):
        Price(1, 1, 1, float("nan"))


def test_guard_never_exceeds_its_cap_under_concurrent_reservations():
    guard = InMemoryBudgetGuard(cap_micros=1_000_000)
    admitted = []

    def worker(w: int) -> None:
        for i in range(200):
            key = f"{w}-{i}"
            try:
                asyncio.run(guard.reserve(estimate(key), 13_000))  # each thread its own event loop
            except BudgetExhausted:
                continue
            admitted.append(key)
            asyncio.run(guard.settle(attempt(key, status="unknown"), None))  # stays charged at R

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert guard.spent <= 1_000_000 and guard.reserved == 0
    assert len(admitted) == 1_000_000 // 13_000


def test_guard_reserves_then_settles_and_lists_what_it_charged():
    guard = InMemoryBudgetGuard(cap_micros=1_000_000)
    r = reservation_micros(estimate("a"), HAIKU)
    asyncio.run(guard.reserve(estimate("a"), r))
    asyncio.run(guard.reserve(estimate("b"), r))
    assert guard.reserved == 2 * r
    ok = attempt("a", usage=Usage(input=10, output=2))
    asyncio.run(guard.settle(ok, attempt_cost_micros(ok, HAIKU)))
    lost = attempt("b", status="unknown")
    asyncio.run(guard.settle(lost, attempt_cost_micros(lost, HAIKU)))
    assert guard.settled == [Settlement(ok, r, 20), Settlement(lost, r, r)]
    assert guard.spent == 20 + r and guard.reserved == 0


def test_refusal_message_names_the_cap_and_amounts():
    guard = InMemoryBudgetGuard(cap_micros=1000, name="run cap")
    with pytest.raises(BudgetExhausted, match=r"run cap of \$0.0010 reached.*needs up to \$0.0100"):
        asyncio.run(guard.reserve(estimate(), 10_000))


# ------------------------------------------------------------------ tokens


@given(st.text())
def test_emulator_tokenizer_is_lossless(text):
    assert "".join(tokenize(text)) == text
    assert count_tokens(text) == len(tokenize(text))


@given(st.text(min_size=1))
def test_upper_bound_covers_the_emulator_and_byte_level_counts(text):
    assert upper_bound_tokens(text) >= count_tokens(text)
    assert upper_bound_tokens(text) >= len(text.encode())
    assert estimate_tokens(text) <= upper_bound_tokens(text)
