"""Faults: every failure is reported as one attempt, retried within limits, nothing the
provider returned is lost, and nothing is billed twice."""

from __future__ import annotations

import asyncio

import pytest

from omniopd.teachers.budget import InMemoryBudgetGuard
from omniopd.teachers.emulator import scripted
from omniopd.teachers.pricing import Price, cost_micros, reservation_micros
from omniopd.teachers.tokens import upper_bound_tokens
from omniopd.teachers.types import (
    AttemptEstimate,
    BudgetExhausted,
    FatalProviderError,
    QuotaExhausted,
    RetriesExhausted,
)
from tests.teachers.conftest import call, make_client, run

PRICE = Price(input=1.0, cached_input=0.1, cache_write=1.25, output=5.0)


class Recorder:
    """A budget guard with no cap that records every reservation and settlement (a fake
    ledger): it implements nothing but the async `BudgetGuard` protocol."""

    def __init__(self):
        self.started, self.amounts, self.ended, self.costs = [], [], [], []

    async def reserve(self, estimate, amount_micros):
        self.started.append(estimate)
        self.amounts.append(amount_micros)

    async def settle(self, attempt, cost_micros):
        self.ended.append(attempt)
        self.costs.append(cost_micros)


def assert_billed_once(result_attempts, emu):
    """ok attempts carry exactly the usage of the responses the client could read."""
    delivered = [e for e in emu.emulator.log if e.delivered]
    ok = [a for a in result_attempts if a.status == "ok"]
    assert len(ok) == len(delivered)
    assert sum(a.usage.total_input for a in ok) == sum(e.usage["input"] + e.usage["cached_input"] + e.usage["cache_write"] for e in delivered)
    assert sum(a.usage.total_output for a in ok) == sum(e.usage["output"] + e.usage["reasoning"] for e in delivered)
    assert len(result_attempts) == len(emu.emulator.log)  # one attempt per HTTP request


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_429_with_retry_after_is_retried_after_the_asked_delay(emulator, kind):
    emu = emulator(kind, generator=scripted(["ok"]), faults={"script": ["429"]})
    ledger = Recorder()
    result = run(call(make_client(kind, emu.url, cache=False), n=1, guard=ledger, price=PRICE))
    first, second = result.attempts
    assert (first.status, first.http_status, first.error_class) == ("failed", 429, "rate_limited")
    assert first.retry_after_s == pytest.approx(1.0, abs=0.01)
    assert second.status == "ok" and result.texts == ["ok"]
    log = emu.emulator.log
    assert log[1].t_start - log[0].t_start >= 1.0  # waited as told, not the 10 ms backoff
    assert [a.key for a in ledger.ended] == [a.key for a in result.attempts]
    assert_billed_once(result.attempts, emu)


def test_429_without_retry_after_backs_off_and_retries(emulator):
    emu = emulator("openai", generator=scripted(["ok"]), faults={"script": ["429_no_retry_after", "429_no_retry_after"]})
    result = run(call(make_client("openai", emu.url), n=2))
    assert [a.error_class for a in result.attempts] == ["rate_limited", "rate_limited", None]
    assert result.attempts[0].retry_after_s is None
    assert result.texts == ["ok", "ok"]


@pytest.mark.parametrize("fault,status", [("500", 500), ("529", 529)])
def test_server_errors_are_retried_and_not_billed(emulator, fault, status):
    emu = emulator("anthropic", generator=scripted(["ok"]), faults={"script": [fault]})
    result = run(call(make_client("anthropic", emu.url, cache=False), n=1))
    assert (result.attempts[0].status, result.attempts[0].http_status) == ("failed", status)
    assert result.attempts[0].usage.total_input == 0
    assert result.texts == ["ok"]
    assert_billed_once(result.attempts, emu)


def test_timeout_after_sending_is_reported_unknown_and_retried(emulator):
    emu = emulator("openai", generator=scripted(["ok"]), faults={"script": ["timeout"], "hang_s": 30})
    result = run(call(make_client("openai", emu.url, timeout_s=0.5), n=2))
    first = result.attempts[0]
    assert (first.status, first.error_class, first.http_status) == ("unknown", "timeout", None)
    assert result.texts == ["ok", "ok"]
    assert_billed_once(result.attempts, emu)


def test_connection_refused_is_failed_not_unknown():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client("openai", f"http://127.0.0.1:{port}")
    with pytest.raises(RetriesExhausted) as err:
        run(call(client, n=1))
    attempts = err.value.partial.attempts
    assert len(attempts) == 5 and all(a.status == "failed" and a.error_class == "connection" for a in attempts)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("fault", ["malformed", "truncated"])
def test_unreadable_200_is_unknown_and_retried(emulator, kind, fault):
    emu = emulator(kind, generator=scripted(["ok"]), faults={"script": [fault]})
    result = run(call(make_client(kind, emu.url, cache=False), n=1))
    first = result.attempts[0]
    assert (first.status, first.error_class, first.http_status) == ("unknown", "malformed", 200)
    assert first.usage.total_input == 0  # not counted as billed usage: the ledger keeps R instead
    assert result.texts == ["ok"]
    assert_billed_once(result.attempts, emu)


def test_malformed_stream_of_the_first_anthropic_request_is_unknown(emulator):
    emu = emulator("anthropic", generator=scripted(["ok"]), faults={"script": ["malformed"]})
    result = run(call(make_client("anthropic", emu.url), n=3))
    assert result.attempts[0].status == "unknown" and emu.emulator.log[0].body["stream"] is True
    assert len(result.texts) == 3


def test_empty_texts_are_billed_once_and_only_the_missing_ones_refetched(emulator):
    emu = emulator("openai", generator=scripted(["ok"]), faults={"script": ["empty"]})
    result = run(call(make_client("openai", emu.url), n=4))
    first, second = result.attempts
    assert (first.status, first.error_class, first.n_texts) == ("ok", "empty", 0)
    assert first.usage.total_input > 0  # billed: the provider did the work
    assert emu.emulator.log[1].body["n"] == 4 and second.n_texts == 4
    assert result.texts == ["ok"] * 4
    assert_billed_once(result.attempts, emu)


def test_partial_success_refetches_only_missing_samples(emulator):
    texts = iter([["a", "", "c"], ["d"]])
    emu = emulator("openai", generator=scripted(lambda prompt, n: next(texts)))
    result = run(call(make_client("openai", emu.url), n=3))
    assert [e.body["n"] for e in emu.emulator.log] == [3, 1]
    assert result.texts == ["a", "c", "d"]


def test_rejected_prefill_falls_back_to_instruction_and_is_remembered(emulator):
    # A model the registry does not know refuses prefill: one failed, unbilled attempt.
    emu = emulator("anthropic", generator=scripted(["ok"]), faults={"reject_prefill": ["claude-next-preview"]})
    client = make_client("anthropic", emu.url, model="claude-next-preview", cache=False)
    result = run(call(client, n=2))
    first = result.attempts[0]
    assert (first.status, first.error_class, first.http_status) == ("failed", "prefill_rejected", 400)
    assert result.mode == "instruction" and result.texts == ["ok", "ok"]
    again = run(call(make_client("anthropic", emu.url, model="claude-next-preview", cache=False), n=1))
    assert [a.mode for a in again.attempts] == ["instruction"]  # no second rejected attempt
    # another model of the same provider still uses prefill
    other = run(call(make_client("anthropic", emu.url, model="claude-haiku-4-5", cache=False), n=1))
    assert other.mode == "prefill"


def test_a_model_whose_family_refuses_prefill_starts_in_instruction_form_without_a_failed_attempt(emulator):
    emu = emulator("anthropic", generator=scripted(["ok"]))  # the emulator refuses prefill for Claude 4.6+ as the API does
    result = run(call(make_client("anthropic", emu.url, model="claude-sonnet-4-6", mode="prefill", cache=False), n=2))
    assert [a.mode for a in result.attempts] == ["instruction", "instruction"]
    assert all(a.status == "ok" for a in result.attempts) and result.texts == ["ok", "ok"]


def test_retries_exhausted_keeps_the_partial_result(emulator):
    emu = emulator("gemini", generator=scripted(["ok"]), faults={"script": ["ok", "500", "500", "500", "500", "500"]})
    with pytest.raises(RetriesExhausted) as err:
        run(call(make_client("gemini", emu.url), n=10))  # 8 + 2: the 8 succeed, the 2 never do
    partial = err.value.partial
    assert len(partial.texts) == 8
    assert len(partial.attempts) == 1 + 5 == len(emu.emulator.log)
    assert "missing after 4 retries" in str(err.value)


def test_gemini_per_day_quota_is_fatal_not_retried(emulator):
    emu = emulator("gemini", generator=scripted(["ok"]), faults={"script": ["quota_day"]})
    with pytest.raises(QuotaExhausted):
        run(call(make_client("gemini", emu.url), n=1))
    assert len(emu.emulator.log) == 1


def test_bad_request_is_fatal_with_the_provider_message(emulator):
    emu = emulator("openai", generator=scripted(["ok"]), faults={"reject_temperature": True})
    from omniopd.teachers.types import FatalProviderError

    with pytest.raises(FatalProviderError, match="temperature") as err:
        run(call(make_client("openai", emu.url, temperature=0.7), n=1))
    assert len(emu.emulator.log) == 1
    assert err.value.partial.attempts[0].error_class == "sampling_refused"
    assert "change the teacher's `temperature`" in str(err.value)


def test_an_unrecognised_refusal_is_fatal_with_the_provider_message_and_costs_nothing(emulator):
    from omniopd.teachers.types import FatalProviderError

    emu = emulator("anthropic", generator=scripted(["ok"]), faults={"script": ["refuse"]})
    ledger = Recorder()
    with pytest.raises(FatalProviderError, match="not permitted for this organization") as err:
        run(call(make_client("anthropic", emu.url), n=3, guard=ledger, price=PRICE))
    [attempt] = err.value.partial.attempts  # the first goes alone; the others never start after it
    assert (attempt.status, attempt.error_class, attempt.http_status) == ("failed", "refused", 400)
    assert "does not recognise" in str(err.value) and ledger.costs == [0]


def test_random_faults_lose_nothing_and_bill_nothing_twice(emulator):
    faults = {"error_rate": 0.2, "malformed_rate": 0.1, "truncated_rate": 0.05, "empty_rate": 0.1, "timeout_rate": 0.05, "hang_s": 30}
    emu = emulator("anthropic", generator=scripted(["t"]), faults=faults, seed=3)
    client = make_client("anthropic", emu.url, timeout_s=0.5, cache=False)
    from omniopd.teachers.client import RetryPolicy

    client.retry = RetryPolicy(max_retries=20, backoff_base_s=0.01, backoff_max_s=0.02)
    ledger = Recorder()
    result = run(call(client, n=20, guard=ledger, price=PRICE))
    assert len(result.texts) == 20
    assert len(ledger.started) == len(ledger.ended) == len(result.attempts)
    assert len({a.key for a in result.attempts}) == len(result.attempts)  # unique idempotency keys
    assert {a.status for a in result.attempts} == {"ok", "failed", "unknown"}
    assert_billed_once(result.attempts, emu)


# -------------------------------------------------------------------- budget


def test_budget_refusal_stops_further_attempts_and_keeps_what_was_paid(emulator):
    emu = emulator("anthropic", generator=scripted(["ok"]))
    client = make_client("anthropic", emu.url, cache=False)  # 5 reservations at once
    # R of one attempt: prefill form carries "P" and "x"; one continuation of <= 8 tokens
    estimate = AttemptEstimate("k", "anthropic", "m", 1, upper_bound_tokens("P", "x"), 0, 8, cache_write_possible=False)
    r = reservation_micros(estimate, PRICE)
    guard = InMemoryBudgetGuard(cap_micros=r * 5 // 2)
    with pytest.raises(BudgetExhausted) as err:
        run(call(client, prompt="P", prefix="x", n=5, guard=guard, price=PRICE))
    partial = err.value.partial
    ok = [a for a in partial.attempts if a.status == "ok"]
    assert len(partial.texts) == len(ok) == len(emu.emulator.log) >= 1
    assert len(emu.emulator.log) <= 2  # the third reservation never fits
    assert guard.reserved == 0
    assert guard.spent == sum(cost_micros(a.usage, PRICE) for a in ok)  # exactly
    assert guard.spent <= guard.cap_micros


def test_unknown_outcome_stays_charged_at_its_reservation(emulator):
    emu = emulator("openai", generator=scripted(["ok"]), faults={"script": ["timeout"], "hang_s": 30})
    guard = InMemoryBudgetGuard(cap_micros=10_000_000)
    result = run(call(make_client("openai", emu.url, timeout_s=0.5), n=1, guard=guard, price=PRICE))
    lost, ok = guard.settled
    assert lost.attempt.status == "unknown" and lost.charged_micros == lost.reserved_micros
    assert ok.attempt.status == "ok" and ok.charged_micros == cost_micros(result.attempts[1].usage, PRICE) < ok.reserved_micros
    assert guard.spent == lost.reserved_micros + ok.charged_micros


def test_any_guard_of_the_async_protocol_is_reserved_before_and_settled_after_each_attempt(emulator):
    """The client computes R and each attempt's charge from the price and awaits the guard
    directly: R before every attempt, then one settle per attempt at failed 0, unknown None
    (stays charged at R), ok the reported usage's cost."""
    emu = emulator("openai", generator=scripted(["ok"]), faults={"script": ["500", "timeout"], "hang_s": 30})
    client = make_client("openai", emu.url, timeout_s=0.5)
    ledger = Recorder()
    result = run(call(client, n=1, guard=ledger, price=PRICE))
    assert [a.status for a in result.attempts] == ["failed", "unknown", "ok"]
    assert [e.key for e in ledger.started] == [a.key for a in ledger.ended] == [a.key for a in result.attempts]
    assert ledger.amounts == [reservation_micros(e, PRICE) for e in ledger.started]
    assert ledger.costs == [0, None, cost_micros(result.attempts[2].usage, PRICE)]
    with pytest.raises(ValueError, match="needs the teacher's price"):
        run(call(client, n=1, guard=ledger))


def test_a_guard_refusing_the_reservation_stops_the_call_before_anything_is_sent(emulator):
    emu = emulator("openai", generator=scripted(["ok"]))

    class Refuse:
        async def reserve(self, estimate, amount_micros):
            raise BudgetExhausted(f"no room for {amount_micros} micro-USD")

        async def settle(self, attempt, cost_micros):
            raise AssertionError("never reserved, never settled")

    with pytest.raises(BudgetExhausted, match="no room for"):
        run(call(make_client("openai", emu.url), n=1, guard=Refuse(), price=PRICE))
    assert emu.emulator.log == []


def test_cancelled_call_reports_the_in_flight_attempt_as_unknown(emulator):
    emu = emulator("openai", generator=scripted(["ok"]), faults={"script": ["timeout"], "hang_s": 30})
    ledger = Recorder()

    async def cancel_midway():
        client = make_client("openai", emu.url)
        async with client:
            task = asyncio.create_task(client.continue_prefix("P", "x", 1, 8, guard=ledger, price=PRICE))
            while not ledger.started:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(cancel_midway())
    [attempt] = ledger.ended
    assert (attempt.status, attempt.error_class) == ("unknown", "cancelled")
    assert ledger.costs == [None]  # stays charged at R


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_a_model_that_keeps_ending_its_turn_at_once_gives_empty_continuations(emulator, kind):
    """Repeated empty end-of-turn answers are the teacher's answer (the prefix is complete),
    after RetryPolicy.empty_stop_retries retries; a one-off empty answer is retried."""
    from omniopd.teachers.client import RetryPolicy

    emu = emulator(kind, generator=scripted(lambda prompt, n: [""] * n))
    policy = RetryPolicy(max_retries=6, backoff_base_s=0.01, backoff_max_s=0.02, empty_stop_retries=2)
    result = run(call(make_client(kind, emu.url, retry=policy), n=2))
    assert result.texts == ["", ""]
    assert len(result.attempts) == 3 * (2 if kind == "anthropic" else 1)  # anthropic: one request per sample
    assert all(a.error_class == "empty" and a.status == "ok" for a in result.attempts)
    assert_billed_once(result.attempts, emu)


@pytest.mark.parametrize("url", ["htp://127.0.0.1:8000/v1", "127.0.0.1:8000"])
def test_a_url_aiohttp_refuses_costs_nothing_and_is_fatal_at_once(url):
    """The attempt never left the machine: $0, not its reservation, and no retry (every
    retry would be refused the same way)."""
    guard = InMemoryBudgetGuard(cap_micros=50_000)
    with pytest.raises(FatalProviderError, match="not an http\\(s\\) URL") as err:
        run(call(make_client("openai", url), n=2, guard=guard, price=PRICE))
    (attempt,) = err.value.partial.attempts
    assert (attempt.status, attempt.error_class) == ("failed", "bad_url")
    assert guard.spent == 0 and guard.reserved == 0 and [s.charged_micros for s in guard.settled] == [0]


def test_dns_failure_and_refused_connection_cost_nothing():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url in (f"http://127.0.0.1:{port}", "http://no-such-host.invalid"):
        guard = InMemoryBudgetGuard(cap_micros=50_000)
        with pytest.raises(RetriesExhausted):
            run(call(make_client("openai", url), n=1, guard=guard, price=PRICE))
        assert len(guard.settled) == 5 and guard.spent == 0


def test_an_attempt_billed_above_its_reservation_stops_the_in_memory_guard(emulator):
    emu = emulator("openai", generator=scripted(["ok"]), faults={"extra_billed_output_tokens": 1000})
    guard = InMemoryBudgetGuard(cap_micros=10_000_000)
    run(call(make_client("openai", emu.url), n=1, guard=guard, price=PRICE))
    (first,) = guard.settled
    assert first.charged_micros > first.reserved_micros and "above the" in guard.alarm
    with pytest.raises(FatalProviderError, match="reserved as its worst case; no more attempts are sent"):
        run(call(make_client("openai", emu.url), n=1, guard=guard, price=PRICE))
    assert len(emu.emulator.log) == 1


def test_a_call_that_runs_out_of_retries_names_the_cause_of_the_last_attempt(emulator):
    emu = emulator("openai", generator=scripted(["ok"]), api_key="the-right-one")
    with pytest.raises(Exception, match=r"HTTP 401 auth: Incorrect API key"):
        run(call(make_client("openai", emu.url), n=1))
    emu = emulator("anthropic", generator=scripted(["ok"]), faults={"script": ["500"] * 10})
    with pytest.raises(RetriesExhausted, match=r"after 4 retries; last attempt: HTTP 500 server_error: "):
        run(call(make_client("anthropic", emu.url, cache=False), n=1))
    tls = make_client("openai", emu.url.replace("http://", "https://"))  # a TLS client at a plain-HTTP server
    with pytest.raises(RetriesExhausted, match=r"last attempt: connection: TLS handshake with 127\.0\.0\.1:\d+ failed"):
        run(call(tls, n=1))
