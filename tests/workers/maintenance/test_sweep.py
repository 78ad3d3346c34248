"""The maintenance sweep and post-commit sends, against real Redis (unique key prefix)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from db.models import Reservation, Trajectory, utcnow
from db.repo_budget import reserve
from db.repo_bundles import claim_ready_bundles
from tests.workers.conftest import Store, probe_lines, wait_for, write_config
from workers.app import (
    AUDIT_TASK,
    MAINTENANCE_TASK,
    audit_queue,
    enqueue_after_commit,
    make_celery,
    queue_depths,
)
from workers.maintenance.sweep import sweep

pytestmark = pytest.mark.services


@pytest.fixture
def setup(tmp_path, redis_url, redis_prefix):
    config_path = write_config(
        tmp_path / "run.yaml",
        broker={"mode": "redis", "url": redis_url, "key_prefix": redis_prefix},
        teachers={"emu": {"kind": "anthropic", "model": "m", "budget_usd": 1.0}},
        maintenance={"stuck_after_s": 60, "max_requeues": 1},
        audit={"reservation_ttl_s": 300},
    )
    store = Store(config_path)
    app = make_celery(store.config, broker_url=redis_url, config_path=config_path)
    yield config_path, store, app
    store.engine.dispose()
    runtime = getattr(app, "omniopd_runtime", None)
    if runtime is not None:
        runtime.engine.dispose()


def test_messages_are_sent_after_commit_only_and_carry_ids_only(setup):
    _, store, app = setup
    queue = audit_queue("emu")
    with pytest.raises(RuntimeError), store.sessions.begin() as s:
        enqueue_after_commit(s, app.signature(AUDIT_TASK, args=(1,)))
        raise RuntimeError("rolled back")
    assert queue_depths(app, [queue]) == {queue: 0}
    with store.sessions.begin() as s:
        enqueue_after_commit(s, app.signature(AUDIT_TASK, args=(1,)))
        enqueue_after_commit(s, app.tasks[MAINTENANCE_TASK])
        assert queue_depths(app, [queue]) == {queue: 0}  # not before the commit
    assert queue_depths(app, [queue, "maintenance"]) == {queue: 1, "maintenance": 1}
    with pytest.raises(TypeError, match="must be ids"), store.sessions.begin() as s:
        enqueue_after_commit(s, app.signature(AUDIT_TASK, args=({"text": "a payload"},)))


def test_status_shows_queue_depths_next_to_the_store(setup):
    import json

    from typer.testing import CliRunner

    from omniopd.cli import app as cli

    config_path, store, app = setup
    store.trajectories(2)
    sweep(app, now=utcnow() + timedelta(seconds=61))
    result = CliRunner().invoke(cli, ["status", "--config", str(config_path), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["broker"]["queues"] == {"rollouts": 0, "audits.emu": 2, "maintenance": 0}
    assert status["trajectories"]["generated"] == 2


def test_lost_audits_are_requeued_then_dropped_with_a_reason(setup):
    _, store, app = setup
    ids = store.trajectories(2)
    queue = audit_queue("emu")
    report = sweep(app)
    assert report.requeued == [] and queue_depths(app, [queue]) == {queue: 0}  # still fresh
    report = sweep(app, now=utcnow() + timedelta(seconds=61))
    assert sorted(report.requeued) == sorted(ids) and queue_depths(app, [queue]) == {queue: 2}
    report = sweep(app, now=utcnow() + timedelta(seconds=90))  # the re-send restarted the clock
    assert report.requeued == []
    report = sweep(app, now=utcnow() + timedelta(seconds=200))  # still no progress after max_requeues
    assert sorted(report.dropped_audit_lost) == sorted(ids)
    with store.sessions.begin() as s:
        reasons = s.scalars(select(Trajectory.drop_reason).where(Trajectory.id.in_(ids))).all()
    assert reasons == ["audit_lost", "audit_lost"]


def test_sweep_expires_stale_reservations_and_frees_expired_claims(setup):
    _, store, app = setup
    (tid,) = store.trajectories(1, chunks=0)
    store.promote([tid])
    t0 = utcnow()
    with store.sessions.begin() as s:
        held = reserve(s, run_id=store.run_id, provider="emu", amount=250_000, now=t0)
        claim_ready_bundles(s, run_id=store.run_id, limit=1, min_policy_version=0, learner_id="dead", lease_s=60, now=t0)
    report = sweep(app, now=t0 + timedelta(seconds=301))
    assert (report.expired_reservations, report.expired_usd, report.released_claims) == (1, 0.25, 1)
    with store.sessions.begin() as s:
        assert s.get(Reservation, held.id).state == "expired"
        assert s.get(Trajectory, tid).claimed_by is None


def test_a_lost_audit_is_completed_by_a_worker_after_the_sweep_resends_it(setup, processes, tmp_path):
    config_path, store, app = setup
    (tid,) = store.trajectories(1, chunks=1, n=2)
    processes(["-m", "tests.workers.probe_tasks", str(config_path), "solo", "1"], tmp_path / "worker.log")
    assert sweep(app, now=utcnow() + timedelta(seconds=61)).requeued == [tid]
    wait_for(lambda: store.states([tid]) == ["ready"], 90, "the re-sent audit to finish")
    assert len(probe_lines(config_path, "deliver")) == 1
