"""Validate the pipeline model (`omniopd pipeline`) against the real pipeline on this machine.

For each audit-thread count, runs the demo's loop (`scripts/bench/learner_wait.py`'s
settings: provider emulator at a set latency, one rollout worker, audit workers, the
learner, SQLite store; async pipeline, depth 2, lag 1), then reads from the run's store
what the model takes as measured inputs:

- learner step: mean `learner_steps.wall_s` over steps 2.. (inside the running pipeline,
  so CPU contention with the producers is in it);
- rollout: trajectories per second of generation + scoring + weight reload, from the
  rollout batches' timings;
- teacher latency: every successful request's `teacher_calls.latency_ms`;
- per-chunk overhead besides the requests (reservation, similarity, store writes between
  a trajectory's chunks): the median span of a trajectory's audit, first request sent to
  last answer received (so no queueing before it), / M, minus the mean request latency,
  floored at 0. Work before the first request and after the last (task dispatch, the
  final write) is not in it, so the model's audit capacity is, if anything, optimistic.

and compares the model's predicted waiting with the measured one (steps 2.., as
learner_wait.py counts it). Goal (issue 21): within 20% at two or more worker counts.

    .venv/bin/python scripts/bench/pipeline_model.py --threads 2 8 [--steps 30] [--ttft-ms 100]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from learner_wait import PIPELINES, waiting  # noqa: E402

from omniopd.reports.pipeline import Limits, PipelineInputs, expected_max, predict, summary  # noqa: E402


def _t(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def measured_inputs(store: Path, *, m: int, n: int, batch: int, threads: int, output_tokens: float) -> PipelineInputs:
    """The model's inputs as measured in a finished demo run."""
    db = sqlite3.connect(store)
    walls = [w for (w,) in db.execute("select wall_s from learner_steps order by step")][1:]
    latencies = tuple(ms / 1000 for (ms,) in db.execute(
        "select latency_ms from teacher_calls where http_status = 200 and latency_ms is not null"))
    busy, made = 0.0, 0
    for (meta,) in db.execute("select meta from rollout_batches where recorded_at is not null"):
        meta = json.loads(meta)
        if "trajectories" not in meta:
            continue
        made += meta["trajectories"]
        busy += meta["generate_s"] + meta["score_s"] + meta.get("reload", {}).get("seconds", 0.0)
    spans = [_t(last) - _t(first) for first, last, calls in db.execute(
        "select min(t.created_at), max(t.finished_at), count(*) from teacher_calls t join chunks c on c.id = t.chunk_id "
        "where t.http_status = 200 group by c.trajectory_id") if calls == m]
    q = 1  # the demo's teacher is Gemini-style: N <= 8 continuations in one request
    overhead = max(0.0, statistics.median(spans) / m - expected_max(latencies, q)) if spans else 0.0
    return PipelineInputs(
        batch_size=batch, m=m, n=n, candidates_per_request=8, prompt_tokens=60, trajectory_tokens=30,
        output_tokens=output_tokens, learner_step_s=statistics.fmean(walls), rollout_per_worker=made / busy,
        latencies_s=latencies, limits=Limits(20000, 4_000_000, None), rollout_workers=1, audit_threads=threads,
        pipeline_depth=2, max_policy_lag=1, chunk_overhead_s=overhead,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 8], help="audit threads (one audit worker)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ttft-ms", type=float, default=100.0, help="teacher time to first token")
    parser.add_argument("--per-token-ms", type=float, default=4.0, help="teacher decode time per output token")
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the prepared student between runs")
    parser.add_argument("--analyse-only", action="store_true",
                        help="do not run: read the runs of an earlier invocation from --workdir")
    args = parser.parse_args()
    if args.analyse_only and args.workdir is None:
        parser.error("--analyse-only needs the --workdir of the runs")

    from omniopd.demo.prepare import PrepareSpec
    from workers.demo.run import DemoSettings, run_demo

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="omniopd-pipeline-model-"))
    rows = []
    for threads in args.threads:
        settings = DemoSettings(
            config_path=ROOT / "configs" / "demo.yaml", workdir=workdir / f"t{threads}", seed=0, variants=["full"],
            resume=False, evaluate=False, dashboard=False, prepared_root=workdir / "prepared", spec=PrepareSpec(),
            overrides=[f"learner.max_steps={args.steps}", f"learner.batch_size={args.batch}",
                       f"workers.audit_threads={threads}", "workers.audit=1",
                       f"teachers.emulated.concurrency={max(8, threads)}", *PIPELINES["async"]],
            emulator_args=["--ttft-ms", str(args.ttft_ms), "--per-token-ms", str(args.per_token_ms)],
            log=lambda msg, t=threads: print(f"[threads {t}] {msg}", file=sys.stderr),
        )
        if args.analyse_only:
            store = workdir / f"t{threads}" / "full-s0" / "omniopd.db"
        else:
            (result,) = run_demo(settings)
            store = Path(result.output_dir) / "omniopd.db"
        measured = waiting(store)
        inputs = measured_inputs(store, m=3, n=4, batch=args.batch, threads=threads, output_tokens=8)
        predicted = predict(inputs)
        rows.append((threads, inputs, measured, predicted))
        print(f"[threads {threads}] measured {measured['waiting_fraction']:.1%}, predicted {predicted.waiting:.1%}",
              file=sys.stderr)

    print(f"\ndemo student, teacher {args.ttft_ms:.0f} ms + {args.per_token_ms:.0f} ms/token, {args.steps} steps of "
          f"{args.batch}, async (depth 2, lag 1), one rollout worker, one audit worker\n")
    print("| audit threads | learner step s | rollout traj/s | teacher latency | chunk overhead s | "
          "measured waiting | predicted waiting | binds | predicted / measured | s/step measured | s/step predicted |")
    print("|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---:|")
    within = 0
    for threads, p, meas, pred in rows:
        ratio = pred.waiting / meas["waiting_fraction"] if meas["waiting_fraction"] else float("nan")
        within += abs(ratio - 1) <= 0.2
        print(f"| {threads} | {p.learner_step_s:.3f} | {p.rollout_per_worker:.1f} | {summary(p.latencies_s)} | "
              f"{p.chunk_overhead_s:.3f} | {meas['waiting_fraction']:.1%} | {pred.waiting:.1%} | {pred.bottleneck} | "
              f"{ratio:.2f} | {meas['s_per_step']:.2f} | {pred.period_s:.2f} |")
    print(f"\nwithin 20% of measured: {within} of {len(rows)} worker counts "
          f"({'met' if within >= 2 else 'NOT met'}: goal >= 2)")


if __name__ == "__main__":
    main()
