"""What teacher audits cost and how they went: the aggregates behind `omniopd spend`
and the audit lines of `omniopd status`.

Everything here is computed from the facts the audit stores — ledger rows (one per HTTP
attempt), teacher samples (phi), chunk and trajectory states — never from counters kept
on the side, so it is exact after any crash and the same from every process.

Telemetry (docs/audit.md):
- phi interior fraction: share of teacher samples with 0 < phi < 1. A teacher that
  repeats the student verbatim (phi = 1) or never matches (phi = 0) gives a k_sem with no
  gradation, the Bayesian proxy then carries little information.
- k_sem interior fraction: share of audited chunks with 0 < k_sem < N.
- distinct fraction: distinct cut continuations per chunk / N, averaged; near 1/N means
  the N samples are copies of one another — a near-greedy teacher (temperature too low,
  or a provider that ignores it), so k_sem / N is a coin, not an estimate.
- empty rate: continuations asked for in answered attempts that came back empty (they
  were paid for and asked again).
- cache-hit rate: input tokens read from the provider's cache / all input tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Float, case, cast, distinct, func, select
from sqlalchemy.orm import Session

from db.models import Chunk, TeacherCall, TeacherSample, Trajectory

SpendBy = Literal["provider", "model", "day"]


@dataclass(frozen=True)
class SpendRow:
    """Ledger rows sharing one key (provider, model or day). Money in micro-USD; tokens as
    reported (output includes reasoning). `in_flight` calls are still reserved (cost 0 here)."""

    key: str
    calls: int
    ok: int
    failed: int
    unknown: int
    in_flight: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_micros: int
    reserved_micros: int  # worst case held by in-flight calls
    continuations_requested: int  # by answered (ok) attempts
    continuations_returned: int

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    @property
    def cache_hit_rate(self) -> float | None:
        total = self.total_input_tokens
        return self.cached_input_tokens / total if total else None

    @property
    def empty_rate(self) -> float | None:
        asked = self.continuations_requested
        return (asked - self.continuations_returned) / asked if asked else None


def spend_rows(session: Session, *, run_id: int, by: SpendBy = "provider") -> list[SpendRow]:
    """The run's ledger grouped `by` provider, model or day (UTC), sorted by key."""
    keys = {"provider": TeacherCall.provider, "model": TeacherCall.model, "day": func.date(TeacherCall.created_at)}
    if by not in keys:
        raise ValueError(f"group by {by!r}: expected one of {', '.join(keys)}")
    key = keys[by]
    status = TeacherCall.status

    def count_where(condition) -> object:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    def sum_of(column, condition=None) -> object:
        value = column if condition is None else case((condition, column), else_=0)
        return func.coalesce(func.sum(value), 0)

    stmt = (
        select(
            key,
            func.count(),
            count_where(status == "ok"),
            count_where(status == "error"),
            count_where(status == "unknown"),
            count_where(status == "reserved"),
            sum_of(TeacherCall.input_tokens),
            sum_of(TeacherCall.cached_input_tokens),
            sum_of(TeacherCall.cache_write_tokens),
            sum_of(TeacherCall.output_tokens),
            sum_of(TeacherCall.reasoning_tokens),
            sum_of(TeacherCall.cost_micros),
            sum_of(TeacherCall.reserved_micros, status == "reserved"),
            sum_of(TeacherCall.n_requested, status == "ok"),
            sum_of(TeacherCall.n_returned, status == "ok"),
        )
        .where(TeacherCall.run_id == run_id)
        .group_by(key)
        .order_by(key)
    )
    return [SpendRow(str(row[0]), *(int(v) for v in row[1:])) for row in session.execute(stmt)]


@dataclass(frozen=True)
class AuditStats:
    """How a run's audits went (see the module docstring for the telemetry)."""

    chunks: dict[str, int]  # by state
    trajectories_audited: int  # with at least one audited chunk
    trajectories_finished: int  # ready/consumed, or dropped as unaudited
    samples: int
    phi_interior_fraction: float | None
    k_sem_interior_fraction: float | None
    distinct_fraction: float | None
    mean_prompt_tokens: float | None  # student tokens, over the run's trajectories
    mean_completion_tokens: float | None  # L of Appendix B
    mean_chunks_per_trajectory: float | None  # over trajectories that have chunks
    budget_stop: str | None  # why chunks were skipped for budget (the latest refusal), if any
    teacher_stop: str | None = None  # why a teacher's audits stopped (its latest attempt was refused), if any


def audit_stats(session: Session, *, run_id: int) -> AuditStats:
    """Counts and telemetry of the run's audits, in a handful of aggregate queries."""
    in_run = Trajectory.run_id == run_id
    chunks = dict(
        session.execute(
            select(Chunk.state, func.count()).join(Trajectory, Chunk.trajectory_id == Trajectory.id)
            .where(in_run).group_by(Chunk.state)
        ).all()
    )
    audited_trajs = session.scalar(
        select(func.count(distinct(Chunk.trajectory_id))).join(Trajectory, Chunk.trajectory_id == Trajectory.id)
        .where(in_run, Chunk.state == "audited")
    ) or 0
    finished = session.scalar(
        select(func.count()).select_from(Trajectory).where(
            in_run, (Trajectory.state.in_(("ready", "consumed"))) | (Trajectory.drop_reason == "unaudited"))
    ) or 0
    phi = TeacherSample.phi
    samples, interior = session.execute(
        select(func.count(), func.coalesce(func.sum(case(((phi > 0) & (phi < 1), 1), else_=0)), 0))
        .select_from(TeacherSample).join(Chunk, TeacherSample.chunk_id == Chunk.id)
        .join(Trajectory, Chunk.trajectory_id == Trajectory.id).where(in_run)
    ).one()
    k_total, k_interior = session.execute(
        select(func.count(), func.coalesce(func.sum(case(((Chunk.k_sem > 0) & (Chunk.k_sem < Chunk.n_target), 1), else_=0)), 0))
        .join(Trajectory, Chunk.trajectory_id == Trajectory.id).where(in_run, Chunk.state == "audited")
    ).one()
    per_chunk = (
        select((cast(func.count(distinct(TeacherSample.cut_text)), Float) / Chunk.n_target).label("distinct"))
        .select_from(TeacherSample).join(Chunk, TeacherSample.chunk_id == Chunk.id)
        .join(Trajectory, Chunk.trajectory_id == Trajectory.id)
        .where(in_run, Chunk.state == "audited").group_by(Chunk.id, Chunk.n_target).subquery()
    )
    distinct_fraction = session.scalar(select(func.avg(per_chunk.c.distinct)))
    mean_prompt, mean_completion = session.execute(
        select(func.avg(Trajectory.n_prompt_tokens), func.avg(Trajectory.n_completion_tokens)).where(in_run)
    ).one()
    per_traj = (
        select(func.count().label("n")).select_from(Chunk).join(Trajectory, Chunk.trajectory_id == Trajectory.id)
        .where(in_run).group_by(Chunk.trajectory_id).subquery()
    )
    mean_chunks = session.scalar(select(func.avg(per_traj.c.n)))
    stop = budget_stop(session, run_id=run_id)
    return AuditStats(
        chunks={state: int(n) for state, n in sorted(chunks.items())},
        trajectories_audited=int(audited_trajs),
        trajectories_finished=int(finished),
        samples=int(samples),
        phi_interior_fraction=int(interior) / samples if samples else None,
        k_sem_interior_fraction=int(k_interior) / k_total if k_total else None,
        distinct_fraction=None if distinct_fraction is None else float(distinct_fraction),
        mean_prompt_tokens=None if mean_prompt is None else float(mean_prompt),
        mean_completion_tokens=None if mean_completion is None else float(mean_completion),
        mean_chunks_per_trajectory=None if mean_chunks is None else float(mean_chunks),
        budget_stop=stop,
        teacher_stop=teacher_stop(session, run_id=run_id),
    )


def budget_stop(session: Session, *, run_id: int) -> str | None:
    """Why the run's audits stopped for budget — the latest cap refusal, e.g. 'teacher budget
    exhausted for provider X: spent $a of cap $b' — or None while no chunk was skipped for it.
    The learner and the driver use it to wind the run down."""
    return session.scalar(
        select(Chunk.error).join(Trajectory, Chunk.trajectory_id == Trajectory.id)
        .where(Trajectory.run_id == run_id, Chunk.state == "skipped_budget")
        .order_by(Chunk.updated_at.desc(), Chunk.id.desc()).limit(1)
    )


STOPPING_ERRORS = ("auth", "not_found", "quota", "sampling_refused", "thinking_refused", "refused")
"""Ledger error classes of a refusal that retrying cannot fix: the audit workers stop that
teacher (error classes: omniopd/teachers/httpinfo.py; the stop: workers/audit/service.py)."""


def teacher_stop(session: Session, *, run_id: int) -> str | None:
    """Why teachers' audits stopped: for each teacher whose latest finished attempt was such
    a refusal, its HTTP status, class and the provider's message (scrubbed of keys when it
    was recorded); None while no teacher is stopped. A fixed config's next answered attempt
    clears it."""
    latest = (
        select(func.max(TeacherCall.id).label("id"))
        .where(TeacherCall.run_id == run_id, TeacherCall.status != "reserved")
        .group_by(TeacherCall.provider).subquery()
    )
    rows = session.execute(
        select(TeacherCall.provider, TeacherCall.model, TeacherCall.http_status, TeacherCall.error_class,
               TeacherCall.error_detail)
        .join(latest, TeacherCall.id == latest.c.id)
        .where(TeacherCall.error_class.in_(STOPPING_ERRORS)).order_by(TeacherCall.provider)
    ).all()
    return "; ".join(
        f"teacher {provider} ({model}) refused: HTTP {status} {error_class}: {detail}"
        for provider, model, status, error_class, detail in rows
    ) or None


@dataclass(frozen=True)
class AuditedChunkText:
    """One audited chunk as text: the completion before it, its own text, k_sem and N."""

    before: str
    text: str
    k_sem: float
    n: int


def audited_chunk_texts(session: Session, *, run_id: int) -> list[AuditedChunkText]:
    """Every audited chunk of the run with the text before it (for task-specific checks of
    how well phi separates right from wrong chunks, e.g. the demo's)."""
    rows = session.execute(
        select(Trajectory.completion_text, Chunk.char_start, Chunk.student_text, Chunk.k_sem, Chunk.n_target)
        .join(Trajectory, Chunk.trajectory_id == Trajectory.id)
        .where(Trajectory.run_id == run_id, Chunk.state == "audited")
        .order_by(Chunk.id)
    )
    return [AuditedChunkText(completion[:start], text, float(k), int(n)) for completion, start, text, k, n in rows]
