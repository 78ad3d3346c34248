"""Aggregates for `omniopd status`: one read-only pass over a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import CHUNK_STATES, TRAJECTORY_STATES, Chunk, PolicyVersion, Trajectory, utcnow
from db.repo_budget import BudgetView, budgets
from db.repo_bundles import latest_step
from db.repo_ledger import LedgerTotal, ledger_totals
from db.repo_spend import AuditStats, SpendRow, audit_stats, spend_rows


@dataclass
class RunStatus:
    run_id: int
    run_name: str
    run_status: str
    trajectories: dict[str, int]  # by state, every state present (0 if none)
    dropped: dict[str, int]  # by drop_reason
    chunks: dict[str, int]  # by state
    bundles_ready: int  # ready and not under a live lease
    bundles_claimed: int  # ready, leased by a learner
    bundles_consumed: int
    latest_policy_version: int
    latest_policy_path: str
    latest_step: int
    budgets: list[BudgetView] = field(default_factory=list)
    calls: list[LedgerTotal] = field(default_factory=list)  # by provider
    audit: AuditStats | None = None  # audit telemetry and the budget refusal, if any
    spend: list[SpendRow] = field(default_factory=list)  # ledger by provider: cache hits, empty rate


def run_status(session: Session, *, run_id: int, run_name: str, run_status: str,
               now: datetime | None = None) -> RunStatus:
    now = now or utcnow()
    by_state = dict.fromkeys(TRAJECTORY_STATES, 0)
    for state, n in session.execute(
        select(Trajectory.state, func.count()).where(Trajectory.run_id == run_id).group_by(Trajectory.state)
    ):
        by_state[state] = n
    dropped = {
        reason: n
        for reason, n in session.execute(
            select(Trajectory.drop_reason, func.count())
            .where(Trajectory.run_id == run_id, Trajectory.state == "dropped")
            .group_by(Trajectory.drop_reason)
            .order_by(Trajectory.drop_reason)
        )
    }
    chunks = dict.fromkeys(CHUNK_STATES, 0)
    for state, n in session.execute(
        select(Chunk.state, func.count()).join(Trajectory, Chunk.trajectory_id == Trajectory.id)
        .where(Trajectory.run_id == run_id).group_by(Chunk.state)
    ):
        chunks[state] = n
    claimed = session.scalar(
        select(func.count()).select_from(Trajectory).where(
            Trajectory.run_id == run_id, Trajectory.state == "ready", Trajectory.claim_expires_at >= now)
    ) or 0
    version = session.execute(
        select(PolicyVersion.version, PolicyVersion.path).where(PolicyVersion.run_id == run_id)
        .order_by(PolicyVersion.version.desc()).limit(1)
    ).one_or_none()
    return RunStatus(
        run_id=run_id,
        run_name=run_name,
        run_status=run_status,
        trajectories=by_state,
        dropped=dropped,
        chunks=chunks,
        bundles_ready=by_state["ready"] - claimed,
        bundles_claimed=claimed,
        bundles_consumed=by_state["consumed"],
        latest_policy_version=version[0] if version else -1,
        latest_policy_path=version[1] if version else "",
        latest_step=latest_step(session, run_id=run_id),
        budgets=budgets(session, run_id=run_id),
        calls=ledger_totals(session, run_id=run_id, by="provider"),
        audit=audit_stats(session, run_id=run_id),
        spend=spend_rows(session, run_id=run_id, by="provider"),
    )
