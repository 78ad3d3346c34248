"""Rollout batches: issue (driver), read and record (rollout task), pipeline counts (status).

The driver issues a batch of slots and sends its id; the rollout task reads the slots that
still lack a trajectory (`rollout_work`), generates, and records the trajectories and
`record_batch` in one transaction. A slot is issued once (unique per run), so the store
answers "what is left to issue" and "what is in flight" after any restart
(db/models/rollouts.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, insert, select, update
from sqlalchemy.orm import Session

from db.models import Problem, RolloutBatch, RolloutSlot, Trajectory, utcnow
from db.repo_trajectories import SlotKey, existing_slots

WAITING_STATES = ("generated", "auditing", "ready")
"""Trajectory states still headed for the learner (not consumed, not dropped)."""


@dataclass(frozen=True)
class OpenBatch:
    """A batch issued and not yet recorded (in flight)."""

    id: int
    target_version: int
    sends: int
    sent_at: datetime
    n_slots: int


@dataclass(frozen=True)
class RolloutWork:
    """What a rollout task still has to do for its batch.

    Invariant: `pending` are the batch's slots without a trajectory, sorted; every problem
    of `pending` has its question in `questions`, and its (answer, tests) in `references`
    (what a reward grader checks a sample against).
    """

    batch_id: int
    run_id: int
    target_version: int
    state: str
    pending: tuple[SlotKey, ...]
    questions: Mapping[int, str]
    references: Mapping[int, tuple[str | None, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineLoad:
    """Work ahead of the learner: slots in batches not yet recorded, and recorded
    trajectories not yet trained on (generated, auditing or ready)."""

    in_flight_batches: int
    in_flight_slots: int
    waiting_trajectories: int


@dataclass(frozen=True)
class RolloutStatus:
    """The rollout side of `omniopd status`."""

    batches_in_flight: int
    batches_recorded: int
    resends: int  # messages sent again because the first was presumed lost
    slots_issued: int
    resamples_pending: int  # dropped (stale_policy) slots whose next attempt is not issued yet
    last_reload: dict[str, Any] | None  # the newest recorded weight reload (version, seconds, probe)


def issue_batch(
    session: Session, *, run_id: int, target_version: int, slots: Sequence[SlotKey], now: datetime | None = None
) -> int:
    """Write a batch and its slots (state `issued`); returns its id. A slot issued before
    violates the unique key: the caller must only issue new slots."""
    if not slots:
        raise ValueError("a rollout batch needs at least one slot")
    now = now or utcnow()
    batch = RolloutBatch(
        run_id=run_id, target_version=target_version, state="issued", sends=1, created_at=now, sent_at=now, meta={}
    )
    session.add(batch)
    session.flush()
    session.execute(
        insert(RolloutSlot),
        [{"batch_id": batch.id, "run_id": run_id, "problem_id": s.problem_id, "epoch": s.epoch,
          "sample_index": s.sample_index, "attempt": s.attempt} for s in slots],
    )
    return batch.id


def mark_resent(session: Session, *, batch_ids: Sequence[int], now: datetime | None = None) -> None:
    """Count one more send of each batch (its message is being sent again)."""
    if batch_ids:
        session.execute(
            update(RolloutBatch).where(RolloutBatch.id.in_(list(batch_ids)), RolloutBatch.state == "issued")
            .values(sends=RolloutBatch.sends + 1, sent_at=now or utcnow())
            .execution_options(synchronize_session=False)
        )


def open_batches(session: Session, *, run_id: int) -> list[OpenBatch]:
    """Batches in flight (issued, not recorded), oldest first."""
    n_slots = select(func.count()).where(RolloutSlot.batch_id == RolloutBatch.id).correlate(RolloutBatch).scalar_subquery()
    rows = session.execute(
        select(RolloutBatch.id, RolloutBatch.target_version, RolloutBatch.sends, RolloutBatch.sent_at, n_slots)
        .where(RolloutBatch.run_id == run_id, RolloutBatch.state == "issued").order_by(RolloutBatch.id)
    )
    return [OpenBatch(*row) for row in rows]


def issued_slots(session: Session, *, run_id: int, attempt: int | None = None) -> set[SlotKey]:
    """Every slot ever issued for the run (optionally of one attempt)."""
    stmt = select(RolloutSlot.problem_id, RolloutSlot.epoch, RolloutSlot.sample_index, RolloutSlot.attempt).where(
        RolloutSlot.run_id == run_id
    )
    if attempt is not None:
        stmt = stmt.where(RolloutSlot.attempt == attempt)
    return {SlotKey(*row) for row in session.execute(stmt)}


def _next_attempt_missing():
    """Dropped-stale trajectories whose slot's next attempt was never issued."""
    successor = exists().where(
        RolloutSlot.run_id == Trajectory.run_id,
        RolloutSlot.problem_id == Trajectory.problem_id,
        RolloutSlot.epoch == Trajectory.epoch,
        RolloutSlot.sample_index == Trajectory.sample_index,
        RolloutSlot.attempt == Trajectory.attempt + 1,
    )
    return and_(Trajectory.state == "dropped", Trajectory.drop_reason == "stale_policy", ~successor)


def pending_resamples(session: Session, *, run_id: int) -> list[SlotKey]:
    """The next-attempt slots of every trajectory dropped as stale and not yet re-sampled,
    in (epoch, problem, sample) order: what the driver must issue so no problem is lost."""
    rows = session.execute(
        select(Trajectory.problem_id, Trajectory.epoch, Trajectory.sample_index, Trajectory.attempt)
        .where(Trajectory.run_id == run_id, _next_attempt_missing())
        .order_by(Trajectory.epoch, Trajectory.problem_id, Trajectory.sample_index)
    )
    return [SlotKey(p, e, s, a + 1) for p, e, s, a in rows]


def pipeline_load(session: Session, *, run_id: int) -> PipelineLoad:
    open_ = open_batches(session, run_id=run_id)
    waiting = session.scalar(
        select(func.count()).select_from(Trajectory)
        .where(Trajectory.run_id == run_id, Trajectory.state.in_(WAITING_STATES))
    ) or 0
    return PipelineLoad(len(open_), sum(b.n_slots for b in open_), waiting)


def rollout_work(session: Session, *, batch_id: int) -> RolloutWork:
    """The batch's slots that have no trajectory yet, with their questions."""
    batch = session.get(RolloutBatch, batch_id)
    if batch is None:
        raise LookupError(f"no rollout batch {batch_id} (was the store reset while messages were queued?)")
    slots = [
        SlotKey(*row)
        for row in session.execute(
            select(RolloutSlot.problem_id, RolloutSlot.epoch, RolloutSlot.sample_index, RolloutSlot.attempt)
            .where(RolloutSlot.batch_id == batch_id)
        )
    ]
    filled = existing_slots(session, run_id=batch.run_id, slots=slots)
    pending = tuple(sorted(s for s in slots if s not in filled))
    ids = sorted({s.problem_id for s in pending})
    questions, references = {}, {}
    for pid, text, answer, tests in session.execute(
        select(Problem.id, Problem.prompt, Problem.answer, Problem.tests).where(Problem.id.in_(ids))
    ):
        questions[pid], references[pid] = text, (answer, tests)
    return RolloutWork(batch.id, batch.run_id, batch.target_version, batch.state, pending, questions, references)


def record_batch(
    session: Session, *, batch_id: int, meta: Mapping[str, Any], now: datetime | None = None
) -> bool:
    """Mark the batch `recorded` (all its slots hold trajectories; call in the transaction
    that stored them) and keep `meta`; `meta["reload"]` (a dict with "version") says the
    worker reloaded weights before it. False if it was recorded already (a duplicate task)."""
    batch = session.get(RolloutBatch, batch_id, with_for_update=True, populate_existing=True)
    if batch is None:
        raise LookupError(f"no rollout batch {batch_id}")
    if batch.state == "recorded":
        return False
    batch.state, batch.recorded_at, batch.meta = "recorded", now or utcnow(), {**batch.meta, **meta}
    if meta.get("reload"):
        batch.reloaded_version = int(meta["reload"]["version"])
    session.flush()
    return True


def rollout_status(session: Session, *, run_id: int) -> RolloutStatus:
    counts = dict(
        session.execute(
            select(RolloutBatch.state, func.count()).where(RolloutBatch.run_id == run_id).group_by(RolloutBatch.state)
        ).all()
    )
    resends = session.scalar(
        select(func.coalesce(func.sum(RolloutBatch.sends - 1), 0)).where(RolloutBatch.run_id == run_id)
    )
    slots = session.scalar(select(func.count()).select_from(RolloutSlot).where(RolloutSlot.run_id == run_id))
    resamples = session.scalar(
        select(func.count()).select_from(Trajectory).where(Trajectory.run_id == run_id, _next_attempt_missing())
    )
    last_reload = session.scalar(
        select(RolloutBatch.meta).where(RolloutBatch.run_id == run_id, RolloutBatch.reloaded_version.is_not(None))
        .order_by(RolloutBatch.id.desc()).limit(1)
    )
    return RolloutStatus(
        batches_in_flight=counts.get("issued", 0),
        batches_recorded=counts.get("recorded", 0),
        resends=int(resends or 0),
        slots_issued=int(slots or 0),
        resamples_pending=int(resamples or 0),
        last_reload=None if last_reload is None else last_reload.get("reload"),
    )
