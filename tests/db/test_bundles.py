"""Bundle claims: exclusive under concurrency, leases, consume-with-step, rewind."""

from __future__ import annotations

import json
import multiprocessing
import random
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import LearnerStep, Trajectory, utcnow
from db.repo_bundles import (
    ClaimLost,
    claim_ready_bundles,
    count_claimable,
    latest_step,
    learner_steps,
    record_step_and_consume,
    release_claims,
    renew_claims,
    rewind_to_step,
)
from db.session import make_engine, make_session_factory
from tests.db.conftest import ready_bundles

LEASE = 600.0


def claim(s, run_id, learner, limit=10, min_version=0, now=None, lease=LEASE):
    got = claim_ready_bundles(s, run_id=run_id, limit=limit, min_policy_version=min_version, learner_id=learner,
                              lease_s=lease, now=now)
    return [b.trajectory_id for b in got]


def consume(s, run_id, learner, step, ids):
    return record_step_and_consume(s, run_id=run_id, step=step, learner_id=learner, trajectory_ids=ids,
                                   policy_version=0, metrics={"loss": 0.5}, loss=0.5, n_tokens=10, wall_s=0.1)


def test_claimed_bundles_are_invisible_to_other_claimers_and_respect_the_policy_lag(sessions, run_id):
    old = ready_bundles(sessions, run_id, 3, policy_version=0)
    new = ready_bundles(sessions, run_id, 3, policy_version=2)
    with sessions.begin() as s:
        assert claim(s, run_id, "A", limit=2, min_version=1) == new[:2]
        assert claim(s, run_id, "B", limit=5, min_version=1) == new[2:]
        assert claim(s, run_id, "B", limit=5, min_version=1) == []
        assert count_claimable(s, run_id=run_id, min_policy_version=0) == 3
        assert claim(s, run_id, "C", limit=5) == old


def test_a_dead_learners_claims_come_back_by_lease_expiry_or_release(sessions, run_id):
    ids = ready_bundles(sessions, run_id, 4)
    t0 = utcnow()
    with sessions.begin() as s:
        assert claim(s, run_id, "A", limit=2, now=t0, lease=60) == ids[:2]
        assert claim(s, run_id, "B", limit=2, now=t0, lease=600) == ids[2:]
    with sessions.begin() as s:  # A died: after its lease another learner may take its bundles
        assert claim(s, run_id, "C", now=t0 + timedelta(seconds=30)) == []
        assert claim(s, run_id, "C", now=t0 + timedelta(seconds=61)) == ids[:2]
    with pytest.raises(ClaimLost, match="not ready and claimed by 'A'"), sessions.begin() as s:
        consume(s, run_id, "A", 1, ids[:2])
    with sessions.begin() as s:  # B restarts with the same learner id and releases at once
        assert renew_claims(s, run_id=run_id, learner_id="B", lease_s=60) == 2
        assert release_claims(s, run_id=run_id, learner_id="B") == 2
        assert claim(s, run_id, "B2", now=t0 + timedelta(seconds=31)) == ids[2:]


def test_step_and_consumption_commit_together_or_not_at_all(sessions, run_id):
    ids = ready_bundles(sessions, run_id, 4)
    with sessions.begin() as s:
        mine = claim(s, run_id, "L", limit=2)
    with pytest.raises(ClaimLost), sessions.begin() as s:
        consume(s, run_id, "L", 1, [*mine, ids[3]])  # one bundle was never claimed: nothing commits
    with sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(LearnerStep)) == 0
        assert consume(s, run_id, "L", 1, mine)
    with pytest.raises(ValueError, match="already recorded"), sessions.begin() as s:
        consume(s, run_id, "L", 1, claim(s, run_id, "L", limit=1))
    with sessions.begin() as s:
        states = dict(s.execute(select(Trajectory.id, Trajectory.state)).all())
        assert [states[i] for i in ids] == ["consumed", "consumed", "ready", "ready"]
        assert latest_step(s, run_id=run_id) == 1
        assert [st.step for st in learner_steps(s, run_id=run_id)] == [1]


def test_rewind_makes_bundles_of_lost_steps_ready_again(sessions, run_id):
    ready_bundles(sessions, run_id, 6)
    with sessions.begin() as s:
        for step in (1, 2, 3):
            consume(s, run_id, "L", step, claim(s, run_id, "L", limit=2))
    with sessions.begin() as s:  # the learner resumed from its step-1 checkpoint
        assert rewind_to_step(s, run_id=run_id, step=1) == 4
        assert latest_step(s, run_id=run_id) == 1
        assert count_claimable(s, run_id=run_id) == 4


def _claimer(url: str, run_id: int, index: int, out: str, start) -> None:
    """One learner process: claim random batch sizes until nothing is left, consuming each."""
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    rng = random.Random(index)
    seen: list[int] = []
    step = index * 100_000
    start.wait()
    while True:
        with sessions.begin() as s:
            ids = claim(s, run_id, f"learner-{index}", limit=rng.randint(1, 8))
        if not ids:
            break
        step += 1
        with sessions.begin() as s:
            consume(s, run_id, f"learner-{index}", step, ids)
        seen.extend(ids)
    engine.dispose()
    with open(out, "w") as handle:
        json.dump(seen, handle)


@pytest.mark.slow
def test_four_concurrent_claimers_take_every_bundle_exactly_once(backend_url, engine, sessions, run_id, tmp_path):
    ids = ready_bundles(sessions, run_id, 1000)
    engine.dispose()  # children open their own connections
    # spawn, not fork: a forked child inherits whatever earlier tests left in this process
    # (kombu's after-fork hooks once hung every child on a Redis socket they shared).
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    outs = [str(tmp_path / f"claimer{k}.json") for k in range(4)]
    procs = [ctx.Process(target=_claimer, args=(backend_url, run_id, k, outs[k], start)) for k in range(4)]
    for p in procs:
        p.start()
    start.set()
    try:
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    claimed = [json.loads(Path(o).read_text()) for o in outs]
    flat = [i for c in claimed for i in c]
    assert len(flat) == len(set(flat)) == 1000, "a bundle was claimed twice or lost"
    assert set(flat) == set(ids)
    # They ran concurrently. (Not every one is guaranteed work: SQLite's busy handler backs
    # off with sleeps, so a claimer can wait out the whole run while the others take turns.)
    assert sum(1 for c in claimed if c) >= 2, "at least two claimers got work"
    with sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(Trajectory).where(Trajectory.state == "consumed")) == 1000
        assert s.scalar(select(func.sum(LearnerStep.n_bundles))) == 1000


def test_policy_versions_of_damaged_checkpoints_are_withdrawn_and_their_samples_resampled(sessions, run_id):
    from db.repo_bundles import withdraw_policy_versions
    from db.repo_runs import latest_policy_version, publish_policy_version

    with sessions.begin() as s:
        for v in (1, 2):
            publish_policy_version(s, run_id=run_id, version=v, path=f"/ck/step-{v}", step=2 * v)
    old = ready_bundles(sessions, run_id, 2, policy_version=1)
    lost = ready_bundles(sessions, run_id, 3, policy_version=2)
    with sessions.begin() as s:  # step 3 trained bundles of v2; the step-4 checkpoint (v2) is damaged
        consume(s, run_id, "L", 3, claim(s, run_id, "L", min_version=2))
    with sessions.begin() as s:
        assert rewind_to_step(s, run_id=run_id, step=2) == 3
        assert withdraw_policy_versions(s, run_id=run_id, paths=["/ck/step-2"]) == ([2], 3)
        assert latest_policy_version(s, run_id=run_id).version == 1
        states = dict(s.execute(select(Trajectory.id, Trajectory.drop_reason)).all())
    assert [states[i] for i in lost] == ["stale_policy"] * 3 and [states[i] for i in old] == [None, None]
