"""`omniopd chaos`: the demo task in production mode under seeded random faults, then every
money and exactly-once invariant checked (workers/chaos/)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from omniopd.cli.common import console, fail


def chaos(
    schedules: Annotated[int, typer.Option(min=1, help="Fault schedules to run, one run each (a soak: 200 or more).")] = 1,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the first schedule; schedule i uses seed + i.")] = 0,
    workdir: Annotated[Path, typer.Option(help="Prepared student, runs, logs, chaos-results.jsonl.")] = Path("runs/chaos"),
    postgres: Annotated[str | None, typer.Option(help="A PostgreSQL URL the harness may use to create and drop one "
                                                 "database per run (default: $OMNIOPD_CHAOS_POSTGRES_URL).")] = None,
    window_s: Annotated[float, typer.Option(help="Faults are injected during the first this many seconds of training.")] = 90.0,
    mean_gap_s: Annotated[float, typer.Option(help="Mean seconds between injected faults.")] = 12.0,
    max_steps: Annotated[int, typer.Option(min=2, help="Learner steps of each run.")] = 6,
) -> None:
    """Run the demo task in production mode (PostgreSQL, Redis, learner, rollout, two audit
    and a maintenance worker) under seeded random faults, and check the invariants.

    Faults: SIGKILL of the learner or any worker, Redis restarts, the run's database
    connections terminated, teacher 5xx, 429, timeouts, garbage and cut bodies, and in one
    run in six a teacher that bills above the limits it is sent. Checked at the end, with
    counts: every trajectory trained at most once, every paid attempt in the ledger, no cap
    exceeded at any sampled instant, no reservation left open, the run finished or stopped
    naming the reason. Exit 1 if any schedule broke one (its seed replays it).
    """
    from omniopd.demo.prepare import PrepareSpec, prepare
    from workers.chaos.run import ChaosSettings, run_schedule

    url = postgres or os.environ.get("OMNIOPD_CHAOS_POSTGRES_URL")
    if not url:
        fail("give --postgres postgresql+psycopg://user@host/db (a database the harness may connect to; it creates "
             "and drops one database per run) or set OMNIOPD_CHAOS_POSTGRES_URL")
    # A student that has barely learned the task: the chaos run checks the machinery, not
    # what it learns, and a shorter pretraining keeps the CI version within minutes.
    prepared = prepare(workdir / "prepared", PrepareSpec(seed=0, train_problems=300, eval_problems=20, sft_steps=30),
                       console.print)
    settings = ChaosSettings(workdir=workdir, postgres_url=url, student=prepared.student, train_file=prepared.train_file,
                             window_s=window_s, mean_gap_s=mean_gap_s, max_steps=max_steps, log=console.print)
    failed, totals, survived = [], {}, 0
    results_file = workdir / "chaos-results.jsonl"
    for i in range(schedules):
        result = run_schedule(seed + i, settings)
        for kind, n in result.injected.items():
            totals[kind] = totals.get(kind, 0) + n
        survived += sum(result.injected.values()) if result.ok else 0
        console.print(f"[bold]schedule {result.seed}[/] ({result.seconds:.0f} s): "
                      f"{'[green]ok[/]' if result.ok else '[bold red]FAILED[/]'}; faults {dict(result.injected)}, "
                      f"restarts {dict(result.restarts)}, teacher faults {result.schedule.teacher_faults}", soft_wrap=True)
        for check in result.checks:
            mark = "[green]ok[/]" if check.ok else "[bold red]FAILED[/]"
            console.print(f"  {mark} {check.name}: {check.counts}", soft_wrap=True, highlight=False)
        with results_file.open("a") as handle:
            handle.write(json.dumps({"seed": result.seed, "ok": result.ok, "seconds": result.seconds,
                                     "injected": dict(result.injected), "restarts": dict(result.restarts),
                                     "schedule": result.schedule.as_dict(),
                                     "checks": [c.__dict__ for c in result.checks]}) + "\n")
        if not result.ok:
            failed.append(result.seed)
    console.print(f"{schedules} schedule(s), {schedules - len(failed)} kept every invariant; faults injected "
                  f"{sum(totals.values())} ({totals}), {survived} in runs that kept every invariant"
                  + (f"; failed seeds: {failed}" if failed else ""), soft_wrap=True)
    if failed:
        raise typer.Exit(1)
