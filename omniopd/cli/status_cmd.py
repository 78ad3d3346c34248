"""`omniopd status`: where a run stands — queues, trajectories, bundles, policy, spend."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from omniopd.cli.common import ConfigOpt, JsonOpt, SetOpt, console, load, read_store
from omniopd.money import micros_to_usd

RunOpt = Annotated[
    str | None, typer.Option("--run", "-r", help="Run name (default: run.name of the config).", show_default=False)
]


def _usd(micros: int | None) -> str:
    return "-" if micros is None else f"${micros_to_usd(micros):,.4f}"


def status(config: ConfigOpt, run: RunOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Show a run: queue depths, trajectories, bundles, policy version, spend vs caps.

    Trajectories are counted by state (dropped ones by reason), bundles as ready,
    claimed by a learner and consumed; spend is shown per provider and for the run,
    next to each cap. Reads the store without locking it; never starts a broker.
    """
    cfg = load(config, set_)
    from omniopd.reports.status import broker_view, status_report

    with read_store(cfg, config) as session:
        report = status_report(session, run_name=run or cfg.run.name)
    broker = broker_view(cfg)
    if json_:
        console.print_json(json.dumps({**report.as_dict(), "broker": broker}, default=str))
        return
    _print(report.run, broker)
    _print_rollouts(report.rollouts)


def _print_rollouts(r) -> None:
    """Rollout batches (the driver's progress) and the last weight reload of a rollout worker."""
    table = Table(title="rollouts", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("batches in flight (issued, not recorded)", str(r.batches_in_flight))
    table.add_row("batches recorded", str(r.batches_recorded))
    table.add_row("batch messages re-sent (presumed lost)", str(r.resends))
    table.add_row("slots issued", str(r.slots_issued))
    table.add_row("stale slots waiting to be re-sampled", str(r.resamples_pending))
    console.print(table)
    if r.last_reload:
        x = r.last_reload
        probe = "-" if x.get("max_abs_diff") is None else f"{x['max_abs_diff']:.2g}"
        console.print(
            f"last weight load: policy v{x['version']} by {x.get('worker', '?')} ({x['method']}): "
            f"{x['seconds']:.3f}s, probe check {x['verify_seconds']:.2f}s, max |Δ logprob| {probe}",
            soft_wrap=True,
        )


def _print(st, broker: dict[str, Any]) -> None:
    console.print(
        f"[bold]run {st.run_name}[/] ({st.run_status}): step {st.latest_step}, "
        f"policy v{st.latest_policy_version} ({st.latest_policy_path})",
        soft_wrap=True,
    )
    queues = Table(title="queues", title_justify="left")
    queues.add_column("queue")
    queues.add_column("waiting", justify="right")
    if "error" not in broker:
        for name, depth in broker["queues"].items():
            queues.add_row(name, str(depth))
        queues.add_row("[dim](delivered, not yet acked)[/]", "unknown (RabbitMQ: its management UI, Unacked)" if broker["in_flight"] is None else str(broker["in_flight"]))
    work = Table(title="trajectories and bundles", title_justify="left")
    work.add_column("state")
    work.add_column("count", justify="right")
    for state, n in st.trajectories.items():
        work.add_row(state, str(n))
    for reason, n in st.dropped.items():
        work.add_row(f"  dropped: {reason}", str(n))
    work.add_row("bundles ready (claimable)", str(st.bundles_ready))
    work.add_row("bundles claimed by a learner", str(st.bundles_claimed))
    work.add_row("bundles consumed", str(st.bundles_consumed))
    for state, n in st.chunks.items():
        work.add_row(f"chunks {state}", str(n))
    spend = Table(title="teacher spend (USD)", title_justify="left")
    for col in ("budget", "spent", "reserved", "cap", "headroom", "calls"):
        spend.add_column(col, justify="left" if col == "budget" else "right")
    calls = {c.key: c.calls for c in st.calls}
    for b in st.budgets:
        label = "run total" if b.provider == "*" else b.provider
        count = sum(calls.values()) if b.provider == "*" else calls.get(b.provider, 0)
        spend.add_row(label, _usd(b.spent), _usd(b.reserved), _usd(b.cap), _usd(b.headroom), str(count))
    if "error" in broker:
        console.print(f"[yellow]queues unavailable:[/] {broker['error']}", soft_wrap=True)
    for table in (work, spend) if "error" in broker else (queues, work, spend):
        console.print(table)
    _print_audit(st)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_audit(st) -> None:
    """Audit telemetry (docs/audit.md) and, once a cap refused, why chunks are being skipped."""
    a = st.audit
    if a is None:
        return
    for row in st.spend:
        console.print(
            f"audits by {row.key}: {row.calls} attempts, cache hits {_pct(row.cache_hit_rate)}, "
            f"empty continuations {_pct(row.empty_rate)}",
            soft_wrap=True, highlight=False,
        )
    if a.samples:
        console.print(
            f"teacher samples {a.samples}: phi inside (0, 1) {_pct(a.phi_interior_fraction)}, k_sem inside (0, N) "
            f"{_pct(a.k_sem_interior_fraction)}, distinct continuations per chunk {_pct(a.distinct_fraction)}",
            soft_wrap=True, highlight=False,
        )
    if a.budget_stop:
        console.print(f"[yellow]budget:[/] {a.budget_stop}; remaining chunks are skipped", soft_wrap=True, highlight=False)
    from omniopd.cli.spend_cmd import print_alarms
    from omniopd.money import micros_to_usd

    print_alarms([{"provider": b.provider, "alarm": b.alarm, "overbilled_usd": micros_to_usd(b.overbilled)}
                  for b in st.budgets])
    if a.teacher_stop:
        console.print(f"[red]teacher stopped:[/] {a.teacher_stop}; fix the teacher's config and restart the audit "
                      "workers (`omniopd teacher check` tries one call)", soft_wrap=True, highlight=False)
