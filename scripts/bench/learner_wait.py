"""Learner waiting benchmark (issue 7): the fraction of learner wall time spent waiting for
bundles in the full loop, with an emulated teacher at a realistic latency.

The loop is the demo's (`workers.demo.run.run_demo`, no evaluation): the provider emulator in
the Gemini wire format serving the scripted expert with a time to first token and a
per-token decode time, a rollout worker, an audit worker and the learner, all real
processes around a SQLite store and an embedded broker. Two pipelines in the same run:

- `sync` (baseline, what a synchronous trainer does): learner.pipeline_depth = 1 and
  learner.max_policy_lag = 0 — each batch is sampled by the newest policy and audited
  while the learner waits;
- `async` (OmniOPD's default): pipeline_depth 2, max_policy_lag 1 — rollouts and audits
  of the next batches run while the learner trains.

Waiting fraction = sum of each step's wait for a full batch / (that + the steps' own
time), from `learner_steps` (metrics.wait_s, wall_s); step 1 (the pipeline filling up)
is reported apart. "Teacher capacity suffices" is set with --audit-threads and the
teacher's concurrency; on a 2-core machine the rollout worker and the learner share the
CPU, which bounds what any pipelining can hide.

    .venv/bin/python scripts/bench/learner_wait.py [--steps 40] [--ttft-ms 400] [--per-token-ms 8]
        [--audit-threads 8] [--batch 16] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PIPELINES = {
    "sync": ["learner.pipeline_depth=1", "learner.max_policy_lag=0"],
    "async": ["learner.pipeline_depth=2", "learner.max_policy_lag=1"],
}


def waiting(store: Path) -> dict[str, float]:
    """Wait and step time of a finished run, from its SQLite store."""
    import sqlite3

    rows = sqlite3.connect(store).execute("select step, wall_s, metrics from learner_steps order by step").fetchall()
    waits = [json.loads(m)["wait_s"] for _, _, m in rows]
    walls = [w for _, w, _ in rows]
    later_wait, later_wall = sum(waits[1:]), sum(walls[1:])
    return {
        "steps": len(rows),
        "first_wait_s": waits[0] if waits else 0.0,
        "wait_s": later_wait,
        "step_s": later_wall,
        "waiting_fraction": later_wait / (later_wait + later_wall) if rows[1:] else float("nan"),
        "s_per_step": (later_wait + later_wall) / max(len(rows) - 1, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ttft-ms", type=float, default=400.0, help="teacher time to first token")
    parser.add_argument("--per-token-ms", type=float, default=8.0, help="teacher decode time per output token")
    parser.add_argument("--audit-threads", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the prepared student between runs")
    parser.add_argument("--hidden", type=int, default=128, help="student hidden size (demo: 128)")
    parser.add_argument("--layers", type=int, default=2, help="student layers (demo: 2)")
    parser.add_argument("--audit-workers", type=int, default=1)
    args = parser.parse_args()

    from omniopd.demo.prepare import PrepareSpec
    from workers.demo.run import DemoSettings, run_demo

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="omniopd-learner-wait-"))
    spec = PrepareSpec()
    if (args.hidden, args.layers) != (spec.hidden_size, spec.layers):  # a bigger student: a slower learner step
        spec = PrepareSpec(hidden_size=args.hidden, layers=args.layers, heads=args.hidden // 32, kv_heads=args.hidden // 64,
                           train_problems=1000, eval_problems=50, sft_steps=150)
    prepared = workdir / f"prepared-h{args.hidden}-l{args.layers}"
    results = {}
    for name, overrides in PIPELINES.items():
        settings = DemoSettings(
            config_path=ROOT / "configs" / "demo.yaml", workdir=workdir / name, seed=0, variants=["full"], resume=False,
            overrides=[f"learner.max_steps={args.steps}", f"learner.batch_size={args.batch}",
                       f"workers.audit_threads={args.audit_threads}", f"workers.audit={args.audit_workers}", "teachers.emulated.concurrency=8", *overrides],
            evaluate=False, prepared_root=prepared, spec=spec,
            emulator_args=["--ttft-ms", str(args.ttft_ms), "--per-token-ms", str(args.per_token_ms)],
            log=lambda m, name=name: print(f"[{name}] {m}", file=sys.stderr),
        )
        (result,) = run_demo(settings)
        results[name] = {**waiting(Path(result.output_dir) / "omniopd.db"), "spend_usd": result.spend_usd}

    print(f"\nstudent hidden {args.hidden} x {args.layers} layers; teacher latency: {args.ttft_ms:.0f} ms to first "
          f"token + {args.per_token_ms:.0f} ms/token; {args.steps} steps of {args.batch}; "
          f"{args.audit_workers} audit worker(s) x {args.audit_threads} threads\n")
    print("| pipeline | steps | waiting (steps 2..) | s/step | wait s | step s | first batch wait s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        label = "sync: depth 1, lag 0 (baseline)" if name == "sync" else "async: depth 2, lag 1 (OmniOPD default)"
        print(f"| {label} | {r['steps']} | {100 * r['waiting_fraction']:.1f}% | {r['s_per_step']:.2f} | "
              f"{r['wait_s']:.1f} | {r['step_s']:.1f} | {r['first_wait_s']:.1f} |")
    speedup = results["sync"]["s_per_step"] / results["async"]["s_per_step"]
    print(f"\nasync vs sync: {speedup:.2f}x steps per second")


if __name__ == "__main__":
    main()
