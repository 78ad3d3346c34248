"""Budget caps under real concurrency: 8 audit worker processes, random provider faults,
one cap. Spend plus what is reserved never passes the cap (watched while they run), the
ledger adds up to the budget's spent, chunks beyond the cap are skipped_budget and every
trajectory ends terminal."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from db.models import Budget
from db.session import make_engine, make_session_factory
from omniopd.cli import app as cli
from omniopd.money import usd_to_micros
from tests.workers.audit_helpers import (
    add_trajectories,
    assert_books_balance,
    budget_rows,
    chunk_rows,
    enqueue,
    ledger,
    production_config,
    start_worker,
    trajectory_rows,
)
from tests.workers.conftest import Store, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

WORKERS = 8
PROVIDER_CAP, RUN_CAP = 8.0, 10.0


class BudgetWatcher(threading.Thread):
    """Reads the budget rows every few milliseconds; keeps the largest spent + reserved seen."""

    def __init__(self, url: str, run_id: int):
        super().__init__(daemon=True)
        self.engine = make_engine(url)
        self.sessions = make_session_factory(self.engine, read_only=True)
        self.run_id = run_id
        self.peak: dict[str, int] = {}
        self.peak_reserved = 0
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with self.sessions.begin() as s:
                for b in s.scalars(select(Budget).where(Budget.run_id == self.run_id)):
                    self.peak[b.provider] = max(self.peak.get(b.provider, 0), b.spent_micros + b.reserved_micros)
                    self.peak_reserved = max(self.peak_reserved, b.reserved_micros)
            self.samples += 1
            time.sleep(0.01)
        self.engine.dispose()


def test_budget_is_never_exceeded_by_eight_audit_workers_with_random_faults(
    tmp_path, postgres_url, redis_url, redis_prefix, processes, emulators
):
    emu = emulators(
        "anthropic",
        seed=7,
        latency={"ttft_s": 0.02, "ttft_jitter_s": 0.08},
        faults={"error_rate": 0.08, "timeout_rate": 0.03, "hang_s": 3.0, "malformed_rate": 0.04, "empty_rate": 0.04,
                "truncated_rate": 0.02},
    )
    config = production_config(
        tmp_path, postgres_url, redis_url, redis_prefix, emu.url, n=3,
        teacher={"budget_usd": PROVIDER_CAP, "timeout_s": 0.5}, audit={"budget_usd": RUN_CAP},
    )
    store = Store(config)
    ids = add_trajectories(store, 48)
    watcher = BudgetWatcher(postgres_url, store.run_id)
    watcher.start()
    for k in range(WORKERS):
        start_worker(processes, config, tmp_path / f"worker{k}.log")
    enqueue(store, redis_url, ids)
    try:
        wait_for(lambda: all(s in ("ready", "dropped") for s in store.states(ids)), 180, "every trajectory to end", interval=0.5)
    finally:
        watcher.stop.set()
        watcher.join(10)
    cap = usd_to_micros(PROVIDER_CAP)
    assert watcher.samples > 20 and 0 < watcher.peak["emu"] <= cap
    chunks = chunk_rows(store, ids)
    states = [c.state for c in chunks]
    assert states.count("audited") > 0 and states.count("skipped_budget") > 0 and "pending" not in states
    assert all(c.error.startswith("teacher budget exhausted for provider emu") for c in chunks if c.state == "skipped_budget")
    for tid in ids:  # after a skipped chunk every later chunk of the trajectory is skipped too
        mine = [c.state for c in chunks if c.trajectory_id == tid]
        assert mine == sorted(mine, key=lambda s: s == "skipped_budget")
    budgets = budget_rows(store)
    assert budgets["emu"].spent_micros <= cap and budgets["*"].spent_micros == budgets["emu"].spent_micros
    assert_books_balance(store, emu)  # ledger total == budget spent; one row per HTTP attempt; none in flight
    rows = ledger(store)
    assert {"ok", "error", "unknown"} <= {r.status for r in rows}
    assert watcher.peak_reserved > max(r.reserved_micros for r in rows)  # attempts really were in flight together
    assert len({r.idempotency_key for r in rows}) == len(rows)
    dropped = [t for t in trajectory_rows(store, ids) if t.state == "dropped"]
    assert all(t.drop_reason == "unaudited" for t in dropped)
    report = json.loads(CliRunner().invoke(cli, ["spend", "--config", str(config), "--json"]).output)
    assert report["audit"]["budget_stop"].startswith("teacher budget exhausted for provider emu")
    assert report["total"]["calls"] == len(rows) and report["budgets"][0]["spent_usd"] <= PROVIDER_CAP
    status = CliRunner().invoke(cli, ["status", "--config", str(config)], terminal_width=200).output
    assert "budget: teacher budget exhausted for provider emu" in status
    busy = [k for k in range(WORKERS) if "audit of trajectory" in (tmp_path / f"worker{k}.log").read_text()]
    assert len(busy) >= 2  # the cap was shared by several processes
    store.engine.dispose()
