"""Money through a store outage (workers/audit/budget_guard.py, db/outage.py): a paid
attempt whose settlement loses its connection is settled at its cost once the store is
back (not left for the sweep to charge at R), exactly once whether or not the lost COMMIT
went through; a reservation whose COMMIT outcome is unknown is never held twice; and one
the sweep expired during a long outage is corrected to the known cost, as any late settle."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from db.models import Reservation, TeacherCall, utcnow
from db.repo_budget import expire_stale
from omniopd.teachers.types import Attempt, AttemptEstimate, Usage
from tests.db.outage_helpers import CutCommit
from tests.workers.audit_helpers import KEY_ENV, audit_config, budget_rows, ledger
from tests.workers.conftest import Store
from workers.audit.budget_guard import StoreBudgetGuard

R, COST = 500_000, 123_456  # micro-USD: the reservation, the attempt's reported cost


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "x" * 20)
    made = Store(audit_config(tmp_path / "run.yaml", url="http://127.0.0.1:9", teacher={"budget_usd": 1.0}))
    yield made
    made.engine.dispose()


def attempt(key: str) -> Attempt:
    return Attempt(key, "anthropic", "m", 0, "ok", "prefill", 1, 1, Usage(10, 0, 0, 10), 0.1)


def estimate(key: str) -> AttemptEstimate:
    return AttemptEstimate(key, "anthropic", "m", 1, 10, 0, 10, True)


def books(store: Store) -> tuple[int, int, int, int]:
    """(provider spent, provider reserved, run spent, run reserved)."""
    rows = budget_rows(store)
    return rows["emu"].spent_micros, rows["emu"].reserved_micros, rows["*"].spent_micros, rows["*"].reserved_micros


@pytest.mark.parametrize("when", ["after", "before"])
def test_a_paid_attempt_whose_settlement_loses_the_store_is_settled_at_its_cost_once(store, when, caplog):
    guard = StoreBudgetGuard(store.sessions, store.run_id, "emu", None, wait_s=0.0)
    asyncio.run(guard.reserve(estimate("a/0"), R))
    assert books(store) == (0, R, 0, R)
    flaky = CutCommit(store.sessions, when)
    guard.sessions = flaky
    flaky.armed = True  # the settlement's connection drops around its COMMIT
    caplog.set_level(logging.WARNING, logger="omniopd.audit")
    asyncio.run(guard.settle(attempt("a/0"), COST))
    assert flaky.cut == 1
    assert books(store) == (COST, 0, COST, 0)  # charged its cost once, nothing left reserved
    (call,) = ledger(store)
    assert call.status == "ok" and call.cost_micros == COST
    assert [a.charged_micros for a in guard.settled] == [COST]
    assert any(r.getMessage().startswith("store connection lost during the settlement of paid teacher attempt a/0")
               for r in caplog.records)


def test_a_reservation_whose_commit_outcome_is_unknown_is_held_once(store):
    guard = StoreBudgetGuard(store.sessions, store.run_id, "emu", None, wait_s=0.0)
    flaky = CutCommit(store.sessions, "after")
    guard.sessions = flaky
    flaky.armed = True
    asyncio.run(guard.reserve(estimate("b/0"), R))
    assert flaky.cut == 1
    assert books(store) == (0, R, 0, R)  # not 2R: the re-run found the row its first try wrote
    (call,) = ledger(store)
    assert guard._open["b/0"].id == call.id
    asyncio.run(guard.settle(attempt("b/0"), COST))
    assert books(store) == (COST, 0, COST, 0)


def test_a_settlement_after_the_sweep_expired_its_reservation_is_corrected_to_the_cost(store):
    guard = StoreBudgetGuard(store.sessions, store.run_id, "emu", None, wait_s=0.0)
    asyncio.run(guard.reserve(estimate("c/0"), R))
    flaky = CutCommit(store.sessions, "before")
    guard.sessions = flaky
    flaky.armed = True

    real_begin = flaky.begin
    swept = []

    def begin():  # the outage outlasts audit.reservation_ttl_s: the sweep expires it first
        if flaky.cut == 1 and not swept:
            with store.sessions.begin() as s:
                swept.append(expire_stale(s, now=utcnow() + timedelta(hours=1), ttl_s=60, run_id=store.run_id).count)
            assert books(store) == (R, 0, R, 0)  # charged at R, as the sweep does
        return real_begin()

    flaky.begin = begin
    asyncio.run(guard.settle(attempt("c/0"), COST))
    assert swept == [1]
    assert books(store) == (COST, 0, COST, 0)  # today's late settle: corrected to the known cost
    with store.sessions.begin() as s:
        assert s.scalar(select(Reservation.state)) == "settled"
        assert s.scalar(select(TeacherCall.status)) == "ok"
