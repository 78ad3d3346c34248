"""The driver against a real store and real Redis, with a fake rollout worker and learner
that change the store exactly as the real ones do (the real worker: tests/workers/rollout/test_task.py)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from db.models import utcnow
from db.repo_rollouts import rollout_status
from db.repo_runs import publish_policy_version
from db.repo_status import run_status
from omniopd.cli import app
from tests.workers.rollout_support import (
    fake_learner_step,
    fake_rollout,
    live_per_slot,
    open_batch_ids,
    purge,
    queued_args,
    rollout_run,
    slot_states,
)
from workers.app import make_celery
from workers.learner.driver import Driver, epoch_order

pytestmark = [pytest.mark.services]


def make_driver(store, redis_url, **kwargs):
    return Driver(app=make_celery(store.config, broker_url=redis_url), sessions=store.sessions, config=store.config,
                  run_id=store.run_id, **kwargs)


def broker(redis_url, redis_prefix):
    return {"mode": "redis", "url": redis_url, "key_prefix": redis_prefix}


def test_driver_keeps_pipeline_depth_batches_in_flight_and_reports_exhausted_at_the_end(tmp_path, redis_url, redis_prefix):
    store = rollout_run(
        tmp_path, 7, broker=broker(redis_url, redis_prefix), data={"epochs": 2},
        rollout={"batch_problems": 2, "samples_per_prompt": 2},
        learner={"pipeline_depth": 2, "batch_size": 2, "checkpoint_every": 100, "max_policy_lag": 1},
    )
    driver = make_driver(store, redis_url)
    issued: list[int] = []
    for _ in range(40):
        report = driver.tick(trained_version=0)
        issued += [args[0] for args in queued_args(redis_url, redis_prefix, "rollouts")]
        purge(redis_url, redis_prefix, "rollouts")
        if report.exhausted:
            break
        open_ = open_batch_ids(store)
        assert report.in_flight_batches == len(open_) <= 2
        # Work remains, so the driver keeps exactly `pipeline_depth` in flight until the last batches.
        assert len(open_) == 2 or not driver._has_fresh()
        fake_rollout(store, open_[0], version=0)
        fake_learner_step(store, version=0)
    assert report.exhausted and report.in_flight_batches == 0
    assert sorted(issued) == sorted(set(issued))  # every batch sent once
    slots = slot_states(store)
    # 7 problems x 2 epochs x 2 samples, each exactly once, attempt 0, consumed.
    assert len(slots) == 28 and all(rows == [(0, "consumed", 0)] for rows in slots.values())
    # Later ticks stay exhausted and issue nothing.
    assert driver.tick(trained_version=0).exhausted and not queued_args(redis_url, redis_prefix, "rollouts")


def test_epoch_order_is_a_seeded_shuffle_that_differs_between_epochs():
    ids = list(range(1, 51))
    assert epoch_order(ids, 0, 0) == epoch_order(ids, 0, 0) and sorted(epoch_order(ids, 0, 1)) == ids
    assert epoch_order(ids, 0, 0) != epoch_order(ids, 0, 1) and epoch_order(ids, 0, 0) != epoch_order(ids, 1, 0)


def test_work_ahead_of_the_learner_is_bounded_by_the_policy_lag_window(tmp_path, redis_url, redis_prefix):
    # K=1, L=0, B=2: trajectories of version v are trainable for one step, so at most
    # B=2 may be ahead of the learner, however deep the pipeline.
    store = rollout_run(
        tmp_path, 10, broker=broker(redis_url, redis_prefix), rollout={"batch_problems": 1},
        learner={"pipeline_depth": 5, "batch_size": 2, "checkpoint_every": 1, "max_policy_lag": 0},
    )
    driver = make_driver(store, redis_url)
    assert driver.tick(trained_version=0).in_flight_batches == 2
    for batch_id in open_batch_ids(store):
        fake_rollout(store, batch_id, version=0)
    assert driver.tick(trained_version=0).enqueued_batches == 0  # 2 ready, untrained: no room
    assert fake_learner_step(store, version=0) == 2
    with store.sessions.begin() as s:
        publish_policy_version(s, run_id=store.run_id, version=1, path="/ckpt/v1", step=1)
    assert driver.tick(trained_version=1).in_flight_batches == 2


def test_stale_trajectories_are_dropped_counted_and_their_slots_resampled(tmp_path, redis_url, redis_prefix):
    store = rollout_run(
        tmp_path, 4, broker=broker(redis_url, redis_prefix), rollout={"batch_problems": 2},
        learner={"pipeline_depth": 2, "batch_size": 2, "checkpoint_every": 100, "max_policy_lag": 1},
    )
    driver = make_driver(store, redis_url)
    driver.tick(trained_version=0)
    first, second = open_batch_ids(store)
    fake_rollout(store, first, version=0)
    with store.sessions.begin() as s:
        publish_policy_version(s, run_id=store.run_id, version=1, path="/ckpt/v1", step=100)
    fake_rollout(store, second, version=1)
    with store.sessions.begin() as s:
        publish_policy_version(s, run_id=store.run_id, version=2, path="/ckpt/v2", step=200)
    purge(redis_url, redis_prefix, "rollouts")

    report = driver.tick(trained_version=2)  # lag 1: v0 is two versions old, v1 is still fine
    assert report.dropped_stale == 2 and report.resampled_slots == 2 and report.enqueued_batches == 1
    with store.sessions.begin() as s:
        status = run_status(s, run_id=store.run_id, run_name="wtest", run_status="created")
        assert status.dropped == {"stale_policy": 2} and status.trajectories["ready"] == 2
        assert rollout_status(s, run_id=store.run_id).resamples_pending == 0  # all issued again
    (resample,) = open_batch_ids(store)
    assert queued_args(redis_url, redis_prefix, "rollouts") == [[resample]]
    shown = CliRunner().invoke(app, ["status", "--config", str(tmp_path / "run.yaml"), "--json"])
    assert shown.exit_code == 0, shown.output
    shown = json.loads(shown.output)
    assert shown["dropped"] == {"stale_policy": 2} and shown["broker"]["queues"]["rollouts"] == 1
    assert (shown["rollouts"]["batches_in_flight"], shown["rollouts"]["batches_recorded"]) == (1, 2)
    fake_rollout(store, resample, version=2)
    slots = slot_states(store)
    dropped = [k for k, rows in slots.items() if rows[0][1] == "dropped"]
    assert len(dropped) == 2 and all(slots[k] == [(0, "dropped", 0), (1, "ready", 2)] for k in dropped)
    assert set(live_per_slot(store).values()) == {1}  # none silently lost, none twice
    assert not driver.tick(trained_version=2).exhausted
    fake_learner_step(store, version=2)
    assert driver.tick(trained_version=2).exhausted


def test_a_restarted_driver_continues_where_it_stopped_without_reissuing(tmp_path, redis_url, redis_prefix):
    store = rollout_run(
        tmp_path, 6, broker=broker(redis_url, redis_prefix), rollout={"batch_problems": 1},
        learner={"pipeline_depth": 2, "batch_size": 2, "checkpoint_every": 100},
    )
    make_driver(store, redis_url).tick(trained_version=0)
    first_open = open_batch_ids(store)
    fake_rollout(store, first_open[0], version=0)
    restarted = make_driver(store, redis_url)  # a new learner process
    report = restarted.tick(trained_version=0)
    assert report.in_flight_batches == 2 and report.enqueued_batches == 1  # the unrecorded one is still in flight
    while not report.exhausted:
        for batch_id in open_batch_ids(store):
            fake_rollout(store, batch_id, version=0)
        fake_learner_step(store, version=0)
        report = restarted.tick(trained_version=0)
    assert Counter(k[:2] for k in slot_states(store)) == Counter({(p, 0): 1 for p in store.problem_ids})


def test_a_lost_batch_message_is_sent_again_after_the_reissue_timeout(tmp_path, redis_url, redis_prefix):
    store = rollout_run(
        tmp_path, 2, broker=broker(redis_url, redis_prefix), rollout={"batch_problems": 1, "reissue_after_s": 60},
        learner={"pipeline_depth": 2, "batch_size": 2},
    )
    now = [utcnow()]
    driver = make_driver(store, redis_url, clock=lambda: now[0])
    driver.tick(trained_version=0)
    batches = open_batch_ids(store)
    purge(redis_url, redis_prefix, "rollouts")  # the broker lost them
    now[0] += timedelta(seconds=30)
    assert driver.tick(trained_version=0).enqueued_batches == 0
    fake_rollout(store, batches[0], version=0)
    now[0] += timedelta(seconds=31)
    report = driver.tick(trained_version=0)
    assert (report.enqueued_batches, report.resent_batches, report.in_flight_batches) == (1, 1, 1)
    assert queued_args(redis_url, redis_prefix, "rollouts") == [[batches[1]]]
    with store.sessions.begin() as s:
        assert rollout_status(s, run_id=store.run_id).resends == 1


def test_driver_refuses_to_start_without_problems_or_without_a_teacher_for_audits(tmp_path, redis_url, redis_prefix):
    (tmp_path / "a").mkdir()
    store = rollout_run(tmp_path / "a", 0, broker=broker(redis_url, redis_prefix))
    with pytest.raises(ValueError, match="omniopd data import"):
        make_driver(store, redis_url)
    (tmp_path / "b").mkdir()
    store = rollout_run(tmp_path / "b", 1, broker=broker(redis_url, redis_prefix), audit={"teacher": ""})
    with pytest.raises(ValueError, match=r"audit\.teacher is empty"):
        make_driver(store, redis_url)
