"""`omniopd spend`: what the teacher audits of a run cost, against caps and the paper's estimate."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from omniopd.cli.common import ConfigOpt, JsonOpt, SetOpt, console, fail, load, read_store

RunOpt = Annotated[
    str | None, typer.Option("--run", "-r", help="Run name (default: run.name of the config).", show_default=False)
]
ByOpt = Annotated[str, typer.Option("--by", "-b", help="Group the ledger by provider (teacher), model or day (UTC).")]


def spend(config: ConfigOpt, run: RunOpt = None, by: ByOpt = "provider", set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Show teacher spend: budgets, ledger, audit telemetry, and cost per trajectory vs Appendix B.

    Budgets: spent, reserved (worst case of attempts in flight), cap and headroom per
    provider and for the run. Ledger: HTTP attempts (ok / failed / outcome unknown /
    in flight), tokens (input, read from cache, written to cache, output), cost,
    cache-hit rate and empty-continuation rate. Audits: chunks by state, cost per
    audited chunk and trajectory, and telemetry (phi strictly inside (0, 1), k_sem
    inside (0, N), distinct continuations per chunk). Estimate: per trajectory, the
    paper's Appendix B token counts for the config's M, N, C and the observed lengths,
    our forecast with the teacher's request structure, prices and caching, and the
    actual. Reads the store without locking it.
    """
    cfg = load(config, set_)
    if by not in ("provider", "model", "day"):
        fail(f"--by {by!r}: choose provider, model or day")
    from db.repo_runs import get_run
    from omniopd.reports.spend import spend_report

    name = run or cfg.run.name
    with read_store(cfg, config) as session:
        record = get_run(session, name=name)
        report = spend_report(session, config=cfg, run_id=record.id, run_name=record.name, by=by)
    if json_:
        console.print_json(json.dumps(report))
        return
    _print(report)


def _usd(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _print(report: dict[str, Any]) -> None:
    console.print(f"[bold]teacher spend of run {report['run']}[/]", soft_wrap=True)
    caps = Table(title="budgets (USD)", title_justify="left")
    for col in ("budget", "spent", "reserved", "cap", "headroom"):
        caps.add_column(col, justify="left" if col == "budget" else "right")
    for b in report["budgets"]:
        caps.add_row(b["provider"], _usd(b["spent_usd"]), _usd(b["reserved_usd"]), _usd(b["cap_usd"]), _usd(b["headroom_usd"]))
    console.print(caps)
    ledger = Table(title=f"ledger by {report['by']} (one row per HTTP attempt)", title_justify="left")
    for col in ("key", "calls", "ok", "failed", "unknown", "in flight", "input", "cache read", "cache write",
                "output", "cost", "cache hits", "empty"):
        ledger.add_column(col, justify="left" if col == "key" else "right")
    for r in [*report["rows"], report["total"]]:
        ledger.add_row(
            r["key"], str(r["calls"]), str(r["ok"]), str(r["failed"]), str(r["unknown"]), str(r["in_flight"]),
            _num(r["input_tokens"]), _num(r["cached_input_tokens"]), _num(r["cache_write_tokens"]), _num(r["output_tokens"]),
            _usd(r["cost_usd"]), _pct(r["cache_hit_rate"]), _pct(r["empty_rate"]),
        )
    console.print(ledger)
    a = report["audit"]
    chunks = ", ".join(f"{n} {state}" for state, n in a["chunks"].items()) or "none yet"
    console.print(
        f"chunks: {chunks}; trajectories audited {a['trajectories_audited']}\n"
        f"cost per audited chunk {_usd(a['cost_per_audited_chunk_usd'], 6)}, "
        f"per audited trajectory {_usd(a['cost_per_trajectory_usd'], 6)}\n"
        f"telemetry: phi inside (0, 1) {_pct(a['phi_interior_fraction'])}, k_sem inside (0, N) "
        f"{_pct(a['k_sem_interior_fraction'])}, distinct continuations per chunk {_pct(a['distinct_fraction'])}",
        soft_wrap=True, highlight=False,
    )
    _print_estimate(report["estimate"])
    _print_plan(report["plan"])
    if a["budget_stop"]:
        console.print(f"[yellow]budget:[/] {a['budget_stop']}", soft_wrap=True, highlight=False)
    print_alarms(report["budgets"])


def print_alarms(budgets: list[dict[str, Any]]) -> None:
    """A provider that billed above a reservation: the one thing a cap cannot stop."""
    for b in budgets:
        if b.get("alarm"):
            console.print(f"[bold red]ALARM[/] {b['provider']}: billed {_usd(b['overbilled_usd'], 6)} above the "
                          f"reserved worst cases. {b['alarm']}", soft_wrap=True, highlight=False)


def _print_estimate(est: dict[str, Any] | None) -> None:
    if est is None:
        console.print("estimate: no trajectories yet")
        return
    if "error" in est:
        console.print(f"[yellow]estimate unavailable:[/] {est['error']}", soft_wrap=True)
        return
    table = Table(
        title=(
            f"per trajectory: M={est['m']} N={est['n']} C={est['c']}, teacher {est['teacher']} ({est['model']}), "
            f"observed prompt {est['prompt_tokens']:.0f} and L {est['trajectory_tokens']:.0f} student tokens"
        ),
        title_justify="left",
    )
    for col in ("", "input", "cache read", "cache write", "output", "cost"):
        table.add_column(col, justify="left" if not col else "right")
    paper, fc, actual = est["paper"], est["forecast"], est["actual"]
    table.add_row("paper, Appendix B (output C, no cache)", _num(paper["input_tokens"]), "-", "-",
                  _num(paper["output_tokens"]), _usd(paper["cost_usd"], 6))
    table.add_row(f"forecast (output {est['output_tokens_per_continuation']}, {fc['requests']} requests)",
                  _num(fc["input_tokens"]), _num(fc["cached_input_tokens"]), _num(fc["cache_write_tokens"]),
                  _num(fc["output_tokens"]), _usd(fc["cost_usd"], 6))
    if actual is not None:
        table.add_row("actual", _num(actual["input_tokens"]), _num(actual["cached_input_tokens"]),
                      _num(actual["cache_write_tokens"]), _num(actual["output_tokens"]), _usd(actual["cost_usd"], 6))
    console.print(table)
    if est["actual_over_forecast"] is not None:
        console.print(f"actual / forecast: {est['actual_over_forecast']:.2f}")


def _print_plan(plan: dict[str, Any] | None) -> None:
    if plan is None:
        console.print("plan: none saved for this run (`omniopd plan --config X` before a run forecasts it)")
        return
    line = (f"plan ({plan['file']}; L {plan['trajectory_tokens']:.0f}, {plan['trajectory_source']}): "
            f"{_usd(plan['forecast_run_usd'])} for {plan['forecast_run_trajectories']:,} trajectories, "
            f"{_usd(plan['forecast_per_trajectory_usd'], 6)} each; actual {_usd(plan['actual_usd'])} for "
            f"{plan['actual_trajectories']:,} audited trajectories")
    if plan["actual_over_forecast"] is not None:
        line += (f", {_usd(plan['actual_per_trajectory_usd'], 6)} each: actual / plan "
                 f"{plan['actual_over_forecast']:.2f} (plan at the audited count: {_usd(plan['forecast_for_actual_usd'])})")
    console.print(line, highlight=False, soft_wrap=True)
