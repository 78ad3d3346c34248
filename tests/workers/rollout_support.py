"""Helpers of the rollout and driver tests: a run with problems, the messages in a queue, a
fake rollout worker and a fake learner that do to the store what the real ones do."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import redis
from sqlalchemy import select

from db.models import RolloutBatch, Trajectory
from db.repo_audit import promote_if_complete
from db.repo_bundles import claim_ready_bundles, latest_step, record_step_and_consume
from db.repo_rollouts import record_batch, rollout_work
from db.repo_trajectories import record_trajectories
from tests.db.conftest import make_problems, trajectory
from tests.workers.conftest import Store, write_config


def rollout_run(tmp_path: Path, problems: int, **sections) -> Store:
    """A migrated store with the run and `problems` training problems."""
    store = Store(write_config(tmp_path / "run.yaml", **sections))
    with store.sessions.begin() as s:
        store.problem_ids = make_problems(s, problems, split="train")
    return store


def queued_args(redis_url: str, key_prefix: str, queue: str) -> list[list]:
    """The positional arguments of every message waiting in `queue` (kombu's Redis layout:
    a list at <prefix><queue> of JSON envelopes with a base64 JSON body [args, kwargs, embed])."""
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.lrange(f"{key_prefix}{queue}", 0, -1)
    finally:
        client.close()
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0] for m in raw]


def purge(redis_url: str, key_prefix: str, queue: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.delete(f"{key_prefix}{queue}")
    client.close()


def fake_rollout(store: Store, batch_id: int, version: int) -> list[int]:
    """What a rollout task does to the store, with made-up tokens: record the batch's
    pending slots (ready at once, no chunks) and mark it recorded."""
    with store.sessions.begin() as s:
        work = rollout_work(s, batch_id=batch_id)
        recorded = record_trajectories(s, trajectories=[
            trajectory(work.run_id, slot.problem_id, sample_index=slot.sample_index, epoch=slot.epoch,
                       attempt=slot.attempt, policy_version=version, chunks=0)
            for slot in work.pending
        ])
        for r in recorded:
            promote_if_complete(s, trajectory_id=r.id)
        record_batch(s, batch_id=batch_id, meta={"worker": "fake"})
    return [r.id for r in recorded]


def open_batch_ids(store: Store) -> list[int]:
    with store.sessions.begin() as s:
        return list(s.scalars(select(RolloutBatch.id).where(RolloutBatch.state == "issued").order_by(RolloutBatch.id)))


def fake_learner_step(store: Store, version: int, limit: int = 1000) -> int:
    """Claim and consume every ready bundle in one step; returns how many."""
    with store.sessions.begin() as s:
        bundles = claim_ready_bundles(s, run_id=store.run_id, limit=limit, min_policy_version=0,
                                      learner_id="test-learner", lease_s=600)
        if bundles:
            record_step_and_consume(s, run_id=store.run_id, step=latest_step(s, run_id=store.run_id) + 1,
                                    learner_id="test-learner", trajectory_ids=[b.trajectory_id for b in bundles],
                                    policy_version=version, metrics={})
    return len(bundles)


def slot_states(store: Store) -> dict[tuple[int, int, int], list[tuple[int, str, int]]]:
    """(problem, epoch, sample) -> [(attempt, state, policy_version)] by attempt."""
    out: dict[tuple[int, int, int], list[tuple[int, str, int]]] = {}
    with store.sessions.begin() as s:
        rows = s.execute(select(Trajectory.problem_id, Trajectory.epoch, Trajectory.sample_index, Trajectory.attempt,
                                Trajectory.state, Trajectory.policy_version).order_by(Trajectory.attempt))
        for p, e, i, a, state, v in rows:
            out.setdefault((p, e, i), []).append((a, state, v))
    return out


def live_per_slot(store: Store) -> Counter:
    """How many not-dropped trajectories each (problem, epoch, sample) has (must be 1)."""
    return Counter({key: sum(state != "dropped" for _, state, _ in rows) for key, rows in slot_states(store).items()})
