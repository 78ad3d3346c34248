"""What the audit worker reads and writes: chunks, teacher samples, promotion to ready.

An audit task is idempotent by construction: `begin_audit` reports each chunk's state
and which sample indices are already stored, `add_teacher_samples` ignores (chunk, i)
pairs that exist, and a terminal chunk stays terminal. So a redelivered or duplicated
task only does the missing work, and a retry fetches only the missing samples.
`finish_audit` ends an audit whose chunks are all terminal (ready, or dropped as
`unaudited` when not one chunk was audited); `record_chunk_telemetry` keeps each chunk's
audit telemetry in the trajectory's `meta["audit"]`.
Every write bumps the trajectory's `updated_at`, which is how maintenance tells a slow
audit (progressing) from a lost one (silent).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import CHUNK_TERMINAL, Chunk, TeacherSample, Trajectory, utcnow
from db.repo_trajectories import drop_trajectories
from db.session import insert_ignoring_conflicts


@dataclass(frozen=True)
class ChunkWork:
    """A chunk as the audit sees it. prefix = decoded completion before the chunk."""

    id: int
    idx: int
    start: int
    end: int
    prefix: str
    student_text: str
    state: str
    n_target: int
    stored: frozenset[int]  # sample indices i already in teacher_samples

    @property
    def missing(self) -> list[int]:
        return [i for i in range(self.n_target) if i not in self.stored]

    @property
    def terminal(self) -> bool:
        return self.state in CHUNK_TERMINAL


@dataclass(frozen=True)
class AuditWork:
    """A trajectory's audit state; `chunks` in ascending position (prefix-cache order)."""

    trajectory_id: int
    run_id: int
    state: str
    policy_version: int
    prompt_text: str
    chunks: tuple[ChunkWork, ...]
    problem_id: int = 0
    meta: dict[str, Any] | None = None  # the trajectory's free-form meta (teacher_prompt, audit telemetry)

    @property
    def done(self) -> bool:
        """Nothing left to audit: ready, consumed or dropped."""
        return self.state in ("ready", "consumed", "dropped")


@dataclass(frozen=True)
class TeacherSampleIn:
    """One teacher continuation; phi in [0, 1] compares cut_text with the student chunk."""

    i: int
    text: str
    cut_text: str
    phi: float
    call_id: int | None = None


def _lock_trajectory(session: Session, trajectory_id: int) -> Trajectory:
    # FOR UPDATE on PostgreSQL; SQLite renders nothing (the transaction holds the write lock).
    row = session.get(Trajectory, trajectory_id, with_for_update=True, populate_existing=True)
    if row is None:
        raise LookupError(f"no trajectory {trajectory_id}")
    return row


def begin_audit(session: Session, *, trajectory_id: int, now: datetime | None = None) -> AuditWork:
    """Move a `generated` trajectory to `auditing` and return what is left to do.

    Any other state is returned unchanged (a redelivered task sees `done` and returns).
    """
    now = now or utcnow()
    traj = _lock_trajectory(session, trajectory_id)
    if traj.state == "generated":
        traj.state, traj.updated_at = "auditing", now
        session.flush()
    chunks = session.scalars(
        select(Chunk).where(Chunk.trajectory_id == trajectory_id).order_by(Chunk.idx).execution_options(populate_existing=True)
    ).all()
    stored: dict[int, set[int]] = defaultdict(set)
    if chunks:
        rows = session.execute(select(TeacherSample.chunk_id, TeacherSample.i).where(TeacherSample.chunk_id.in_([c.id for c in chunks])))
        for chunk_id, i in rows:
            stored[chunk_id].add(i)
    work = tuple(
        ChunkWork(
            c.id, c.idx, c.start, c.end,
            c.prefix_text if c.prefix_text is not None else traj.completion_text[: c.char_start],
            c.student_text, c.state, c.n_target, frozenset(stored[c.id]),
        )
        for c in chunks
    )
    return AuditWork(
        traj.id, traj.run_id, traj.state, traj.policy_version, traj.prompt_text, work, traj.problem_id, dict(traj.meta or {})
    )


def _touch(session: Session, chunk_ids: Sequence[int], now: datetime) -> None:
    """Record progress on the trajectories owning `chunk_ids`."""
    owners = select(Chunk.trajectory_id).where(Chunk.id.in_(list(chunk_ids))).scalar_subquery()
    session.execute(
        update(Trajectory).where(Trajectory.id.in_(owners)).values(updated_at=now).execution_options(synchronize_session=False)
    )


def add_teacher_samples(
    session: Session, *, chunk_id: int, samples: Sequence[TeacherSampleIn], now: datetime | None = None
) -> int:
    """Store samples; an (chunk, i) already stored is skipped. Returns how many were new."""
    if not samples:
        return 0
    now = now or utcnow()
    n_target = session.scalar(select(Chunk.n_target).where(Chunk.id == chunk_id))
    if n_target is None:
        raise LookupError(f"no chunk {chunk_id}")
    for s in samples:
        if not 0 <= s.i < n_target:
            raise ValueError(f"sample index {s.i} outside [0, {n_target}) for chunk {chunk_id}")
        if not 0.0 <= s.phi <= 1.0:  # a store invariant (and a CHECK): phi_batch already checked and clipped
            raise ValueError(
                f"phi {s.phi!r} outside [0, 1] (sample {s.i} of chunk {chunk_id}): score samples with "
                "omniopd.algo.similarity.phi_batch, which checks the range (check_phi)"
            )
    table = TeacherSample.__table__
    stmt = insert_ignoring_conflicts(session, table, unique=["chunk_id", "i"]).returning(table.c.id)
    rows = [{"chunk_id": chunk_id, "i": s.i, "text": s.text, "cut_text": s.cut_text, "phi": float(s.phi),
             "call_id": s.call_id, "created_at": now} for s in samples]
    inserted = len(session.execute(stmt, rows).all())
    _touch(session, [chunk_id], now)
    return inserted


def complete_chunk(session: Session, *, chunk_id: int, k_sem: float, now: datetime | None = None) -> bool:
    """Mark a chunk `audited` with its k_sem (Eq. 3); all N samples must be stored.

    Returns False (and changes nothing) when the chunk is already terminal.
    """
    now = now or utcnow()
    chunk = session.get(Chunk, chunk_id, with_for_update=True, populate_existing=True)
    if chunk is None:
        raise LookupError(f"no chunk {chunk_id}")
    if chunk.state in CHUNK_TERMINAL:
        return False
    count = session.scalar(select(func.count()).select_from(TeacherSample).where(TeacherSample.chunk_id == chunk_id))
    if count != chunk.n_target:
        raise ValueError(f"chunk {chunk_id} has {count} of its {chunk.n_target} teacher samples; store them all first")
    if not 0.0 <= k_sem <= chunk.n_target:
        raise ValueError(f"k_sem {k_sem} outside [0, N={chunk.n_target}] for chunk {chunk_id}")
    chunk.state, chunk.k_sem, chunk.error, chunk.updated_at = "audited", float(k_sem), None, now
    _touch(session, [chunk_id], now)
    session.flush()
    return True


def fail_chunk(
    session: Session,
    *,
    chunk_id: int,
    state: Literal["skipped_budget", "failed"],
    error: str,
    now: datetime | None = None,
) -> bool:
    """Mark a pending chunk terminal without an audit (budget cap reached, or gave up)."""
    if state not in ("skipped_budget", "failed"):
        raise ValueError(f"fail_chunk state {state!r}: expected skipped_budget or failed")
    now = now or utcnow()
    chunk = session.get(Chunk, chunk_id, with_for_update=True, populate_existing=True)
    if chunk is None:
        raise LookupError(f"no chunk {chunk_id}")
    if chunk.state in CHUNK_TERMINAL:
        return False
    chunk.state, chunk.error, chunk.updated_at = state, error[:2000], now
    _touch(session, [chunk_id], now)
    session.flush()
    return True


def promote_if_complete(session: Session, *, trajectory_id: int, now: datetime | None = None) -> str:
    """`ready` once every chunk is terminal (a trajectory without chunks is ready at once).

    Returns the trajectory's state afterwards.
    """
    now = now or utcnow()
    traj = _lock_trajectory(session, trajectory_id)
    if traj.state not in ("generated", "auditing"):
        return traj.state
    open_chunks = session.scalar(
        select(func.count()).select_from(Chunk)
        .where(Chunk.trajectory_id == trajectory_id, Chunk.state.not_in(CHUNK_TERMINAL))
    )
    if open_chunks == 0:
        traj.state, traj.ready_at, traj.updated_at = "ready", now, now
        session.flush()
    return traj.state


@dataclass(frozen=True)
class StoredSample:
    """A stored teacher sample of a chunk (what k_sem and the telemetry need)."""

    i: int
    cut_text: str
    phi: float


def chunk_samples(session: Session, *, chunk_id: int) -> list[StoredSample]:
    """Every stored sample of a chunk, by ascending sample index i."""
    rows = session.execute(
        select(TeacherSample.i, TeacherSample.cut_text, TeacherSample.phi)
        .where(TeacherSample.chunk_id == chunk_id).order_by(TeacherSample.i)
    )
    return [StoredSample(*row) for row in rows]


AUDIT_META_KEY = "audit"


def record_chunk_telemetry(
    session: Session, *, trajectory_id: int, chunk_idx: int, telemetry: dict[str, Any], now: datetime | None = None
) -> None:
    """Store one chunk's audit telemetry under `meta["audit"]["chunks"][str(idx)]` of its
    trajectory (JSON-serialisable values only); a later write for the same chunk replaces it."""
    traj = _lock_trajectory(session, trajectory_id)
    meta = dict(traj.meta or {})
    audit = dict(meta.get(AUDIT_META_KEY) or {})
    chunks = dict(audit.get("chunks") or {})
    chunks[str(chunk_idx)] = dict(telemetry)
    audit["chunks"] = chunks
    meta[AUDIT_META_KEY] = audit
    traj.meta, traj.updated_at = meta, now or utcnow()  # a new dict: JSON columns track assignment only
    session.flush()


def finish_audit(session: Session, *, trajectory_id: int, now: datetime | None = None) -> str:
    """End an audit whose chunks are all terminal; returns the trajectory's state afterwards.

    `ready` when at least one chunk was audited (or the trajectory has no chunks); `dropped`
    with reason `unaudited` when it has chunks but none was audited (every one skipped for
    budget or failed): such a bundle would train on the KL anchor alone, with no teacher
    signal. A trajectory with chunks still pending is left as it is.
    """
    now = now or utcnow()
    traj = _lock_trajectory(session, trajectory_id)
    if traj.state not in ("generated", "auditing"):
        return traj.state
    counts = dict(
        session.execute(
            select(Chunk.state, func.count()).where(Chunk.trajectory_id == trajectory_id).group_by(Chunk.state)
        ).all()
    )
    if any(state not in CHUNK_TERMINAL for state in counts):
        return traj.state
    if counts and not counts.get("audited"):
        detail = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        drop_trajectories(session, trajectory_ids=[trajectory_id], reason="unaudited", detail=f"no chunk audited ({detail})", now=now)
        session.refresh(traj)
        return traj.state
    return promote_if_complete(session, trajectory_id=trajectory_id, now=now)
