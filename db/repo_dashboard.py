"""Aggregates behind `omniopd dashboard`: every number the page shows, computed by the database.

Each function is a handful of GROUP BY queries over one run, so the work per refresh
grows with the number of time buckets and learner steps shown, not with the number of
ledger rows (the reading of 100,000 teacher calls is the database's, in C, through the
`(run_id, provider, created_at)` index; scripts/bench/dashboard.py measures it against
aggregating the same rows in Python).

Time series are cut into buckets of `width_s` seconds from `t0` (both integer seconds
since the epoch, as `run_span` reports them): a bucket is `(epoch(t) - t0) / width_s`,
integer division, on both backends. Money stays integer micro-dollars here; the
dashboard converts it at the edge (omniopd/money.py).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, and_, case, distinct, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from db.models import (
    CHUNK_STATES,
    TRAJECTORY_STATES,
    Chunk,
    EvalResult,
    EvalRun,
    LearnerStep,
    PolicyVersion,
    RolloutBatch,
    Run,
    TeacherCall,
    Trajectory,
)

RATE_LIMITED = 429
WAITING_STATES = ("generated", "auditing", "ready")


class _Epoch(FunctionElement):
    """Whole seconds since the epoch (rounded down) of a naive-UTC DateTime column."""

    type = BigInteger()
    inherit_cache = True


@compiles(_Epoch)
def _epoch_sqlite(element, compiler, **kw):  # SQLite reads the stored text as UTC
    return f"CAST(STRFTIME('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(_Epoch, "postgresql")
def _epoch_postgresql(element, compiler, **kw):  # a timestamp without time zone counts as UTC
    return f"CAST(FLOOR(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})) AS BIGINT)"


def _epoch(column):
    return _Epoch(column)


def _count_where(condition):
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _sum(column, condition=None):
    value = column if condition is None else case((condition, column), else_=0)
    return func.coalesce(func.sum(value), 0)


# ------------------------------------------------------------------ the run and its span


@dataclass(frozen=True)
class RunSpan:
    """A run's time axis: from its creation to its last recorded activity (epoch seconds)."""

    run_id: int
    name: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    t0: int
    t1: int

    def width_s(self, buckets: int) -> int:
        """Bucket width that cuts [t0, t1] into at most `buckets` buckets (at least 1 s)."""
        return max(1, -(-(self.t1 - self.t0 + 1) // max(1, buckets)))


def run_span(session: Session, *, run_id: int) -> RunSpan:
    """The run's row and the epoch seconds of its first and last activity (creation, ledger,
    learner steps, trajectory progress)."""
    run = session.execute(
        select(Run.id, Run.name, Run.status, Run.created_at, Run.finished_at, _epoch(Run.created_at), _epoch(Run.updated_at))
        .where(Run.id == run_id)
    ).one()
    last_call = session.scalar(
        select(func.max(_epoch(func.coalesce(TeacherCall.finished_at, TeacherCall.created_at)))).where(TeacherCall.run_id == run_id)
    )
    last_step = session.scalar(select(func.max(_epoch(LearnerStep.created_at))).where(LearnerStep.run_id == run_id))
    last_traj = session.scalar(select(func.max(_epoch(Trajectory.updated_at))).where(Trajectory.run_id == run_id))
    t0 = int(run[5])
    t1 = max(int(x) for x in (run[6], last_call, last_step, last_traj, t0) if x is not None)
    return RunSpan(run[0], run[1], run[2], run[3], run[4], t0, t1)


@dataclass(frozen=True)
class RunCounts:
    """Where the run's work stands: trajectories and chunks by state, audited trajectories,
    policy versions, learner steps."""

    trajectories: dict[str, int]
    chunks: dict[str, int]
    trajectories_audited: int  # with at least one audited chunk (as `omniopd spend` counts them)
    latest_version: int
    latest_step: int
    waiting_min_version: int | None  # oldest policy among trajectories still headed for the learner
    waiting_max_version: int | None


def run_counts(session: Session, *, run_id: int) -> RunCounts:
    in_run = Trajectory.run_id == run_id
    trajectories = dict.fromkeys(TRAJECTORY_STATES, 0)
    for state, n in session.execute(select(Trajectory.state, func.count()).where(in_run).group_by(Trajectory.state)):
        trajectories[state] = int(n)
    chunks = dict.fromkeys(CHUNK_STATES, 0)
    for state, n in session.execute(
        select(Chunk.state, func.count()).join(Trajectory, Chunk.trajectory_id == Trajectory.id).where(in_run)
        .group_by(Chunk.state)
    ):
        chunks[state] = int(n)
    audited = session.scalar(
        select(func.count(distinct(Chunk.trajectory_id))).join(Trajectory, Chunk.trajectory_id == Trajectory.id)
        .where(in_run, Chunk.state == "audited")
    ) or 0
    version = session.scalar(select(func.max(PolicyVersion.version)).where(PolicyVersion.run_id == run_id))
    step = session.scalar(select(func.max(LearnerStep.step)).where(LearnerStep.run_id == run_id))
    low, high = session.execute(
        select(func.min(Trajectory.policy_version), func.max(Trajectory.policy_version))
        .where(in_run, Trajectory.state.in_(WAITING_STATES))
    ).one()
    return RunCounts(trajectories, chunks, int(audited), -1 if version is None else int(version),
                     int(step or 0), low, high)


# ------------------------------------------------------------------ the ledger


@dataclass(frozen=True)
class ProviderCalls:
    """A provider's ledger rows: outcomes, HTTP 429s, latency, cost, and the last minute's use
    (calls and tokens sent since `since`, for the rate-limit gauges). Money in micro-USD."""

    provider: str
    model: str
    calls: int
    ok: int
    errors: int
    unknown: int
    in_flight: int
    rate_limited: int  # answered HTTP 429
    cost_micros: int
    reserved_micros: int  # worst case held by the calls in flight
    input_tokens: int  # uncached + cache read + cache write
    output_tokens: int
    mean_latency_ms: float | None
    max_latency_ms: float | None
    recent_calls: int
    recent_tokens: int
    recent_rate_limited: int
    last_call_at: datetime | None


def provider_calls(session: Session, *, run_id: int, since: datetime) -> list[ProviderCalls]:
    """Per provider (teacher name), sorted; `since` starts the window of the recent_* fields."""
    status, recent = TeacherCall.status, TeacherCall.created_at >= since
    tokens_in = TeacherCall.input_tokens + TeacherCall.cached_input_tokens + TeacherCall.cache_write_tokens
    limited = TeacherCall.http_status == RATE_LIMITED
    stmt = (
        select(
            TeacherCall.provider, func.max(TeacherCall.model), func.count(),
            _count_where(status == "ok"), _count_where(status == "error"), _count_where(status == "unknown"),
            _count_where(status == "reserved"), _count_where(limited),
            _sum(TeacherCall.cost_micros), _sum(TeacherCall.reserved_micros, status == "reserved"),
            _sum(tokens_in), _sum(TeacherCall.output_tokens),
            func.avg(TeacherCall.latency_ms), func.max(TeacherCall.latency_ms),
            _count_where(recent), _sum(tokens_in + TeacherCall.output_tokens, recent), _count_where(and_(recent, limited)),
            func.max(func.coalesce(TeacherCall.finished_at, TeacherCall.created_at)),
        )
        .where(TeacherCall.run_id == run_id)
        .group_by(TeacherCall.provider)
        .order_by(TeacherCall.provider)
    )
    out = []
    for row in session.execute(stmt):
        ints = [int(v) for v in row[2:12]]
        out.append(ProviderCalls(
            row[0], row[1], *ints,
            None if row[12] is None else float(row[12]), None if row[13] is None else float(row[13]),
            int(row[14]), int(row[15]), int(row[16]), row[17],
        ))
    return out


def error_counts(session: Session, *, run_id: int) -> list[tuple[str, int | None, str, int]]:
    """(provider, HTTP status, error class, count) of the run's failed and unknown attempts."""
    stmt = (
        select(TeacherCall.provider, TeacherCall.http_status, func.coalesce(TeacherCall.error_class, TeacherCall.status),
               func.count())
        .where(TeacherCall.run_id == run_id, TeacherCall.status.in_(("error", "unknown")))
        .group_by(TeacherCall.provider, TeacherCall.http_status, func.coalesce(TeacherCall.error_class, TeacherCall.status))
        .order_by(TeacherCall.provider, func.count().desc())
    )
    return [(p, None if h is None else int(h), str(c), int(n)) for p, h, c, n in session.execute(stmt)]


@dataclass(frozen=True)
class LedgerBucket:
    """One provider's calls sent in one time bucket, and its cost charged up to the end of it."""

    provider: str
    bucket: int
    calls: int
    rate_limited: int
    tokens: int
    cost_micros: int
    cumulative_micros: int


def ledger_series(session: Session, *, run_id: int, t0: int, width_s: int) -> list[LedgerBucket]:
    """Per provider and time bucket (by when each attempt was sent), with the running total of
    cost per provider (a window sum in SQL). Buckets without calls are absent."""
    bucket = ((_epoch(TeacherCall.created_at) - t0) // width_s).label("bucket")
    cost = _sum(TeacherCall.cost_micros)
    tokens = TeacherCall.input_tokens + TeacherCall.cached_input_tokens + TeacherCall.cache_write_tokens + TeacherCall.output_tokens
    stmt = (
        select(
            TeacherCall.provider, bucket, func.count(), _count_where(TeacherCall.http_status == RATE_LIMITED),
            _sum(tokens), cost,
            func.sum(cost).over(partition_by=TeacherCall.provider, order_by=bucket),
        )
        .where(TeacherCall.run_id == run_id)
        .group_by(TeacherCall.provider, bucket)
        .order_by(TeacherCall.provider, bucket)
    )
    return [LedgerBucket(p, int(b), int(c), int(r), int(t), int(m), int(cum)) for p, b, c, r, t, m, cum in session.execute(stmt)]


def audited_series(session: Session, *, run_id: int, t0: int, width_s: int) -> list[tuple[int, int, int]]:
    """(bucket, trajectories whose last chunk audit finished in it, running total): the
    trajectories `omniopd spend` divides the cost by, over time (the forecast's x axis)."""
    done = (
        select(Chunk.trajectory_id, func.max(Chunk.updated_at).label("at"))
        .join(Trajectory, Chunk.trajectory_id == Trajectory.id)
        .where(Trajectory.run_id == run_id, Chunk.state == "audited")
        .group_by(Chunk.trajectory_id)
        .subquery()
    )
    bucket = ((_epoch(done.c.at) - t0) // width_s).label("bucket")
    stmt = (
        select(bucket, func.count(), func.sum(func.count()).over(order_by=bucket))
        .select_from(done).group_by(bucket).order_by(bucket)
    )
    return [(int(b), int(n), int(total)) for b, n, total in session.execute(stmt)]


# ------------------------------------------------------------------ the learner


LEARNER_METRICS = ("kl", "chunk_loss", "kl_term", "proxy_mean", "proxy_min", "proxy_max", "grad_norm", "lr", "wait_s")
"""Keys of `learner_steps.metrics` the dashboard plots (absent keys come back as None)."""


@dataclass(frozen=True)
class LearnerPoint:
    """The learner steps of one bucket of steps: the last step, mean loss and metrics (the
    proxy's min and max over the bucket), and the policy lag of the bundles they consumed."""

    step: int
    steps: int
    loss: float | None
    metrics: dict[str, float | None]
    max_lag: int | None  # policy version of the step minus that of its oldest bundle
    mean_lag: float | None


def learner_series(session: Session, *, run_id: int, max_points: int = 400) -> list[LearnerPoint]:
    """The run's learner curve, at most `max_points` points: steps are averaged in buckets of
    ceil(last step / max_points) consecutive steps."""
    last = session.scalar(select(func.max(LearnerStep.step)).where(LearnerStep.run_id == run_id)) or 0
    if last == 0:
        return []
    width = max(1, -(-last // max(1, max_points)))
    bucket = ((LearnerStep.step - 1) // width).label("bucket")
    aggregates = {"proxy_min": func.min, "proxy_max": func.max}
    columns = [aggregates.get(key, func.avg)(LearnerStep.metrics[key].as_float()) for key in LEARNER_METRICS]
    stmt = (
        select(bucket, func.max(LearnerStep.step), func.count(), func.avg(LearnerStep.loss), *columns)
        .where(LearnerStep.run_id == run_id).group_by(bucket).order_by(bucket)
    )
    rows = session.execute(stmt).all()
    lag = LearnerStep.policy_version - Trajectory.policy_version
    lag_bucket = ((Trajectory.consumed_step - 1) // width).label("bucket")
    lags = {
        int(b): (int(high), float(mean))
        for b, high, mean in session.execute(
            select(lag_bucket, func.max(lag), func.avg(lag))
            .join(LearnerStep, and_(LearnerStep.run_id == Trajectory.run_id, LearnerStep.step == Trajectory.consumed_step))
            .where(Trajectory.run_id == run_id, Trajectory.state == "consumed")
            .group_by(lag_bucket)
        )
    }
    out = []
    for row in rows:
        b, step, n, loss, *values = row
        high, mean = lags.get(int(b), (None, None))
        out.append(LearnerPoint(
            int(step), int(n), None if loss is None else float(loss),
            {k: None if v is None else float(v) for k, v in zip(LEARNER_METRICS, values, strict=True)}, high, mean,
        ))
    return out


# ------------------------------------------------------------------ workers and evaluations


@dataclass(frozen=True)
class WorkerActivity:
    """The last work a process recorded in the store: `role` rollout (by Celery hostname,
    from its recorded batches), learner (by learner id, from its steps) or audit (by the
    teacher its queue serves, from the ledger: audit workers are not named in the store)."""

    role: str
    name: str
    last_at: datetime | None
    done: int  # batches recorded, steps trained, teacher calls finished
    in_flight: int = 0  # audit: calls sent and not answered yet


def worker_activity(session: Session, *, run_id: int) -> list[WorkerActivity]:
    out = []
    worker = RolloutBatch.meta["worker"].as_string()
    for name, last, n in session.execute(
        select(worker, func.max(RolloutBatch.recorded_at), func.count())
        .where(RolloutBatch.run_id == run_id, RolloutBatch.state == "recorded").group_by(worker).order_by(worker)
    ):
        out.append(WorkerActivity("rollout", name or "?", last, int(n)))
    for name, last, n in session.execute(
        select(LearnerStep.learner_id, func.max(LearnerStep.created_at), func.count())
        .where(LearnerStep.run_id == run_id).group_by(LearnerStep.learner_id).order_by(LearnerStep.learner_id)
    ):
        out.append(WorkerActivity("learner", name, last, int(n)))
    for provider, last, done, flying in session.execute(
        select(TeacherCall.provider, func.max(TeacherCall.finished_at), _count_where(TeacherCall.status != "reserved"),
               _count_where(TeacherCall.status == "reserved"))
        .where(TeacherCall.run_id == run_id).group_by(TeacherCall.provider).order_by(TeacherCall.provider)
    ):
        out.append(WorkerActivity("audit", provider, last, int(done), int(flying)))
    return out


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation of the run's checkpoint at `step`: Pass@1 and its bootstrap interval
    (from the finished run's metrics), or the samples graded so far while it runs."""

    benchmark: str
    step: int | None
    status: str
    samples: int
    pass_at_1: float | None
    ci_low: float | None
    ci_high: float | None
    graded: int
    finished_at: datetime | None = field(default=None)


def eval_points(session: Session, *, run_id: int) -> list[EvalPoint]:
    """The run's evaluations by benchmark and step (eval_runs linked to it, e.g. by
    `omniopd eval --run R --step S` or an evaluator process)."""
    graded = (
        select(func.count()).where(EvalResult.eval_run_id == EvalRun.id).correlate(EvalRun).scalar_subquery()
    )
    stmt = (
        select(EvalRun.benchmark, EvalRun.step, EvalRun.status, EvalRun.samples, EvalRun.pass_at_1,
               EvalRun.metrics["ci_low"].as_float(), EvalRun.metrics["ci_high"].as_float(), graded, EvalRun.finished_at)
        .where(EvalRun.run_id == run_id)
        .order_by(EvalRun.benchmark, EvalRun.step, EvalRun.id)
    )
    return [EvalPoint(b, s, st, int(k), p, lo, hi, int(g), f) for b, s, st, k, p, lo, hi, g, f in session.execute(stmt)]


def window_start(now: datetime, seconds: float = 60.0) -> datetime:
    """The start of the last `seconds` before `now` (the recent_* window of provider_calls)."""
    return now - timedelta(seconds=seconds)


def series_by(rows, key) -> dict[str, list]:
    """Rows grouped by `key(row)`, order kept (for the per-provider series)."""
    grouped: dict[str, list] = defaultdict(list)
    for row in rows:
        grouped[key(row)].append(row)
    return dict(grouped)
