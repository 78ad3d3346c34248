"""What the learner loop asks the store: is the teacher budget spent, is work still coming."""

from __future__ import annotations

from datetime import timedelta

from db.models import utcnow
from db.repo_audit import fail_chunk, promote_if_complete
from db.repo_budget import reserve, set_budget_caps, settle
from db.repo_learner import budget_state, consumed_bundles, unfinished_trajectories
from db.repo_trajectories import record_trajectories
from tests.db.conftest import make_problems, trajectory


def test_budget_is_spent_when_an_applicable_cap_is_reached(sessions, run_id):
    start = utcnow()
    with sessions.begin() as s:
        set_budget_caps(s, run_id=run_id, provider_caps={"claude": 1_000, "gemini": 500}, run_cap=None)
        state = budget_state(s, run_id=run_id, providers=["claude"], since=start)
        assert not state.exhausted and state.cap is None and state.spent == 0
        r = reserve(s, run_id=run_id, provider="gemini", amount=500)
        settle(s, reservation_id=r.id, actual=500)
        assert not budget_state(s, run_id=run_id, providers=["claude"], since=start).exhausted  # not our teacher
        r = reserve(s, run_id=run_id, provider="claude", amount=1_000)
        state = budget_state(s, run_id=run_id, providers=["claude"], since=start)  # reserved counts
        assert state.exhausted and state.cap_reached.label == "teacher 'claude'" and state.spent == 500 and state.reserved == 1_000


def test_budget_is_spent_when_an_audit_was_refused_since_the_learner_started(sessions, run_id):
    with sessions.begin() as s:
        (pid,) = make_problems(s, 1)
        (rec,) = record_trajectories(s, trajectories=[trajectory(run_id, pid, chunks=2)])
        assert unfinished_trajectories(s, run_id=run_id) == 1
    with sessions.begin() as s:
        from sqlalchemy import select

        from db.models import Chunk

        chunk_ids = s.scalars(select(Chunk.id).where(Chunk.trajectory_id == rec.id)).all()
        for cid in chunk_ids:
            fail_chunk(s, chunk_id=cid, state="skipped_budget", error="cap")
        promote_if_complete(s, trajectory_id=rec.id)
    now = utcnow()
    with sessions.begin() as s:
        refused = budget_state(s, run_id=run_id, providers=["claude"], since=now - timedelta(minutes=5))
        assert refused.exhausted and refused.refused and refused.cap_reached is None
        # refused before this learner started (the cap was raised since): not a reason to stop
        assert not budget_state(s, run_id=run_id, providers=["claude"], since=now + timedelta(seconds=1)).exhausted
        assert unfinished_trajectories(s, run_id=run_id) == 0 and consumed_bundles(s, run_id=run_id) == 0
