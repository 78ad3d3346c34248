"""`omniopd pipeline`: how many rollout and audit workers keep the learner from waiting.

A planning tool, like `omniopd plan` for money: the pipeline model of
omniopd/reports/pipeline.py fed with a preset shape (the paper's, the demo's) whose figures
can each be replaced by measured ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Annotated

import typer
from rich.table import Table

from omniopd.cli.common import JsonOpt, console, fail


def pipeline(
    preset: Annotated[str, typer.Option("--preset", "-p", help="Shape and assumed figures to start from: "
                                        "paper-claude, paper-gemini (M=10 N=10 C=50 L=6,340, Qwen3-4B on H100s) "
                                        "or demo (configs/demo.yaml on the 2-core development machine).")] = "paper-claude",
    learner_step_s: Annotated[float | None, typer.Option("--learner-step-s", min=0, show_default=False,
                              help="Measured seconds per learner step (of --batch bundles), inside the running pipeline.")] = None,
    rollout_per_worker: Annotated[float | None, typer.Option("--rollout-per-worker", min=0, show_default=False,
                                  help="Measured trajectories per second of one rollout worker (generation + scoring).")] = None,
    latency_median_s: Annotated[float | None, typer.Option("--latency-median-s", min=0, show_default=False,
                                help="Median teacher request latency (to the last token); with --latency-p90-s.")] = None,
    latency_p90_s: Annotated[float | None, typer.Option("--latency-p90-s", min=0, show_default=False,
                             help="90th percentile of the teacher request latency.")] = None,
    batch: Annotated[int | None, typer.Option("--batch", min=1, show_default=False, help="learner.batch_size.")] = None,
    rpm: Annotated[float | None, typer.Option("--rpm", min=0, show_default=False, help="Teacher requests per minute limit.")] = None,
    itpm: Annotated[float | None, typer.Option("--itpm", min=0, show_default=False, help="Teacher input tokens per minute limit.")] = None,
    otpm: Annotated[float | None, typer.Option("--otpm", min=0, show_default=False, help="Teacher output tokens per minute limit.")] = None,
    depth: Annotated[int | None, typer.Option("--pipeline-depth", min=1, show_default=False, help="learner.pipeline_depth.")] = None,
    lag: Annotated[int | None, typer.Option("--max-policy-lag", min=0, show_default=False, help="learner.max_policy_lag.")] = None,
    threads_per_worker: Annotated[int, typer.Option("--audit-threads-per-worker", min=1,
                                  help="workers.audit_threads: converts audit threads into audit workers.")] = 8,
    target: Annotated[float, typer.Option("--target", min=0.001, max=0.999, help="Largest acceptable waiting fraction.")] = 0.05,
    json_: JsonOpt = False,
) -> None:
    """Size a cluster: the fewest rollout workers and audit threads that keep the learner's waiting <= --target.

    The model (omniopd/reports/pipeline.py): the learner needs B / T_L trajectories per second;
    rollout workers, audit threads (each audits one trajectory's M chunks in order, a chunk
    waiting for the slowest of its requests) and the provider's rate limits each supply some;
    a batch cannot start before the policy it is sampled from, so its latency must hide behind
    the batches allowed ahead (min(pipeline_depth, max_policy_lag + 1)). When no worker count
    suffices, it says what binds and sizes the cluster with the smallest change that does
    (higher limits, more batches ahead). Every assumed figure of a preset can be replaced by a
    measured one; the presets' sources are in the module.
    """
    from omniopd.reports.pipeline import PRESETS, lognormal_latencies, predict, size, summary

    if preset not in PRESETS:
        fail(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    if (latency_median_s is None) != (latency_p90_s is None):
        fail("give --latency-median-s and --latency-p90-s together")
    try:
        changes = {k: v for k, v in {
            "learner_step_s": learner_step_s, "rollout_per_worker": rollout_per_worker, "batch_size": batch,
            "pipeline_depth": depth, "max_policy_lag": lag,
            "latencies_s": lognormal_latencies(latency_median_s, latency_p90_s) if latency_median_s else None,
        }.items() if v is not None}
        limits = {k: v for k, v in {"requests_per_min": rpm, "input_tokens_per_min": itpm,
                                    "output_tokens_per_min": otpm}.items() if v is not None}
        p = dataclasses.replace(p, **changes, limits=dataclasses.replace(p.limits, **limits))
        now = predict(p)
        sizing = size(p, target=target)
    except ValueError as exc:
        fail(str(exc))
    audit_workers = math.ceil(sizing.audit_threads / threads_per_worker)
    if json_:
        console.print_json(json.dumps({
            "preset": preset, "inputs": {k: v for k, v in dataclasses.asdict(p).items() if k != "latencies_s"},
            "as_given": dataclasses.asdict(now), "sizing": {**dataclasses.asdict(sizing), "audit_workers": audit_workers},
        }))
        return
    console.print(
        f"[bold]{preset}[/]: B={p.batch_size} M={p.m} N={p.n} ({p.q} request(s) per chunk), P={p.prompt_tokens:.0f} "
        f"L={p.trajectory_tokens:.0f}; learner step {p.learner_step_s:.3g} s; rollout {p.rollout_per_worker:.3g} "
        f"trajectories/s per worker; teacher latency {summary(p.latencies_s)}", highlight=False, soft_wrap=True)
    table = Table(title=f"learner waiting (target <= {target:.0%})", title_justify="left")
    for col in ("setting", "rollout workers", "audit threads", "batches ahead", "limits", "waiting", "s/step", "binds"):
        table.add_column(col, justify="left" if col in ("setting", "binds") else "right")
    ahead_now = max(1, min(p.pipeline_depth, p.max_policy_lag + 1))
    table.add_row("as given", str(p.rollout_workers), str(p.audit_threads), str(ahead_now), "x1",
                  f"{now.waiting:.1%}", f"{now.period_s:.2f}", now.bottleneck)
    sp = sizing.prediction
    table.add_row("sized", str(sizing.rollout_workers), f"{sizing.audit_threads} ({audit_workers} workers)",
                  str(sizing.ahead), f"x{sizing.limit_scale:.2f}", f"{sp.waiting:.1%}", f"{sp.period_s:.2f}", sp.bottleneck)
    console.print(table)
    console.print(
        f"capacities (trajectories/s): learner needs {now.demand:.3g}; rate limits allow {now.rate_limit_rate:.3g}; "
        f"one chunk {now.chunk_s:.2f} s; one batch {now.batch_latency_s:.1f} s from issue to its last bundle",
        highlight=False, soft_wrap=True)
    if sizing.reason:
        console.print(f"[yellow]no worker count alone reaches the target:[/] {sizing.reason}", highlight=False, soft_wrap=True)
