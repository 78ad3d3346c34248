"""Trajectories and their chunks: idempotent recording by slot, drops, stale policy.

Rollout idempotency. Each trajectory fills one *slot* (run, problem, epoch,
sample_index, attempt), unique in the table. A rollout task that was killed mid-batch is
redelivered and regenerates; `existing_slots` tells it which slots are already filled (so
it skips their generation) and `record_trajectories` inserts with ON CONFLICT DO
NOTHING, so even two copies of a task racing cannot store a slot twice — no duplicate
trajectory can reach the learner. `attempt` is 0 unless the driver deliberately samples
a slot again (e.g. after it was dropped as stale); the driver owns that counter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import and_, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session

from db.arrays import pack_f32, pack_i32
from db.models import ENTROPY_SOURCES, Chunk, Trajectory, utcnow
from db.session import insert_ignoring_conflicts

BATCH = 500


class SlotKey(NamedTuple):
    problem_id: int
    epoch: int
    sample_index: int
    attempt: int = 0


@dataclass(frozen=True)
class ChunkIn:
    """A chunk selected for audit (Eq. 7): completion tokens [start, end).

    The teacher prefix is the rendered prompt + completion_text[:char_start], unless
    `prefix_text` is given (for tokenizers whose decoding is not prefix-stable).
    Invariant: 0 <= start < end <= len(completion tokens); 0 <= char_start <= len(text).
    """

    start: int
    end: int
    char_start: int
    student_text: str
    anchor_entropy: float
    n_target: int
    prefix_text: str | None = None


@dataclass(frozen=True)
class TrajectoryIn:
    """One student sample as the rollout worker produced it.

    Invariant: completion_token_ids, logprobs and entropies have one length; chunks are
    in ascending position and do not overlap.
    """

    run_id: int
    problem_id: int
    policy_version: int
    slot: SlotKey
    prompt_token_ids: Sequence[int]
    completion_token_ids: Sequence[int]
    logprobs: Sequence[float]  # [T] log pi(y_t | y_<t) of the sampled tokens
    entropies: Sequence[float]  # [T] Eq. 6
    prompt_text: str
    completion_text: str
    finish_reason: str
    truncated: bool
    entropy_source: str
    chunks: Sequence[ChunkIn]
    meta: Mapping[str, Any] = field(default_factory=dict)
    reward: float | None = None  # rule-based reward (objectives that need rewards)

    def __post_init__(self) -> None:
        n = len(self.completion_token_ids)
        if not (len(self.logprobs) == len(self.entropies) == n):
            raise ValueError(
                f"completion_token_ids ({n}), logprobs ({len(self.logprobs)}) and entropies "
                f"({len(self.entropies)}) must have one length"
            )
        if self.entropy_source not in ENTROPY_SOURCES:
            raise ValueError(f"entropy_source {self.entropy_source!r}: expected one of {ENTROPY_SOURCES}")
        if self.slot.problem_id != self.problem_id:
            raise ValueError(f"slot {self.slot} is for problem {self.slot.problem_id}, not {self.problem_id}")
        previous_end = 0
        for k, c in enumerate(self.chunks):
            if not (previous_end <= c.start < c.end <= n):
                raise ValueError(f"chunk {k} span [{c.start}, {c.end}) is out of order, overlapping or outside [0, {n})")
            if not (0 <= c.char_start <= len(self.completion_text)):
                raise ValueError(f"chunk {k} char_start {c.char_start} is outside the completion text")
            if c.n_target < 1:
                raise ValueError(f"chunk {k} n_target must be >= 1")
            previous_end = c.end


@dataclass(frozen=True)
class RecordedTrajectory:
    id: int
    slot: SlotKey
    created: bool  # False: the slot was already filled (redelivered task); nothing written


def existing_slots(session: Session, *, run_id: int, slots: Iterable[SlotKey]) -> dict[SlotKey, int]:
    """Which of `slots` already hold a trajectory (slot -> trajectory id)."""
    slots = list(slots)
    found: dict[SlotKey, int] = {}
    cols = (Trajectory.problem_id, Trajectory.epoch, Trajectory.sample_index, Trajectory.attempt)
    for start in range(0, len(slots), BATCH):
        part = slots[start : start + BATCH]
        stmt = select(Trajectory.id, *cols).where(Trajectory.run_id == run_id, tuple_(*cols).in_([tuple(s) for s in part]))
        for row in session.execute(stmt):
            found[SlotKey(row.problem_id, row.epoch, row.sample_index, row.attempt)] = row.id
    return found


def record_trajectories(
    session: Session, *, trajectories: Sequence[TrajectoryIn], now: datetime | None = None
) -> list[RecordedTrajectory]:
    """Insert trajectories (state `generated`) with their chunks; a filled slot is left alone."""
    now = now or utcnow()
    # One compiled statement, executed with plain parameters (no per-value coercion).
    table = Trajectory.__table__
    insert_trajectory = insert_ignoring_conflicts(
        session, table, unique=["run_id", "problem_id", "epoch", "sample_index", "attempt"]
    ).returning(table.c.id)
    out = []
    for t in trajectories:
        values = {
            "run_id": t.run_id,
            "problem_id": t.problem_id,
            "policy_version": t.policy_version,
            "epoch": t.slot.epoch,
            "sample_index": t.slot.sample_index,
            "attempt": t.slot.attempt,
            "state": "generated",
            "prompt_token_ids": pack_i32(t.prompt_token_ids),
            "completion_token_ids": pack_i32(t.completion_token_ids),
            "logprobs": pack_f32(t.logprobs),
            "entropies": pack_f32(t.entropies),
            "n_prompt_tokens": len(t.prompt_token_ids),
            "n_completion_tokens": len(t.completion_token_ids),
            "prompt_text": t.prompt_text,
            "completion_text": t.completion_text,
            "finish_reason": t.finish_reason,
            "truncated": t.truncated,
            "entropy_source": t.entropy_source,
            "reward": t.reward,
            "audit_requeues": 0,
            "meta": dict(t.meta),
            "created_at": now,
            "updated_at": now,
        }
        new_id = session.execute(insert_trajectory, values).scalar_one_or_none()
        if new_id is None:
            existing = existing_slots(session, run_id=t.run_id, slots=[t.slot])
            out.append(RecordedTrajectory(existing[t.slot], t.slot, False))
            continue
        if t.chunks:
            session.execute(
                insert(Chunk.__table__),
                [
                    {"trajectory_id": new_id, "idx": k, "start": c.start, "end": c.end, "char_start": c.char_start,
                     "prefix_text": c.prefix_text, "student_text": c.student_text, "anchor_entropy": c.anchor_entropy,
                     "state": "pending", "n_target": c.n_target, "updated_at": now}
                    for k, c in enumerate(t.chunks)
                ],
            )
        out.append(RecordedTrajectory(new_id, t.slot, True))
    return out


def _droppable(now: datetime):
    """Not yet terminal, and not held by a live learner lease."""
    return or_(
        Trajectory.state.in_(("generated", "auditing")),
        and_(
            Trajectory.state == "ready",
            or_(Trajectory.claimed_by.is_(None), Trajectory.claim_expires_at < now),
        ),
    )


def drop_trajectories(
    session: Session,
    *,
    trajectory_ids: Sequence[int],
    reason: str,
    detail: str | None = None,
    now: datetime | None = None,
) -> int:
    """Mark trajectories `dropped` with a short reason code (e.g. 'empty_completion').

    Consumed, already dropped and currently-claimed ones are left alone; returns how many
    were dropped.
    """
    if not reason:
        raise ValueError("a drop needs a reason")
    now = now or utcnow()
    result = session.execute(
        update(Trajectory)
        .where(Trajectory.id.in_(list(trajectory_ids)), _droppable(now))
        .values(state="dropped", drop_reason=reason, drop_detail=detail, claimed_by=None, claimed_at=None,
                claim_expires_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def drop_stale(
    session: Session, *, run_id: int, min_policy_version: int, now: datetime | None = None
) -> int:
    """Drop unconsumed trajectories sampled by a policy older than `min_policy_version`
    (reason 'stale_policy'); the learner will not train on them (max policy lag)."""
    now = now or utcnow()
    result = session.execute(
        update(Trajectory)
        .where(Trajectory.run_id == run_id, Trajectory.policy_version < min_policy_version, _droppable(now))
        .values(
            state="dropped",
            drop_reason="stale_policy",
            drop_detail=f"sampled by a policy older than v{min_policy_version} (max_policy_lag exceeded)",
            claimed_by=None, claimed_at=None, claim_expires_at=None, updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def recorded_slots(session: Session, *, run_id: int) -> set[SlotKey]:
    """Every slot of the run that holds a trajectory, whatever its state."""
    cols = (Trajectory.problem_id, Trajectory.epoch, Trajectory.sample_index, Trajectory.attempt)
    return {SlotKey(*row) for row in session.execute(select(*cols).where(Trajectory.run_id == run_id))}


def consumed_tokens(session: Session, *, run_id: int) -> int:
    """Prompt + completion tokens of the run's trained trajectories (what a white-box teacher
    reads: one forward pass over every trained sequence)."""
    from sqlalchemy import func

    total = session.scalar(
        select(func.sum(Trajectory.n_prompt_tokens + Trajectory.n_completion_tokens))
        .where(Trajectory.run_id == run_id, Trajectory.state == "consumed")
    )
    return int(total or 0)
