"""A run as the page draws it: the aggregates of db/repo_dashboard.py, money converted to USD
(the one edge where that happens for the dashboard, omniopd/money.py), times as epoch seconds.

Nothing of the config is sent as it is (it may hold a store or broker password): only the
caps, rate limits and the few settings the page names. API keys never reach this module:
the config holds the names of their environment variables, and this reads neither.
"""

from __future__ import annotations

import calendar
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from db.models import RUN_SCOPE, utcnow
from db.repo_budget import budgets
from db.repo_dashboard import (
    bundle_series,
    error_counts,
    eval_points,
    learner_series,
    ledger_series,
    provider_totals,
    run_counts,
    run_span,
    window_start,
    worker_activity,
)
from db.repo_runs import get_run, list_runs
from db.repo_spend import budget_stop
from omniopd.config import OmniConfig
from omniopd.money import micros_to_usd

LIVE_STATUSES = ("created", "running")
TIME_BUCKETS = 120
MAX_LEARNER_POINTS = 400
PLAN_FILE = "plan.json"  # written by `omniopd plan` into run.output_dir


def epoch(value: datetime | None) -> float | None:
    """Naive UTC (the store's convention) -> seconds since the epoch."""
    return None if value is None else calendar.timegm(value.timetuple()) + value.microsecond / 1e6


def usd(micros: int | None) -> float | None:
    return None if micros is None else micros_to_usd(micros)


def read_plan(config: OmniConfig) -> dict[str, Any] | None:
    """The forecast `omniopd plan` saved for the run (per trajectory, for the run), or None."""
    path = Path(config.run.output_dir) / PLAN_FILE
    try:
        plan = json.loads(path.read_text())
        return {
            "per_trajectory_usd": float(plan["per_trajectory"]["cost_usd"]),
            "run_usd": float(plan["run"]["cost_usd"]),
            "trajectories": int(plan["trajectories"]),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_list(session: Session) -> list[dict[str, Any]]:
    """The runs in a store, with the numbers of the comparison table."""
    out = []
    for record in list_runs(session):
        views = budgets(session, run_id=record.id)
        stop = budget_stop(session, run_id=record.id)
        total = next((b for b in views if b.provider == RUN_SCOPE), None)
        counts = run_counts(session, run_id=record.id)
        evals = [e for e in eval_points(session, run_id=record.id) if e.pass_at_1 is not None and e.step is not None]
        last_eval = max(evals, key=lambda e: (e.step, e.benchmark), default=None)
        first_eval = min(evals, key=lambda e: (e.step, e.benchmark), default=None)
        out.append({
            "name": record.name,
            "status": record.status,
            "step": counts.latest_step,
            "spent_usd": usd(total.spent) if total else 0.0,
            "cap_usd": usd(total.cap) if total else None,
            "reached": [_scope(b.provider) for b in views if _reached(b, stop)],
            "trajectories_audited": counts.trajectories_audited,
            "pass_first": None if first_eval is None else _eval(first_eval),
            "pass_last": None if last_eval is None else _eval(last_eval),
        })
    return out


def _scope(provider: str) -> str:
    return "run" if provider == RUN_SCOPE else provider


def _reached(b, stop: str | None = None) -> bool:
    """A cap is reached once spent + reserved meets it (no reservation fits any more), or once
    the audits were refused for it: `stop` is the refusal the run recorded (db.repo_spend.
    budget_stop), which names the cap as workers/audit/budget_guard.py words it."""
    if b.cap is None:
        return False
    named = "exhausted for the run" if b.provider == RUN_SCOPE else f"exhausted for provider {b.provider}:"
    return b.spent + b.reserved >= b.cap or (stop is not None and named in stop)


def _eval(e) -> dict[str, Any]:
    return {"benchmark": e.benchmark, "step": e.step, "status": e.status, "samples": e.samples,
            "pass_at_1": e.pass_at_1, "ci_low": e.ci_low, "ci_high": e.ci_high, "graded": e.graded}


def run_snapshot(session: Session, *, run_name: str, config: OmniConfig | None, now: datetime | None = None,
                 buckets: int = TIME_BUCKETS) -> dict[str, Any]:
    """Everything the page shows about one run (raises RunNotFound, naming the known runs)."""
    now = now or utcnow()
    record = get_run(session, name=run_name)
    span = run_span(session, run_id=record.id)
    width = span.width_s(buckets)
    counts = run_counts(session, run_id=record.id)
    series = ledger_series(session, run_id=record.id, t0=span.t0, width_s=width, since=window_start(now))
    calls = provider_totals(series)
    teachers = config.teachers if config is not None else {}

    def at(bucket: int) -> int:  # the end of a bucket, in epoch seconds
        return span.t0 + (bucket + 1) * width

    spend: dict[str, list[list[float]]] = {}
    for b in series:
        spend.setdefault(b.provider, []).append([at(b.bucket), micros_to_usd(b.cumulative_micros)])
    use: dict[str, list[list[float]]] = {}
    for b in series:
        use.setdefault(b.provider, []).append([at(b.bucket), b.calls * 60.0 / width, b.rate_limited,
                                             (b.input_tokens + b.output_tokens) * 60.0 / width])
    bundles = bundle_series(session, run_id=record.id, t0=span.t0, width_s=width)
    total_cost = sum(c.cost_micros for c in calls)
    plan = read_plan(config) if config is not None else None
    stop = budget_stop(session, run_id=record.id)
    return {
        "run": {
            "name": record.name, "status": record.status, "live": record.status in LIVE_STATUSES,
            "created_at": epoch(span.created_at), "finished_at": epoch(span.finished_at),
            "last_activity_at": span.t1, "now": epoch(now), "bucket_s": width,
            "step": counts.latest_step, "policy_version": counts.latest_version,
            "max_steps": config.learner.max_steps if config else None,
            "teacher": config.audit.teacher if config else None,
            "method": config.loss.method if config else None,
        },
        "counts": {
            "trajectories": counts.trajectories,
            "trajectories_audited": counts.trajectories_audited,
        },
        "budgets": [
            {"scope": _scope(b.provider), "cap_usd": usd(b.cap), "spent_usd": usd(b.spent), "reserved_usd": usd(b.reserved),
             "headroom_usd": usd(b.headroom), "reached": _reached(b, stop)}
            for b in budgets(session, run_id=record.id)
        ],
        "budget_stop": stop,
        "spend": {
            "series": spend,
            "total_usd": micros_to_usd(total_cost),
            "cost_per_trajectory_usd": micros_to_usd(total_cost) / counts.trajectories_audited
            if counts.trajectories_audited else None,
            "bundle_series": [[at(b), n] for b, _, n in bundles],
            "plan": plan,
        },
        "providers": [_provider(c, teachers.get(c.provider)) for c in calls],
        "provider_use": use,
        "errors": [{"provider": p, "http_status": h, "error": e, "count": n} for p, h, e, n in error_counts(session, run_id=record.id)],
        "policy": {
            "latest_version": counts.latest_version,
            "waiting_oldest_version": counts.waiting_min_version,
            "lag_now": None if counts.waiting_min_version is None else counts.latest_version - counts.waiting_min_version,
            "max_policy_lag": config.learner.max_policy_lag if config else None,
        },
        "learner": [
            {"step": p.step, "steps": p.steps, "loss": p.loss, **p.metrics, "max_lag": p.max_lag, "mean_lag": p.mean_lag}
            for p in learner_series(session, run_id=record.id, max_points=MAX_LEARNER_POINTS)
        ],
        "evals": [_eval(e) for e in eval_points(session, run_id=record.id)],
        "workers": [
            *({"role": w.role, "name": w.name, "last_at": epoch(w.last_at), "done": w.done, "in_flight": 0}
              for w in worker_activity(session, run_id=record.id)),
            *({"role": "audit", "name": c.provider, "last_at": epoch(c.last_finished_at), "done": c.calls - c.in_flight,
               "in_flight": c.in_flight} for c in calls),
        ],
    }


def _provider(c, teacher) -> dict[str, Any]:
    limits = teacher.rate_limits if teacher is not None else None
    return {
        "provider": c.provider, "model": c.model, "calls": c.calls, "ok": c.ok, "errors": c.errors,
        "unknown": c.unknown, "in_flight": c.in_flight, "rate_limited": c.rate_limited,
        "cost_usd": micros_to_usd(c.cost_micros), "reserved_usd": micros_to_usd(c.reserved_micros),
        "input_tokens": c.input_tokens, "output_tokens": c.output_tokens,
        "mean_latency_ms": c.mean_latency_ms, "max_latency_ms": c.max_latency_ms,
        "last_minute": {"calls": c.recent_calls, "tokens": c.recent_tokens, "rate_limited": c.recent_rate_limited},
        "limits": None if limits is None else {
            "requests_per_min": limits.requests_per_min, "tokens_per_min": limits.tokens_per_min,
            "input_tokens_per_min": limits.input_tokens_per_min, "output_tokens_per_min": limits.output_tokens_per_min,
            "fraction": limits.fraction,
        },
        "last_call_at": epoch(max((t for t in (c.last_sent_at, c.last_finished_at) if t is not None), default=None)),
    }
