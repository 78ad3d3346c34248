"""What the learner loop asks the store besides claims: is the teacher budget spent, and is
anything still on its way to becoming a bundle.

Budget spent means: a cap that applies to the run's audits (the run-wide one, or the
auditing teacher's) is reached (spent + reserved >= cap), or an audit was refused for
budget (a chunk ended `skipped_budget`) since `since` — the learner's start, so chunks
skipped before a cap was raised and the run resumed do not stop it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from db.models import RUN_SCOPE, Chunk, Trajectory
from db.repo_budget import budgets


@dataclass(frozen=True)
class CapReached:
    """A cap that applies to the run's audits and is reached: `label` says whose ("run",
    "teacher 'x'"), `used` = spent + reserved and `cap` in micro-USD."""

    label: str
    used: int
    cap: int


@dataclass(frozen=True)
class BudgetState:
    """Run-wide spend and cap (micro-USD; cap None = none) and why audits must stop, if they
    must: a cap reached, or an audit refused for budget since the learner started."""

    spent: int
    reserved: int
    cap: int | None
    cap_reached: CapReached | None
    refused: bool

    @property
    def exhausted(self) -> bool:
        return self.cap_reached is not None or self.refused


def budget_state(session: Session, *, run_id: int, providers: Sequence[str], since: datetime) -> BudgetState:
    """Spend of the run and whether its teacher budget is spent (module docstring)."""
    views = budgets(session, run_id=run_id)
    run_view = next((b for b in views if b.provider == RUN_SCOPE), None)
    reached = next(
        (
            CapReached("run" if b.provider == RUN_SCOPE else f"teacher {b.provider!r}", b.spent + b.reserved, b.cap)
            for b in views
            if (b.provider == RUN_SCOPE or b.provider in providers) and b.cap is not None and b.spent + b.reserved >= b.cap
        ),
        None,
    )
    refused = reached is None and bool(session.scalar(select(exists().where(
        Chunk.trajectory_id == Trajectory.id, Trajectory.run_id == run_id,
        Chunk.state == "skipped_budget", Chunk.updated_at >= since,
    ))))
    return BudgetState(
        spent=run_view.spent if run_view else 0,
        reserved=run_view.reserved if run_view else 0,
        cap=run_view.cap if run_view else None,
        cap_reached=reached,
        refused=refused,
    )


def unfinished_trajectories(session: Session, *, run_id: int) -> int:
    """Trajectories still generated or being audited (bundles to come)."""
    return session.scalar(
        select(func.count()).select_from(Trajectory)
        .where(Trajectory.run_id == run_id, Trajectory.state.in_(("generated", "auditing")))
    ) or 0


def consumed_bundles(session: Session, *, run_id: int) -> int:
    return session.scalar(
        select(func.count()).select_from(Trajectory).where(Trajectory.run_id == run_id, Trajectory.state == "consumed")
    ) or 0
