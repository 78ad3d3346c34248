"""Trajectories, chunks and teacher samples: slots, state machine, idempotent audits."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from db.models import Chunk, TeacherSample, Trajectory
from db.repo_audit import (
    TeacherSampleIn,
    add_teacher_samples,
    begin_audit,
    complete_chunk,
    fail_chunk,
    promote_if_complete,
)
from db.repo_bundles import load_bundles
from db.repo_trajectories import (
    SlotKey,
    drop_stale,
    drop_trajectories,
    existing_slots,
    record_trajectories,
)
from tests.db.conftest import make_problems, trajectory


def samples(n, phi=0.5, start=0):
    return [TeacherSampleIn(i, f"teacher {i}", f"cut {i}", phi) for i in range(start, n)]


def test_a_redelivered_rollout_cannot_store_a_slot_twice(sessions, run_id):
    with sessions.begin() as s:
        pids = make_problems(s, 3)
        first = record_trajectories(s, trajectories=[trajectory(run_id, p) for p in pids])
    # The task is redelivered after a new policy was published: same slots, new version.
    with sessions.begin() as s:
        assert set(existing_slots(s, run_id=run_id, slots=[SlotKey(p, 0, 0) for p in pids])) == {SlotKey(p, 0, 0) for p in pids}
        again = record_trajectories(s, trajectories=[trajectory(run_id, p, policy_version=1) for p in pids])
    assert [r.created for r in first] == [True] * 3 and [r.created for r in again] == [False] * 3
    assert [r.id for r in again] == [r.id for r in first]
    with sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(Trajectory)) == 3
        assert s.scalar(select(func.count()).select_from(Chunk)) == 6  # chunks were not duplicated either
        # a deliberate resample of a slot uses the next attempt
        assert record_trajectories(s, trajectories=[trajectory(run_id, pids[0], attempt=1)])[0].created


def test_stored_arrays_and_texts_rebuild_the_batch(sessions, run_id):
    with sessions.begin() as s:
        pid = make_problems(s, 1)[0]
        tid = record_trajectories(s, trajectories=[trajectory(run_id, pid, n_tokens=9, chunks=2)])[0].id
    with sessions.begin() as s:
        (bundle,) = load_bundles(s, trajectory_ids=[tid])
    assert bundle.completion_token_ids.tolist() == list(range(9))
    assert bundle.prompt_token_ids.tolist() == [101, 102, 103]
    assert bundle.entropies.tolist() == [float(k % 5) for k in range(9)]
    assert [(c.start, c.end, c.state) for c in bundle.chunks] == [(0, 3, "pending"), (4, 7, "pending")]
    assert bundle.meta == {"worker": "test"}


def test_inconsistent_trajectories_are_refused_before_reaching_the_store(run_id):
    good = trajectory(run_id, 1)
    with pytest.raises(ValueError, match="one length"):
        dataclasses.replace(good, logprobs=[0.0])
    with pytest.raises(ValueError, match="overlapping"):
        dataclasses.replace(good, chunks=[good.chunks[1], good.chunks[0]])
    with pytest.raises(ValueError, match="entropy_source"):
        dataclasses.replace(good, entropy_source="guess")


def test_audit_is_idempotent_and_promotes_only_when_every_chunk_is_terminal(sessions, run_id):
    with sessions.begin() as s:
        pid = make_problems(s, 1)[0]
        tid = record_trajectories(s, trajectories=[trajectory(run_id, pid, chunks=2, n=3)])[0].id
    with sessions.begin() as s:
        work = begin_audit(s, trajectory_id=tid)
    assert work.state == "auditing" and not work.done
    first, second = work.chunks
    assert first.prefix == "" and second.prefix == "w0 w1 w2 w3 "[: 3 * 4]
    assert first.missing == [0, 1, 2]
    with sessions.begin() as s:
        assert add_teacher_samples(s, chunk_id=first.id, samples=samples(2)) == 2
    with sessions.begin() as s:  # a retry after a crash: only the missing sample is new
        assert add_teacher_samples(s, chunk_id=first.id, samples=samples(3)) == 1
        assert add_teacher_samples(s, chunk_id=second.id, samples=samples(2)) == 2
        with pytest.raises(ValueError, match="2 of its 3"):
            complete_chunk(s, chunk_id=second.id, k_sem=1.0)
    with sessions.begin() as s:
        assert begin_audit(s, trajectory_id=tid).chunks[0].missing == []
        assert complete_chunk(s, chunk_id=first.id, k_sem=1.5)
        assert not complete_chunk(s, chunk_id=first.id, k_sem=1.5)  # terminal stays terminal
        assert promote_if_complete(s, trajectory_id=tid) == "auditing"
        assert fail_chunk(s, chunk_id=second.id, state="skipped_budget", error="run cap reached")
        assert promote_if_complete(s, trajectory_id=tid) == "ready"
    with sessions.begin() as s:
        assert begin_audit(s, trajectory_id=tid).done
        assert s.scalar(select(func.count()).select_from(TeacherSample)) == 5
        (bundle,) = load_bundles(s, trajectory_ids=[tid], with_samples=True)
    assert [(c.state, c.k_sem) for c in bundle.chunks] == [("audited", 1.5), ("skipped_budget", None)]
    assert [x.i for x in bundle.chunks[0].samples] == [0, 1, 2]


def test_sample_values_out_of_range_are_refused(sessions, run_id):
    with sessions.begin() as s:
        pid = make_problems(s, 1)[0]
        tid = record_trajectories(s, trajectories=[trajectory(run_id, pid, n=2)])[0].id
        chunk_id = begin_audit(s, trajectory_id=tid).chunks[0].id
        with pytest.raises(ValueError, match="outside"):
            add_teacher_samples(s, chunk_id=chunk_id, samples=[TeacherSampleIn(2, "t", "t", 0.5)])
        with pytest.raises(ValueError, match="phi"):
            add_teacher_samples(s, chunk_id=chunk_id, samples=[TeacherSampleIn(0, "t", "t", 1.5)])


def test_database_constraints_hold_even_against_raw_writes(sessions, run_id):
    with sessions.begin() as s:
        pid = make_problems(s, 1)[0]
        tid = record_trajectories(s, trajectories=[trajectory(run_id, pid)])[0].id
    for values in ({"state": "dropped"}, {"state": "consumed"}, {"state": "flying"}):
        with pytest.raises(IntegrityError), sessions.begin() as s:
            s.execute(Trajectory.__table__.update().where(Trajectory.id == tid).values(**values))


def test_drops_keep_a_reason_and_spare_consumed_and_claimed_bundles(sessions, run_id):
    from db.repo_bundles import claim_ready_bundles

    with sessions.begin() as s:
        pids = make_problems(s, 4)
        ids = [r.id for r in record_trajectories(
            s, trajectories=[trajectory(run_id, p, chunks=0, policy_version=v) for p, v in zip(pids, [0, 0, 1, 2], strict=True)]
        )]
        for tid in ids[:2]:
            promote_if_complete(s, trajectory_id=tid)
        claimed = claim_ready_bundles(s, run_id=run_id, limit=1, min_policy_version=0, learner_id="L", lease_s=600)
    assert [b.trajectory_id for b in claimed] == [ids[0]]
    with sessions.begin() as s:
        assert drop_stale(s, run_id=run_id, min_policy_version=2) == 2  # ids[1] (ready) and ids[2]; ids[0] is leased
        assert drop_trajectories(s, trajectory_ids=ids, reason="manual", detail="test") == 1  # only ids[3] is left
        states = dict(s.execute(select(Trajectory.id, Trajectory.drop_reason)).all())
    assert states == {ids[0]: None, ids[1]: "stale_policy", ids[2]: "stale_policy", ids[3]: "manual"}
