"""Queries for the maintenance sweep (workers/maintenance/sweep.py drives them).

'Lost' audit: a trajectory in `generated` or `auditing` whose `updated_at` (bumped by
every sample, chunk and state write) is older than the threshold. Either its audit
message never reached the broker (process died between commit and send), or the worker
holding it died and the broker will redeliver only after its visibility timeout (hours).
Re-sending is safe because audits are idempotent; a duplicate only re-checks state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import Chunk, Trajectory, utcnow


@dataclass(frozen=True)
class StuckTrajectory:
    id: int
    state: str
    audit_requeues: int
    updated_at: datetime


def stuck_audits(session: Session, *, run_id: int, older_than: datetime, limit: int = 1000) -> list[StuckTrajectory]:
    """Trajectories awaiting audit with no progress since `older_than`, oldest first."""
    stmt = (
        select(Trajectory.id, Trajectory.state, Trajectory.audit_requeues, Trajectory.updated_at)
        .where(Trajectory.run_id == run_id, Trajectory.state.in_(("generated", "auditing")),
               Trajectory.updated_at < older_than)
        .order_by(Trajectory.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)  # two sweepers never re-send the same one
    )
    return [StuckTrajectory(*row) for row in session.execute(stmt)]


def mark_requeued(session: Session, *, trajectory_ids: Sequence[int], now: datetime | None = None) -> None:
    """Count a re-send and restart the no-progress clock."""
    session.execute(
        update(Trajectory)
        .where(Trajectory.id.in_(list(trajectory_ids)))
        .values(audit_requeues=Trajectory.audit_requeues + 1, updated_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )


def release_expired_claims(session: Session, *, run_id: int, now: datetime | None = None) -> int:
    """Clear leases that expired (their bundles were claimable anyway; this tidies status)."""
    result = session.execute(
        update(Trajectory)
        .where(Trajectory.run_id == run_id, Trajectory.state == "ready", Trajectory.claim_expires_at < (now or utcnow()))
        .values(claimed_by=None, claimed_at=None, claim_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def inconsistent_chunks(session: Session, *, run_id: int) -> int:
    """Pending chunks under a ready or consumed trajectory (must be 0; reported if not)."""
    return session.scalar(
        select(func.count()).select_from(Chunk).join(Trajectory, Chunk.trajectory_id == Trajectory.id)
        .where(Trajectory.run_id == run_id, Trajectory.state.in_(("ready", "consumed")), Chunk.state == "pending")
    ) or 0
