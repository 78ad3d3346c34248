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
    # max(created_at) reads the (run_id, provider, created_at) index alone, not the rows
    last_call = session.scalar(select(_epoch(func.max(TeacherCall.created_at))).where(TeacherCall.run_id == run_id))
    last_step = session.scalar(select(_epoch(func.max(LearnerStep.created_at))).where(LearnerStep.run_id == run_id))
    last_traj = session.scalar(select(_epoch(func.max(Trajectory.updated_at))).where(Trajectory.run_id == run_id))
    t0 = int(run[5])
    t1 = max(int(x) for x in (run[6], last_call, last_step, last_traj, t0) if x is not None)
    return RunSpan(run[0], run[1], run[2], run[3], run[4], t0, t1)


@dataclass(frozen=True)
class RunCounts:
    """Where the run's work stands: trajectories by state, audited trajectories, policy
    versions, learner steps. (Chunks by state are `omniopd status`'s: a join the page skips.)"""

    trajectories: dict[str, int]
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
    return RunCounts(trajectories, int(audited), -1 if version is None else int(version),
                     int(step or 0), low, high)


# ------------------------------------------------------------------ the ledger


@dataclass(frozen=True)
class LedgerBucket:
    """One provider's attempts sent in one time bucket: outcomes, HTTP 429s, tokens, cost (and
    the running total of cost up to the end of the bucket), latency, and how many were sent
    since `since` (the last minute's use, for the rate-limit gauges). Money in micro-USD."""

    provider: str
    bucket: int
    model: str
    calls: int
    ok: int
    errors: int
    unknown: int
    in_flight: int
    rate_limited: int  # answered HTTP 429
    cost_micros: int
    cumulative_micros: int
    reserved_micros: int  # worst case held by the attempts in flight
    input_tokens: int  # uncached + cache read + cache write
    output_tokens: int
    latency_sum_ms: float
    latency_count: int
    latency_max_ms: float | None
    recent_calls: int
    recent_tokens: int
    recent_rate_limited: int
    last_sent_at: datetime | None
    last_finished_at: datetime | None


def ledger_series(session: Session, *, run_id: int, t0: int, width_s: int, since: datetime) -> list[LedgerBucket]:
    """The run's ledger per provider and time bucket (by when each attempt was sent), sorted;
    buckets without attempts are absent. One pass over the run's rows: the per-provider
    totals are sums of these buckets (`provider_totals`), not another scan."""
    c, status = TeacherCall, TeacherCall.status
    bucket = ((_epoch(c.created_at) - t0) // width_s).label("bucket")
    tokens_in = c.input_tokens + c.cached_input_tokens + c.cache_write_tokens
    limited, recent = c.http_status == RATE_LIMITED, c.created_at >= since
    cost = _sum(c.cost_micros)
    stmt = (
        select(
            c.provider, bucket, func.max(c.model), func.count(), _count_where(status == "ok"),
            _count_where(status == "error"), _count_where(status == "unknown"), _count_where(status == "reserved"),
            _count_where(limited), cost, func.sum(cost).over(partition_by=c.provider, order_by=bucket),
            _sum(c.reserved_micros, status == "reserved"), _sum(tokens_in), _sum(c.output_tokens),
            func.coalesce(func.sum(c.latency_ms), 0.0), func.count(c.latency_ms), func.max(c.latency_ms),
            _count_where(recent), _sum(tokens_in + c.output_tokens, recent), _count_where(and_(recent, limited)),
            func.max(c.created_at), func.max(c.finished_at),
        )
        .where(c.run_id == run_id)
        .group_by(c.provider, bucket)
        .order_by(c.provider, bucket)
    )
    return [
        LedgerBucket(row[0], *(int(v) for v in row[1:2]), row[2], *(int(v) for v in row[3:14]), float(row[14]),
                     int(row[15]), None if row[16] is None else float(row[16]), *(int(v) for v in row[17:20]),
                     row[20], row[21])
        for row in session.execute(stmt)
    ]


@dataclass(frozen=True)
class ProviderCalls:
    """A provider's whole ledger (see LedgerBucket for the fields)."""

    provider: str
    model: str
    calls: int
    ok: int
    errors: int
    unknown: int
    in_flight: int
    rate_limited: int
    cost_micros: int
    reserved_micros: int
    input_tokens: int
    output_tokens: int
    mean_latency_ms: float | None
    max_latency_ms: float | None
    recent_calls: int
    recent_tokens: int
    recent_rate_limited: int
    last_sent_at: datetime | None
    last_finished_at: datetime | None


_SUMMED = ("calls", "ok", "errors", "unknown", "in_flight", "rate_limited", "cost_micros", "reserved_micros",
           "input_tokens", "output_tokens")


def provider_totals(buckets: list[LedgerBucket]) -> list[ProviderCalls]:
    """Per provider, the sums of its buckets (a few hundred aggregates, not the ledger's rows)."""
    out = []
    for provider, rows in series_by(buckets, lambda b: b.provider).items():
        n_latency = sum(b.latency_count for b in rows)
        maxima = [b.latency_max_ms for b in rows if b.latency_max_ms is not None]
        sent = [b.last_sent_at for b in rows if b.last_sent_at is not None]
        finished = [b.last_finished_at for b in rows if b.last_finished_at is not None]
        out.append(ProviderCalls(
            provider, max(b.model for b in rows), *(sum(getattr(b, f) for b in rows) for f in _SUMMED),
            sum(b.latency_sum_ms for b in rows) / n_latency if n_latency else None, max(maxima, default=None),
            sum(b.recent_calls for b in rows), sum(b.recent_tokens for b in rows),
            sum(b.recent_rate_limited for b in rows), max(sent, default=None), max(finished, default=None),
        ))
    return out


def error_counts(session: Session, *, run_id: int) -> list[tuple[str, int | None, str, int]]:
    """(provider, HTTP status, error class, count) of the run's failed and unknown attempts."""
    what = func.coalesce(TeacherCall.error_class, TeacherCall.status)
    stmt = (
        select(TeacherCall.provider, TeacherCall.http_status, what, func.count())
        .where(TeacherCall.run_id == run_id, TeacherCall.status.in_(("error", "unknown")))
        .group_by(TeacherCall.provider, TeacherCall.http_status, what)
        .order_by(TeacherCall.provider, func.count().desc())
    )
    return [(p, None if h is None else int(h), str(c), int(n)) for p, h, c, n in session.execute(stmt)]


def bundle_series(session: Session, *, run_id: int, t0: int, width_s: int) -> list[tuple[int, int, int]]:
    """(bucket, trajectories that became audit bundles in it, running total): the forecast's
    x axis (a trajectory is a bundle once every chunk of it is audited or given up)."""
    bucket = ((_epoch(Trajectory.ready_at) - t0) // width_s).label("bucket")
    stmt = (
        select(bucket, func.count(), func.sum(func.count()).over(order_by=bucket))
        .where(Trajectory.run_id == run_id, Trajectory.ready_at.is_not(None))
        .group_by(bucket).order_by(bucket)
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
    from its recorded batches) or learner (by learner id, from its steps). Audit workers are
    not named in the store; their queue's activity is in the ledger (`provider_totals`)."""

    role: str
    name: str
    last_at: datetime | None
    done: int  # batches recorded, steps trained


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
    """The start of the last `seconds` before `now` (the recent_* window of ledger_series)."""
    return now - timedelta(seconds=seconds)


def series_by(rows, key) -> dict[str, list]:
    """Rows grouped by `key(row)`, order kept (for the per-provider series)."""
    grouped: dict[str, list] = defaultdict(list)
    for row in rows:
        grouped[key(row)].append(row)
    return dict(grouped)
