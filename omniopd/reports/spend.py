"""The spend report of a run (`omniopd spend`): ledger, budgets, audit telemetry, and the
cost per trajectory next to the paper's Appendix B estimate for the run's M, N, C.

The forecast comes from `omniopd.reports.forecast.forecast_for_config`, which `omniopd
plan` uses too, so the two agree by construction up to what they are given: the prompt
length P and trajectory length L (observed here, estimated by plan).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy.orm import Session

from db.models import RUN_SCOPE
from db.repo_budget import budgets
from db.repo_spend import SpendBy, SpendRow, audit_stats, spend_rows
from omniopd.config import OmniConfig
from omniopd.money import micros_to_usd
from omniopd.reports.forecast import forecast_for_config
from omniopd.reports.plan import measure_prompts, plan_path, read_plan, training_questions
from omniopd.teachers.forecast import paper_cost_usd, requested_output_tokens
from omniopd.teachers.pricing import PricingError, cost_micros
from omniopd.teachers.types import Usage


def _row_dict(row: SpendRow) -> dict[str, Any]:
    out = asdict(row)
    out["cost_usd"] = micros_to_usd(out.pop("cost_micros"))
    out["reserved_usd"] = micros_to_usd(out.pop("reserved_micros"))
    out["cache_hit_rate"] = row.cache_hit_rate
    out["empty_rate"] = row.empty_rate
    return out


def _total(rows: list[SpendRow]) -> SpendRow:
    fields = [f for f in SpendRow.__dataclass_fields__ if f != "key"]
    return SpendRow("total", *(sum(getattr(r, f) for r in rows) for f in fields))


def spend_report(session: Session, *, config: OmniConfig, run_id: int, run_name: str, by: SpendBy = "provider") -> dict[str, Any]:
    """Everything `omniopd spend` shows, as plain data (also its --json output)."""

    plan = read_plan(config)
    rows = spend_rows(session, run_id=run_id, by=by)
    total = _total(rows)
    stats = audit_stats(session, run_id=run_id)
    audited = stats.chunks.get("audited", 0)
    report: dict[str, Any] = {
        "run": run_name,
        "by": by,
        "budgets": [
            {
                "provider": "run total" if b.provider == RUN_SCOPE else b.provider,
                "cap_usd": None if b.cap is None else micros_to_usd(b.cap),
                "spent_usd": micros_to_usd(b.spent),
                "reserved_usd": micros_to_usd(b.reserved),
                "headroom_usd": None if b.headroom is None else micros_to_usd(b.headroom),
                "overbilled_usd": micros_to_usd(b.overbilled),
                "alarm": b.alarm,
            }
            for b in budgets(session, run_id=run_id)
        ],
        "rows": [_row_dict(r) for r in rows],
        "total": _row_dict(total),
        "audit": {
            **asdict(stats),
            "cost_per_audited_chunk_usd": micros_to_usd(total.cost_micros) / audited if audited else None,
            "cost_per_trajectory_usd": (
                micros_to_usd(total.cost_micros) / stats.trajectories_audited if stats.trajectories_audited else None
            ),
        },
        "estimate": _estimate(config, stats, total, plan),
        "plan": _plan_vs_actual(config, plan, stats, total),
    }
    return report


def _plan_vs_actual(config: OmniConfig, plan: dict[str, Any] | None, stats, total: SpendRow) -> dict[str, Any] | None:
    """The forecast `omniopd plan` saved for this run (plan.json) next to what was paid."""
    if plan is None:
        return None
    k = stats.trajectories_audited
    actual_usd = micros_to_usd(total.cost_micros)
    per_trajectory = plan["per_trajectory"]["cost_usd"]
    return {
        "file": str(plan_path(config)),
        "trajectory_tokens": plan["trajectory_tokens"],
        "trajectory_source": plan["trajectory_source"],
        "forecast_per_trajectory_usd": per_trajectory,
        "forecast_run_usd": plan["run"]["cost_usd"],
        "forecast_run_trajectories": plan["trajectories"],
        "actual_usd": actual_usd,
        "actual_trajectories": k,
        "actual_per_trajectory_usd": actual_usd / k if k else None,
        # The plan priced at the trajectories actually audited: the like-for-like comparison.
        "forecast_for_actual_usd": per_trajectory * k,
        "actual_over_forecast": actual_usd / (per_trajectory * k) if k and per_trajectory else None,
    }


def _teacher_prompt_tokens(config: OmniConfig, plan: dict[str, Any] | None, student_prompt_tokens: float) -> float:
    """P as the teacher sees it (without the student's chat markup): the plan's, else measured
    as `omniopd plan` measures it; the student's mean prompt length when the training file is
    not at hand."""
    if plan is not None:
        return float(plan["prompt_tokens"])
    try:
        return measure_prompts(config, training_questions(config, limit=256))
    except Exception:  # a report must not fail for want of the data file or the tokenizer
        return student_prompt_tokens


def _estimate(config: OmniConfig, stats, total: SpendRow, plan: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per audited trajectory: Appendix B as the paper counts it, our provider-aware
    forecast, and what the run actually paid; None until a trajectory exists."""
    name = config.audit.teacher
    if not name or stats.mean_completion_tokens is None:
        return None
    t = config.teachers[name]
    try:
        from omniopd.teachers.build import teacher_price

        price = teacher_price(t, config.audit.prices_file)
    except PricingError as exc:
        return {"error": str(exc)}
    prompt, length = _teacher_prompt_tokens(config, plan, stats.mean_prompt_tokens or 0.0), stats.mean_completion_tokens
    m, n, c = config.chunking.m, config.estimator.n, config.chunking.c
    fc = forecast_for_config(config, prompt_tokens=prompt, trajectory_tokens=length, price=price)
    k = stats.trajectories_audited
    actual = None
    if k:
        usage = Usage(total.input_tokens, total.cached_input_tokens, total.cache_write_tokens, total.output_tokens)
        actual = {
            "input_tokens": total.input_tokens / k,
            "cached_input_tokens": total.cached_input_tokens / k,
            "cache_write_tokens": total.cache_write_tokens / k,
            "output_tokens": total.output_tokens / k,
            "cost_usd": micros_to_usd(total.cost_micros) / k,
            # without unknown outcomes charged at R
            "cost_at_reported_usage_usd": micros_to_usd(cost_micros(usage, price)) / k,
        }
    return {
        "teacher": name,
        "model": t.model,
        "m": m,
        "n": n,
        "c": c,
        "prompt_tokens": prompt,
        "trajectory_tokens": length,
        "output_tokens_per_continuation": requested_output_tokens(c, t.max_new_tokens_factor),
        "paper": {
            "input_tokens": fc.paper_input_tokens,
            "output_tokens": fc.paper_output_tokens,
            "cost_usd": paper_cost_usd(m, n, c, prompt, length, price),
        },
        "forecast": {
            "input_tokens": fc.input_tokens,
            "cached_input_tokens": fc.cached_input_tokens,
            "cache_write_tokens": fc.cache_write_tokens,
            "output_tokens": fc.output_tokens,
            "requests": fc.requests,
            "cost_usd": fc.cost_usd,
        },
        "actual": actual,
        "actual_over_forecast": actual["cost_usd"] / fc.cost_usd if actual and fc.cost_usd else None,
    }
