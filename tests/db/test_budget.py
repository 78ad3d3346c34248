"""Budgets and the ledger: caps are never exceeded, every reserved dollar is accounted for."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import RUN_SCOPE, Budget, Reservation, TeacherCall, utcnow
from db.repo_budget import (
    BudgetNotConfigured,
    budgets,
    expire_stale,
    reserve,
    set_budget_caps,
    settle,
)
from db.repo_ledger import TokenUsage, close_call, ledger_totals, open_call, scrub
from db.repo_runs import open_run
from db.session import make_engine, make_session_factory


def view(s, run_id):
    return {b.provider: (b.spent, b.reserved) for b in budgets(s, run_id=run_id)}


def new_run(s, name, provider_caps, run_cap):
    return open_run(s, name=name, config={}, base_model_path="base", provider_caps=provider_caps, run_cap=run_cap).id


def test_reserve_refuses_when_any_applicable_cap_would_be_exceeded(sessions):
    with sessions.begin() as s:
        run = new_run(s, "caps", {"a": 100, "b": None}, run_cap=150)
        assert reserve(s, run_id=run, provider="a", amount=100) is not None
        assert reserve(s, run_id=run, provider="a", amount=1) is None  # provider cap
        assert reserve(s, run_id=run, provider="b", amount=51) is None  # run cap (b itself has none)
        held = reserve(s, run_id=run, provider="b", amount=50)
        assert held is not None
        assert view(s, run) == {"a": (0, 100), "b": (0, 50), RUN_SCOPE: (0, 150)}
        settle(s, reservation_id=held.id, actual=20)
        assert view(s, run) == {"a": (0, 100), "b": (20, 0), RUN_SCOPE: (20, 100)}
        assert reserve(s, run_id=run, provider="b", amount=30) is not None  # freed by the settle
        with pytest.raises(BudgetNotConfigured, match="provider 'c'"):
            reserve(s, run_id=run, provider="c", amount=1)


def test_a_free_teacher_reserves_nothing_and_is_never_refused(sessions):
    """A self-hosted teacher with zero prices: its attempts reserve 0 and are still recorded,
    even once the run's cap is reached; a negative amount is a bug and raises."""
    with sessions.begin() as s:
        run = new_run(s, "free", {"paid": 10, "free": None}, run_cap=10)
        assert reserve(s, run_id=run, provider="paid", amount=10) is not None  # the run cap is reached
        held = reserve(s, run_id=run, provider="free", amount=0)
        assert held is not None and held.amount == 0
        settle(s, reservation_id=held.id, actual=0)
        assert view(s, run) == {"paid": (0, 10), "free": (0, 0), RUN_SCOPE: (0, 10)}
        with pytest.raises(ValueError, match=">= 0"):
            reserve(s, run_id=run, provider="free", amount=-1)


def test_expiry_charges_in_full_and_a_late_settle_refunds_the_difference(sessions):
    t0 = utcnow()
    with sessions.begin() as s:
        run = new_run(s, "expiry", {"a": 1000}, run_cap=None)
        old = reserve(s, run_id=run, provider="a", amount=300, now=t0)
        fresh = reserve(s, run_id=run, provider="a", amount=200, now=t0 + timedelta(seconds=50))
    with sessions.begin() as s:
        report = expire_stale(s, now=t0 + timedelta(seconds=61), ttl_s=60)
        assert (report.reservation_ids, report.charged) == ((old.id,), 300)
        assert view(s, run)["a"] == (300, 200)
    with sessions.begin() as s:  # the call did finish after all, at 120
        settle(s, reservation_id=old.id, actual=120)
        settle(s, reservation_id=fresh.id, actual=200)
        settle(s, reservation_id=fresh.id, actual=200)  # repeated settle: no-op
        assert view(s, run)["a"] == (320, 0)
        with pytest.raises(ValueError, match="already settled"):
            settle(s, reservation_id=fresh.id, actual=10)


def test_raising_a_cap_on_resume_takes_effect(sessions):
    with sessions.begin() as s:
        run = new_run(s, "resume", {"a": 10}, run_cap=None)
        assert reserve(s, run_id=run, provider="a", amount=11) is None
        set_budget_caps(s, run_id=run, provider_caps={"a": 20}, run_cap=None)
        assert reserve(s, run_id=run, provider="a", amount=11) is not None


def test_ledger_rows_settle_their_reservations_and_unknown_outcomes_stay_charged(sessions):
    with sessions.begin() as s:
        run = new_run(s, "ledger", {"claude": 10_000}, run_cap=None)
        ok = open_call(s, run_id=run, provider="claude", model="haiku", reserve_micros=4000, idempotency_key="c1/a0")
        lost = open_call(s, run_id=run, provider="claude", model="haiku", reserve_micros=4000, idempotency_key="c2/a0")
        assert open_call(s, run_id=run, provider="claude", model="haiku", reserve_micros=4000, idempotency_key="c3") is None
    with sessions.begin() as s:
        charged = close_call(s, call_id=ok.id, status="ok", usage=TokenUsage(100, 900, 0, 50, 0), cost_micros=1234,
                             http_status=200, latency_ms=321.0, n_returned=4)
        assert charged == 1234
        timeout = open_call(s, run_id=run, provider="claude", model="haiku", reserve_micros=2000, idempotency_key="c4")
        assert close_call(s, call_id=timeout.id, status="unknown", usage=TokenUsage(), cost_micros=None,
                          http_status=None, latency_ms=120_000.0, error_class="TimeoutError") == 2000
    with sessions.begin() as s:  # the worker that held `lost` died: maintenance expires it
        expire_stale(s, now=utcnow() + timedelta(hours=1), ttl_s=900)
        statuses = dict(s.execute(select(TeacherCall.idempotency_key, TeacherCall.status)).all())
        assert statuses == {"c1/a0": "ok", "c2/a0": "unknown", "c4": "unknown"}
        assert view(s, run)["claude"] == (1234 + 4000 + 2000, 0)
        (total,) = ledger_totals(s, run_id=run, by="provider")
        assert (total.calls, total.cost_micros, total.cached_input_tokens) == (3, 1234 + 4000 + 2000, 900)
    assert lost is not None


def test_error_details_never_keep_api_keys(sessions, monkeypatch):
    monkeypatch.setenv("OMNIOPD_TEST_API_KEY", "sentinel-key-0123456789")
    detail = ("401 for https://api/v1?key=sentinel-key-0123456789 headers "
              "{'x-api-key': 'sentinel-key-0123456789', 'Authorization': 'Bearer abc.def'}")
    assert "sentinel" not in scrub(detail) and "abc.def" not in scrub(detail)
    with sessions.begin() as s:
        run = new_run(s, "keys", {"p": None}, run_cap=None)
        call = open_call(s, run_id=run, provider="p", model="m", reserve_micros=1, idempotency_key="k")
        close_call(s, call_id=call.id, status="error", usage=TokenUsage(), cost_micros=None, http_status=401,
                   latency_ms=5.0, error_class="AuthError", error_detail=detail)
        row = s.get(TeacherCall, call.id)
        assert "sentinel" not in row.error_detail and row.error_class == "AuthError"


# ------------------------------------------------------------- concurrency

N_PROCS = 16
N_TRIALS = 200
PARTICIPATION = 0.5  # each worker acts in about half the trials (keeps the test fast)
CRASHERS = {3: 41, 8: 97, 13: 160}  # worker -> trial where it dies inside an open transaction


class _Abort(Exception):
    pass


def _capped(s, run_id):
    return s.execute(select(Budget.provider, Budget.cap_micros, Budget.spent_micros, Budget.reserved_micros)
                     .where(Budget.run_id == run_id, Budget.cap_micros.is_not(None))).all()


def _budget_worker(url: str, runs: list[int], index: int, first_trial: int, crash_at: int | None, log: str) -> None:
    """Random reserve / settle / leave (crash after commit) / abort / expire, at most one per trial."""
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    rng = random.Random(1000 * index + first_trial)
    with open(log, "a") as out:
        def note(**event):
            out.write(json.dumps(event) + "\n")
            out.flush()

        for trial in range(first_trial, len(runs)):
            run_id = runs[trial]
            if rng.random() > PARTICIPATION and trial != crash_at:
                continue
            provider, amount = rng.choice("ab"), rng.randint(1, 120)
            action = rng.choices(["settle", "leave", "abort", "expire"], weights=[6, 2, 1, 1])[0]
            try:
                with sessions.begin() as s:
                    held = reserve(s, run_id=run_id, provider=provider, amount=amount)
                    # observed inside the reserving transaction, after the update
                    bad = [r for r in _capped(s, run_id) if r.spent_micros + r.reserved_micros > r.cap_micros]
                    if bad:
                        note(kind="violation", trial=trial, rows=[list(r) for r in bad])
                    if trial == crash_at:
                        os._exit(3)  # dies holding the lock, transaction open: it must roll back
                    if held is not None and action == "abort":
                        raise _Abort
            except _Abort:
                note(kind="aborted", trial=trial)
                continue
            if held is None:
                note(kind="refused", trial=trial)
                continue
            note(kind="reserved", trial=trial, id=held.id, amount=amount)
            if action == "settle":
                actual = rng.randint(0, amount)
                with sessions.begin() as s:
                    settle(s, reservation_id=held.id, actual=actual)
                note(kind="settled", trial=trial, id=held.id, actual=actual)
            elif action == "expire":  # expires every open reservation of the trial, others' too
                with sessions.begin() as s:
                    expire_stale(s, ttl_s=0, run_id=run_id, now=utcnow() + timedelta(seconds=1))
    engine.dispose()


def _observer(url: str, runs: list[int], stop, log: str) -> None:
    """Reads every capped budget in one consistent snapshot, over and over."""
    engine = make_engine(url)
    readers = make_session_factory(engine, read_only=True)
    observations = violations = 0
    while not stop.is_set():
        with readers.begin() as s:
            rows = s.execute(select(Budget.spent_micros, Budget.reserved_micros, Budget.cap_micros)
                             .where(Budget.cap_micros.is_not(None))).all()
        observations += 1
        violations += sum(1 for spent, reserved, cap in rows if spent + reserved > cap)
        stop.wait(0.01)  # leave the CPUs to the workers
    engine.dispose()
    Path(log).write_text(json.dumps({"observations": observations, "violations": violations}))


@pytest.mark.slow
def test_budget_never_exceeded_under_concurrent_reservations(backend_url, engine, sessions, tmp_path):
    rng = random.Random(7)
    runs = []
    with sessions.begin() as s:
        for trial in range(N_TRIALS):
            caps = {p: rng.choice([None, rng.randint(100, 600)]) for p in "ab"}
            run_cap = rng.randint(150, 900) if None in caps.values() or rng.random() < 0.5 else None
            runs.append(new_run(s, f"trial-{trial}", caps, run_cap))
    engine.dispose()  # the children open their own connections

    # spawn, not fork: a forked child inherits whatever earlier tests left in this process
    # (kombu's after-fork hooks once hung every child on a Redis socket they shared).
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    observer = ctx.Process(target=_observer, args=(backend_url, runs, stop, str(tmp_path / "observer.json")))
    observer.start()
    logs = []

    def spawn(index, first, crash):
        logs.append(str(tmp_path / f"worker{index}-{first}.jsonl"))
        proc = ctx.Process(target=_budget_worker, args=(backend_url, runs, index, first, crash, logs[-1]))
        proc.start()
        return proc

    live = {k: spawn(k, 0, CRASHERS.get(k)) for k in range(N_PROCS)}
    crashed = []
    try:
        while live:
            for k, proc in list(live.items()):
                proc.join(0.05)
                if proc.exitcode is None:
                    continue
                del live[k]
                if proc.exitcode == 3 and k in CRASHERS and k not in crashed:
                    crashed.append(k)  # restart it after the trial it died in
                    live[k] = spawn(k, CRASHERS[k] + 1, None)
                else:
                    assert proc.exitcode == 0, f"budget worker {k} failed (exit {proc.exitcode})"
    finally:
        stop.set()
        observer.join(30)
        for proc in [*live.values(), observer]:
            if proc.is_alive():
                proc.kill()
    assert sorted(crashed) == sorted(CRASHERS)

    events = [json.loads(line) for log in logs for line in Path(log).read_text().splitlines()]
    kinds = defaultdict(int)
    for e in events:
        kinds[e["kind"]] += 1
    assert kinds["violation"] == 0
    assert kinds["refused"] > 50 and kinds["settled"] > 200 and kinds["aborted"] > 0, dict(kinds)
    seen = json.loads((tmp_path / "observer.json").read_text())
    assert seen["observations"] > 0 and seen["violations"] == 0

    # Whoever is left holding a reservation has "crashed": maintenance charges it in full.
    with sessions.begin() as s:
        expire_stale(s, now=utcnow() + timedelta(days=1), ttl_s=0)
    reserved_ids = {e["id"] for e in events if e["kind"] == "reserved"}
    with sessions.begin() as s:
        rows = s.execute(select(Reservation.id, Reservation.run_id, Reservation.provider, Reservation.amount_micros,
                                Reservation.actual_micros, Reservation.state)).all()
        assert {r.id for r in rows} == reserved_ids, "a committed reservation is missing, or an aborted one exists"
        assert {r.state for r in rows} <= {"settled", "expired"}
        settled_in_log = {e["id"]: e["actual"] for e in events if e["kind"] == "settled"}
        for r in rows:
            if r.id in settled_in_log:
                assert (r.state, r.actual_micros) == ("settled", settled_in_log[r.id])
            else:
                assert (r.state, r.actual_micros) == ("expired", r.amount_micros)
        charged = defaultdict(int)
        for r in rows:
            charged[(r.run_id, r.provider)] += r.actual_micros
            charged[(r.run_id, RUN_SCOPE)] += r.actual_micros
        for b in s.scalars(select(Budget)):
            assert b.reserved_micros == 0
            assert b.spent_micros == charged[(b.run_id, b.provider)], "spend != settled + expired"
            assert b.cap_micros is None or b.spent_micros <= b.cap_micros


def test_a_settle_above_its_reservation_raises_an_alarm_that_refuses_the_providers_next_reservations(sessions):
    from db.repo_budget import BudgetAlarm, clear_alarm

    with sessions.begin() as s:
        run = new_run(s, "overbilled", {"a": 10_000, "b": None}, run_cap=None)
        held = reserve(s, run_id=run, provider="a", amount=900)
        settle(s, reservation_id=held.id, actual=5000)  # the provider billed above the worst case
        [a] = [b for b in budgets(s, run_id=run) if b.provider == "a"]
        assert (a.spent, a.reserved, a.overbilled) == (5000, 0, 4100)
        assert a.alarm.startswith("provider a billed $0.005000 for an attempt reserved at its worst case $0.000900")
        with pytest.raises(BudgetAlarm, match="omniopd teacher clear-alarm a"):
            reserve(s, run_id=run, provider="a", amount=1)  # 5000 + 1 fits the cap, but the alarm stops it
        assert reserve(s, run_id=run, provider="b", amount=1) is not None  # other providers go on
        assert clear_alarm(s, run_id=run, provider="a").startswith("provider a billed")
        assert reserve(s, run_id=run, provider="a", amount=1) is not None
        assert [b.overbilled for b in budgets(s, run_id=run) if b.provider == "a"] == [4100]  # kept as history
