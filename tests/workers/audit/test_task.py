"""Audits through real `omniopd worker audit` processes (Celery, thread pool) against the
emulator over HTTP, with PostgreSQL and Redis: end to end with faults, a worker SIGKILLed
mid-call, and an API key that must appear nowhere."""

from __future__ import annotations

import json
import os
import signal
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from db.models import Base, TeacherCall, utcnow
from omniopd.algo.similarity import cut_continuation, phi_batch
from omniopd.cli import app as cli
from tests.workers.audit_helpers import (
    KEY_ENV,
    add_trajectories,
    assert_books_balance,
    budget_rows,
    chunk_rows,
    enqueue,
    ledger,
    production_config,
    samples_of,
    start_worker,
)
from tests.workers.conftest import Store, wait_for
from workers.app import make_celery
from workers.maintenance.sweep import sweep

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_audit_end_to_end_through_a_worker_with_provider_faults(
    tmp_path, postgres_url, redis_url, redis_prefix, processes, emulators
):
    emu = emulators("anthropic", faults={"script": ["ok", "ok", "ok", "429", "ok", "500", "malformed", "ok", "empty"], "reject_prefill": True})
    config = production_config(tmp_path, postgres_url, redis_url, redis_prefix, emu.url, n=3)
    store = Store(config)
    ids = add_trajectories(store, 4)
    start_worker(processes, config, tmp_path / "worker.log")
    enqueue(store, redis_url, ids)
    wait_for(lambda: store.states(ids) == ["ready"] * 4, 120, "the audits to finish")
    for chunk in chunk_rows(store, ids):
        samples = samples_of(store, chunk.id)
        assert [s.i for s in samples] == [0, 1, 2]
        cut = [cut_continuation(s.text, chunk.student_text, "words") for s in samples]
        assert [s.phi for s in samples] == pytest.approx(phi_batch("edit", chunk.student_text, cut))
        assert chunk.k_sem == pytest.approx(sum(s.phi for s in samples))
    assert_books_balance(store, emu)  # ledger rows = HTTP attempts; nothing billed twice
    assert {"rate_limited", "server_error", "malformed", "empty", "prefill_rejected"} <= {r.error_class for r in ledger(store)}
    report = json.loads(CliRunner().invoke(cli, ["spend", "--config", str(config), "--json"]).output)
    assert report["total"]["calls"] == len(ledger(store))
    assert report["audit"]["chunks"] == {"audited": 8} and report["audit"]["trajectories_audited"] == 4
    assert report["estimate"]["actual"]["cost_usd"] == pytest.approx(report["total"]["cost_usd"] / 4)
    log = (tmp_path / "worker.log").read_text()
    assert "audit of trajectory" in log and "rejects assistant prefill" in log
    store.engine.dispose()


def test_a_worker_killed_mid_call_loses_no_sample_and_the_lost_attempt_stays_charged(
    tmp_path, postgres_url, redis_url, redis_prefix, processes, emulators
):
    emu = emulators("openai", latency={"ttft_s": 2.0})
    config = production_config(
        tmp_path, postgres_url, redis_url, redis_prefix, emu.url, kind="openai", model="gpt-4.1-mini", n=4,
        broker={"visibility_timeout_s": 3}, teacher={"timeout_s": 10.0},
    )
    store = Store(config)
    (tid,) = add_trajectories(store, 1, chunks=1, n=4)
    first = start_worker(processes, config, tmp_path / "first.log")
    enqueue(store, redis_url, [tid])
    wait_for(lambda: any(r.status == "reserved" for r in ledger(store)), 90, "a teacher call in flight")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    start_worker(processes, config, tmp_path / "second.log")
    wait_for(lambda: store.states([tid]) == ["ready"], 120, "the redelivered audit to finish")
    (chunk,) = chunk_rows(store, [tid])
    assert chunk.state == "audited" and [s.i for s in samples_of(store, chunk.id)] == [0, 1, 2, 3]
    lost = [r for r in ledger(store) if r.status == "reserved"]
    assert len(lost) == 1 and budget_rows(store)["emu"].reserved_micros == lost[0].reserved_micros
    # The maintenance sweep expires the dead worker's reservation: charged in full (outcome unknown).
    app = make_celery(store.config, broker_url=redis_url, config_path=config)
    report = sweep(app, now=utcnow() + timedelta(seconds=store.config.audit.reservation_ttl_s + 1))
    app.omniopd_runtime.engine.dispose()
    assert report.expired_reservations == 1
    with store.sessions.begin() as s:
        row = s.get(TeacherCall, lost[0].id)
        assert (row.status, row.cost_micros) == ("unknown", row.reserved_micros)
    rows = ledger(store)
    assert len(rows) == len(emu.emulator.log) == 2  # one row per HTTP attempt, the lost one included
    budgets = budget_rows(store)
    assert budgets["emu"].spent_micros == sum(r.cost_micros for r in rows) and budgets["emu"].reserved_micros == 0
    store.engine.dispose()


def _leaks(text_: str, key: str) -> list[str]:
    return [part for part in (key, key[-8:], key[12:28]) if part in text_]


def test_api_key_appears_in_no_row_log_line_exception_or_status_output(
    tmp_path, postgres_url, redis_url, redis_prefix, processes, emulators
):
    key = f"sk-SENTINEL-{uuid.uuid4().hex}"
    good = emulators("anthropic", api_key=key, faults={"script": ["429", "ok", "500", "malformed"]})
    bad = emulators("openai", api_key="the-right-key")  # a 401 that echoes the key, as OpenAI's does
    config = production_config(tmp_path, postgres_url, redis_url, redis_prefix, good.url)
    data = __import__("yaml").safe_load(config.read_text())
    data["teachers"]["bad"] = {**data["teachers"]["emu"], "kind": "openai", "model": "gpt-4.1-mini", "base_url": bad.url}
    config.write_text(__import__("yaml").safe_dump(data))
    store = Store(config)
    ids = add_trajectories(store, 2)
    bad_ids = add_trajectories(store, 1)
    start_worker(processes, config, tmp_path / "good.log", key=key)
    start_worker(processes, config, tmp_path / "bad.log", "--teacher", "bad", key=key)
    enqueue(store, redis_url, ids)
    enqueue(store, redis_url, bad_ids, teacher="bad")
    wait_for(lambda: store.states(ids) == ["ready", "ready"], 120, "the good audits")
    wait_for(lambda: "TeacherSetupError" in (tmp_path / "bad.log").read_text(), 60, "the rejected key to fail the task")
    logs = (tmp_path / "good.log").read_text() + (tmp_path / "bad.log").read_text()
    assert "Incorrect API key provided: ***" in logs  # the provider echoed the key; we logged it scrubbed
    assert "audit of trajectory" in logs and "attempt" in logs
    assert not _leaks(logs, key)
    with store.engine.connect() as conn:  # every row of every table
        dump = "\n".join(repr(row) for table in Base.metadata.sorted_tables for row in conn.execute(select(table)))
        dump += repr(conn.execute(text("SELECT * FROM alembic_version")).all())
    assert "Incorrect API key provided" in dump and not _leaks(dump, key)
    runner = CliRunner()
    outputs = [runner.invoke(cli, [cmd, "--config", str(config), *extra], env={KEY_ENV: key})
               for cmd in ("status", "spend") for extra in ([], ["--json"])]
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    for result in outputs:
        assert not _leaks(result.output, key)
    store.engine.dispose()


def test_provider_errors_beyond_the_clients_retries_are_redelivered_and_finish_later(
    tmp_path, postgres_url, redis_url, redis_prefix, processes, emulators
):
    emu = emulators("openai", faults={"script": ["500"] * 3})
    config = production_config(
        tmp_path, postgres_url, redis_url, redis_prefix, emu.url, kind="openai", model="gpt-4.1-mini",
        teacher={"rate_limits": {"max_retries": 2, "backoff_base_s": 0.01}}, audit={"retry_delay_s": 0.5},
    )
    store = Store(config)
    (tid,) = add_trajectories(store, 1)
    start_worker(processes, config, tmp_path / "worker.log")
    enqueue(store, redis_url, [tid])
    wait_for(lambda: store.states([tid]) == ["ready"], 90, "the retried audit to finish")
    log = (tmp_path / "worker.log").read_text()
    assert "will retry" in log and "Retry in" in log
    assert [r.status for r in ledger(store)] == ["error", "error", "error", "ok", "ok"]
    assert [c.state for c in chunk_rows(store, [tid])] == ["audited", "audited"]
    store.engine.dispose()
