"""The learner through a store outage (db/outage.py, docs/learner.md): on PostgreSQL it
waits, re-takes its lock and finishes the run with every bundle trained exactly once; it
stops, writing nothing more, if another learner took the run meanwhile; and a step record
whose COMMIT outcome is unknown is neither lost nor recorded twice."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.engine import make_url

from db.learner_lock import LearnerLock
from db.models import Trajectory
from db.outage import wait_for_store
from db.repo_bundles import learner_steps
from omniopd.train import build_trainer, checkpoint_root
from tests.db.outage_helpers import CutCommit, Outage
from tests.workers.conftest import Store, write_config
from tests.workers.learner_fakes import StoreDriver, insert_bundles
from workers.learner import loop as loop_module
from workers.learner.loop import Learner, LearnerDisplaced

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def outage_store(tmp_path, tiny_model_dir, url: str | None = None) -> Store:
    sections = {"store": {"url": url}} if url else {}
    path = write_config(
        tmp_path / "run.yaml",
        student={"path": tiny_model_dir, "device": "cpu"},
        learner={"batch_size": 2, "checkpoint_every": 2, "max_steps": 50, "lr": 1e-3, "tensorboard": False,
                 "poll_s": 0.05},
        loss={"normalisation": "token"},
        **sections,
    )
    return Store(path)


def make_learner(store: Store, *, sessions=None, sinks=(), lock: LearnerLock | None = None) -> Learner:
    config = store.config
    return Learner(
        config=config, sessions=sessions or store.sessions, run_id=store.run_id, trainer=build_trainer(config),
        driver=StoreDriver(app=None, sessions=store.sessions, config=config, run_id=store.run_id),
        checkpoint_dir=checkpoint_root(config.run.output_dir), sinks=sinks, lock=lock,
    )


class AtStep:
    """A metrics sink that runs `action` once, right after step `step` is recorded (in the learner's thread)."""

    def __init__(self, step: int, action) -> None:
        self.at, self.action = step, action

    def step(self, step, _metrics) -> None:
        if step == self.at:
            self.action()

    def progress(self, _view) -> None:
        pass

    def close(self) -> None:
        pass


def trained_exactly_once(store: Store, ids: list[int]) -> None:
    with store.sessions.begin() as s:
        consumed = dict(s.execute(select(Trajectory.id, Trajectory.consumed_step).where(Trajectory.run_id == store.run_id)).all())
        steps = learner_steps(s, run_id=store.run_id)
    assert sorted(consumed) == sorted(ids) and all(consumed[i] is not None for i in ids), consumed
    assert [r.step for r in steps] == list(range(1, len(steps) + 1))
    per_step: dict[int, int] = {}
    for step in consumed.values():
        per_step[step] = per_step.get(step, 0) + 1
    assert {r.step: r.n_bundles for r in steps} == per_step


@pytest.mark.services
def test_the_learner_waits_out_a_store_outage_and_loses_nothing(tmp_path, tiny_model_dir, postgres_url,
                                                                postgres_admin_url, caplog):
    store = outage_store(tmp_path, tiny_model_dir, postgres_url)
    outage = Outage(postgres_admin_url, make_url(postgres_url).database)
    ids = insert_bundles(store.sessions, store.run_id, 7)
    wait_for_store(store.engine, retry_s=0.3)
    lock = LearnerLock(store.engine, store.config.run.name)
    lock.acquire()

    def take_the_store_away() -> None:  # every connection cut, the lock's included; back in 3 s
        outage.begin()
        outage.end_after(3.0)

    caplog.set_level(logging.INFO)
    try:
        summary = make_learner(store, sinks=[AtStep(1, take_the_store_away)], lock=lock).run()
    finally:
        lock.release()
        outage.close()
    assert summary.reason == "exhausted" and summary.bundles == 7 and summary.steps == 4
    trained_exactly_once(store, ids)
    assert lock.reacquired == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("store unreachable, waiting for it") for m in messages) == 1
    assert any(m.startswith("store reachable again after") for m in messages)
    assert any(m.startswith("learner lock re-acquired for run 'wtest'") for m in messages)
    store.engine.dispose()


@pytest.mark.services
def test_a_learner_whose_lock_another_learner_took_stops_and_records_nothing_more(
        tmp_path, tiny_model_dir, postgres_url, postgres_admin_url):
    store = outage_store(tmp_path, tiny_model_dir, postgres_url)
    outage = Outage(postgres_admin_url, make_url(postgres_url).database)
    insert_bundles(store.sessions, store.run_id, 7)
    wait_for_store(store.engine, retry_s=0.3)
    lock = LearnerLock(store.engine, store.config.run.name)
    lock.acquire()
    other_engine = sa.create_engine(postgres_url)
    other = LearnerLock(other_engine, store.config.run.name)

    def lose_the_lock() -> None:
        # The server ends the lock's connection (a restart would); a second learner starts meanwhile.
        with outage.admin.connect() as c:
            (pid,) = c.execute(sa.text(
                "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = :d"), {"d": outage.database}).one()
        outage.terminate(pid)
        other.acquire()

    try:
        with pytest.raises(LearnerDisplaced, match=r"another learner took the run meanwhile.*stops without recording anything more"):
            make_learner(store, sinks=[AtStep(1, lose_the_lock)], lock=lock).run()
    finally:
        other.release()
        lock.release()
        other_engine.dispose()
        outage.close()
    with store.sessions.begin() as s:
        assert [r.step for r in learner_steps(s, run_id=store.run_id)] == [1]
    store.engine.dispose()


@pytest.mark.parametrize("when", ["after", "before"])
def test_a_step_record_whose_commit_outcome_is_unknown_is_recorded_exactly_once(
        tmp_path, tiny_model_dir, monkeypatch, caplog, when):
    store = outage_store(tmp_path, tiny_model_dir)
    ids = insert_bundles(store.sessions, store.run_id, 5)
    flaky = CutCommit(store.sessions, when)
    real = loop_module.record_step_and_consume
    cut_steps: set[int] = set()

    def record(session, **kwargs):
        row = real(session, **kwargs)
        if kwargs["step"] in (1, 3) and kwargs["step"] not in cut_steps:
            cut_steps.add(kwargs["step"])
            flaky.armed = True  # this transaction's connection drops around its COMMIT
        return row

    monkeypatch.setattr(loop_module, "record_step_and_consume", record)
    caplog.set_level(logging.INFO)
    summary = make_learner(store, sessions=flaky).run()
    assert flaky.cut == 2
    assert summary.reason == "exhausted" and summary.steps == 3 and summary.bundles == 5
    trained_exactly_once(store, ids)
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("store connection lost during recording step") for m in messages) == 2
    skipped = sum("was recorded before the store connection dropped" in m for m in messages)
    assert skipped == (2 if when == "after" else 0)
    store.engine.dispose()
