"""`omniopd plan`: forecast a run's teacher tokens and USD before it starts (paper Appendix B)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from omniopd.cli.common import ConfigOpt, JsonOpt, SetOpt, console, err_console, fail, load

OVER_CAP_EXIT = 3


def plan(
    config: ConfigOpt,
    trajectory_tokens: Annotated[
        float | None,
        typer.Option("--trajectory-tokens", "-L", min=1, show_default=False,
                     help="Mean student completion length L in tokens, if you know it (e.g. from an earlier run)."),
    ] = None,
    sample: Annotated[
        int,
        typer.Option("--sample", "-k", min=0,
                     help="Measure L by sampling the student once on K training problems with the configured "
                          "engine (0: assume L = rollout.max_new_tokens, an upper bound)."),
    ] = 0,
    prompt_tokens: Annotated[
        float | None,
        typer.Option("--prompt-tokens", min=0, show_default=False,
                     help="Mean prompt length P in tokens (default: measured on up to 256 training prompts)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Exit 0 even when the forecast exceeds a budget cap.")] = False,
    write: Annotated[bool, typer.Option("--write/--no-write",
                                        help="Save the plan to <run.output_dir>/plan.json (`omniopd spend` compares it with the actual spend).")] = True,
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Forecast teacher tokens and USD per trajectory, per learner step and for the whole run.

    From the config's M, N, C, the teacher's request structure (requests per chunk, `n` or
    candidateCount), prices and prompt-caching rules, the prompt length P (measured on the
    training problems) and the trajectory length L (given, sampled with --sample, or the
    rollout.max_new_tokens upper bound): Appendix B's M x (P + L/2) input and M x N x C output
    tokens per trajectory, billed as the provider bills them; times learner.batch_size per
    step and the trained trajectories for the run (max_steps x batch_size, or all the data has).

    Exit status 3 when the run's forecast exceeds a budget cap (audit.budget_usd or the
    teacher's budget_usd): the cap would stop the audits part-way (it is never exceeded).
    Pass --force to accept that; scripts/start_learner.sh runs this check before a run.
    """
    cfg = load(config, set_)
    from omniopd.models.loading import ModelLoadError
    from omniopd.reports.plan import make_plan, write_plan
    from omniopd.teachers.pricing import PricingError

    try:
        result = make_plan(cfg, trajectory_tokens=trajectory_tokens, prompt_tokens=prompt_tokens, sample=sample,
                           log=lambda m: err_console.print(m, highlight=False))
    except (ValueError, OSError, PricingError, ModelLoadError) as exc:
        fail(str(exc))
    saved = write_plan(cfg, result) if write else None
    data = result.to_json()
    if json_:
        console.print_json(json.dumps({**data, "file": str(saved) if saved else None}))
    else:
        _print(data)
        if saved:
            console.print(f"plan saved to {saved}", highlight=False)
    if result.over_cap:
        cap = result.tightest_cap
        message = (f"the forecast ${result.run.cost_usd:,.2f} exceeds the {cap.scope} cap ${cap.usd:,.2f}: "
                   f"the audits would stop after about {result.steps_within_cap} of {result.steps} steps. "
                   "Raise the cap, lower learner.max_steps / chunking.m / estimator.n, or pass --force.")
        if force:
            err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
        else:
            err_console.print(f"[bold red]over budget:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(OVER_CAP_EXIT)


def _usd(value: float) -> str:
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def _print(p: dict[str, Any]) -> None:
    console.print(
        f"[bold]plan[/]: teacher {p['teacher']} ({p['model']}), M={p['m']} N={p['n']} C={p['c']}; "
        f"P = {p['prompt_tokens']:.1f} tokens ({p['prompt_source']}); "
        f"L = {p['trajectory_tokens']:.1f} tokens ({p['trajectory_source']})",
        highlight=False, soft_wrap=True,
    )
    table = Table(title="teacher tokens and cost: per trajectory, per learner step, for the run", title_justify="left")
    for col in ("", "requests", "input", "cache read", "cache write", "output", "USD"):
        table.add_column(col, justify="left" if not col else "right")
    per = p["per_trajectory"]
    rows = [
        ("trajectory", 1),
        (f"step (x{p['batch_size']})", p["batch_size"]),
        (f"run (x{p['trajectories']:,})", p["trajectories"]),
        (f"run+{p['in_flight']} in flight", p["trajectories"] + p["in_flight"]),
    ]
    for (label, k), key in zip(rows, ("per_trajectory", "per_step", "run", "run_upper"), strict=True):
        f = p[key]
        table.add_row(label, f"{per['requests'] * k:,}", f"{f['input_tokens']:,.0f}", f"{f['cached_input_tokens']:,.0f}",
                      f"{f['cache_write_tokens']:,.0f}", f"{f['output_tokens']:,.0f}", _usd(f["cost_usd"]))
    console.print(table)
    console.print(
        f"paper, Appendix B per trajectory: {per['paper_input_tokens']:,.0f} input, "
        f"{per['paper_output_tokens']:,.0f} output tokens", highlight=False,
    )
    if p["caps"]:
        caps = ", ".join(f"{c['scope']} ${c['usd']:,.2f}" for c in p["caps"])
        console.print(f"caps: {caps}; steps the tightest pays for: {p['steps_within_cap']} of {p['steps']}",
                      highlight=False)
    else:
        console.print("caps: none (set audit.budget_usd or teachers.<name>.budget_usd)", highlight=False)
