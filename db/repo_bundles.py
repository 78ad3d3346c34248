"""Audit bundles for the learner: claim, consume with the step, release, rewind.

Claims are leases. `claim_ready_bundles` marks up to `limit` ready trajectories as held
by `learner_id` until now + lease_s; claimed bundles are invisible to other claimers
until the lease expires. The learner then calls `record_step_and_consume`, which marks
them consumed in the same transaction that records the step — so after any crash a
bundle is either trained on (its step row exists) or still ready. A learner that dies
holding claims loses them when the lease expires; a restarted learner with the same
stable `learner_id` gets them back at once with `release_claims` (call it at start-up).

Atomicity: PostgreSQL `SELECT ... FOR UPDATE SKIP LOCKED` (concurrent claimers skip each
other's rows instead of waiting); SQLite runs the claim under the write lock taken by
BEGIN IMMEDIATE, so claimers are serialised (db/session.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from db.arrays import unpack_f32, unpack_i32
from db.models import Chunk, LearnerStep, PolicyVersion, TeacherSample, Trajectory, utcnow
from db.session import require_writable


class ClaimLost(RuntimeError):
    """A bundle the learner trained on is no longer ready and claimed by it."""


@dataclass(frozen=True)
class SampleView:
    i: int
    text: str
    cut_text: str
    phi: float


@dataclass(frozen=True)
class BundleChunk:
    """A terminal chunk. k_sem is None unless state == 'audited'."""

    id: int
    idx: int
    start: int
    end: int
    state: str
    k_sem: float | None
    n_target: int
    student_text: str
    anchor_entropy: float
    samples: tuple[SampleView, ...] | None  # loaded only with with_samples=True


@dataclass(frozen=True)
class Bundle:
    """Everything the learner needs to rebuild one trajectory of its batch.

    Invariant: completion_token_ids, logprobs and entropies have one length T; chunk
    spans lie in [0, T), in ascending order.
    """

    trajectory_id: int
    run_id: int
    problem_id: int
    policy_version: int
    prompt_token_ids: np.ndarray  # [P] int32
    completion_token_ids: np.ndarray  # [T] int32
    logprobs: np.ndarray  # [T] float32, sampling policy's log-probabilities
    entropies: np.ndarray  # [T] float32
    prompt_text: str
    completion_text: str
    finish_reason: str
    truncated: bool
    entropy_source: str
    chunks: tuple[BundleChunk, ...]
    meta: dict[str, Any]
    epoch: int = 0
    attempt: int = 0
    reward: float | None = None  # rule-based reward (None unless the run's objective needs rewards)

    @property
    def group(self) -> tuple[int, int, int]:
        """(problem, epoch, attempt): the samples of one rendered prompt, GRPO's group."""
        return (self.problem_id, self.epoch, self.attempt)


def _claimable(run_id, now):
    return (
        Trajectory.run_id == run_id,
        Trajectory.state == "ready",
        or_(Trajectory.claimed_by.is_(None), Trajectory.claim_expires_at < now),
    )


# Built once with bind parameters: the claim is the learner's hot path.
_T = Trajectory.__table__
_C = Chunk.__table__
_S = TeacherSample.__table__
_CLAIM_FILTER = (
    _T.c.run_id == bindparam("run_id"),
    _T.c.state == "ready",
    _T.c.policy_version >= bindparam("min_version"),
)
# Unclaimed bundles first (an index seek on (run, state, claimed_by IS NULL) in id order, so
# bundles leased by other learners are never scanned), then bundles whose lease expired.
_SELECT_UNCLAIMED = (
    select(_T.c.id).where(*_CLAIM_FILTER, _T.c.claimed_by.is_(None))
    .order_by(_T.c.id).limit(bindparam("limit"))
    .with_for_update(skip_locked=True)  # SQLite: nothing rendered, the write lock serialises claimers
)
_SELECT_EXPIRED = (
    select(_T.c.id).where(*_CLAIM_FILTER, _T.c.claimed_by.is_not(None), _T.c.claim_expires_at < bindparam("now"))
    .order_by(_T.c.id).limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_TAKE = (
    update(_T)
    .where(_T.c.id.in_(bindparam("ids", expanding=True)))
    .values(claimed_by=bindparam("learner"), claimed_at=bindparam("now"), claim_expires_at=bindparam("until"))
)
_LOAD_TRAJECTORIES = select(
    _T.c.id, _T.c.run_id, _T.c.problem_id, _T.c.policy_version, _T.c.prompt_token_ids, _T.c.completion_token_ids,
    _T.c.logprobs, _T.c.entropies, _T.c.prompt_text, _T.c.completion_text, _T.c.finish_reason, _T.c.truncated,
    _T.c.entropy_source, _T.c.meta, _T.c.epoch, _T.c.attempt, _T.c.reward,
).where(_T.c.id.in_(bindparam("ids", expanding=True)))
_LOAD_CHUNKS = (
    select(_C.c.id, _C.c.trajectory_id, _C.c.idx, _C.c.start, _C.c.end, _C.c.state, _C.c.k_sem, _C.c.n_target,
           _C.c.student_text, _C.c.anchor_entropy)
    .where(_C.c.trajectory_id.in_(bindparam("ids", expanding=True)))
    .order_by(_C.c.trajectory_id, _C.c.idx)
)
_LOAD_SAMPLES = (
    select(_S.c.chunk_id, _S.c.i, _S.c.text, _S.c.cut_text, _S.c.phi)
    .where(_S.c.chunk_id.in_(bindparam("ids", expanding=True)))
    .order_by(_S.c.chunk_id, _S.c.i)
)


def claim_ready_bundles(
    session: Session,
    *,
    run_id: int,
    limit: int,
    min_policy_version: int,
    learner_id: str,
    lease_s: float,
    with_samples: bool = False,
    now: datetime | None = None,
) -> list[Bundle]:
    """Atomically claim up to `limit` ready bundles sampled by policy >= min_policy_version:
    unclaimed ones oldest first, then ones whose lease expired; [] when none is available."""
    require_writable(session, "claim_ready_bundles()")
    if limit < 1:
        raise ValueError("limit must be >= 1")
    now = now or utcnow()
    params = {"run_id": run_id, "min_version": min_policy_version, "limit": limit}
    ids = list(session.scalars(_SELECT_UNCLAIMED, params))
    if len(ids) < limit:
        ids += session.scalars(_SELECT_EXPIRED, {**params, "now": now, "limit": limit - len(ids)})
    if not ids:
        return []
    session.execute(_TAKE, {"ids": ids, "learner": learner_id, "now": now, "until": now + timedelta(seconds=lease_s)})
    return load_bundles(session, trajectory_ids=ids, with_samples=with_samples)


def claim_ready_groups(
    session: Session,
    *,
    run_id: int,
    groups: int,
    min_policy_version: int,
    learner_id: str,
    lease_s: float,
    now: datetime | None = None,
) -> list[Bundle]:
    """Atomically claim up to `groups` whole groups (the samples of one rendered prompt:
    problem, epoch, attempt), oldest first, for objectives that train groups together
    (GRPO's group-normalised advantages).

    A group is claimable when every member that is not dropped or consumed is `ready`,
    sampled by policy >= min_policy_version and not held by a live lease: a member still
    being generated or audited, or held by another learner, keeps the whole group back, so
    a group is never split between steps or learners. Dropped members (a failed reward,
    say) are simply absent. The members are claimed together and, consumed by one step
    (`record_step_and_consume`), they are rewound together (`rewind_to_step`): exactly
    once holds for groups as it does for bundles.
    """
    require_writable(session, "claim_ready_groups()")
    if groups < 1:
        raise ValueError("groups must be >= 1")
    now = now or utcnow()
    rows = session.execute(
        select(_T.c.id, _T.c.problem_id, _T.c.epoch, _T.c.attempt, _T.c.state, _T.c.policy_version,
               _T.c.claimed_by, _T.c.claim_expires_at)
        .where(_T.c.run_id == run_id, _T.c.state.in_(("generated", "auditing", "ready")))
        .order_by(_T.c.id)
        .with_for_update()  # PostgreSQL: a concurrent claimer waits; SQLite: the write lock serialises
    ).all()
    members: dict[tuple[int, int, int], list] = defaultdict(list)
    for r in rows:
        members[(r.problem_id, r.epoch, r.attempt)].append(r)
    ids: list[int] = []
    taken = 0
    for group in members.values():  # in order of each group's oldest member
        if taken == groups:
            break
        if all(r.state == "ready" and r.policy_version >= min_policy_version
               and (r.claimed_by is None or r.claim_expires_at < now) for r in group):
            ids += [r.id for r in group]
            taken += 1
    if not ids:
        return []
    session.execute(_TAKE, {"ids": ids, "learner": learner_id, "now": now, "until": now + timedelta(seconds=lease_s)})
    return load_bundles(session, trajectory_ids=ids)


def load_bundles(session: Session, *, trajectory_ids: Sequence[int], with_samples: bool = False) -> list[Bundle]:
    """Bundles for `trajectory_ids`, in that order (no claim, no state check)."""
    ids = list(trajectory_ids)
    rows = {t.id: t for t in session.execute(_LOAD_TRAJECTORIES, {"ids": ids})}
    chunks: dict[int, list] = defaultdict(list)
    for c in session.execute(_LOAD_CHUNKS, {"ids": ids}):
        chunks[c.trajectory_id].append(c)
    samples: dict[int, list[SampleView]] = defaultdict(list)
    if with_samples:
        chunk_ids = [c.id for cs in chunks.values() for c in cs]
        for start in range(0, len(chunk_ids), 500):
            for x in session.execute(_LOAD_SAMPLES, {"ids": chunk_ids[start : start + 500]}):
                samples[x.chunk_id].append(SampleView(x.i, x.text, x.cut_text, x.phi))
    out = []
    for tid in ids:
        t = rows.get(tid)
        if t is None:
            raise LookupError(f"no trajectory {tid}")
        out.append(
            Bundle(
                t.id, t.run_id, t.problem_id, t.policy_version,
                unpack_i32(t.prompt_token_ids), unpack_i32(t.completion_token_ids),
                unpack_f32(t.logprobs), unpack_f32(t.entropies),
                t.prompt_text, t.completion_text, t.finish_reason, bool(t.truncated), t.entropy_source,
                tuple(
                    BundleChunk(c.id, c.idx, c.start, c.end, c.state, c.k_sem, c.n_target, c.student_text,
                                c.anchor_entropy, tuple(samples[c.id]) if with_samples else None)
                    for c in chunks[t.id]
                ),
                t.meta, t.epoch, t.attempt, t.reward,
            )
        )
    return out


def count_claimable(session: Session, *, run_id: int, min_policy_version: int = 0, now: datetime | None = None) -> int:
    """Ready bundles not held by a live lease (the learner's 'bundles waiting')."""
    now = now or utcnow()
    return session.scalar(
        select(func.count()).select_from(Trajectory)
        .where(*_claimable(run_id, now), Trajectory.policy_version >= min_policy_version)
    ) or 0


def release_claims(session: Session, *, run_id: int, learner_id: str, keep: Sequence[int] = ()) -> int:
    """Give back every bundle `learner_id` holds (learner start-up, or shutdown without a step),
    except those in `keep` (a claim re-run after a store outage keeps the bundles it knows it
    holds and drops any its lost commit may have claimed)."""
    stmt = (
        update(Trajectory)
        .where(Trajectory.run_id == run_id, Trajectory.claimed_by == learner_id, Trajectory.state == "ready")
        .values(claimed_by=None, claimed_at=None, claim_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    if keep:
        stmt = stmt.where(Trajectory.id.not_in(list(keep)))
    return session.execute(stmt).rowcount


def renew_claims(
    session: Session, *, run_id: int, learner_id: str, lease_s: float, now: datetime | None = None
) -> int:
    """Extend the leases `learner_id` still holds (for steps longer than a lease)."""
    now = now or utcnow()
    result = session.execute(
        update(Trajectory)
        .where(Trajectory.run_id == run_id, Trajectory.claimed_by == learner_id, Trajectory.state == "ready")
        .values(claim_expires_at=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def record_step_and_consume(
    session: Session,
    *,
    run_id: int,
    step: int,
    learner_id: str,
    trajectory_ids: Sequence[int],
    policy_version: int,
    metrics: Mapping[str, Any],
    loss: float | None = None,
    n_tokens: int = 0,
    wall_s: float = 0.0,
    now: datetime | None = None,
) -> int:
    """Record learner step `step` and mark its bundles consumed, in the caller's transaction.

    Every bundle must be `ready` and claimed by `learner_id` (an expired lease nobody took
    over still counts); otherwise ClaimLost is raised and the caller's rollback undoes the
    step. Returns the learner_steps row id.
    """
    require_writable(session, "record_step_and_consume()")
    now = now or utcnow()
    ids = sorted(set(trajectory_ids))
    if len(ids) != len(trajectory_ids):
        raise ValueError("trajectory_ids contains duplicates")
    if session.scalar(select(LearnerStep.id).where(LearnerStep.run_id == run_id, LearnerStep.step == step)):
        raise ValueError(
            f"step {step} of run {run_id} is already recorded; a learner resuming from an older "
            "checkpoint must call rewind_to_step(checkpoint_step) first"
        )
    result = session.execute(
        update(Trajectory)
        .where(Trajectory.id.in_(ids), Trajectory.run_id == run_id, Trajectory.state == "ready",
               Trajectory.claimed_by == learner_id)
        .values(state="consumed", consumed_step=step, consumed_at=now, claimed_by=None, claimed_at=None,
                claim_expires_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != len(ids):
        held = set(session.scalars(select(Trajectory.id).where(
            Trajectory.id.in_(ids), Trajectory.consumed_step == step, Trajectory.state == "consumed")))
        lost = [i for i in ids if i not in held]
        raise ClaimLost(f"bundles {lost[:20]} are not ready and claimed by {learner_id!r}; step {step} not recorded")
    row = LearnerStep(
        run_id=run_id, step=step, learner_id=learner_id, policy_version=policy_version, loss=loss,
        n_bundles=len(ids), n_tokens=n_tokens, wall_s=wall_s, metrics=dict(metrics), created_at=now,
    )
    session.add(row)
    session.flush()
    return row.id


def step_already_recorded(session: Session, *, run_id: int, step: int, learner_id: str,
                          trajectory_ids: Sequence[int]) -> bool:
    """Whether step `step` is recorded by `learner_id` with exactly these bundles consumed by it.

    How the learner settles a `record_step_and_consume` whose COMMIT outcome is unknown (the
    connection dropped during it, db/outage.py): on the re-run, True means the first commit
    happened and the step is done; False means it did not (then recording it again is right,
    and a step row of someone else still makes `record_step_and_consume` refuse)."""
    row = session.execute(select(LearnerStep.learner_id, LearnerStep.n_bundles).where(
        LearnerStep.run_id == run_id, LearnerStep.step == step)).one_or_none()
    if row is None or row.learner_id != learner_id or row.n_bundles != len(set(trajectory_ids)):
        return False
    consumed = set(session.scalars(select(Trajectory.id).where(
        Trajectory.run_id == run_id, Trajectory.state == "consumed", Trajectory.consumed_step == step)))
    return consumed == set(trajectory_ids)


def rewind_to_step(session: Session, *, run_id: int, step: int) -> int:
    """Forget steps after `step` (the learner resumed from that checkpoint): their step rows
    are deleted and their bundles become ready again. Returns how many bundles."""
    require_writable(session, "rewind_to_step()")
    result = session.execute(
        update(Trajectory)
        .where(Trajectory.run_id == run_id, Trajectory.state == "consumed", Trajectory.consumed_step > step)
        .values(state="ready", consumed_step=None, consumed_at=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(LearnerStep).where(LearnerStep.run_id == run_id, LearnerStep.step > step))
    return result.rowcount


def withdraw_policy_versions(session: Session, *, run_id: int, paths: Sequence[str],
                             now: datetime | None = None) -> tuple[list[int], int]:
    """The checkpoints at `paths` are gone (damaged; the learner resumed from an older one):
    their policy versions are unpublished, and the unconsumed trajectories those policies
    sampled are dropped as `stale_policy` (the driver re-samples their slots), so nothing
    trains on a policy that no longer exists. Call after `rewind_to_step`. Returns (the
    versions withdrawn, trajectories dropped)."""
    require_writable(session, "withdraw_policy_versions()")
    versions = list(session.scalars(
        select(PolicyVersion.version).where(PolicyVersion.run_id == run_id, PolicyVersion.path.in_(list(paths)))
    ))
    if not versions:
        return [], 0
    now = now or utcnow()
    dropped = session.execute(
        update(Trajectory)
        .where(Trajectory.run_id == run_id, Trajectory.policy_version.in_(versions),
               Trajectory.state.in_(("generated", "auditing", "ready")))
        .values(state="dropped", drop_reason="stale_policy", updated_at=now,
                drop_detail="sampled by a policy whose checkpoint was damaged (the learner resumed from an older one)",
                claimed_by=None, claimed_at=None, claim_expires_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.execute(delete(PolicyVersion).where(PolicyVersion.run_id == run_id, PolicyVersion.version.in_(versions)))
    return sorted(versions), dropped


@dataclass(frozen=True)
class StepRecord:
    step: int
    policy_version: int
    loss: float | None
    n_bundles: int
    n_tokens: int
    wall_s: float
    metrics: dict[str, Any]
    created_at: datetime


def learner_steps(session: Session, *, run_id: int, after_step: int = 0) -> list[StepRecord]:
    """Recorded steps after `after_step`, ascending (plots, progress)."""
    stmt = select(LearnerStep).where(LearnerStep.run_id == run_id, LearnerStep.step > after_step).order_by(LearnerStep.step)
    return [
        StepRecord(s.step, s.policy_version, s.loss, s.n_bundles, s.n_tokens, s.wall_s, s.metrics, s.created_at)
        for s in session.scalars(stmt)
    ]


def latest_step(session: Session, *, run_id: int) -> int:
    """The highest recorded step (0 before the first)."""
    return session.scalar(select(func.max(LearnerStep.step)).where(LearnerStep.run_id == run_id)) or 0
