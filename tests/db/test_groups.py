"""Group claims (claim_ready_groups, for GRPO): whole groups only, never split, exactly once
with consume and rewind; rewards travel with the bundles."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select

from db.models import Trajectory, utcnow
from db.repo_audit import promote_if_complete
from db.repo_bundles import claim_ready_groups, record_step_and_consume, rewind_to_step
from db.repo_trajectories import drop_trajectories, record_trajectories
from tests.db.conftest import make_problems, trajectory

LEASE = 600.0


def add_groups(sessions, run_id, sizes, *, promote=True, version=0) -> list[list[int]]:
    """One group of `size` samples per entry (one problem each), rewards 1, 0, 1, ...; ready when `promote`."""
    with sessions.begin() as s:
        pids = make_problems(s, len(sizes), split=f"g{utcnow().timestamp()}")
        records = [replace(trajectory(run_id, p, sample_index=j, chunks=0, policy_version=version), reward=float(j % 2 == 0))
                   for p, size in zip(pids, sizes, strict=True) for j in range(size)]
        ids = [r.id for r in record_trajectories(s, trajectories=records)]
        if promote:
            for tid in ids:
                promote_if_complete(s, trajectory_id=tid)
    out, k = [], 0
    for size in sizes:
        out.append(ids[k : k + size])
        k += size
    return out


def claim(s, run_id, learner, groups, *, now=None, min_version=0):
    return claim_ready_groups(s, run_id=run_id, groups=groups, min_policy_version=min_version, learner_id=learner,
                              lease_s=LEASE, now=now)


def test_whole_groups_are_claimed_oldest_first_with_their_rewards(sessions, run_id):
    groups = add_groups(sessions, run_id, [3, 3, 3])
    with sessions.begin() as s:
        got = claim(s, run_id, "L", 2)
    assert [b.trajectory_id for b in got] == groups[0] + groups[1]
    assert [b.reward for b in got] == [1.0, 0.0, 1.0] * 2
    assert len({b.group for b in got}) == 2 and all(b.epoch == 0 and b.attempt == 0 for b in got)
    with sessions.begin() as s:
        assert [b.trajectory_id for b in claim(s, run_id, "other", 5)] == groups[2]  # held groups are skipped
        assert claim(s, run_id, "third", 5) == []


def test_a_group_with_a_member_still_on_its_way_is_held_back_and_dropped_members_are_left_out(sessions, run_id):
    waiting, partial = add_groups(sessions, run_id, [2, 3], promote=False)
    with sessions.begin() as s:
        promote_if_complete(s, trajectory_id=waiting[0])  # its sibling is still `generated`
        drop_trajectories(s, trajectory_ids=[partial[1]], reason="reward_failed", detail="grader raised")
        for tid in (partial[0], partial[2]):
            promote_if_complete(s, trajectory_id=tid)
    with sessions.begin() as s:
        got = claim(s, run_id, "L", 5)
    assert [b.trajectory_id for b in got] == [partial[0], partial[2]]


def test_an_expired_lease_frees_the_whole_group_and_a_stale_group_is_not_claimed(sessions, run_id):
    [old] = add_groups(sessions, run_id, [2], version=0)
    [new] = add_groups(sessions, run_id, [2], version=3)
    now = utcnow()
    with sessions.begin() as s:
        assert [b.trajectory_id for b in claim(s, run_id, "dead", 1, now=now, min_version=2)] == new
    with sessions.begin() as s:
        assert claim(s, run_id, "L", 5, now=now + timedelta(seconds=10), min_version=2) == []
        later = claim(s, run_id, "L", 5, now=now + timedelta(seconds=LEASE + 1), min_version=2)
    assert [b.trajectory_id for b in later] == new and old not in [b.trajectory_id for b in later]


def test_a_consumed_group_is_rewound_whole_and_claimed_again_whole(sessions, run_id):
    groups = add_groups(sessions, run_id, [2, 2])
    with sessions.begin() as s:
        first = [b.trajectory_id for b in claim(s, run_id, "L", 1)]
        record_step_and_consume(s, run_id=run_id, step=1, learner_id="L", trajectory_ids=first, policy_version=0,
                                metrics={})
    with sessions.begin() as s:
        assert rewind_to_step(s, run_id=run_id, step=0) == 2
    with sessions.begin() as s:
        again = [b.trajectory_id for b in claim(s, run_id, "L", 2)]
        states = dict(s.execute(select(Trajectory.id, Trajectory.state)).all())
    assert first == groups[0] and again == groups[0] + groups[1]
    assert all(states[t] == "ready" for g in groups for t in g)
