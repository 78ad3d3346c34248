"""`omniopd demo`: the whole system on one CPU machine, end to end, with real processes.

For each variant (the full method, or a Table 6 ablation) in its own run directory:

1. prepare (cached per seed): training / held-out problems and a tiny student that has
   half-learned the task (`omniopd.demo.prepare`);
2. the store (SQLite) at the current schema, the problems imported, the embedded broker
   started and owned by this process;
3. Pass@1 of the base student on the held-out problems (`omniopd eval`, linked to step 0);
4. the teacher served by the provider emulator in the Gemini wire format with rate limits
   and prices (`omniopd teacher emulate`, shared by the variants), a rollout worker, an
   audit worker and the maintenance worker (`omniopd worker ...`), and the learner
   (`omniopd learner`), all real processes talking through Celery and the store; while
   the learner runs, a child that dies is started again (the embedded broker too), and
   one that keeps dying stops the demo with its name and log (workers/demo/supervise.py);
5. Pass@1 of the final checkpoint, the spend table (`omniopd spend`) and the training plot
   (`omniopd plot`).

Ctrl-C stops every process cleanly (the learner checkpoints); `--resume` continues: the
learner resumes from its checkpoint, evaluations skip what they already graded, finished
variants are not run again.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omniopd.config import OmniConfig, dump_config, load_config
from omniopd.demo.prepare import PrepareSpec, prepare
from workers.demo.supervise import (
    Children,
    omniopd_command,
    run_command,
    wait_for_port,
    wait_supervised,
)

VARIANTS: dict[str, list[str]] = {
    "full": [],
    "no-kl": ["loss.beta=0"],  # Table 6 "w/o KL anchoring"
    "no-bayes": ["estimator.alpha=0"],  # "w/o Bayesian smoothing": the frequentist ratio
    "uniform": ["chunking.placement=uniform"],  # "w/o entropy selection"
}
TEACHER = "emulated"
PLAN_SAMPLE = 64  # student samples `omniopd plan` measures the trajectory length on
KEY_ENV = "OMNIOPD_DEMO_KEY"
SMOKE_OVERRIDES = ["learner.max_steps=8", "learner.checkpoint_every=2", "learner.batch_size=8", "eval.samples=1",
                   "eval.every_steps=4", "eval.curve_items=24", "eval.curve_samples=1"]
CURVE_WAIT_S = 600  # after training, how long the evaluator may take for the checkpoints still due


@dataclass
class VariantResult:
    """Outcome of one variant: Pass@1 before/after training, steps, spend, wall time."""

    variant: str
    seed: int
    pass_before: float
    pass_after: float
    steps: int
    spend_usd: float
    plan_usd: float
    plan_ratio: float | None
    train_s: float
    total_s: float
    output_dir: str

    @property
    def delta(self) -> float:
        return self.pass_after - self.pass_before


@dataclass
class DemoSettings:
    """Where the demo works and which runs it makes."""

    config_path: Path
    workdir: Path
    seed: int
    variants: list[str]
    resume: bool
    overrides: list[str]
    log: Callable[[str], None] = print
    smoke: bool = False
    """A one-minute check that every part runs (a smaller student, 8 steps); the numbers mean nothing."""
    evaluate: bool = True
    """Measure Pass@1 before and after (benchmarks of the pipeline itself turn it off)."""
    emulator_args: list[str] = field(default_factory=list)
    """Extra `omniopd teacher emulate` options, e.g. ["--ttft-ms", "400"] for a realistic latency."""
    dashboard: bool = True
    """Serve `omniopd dashboard` on the work directory while the demo runs (its address is printed)."""
    prepared_root: Path | None = None
    """Where the prepared student and data live (default <workdir>/[smoke-]prepared-s<seed>)."""

    spec: PrepareSpec | None = None
    """The prepared student and data (default: the demo's, or the smoke test's)."""

    @property
    def prepare_spec(self) -> PrepareSpec:
        if self.spec is not None:
            return self.spec
        if self.smoke:
            return PrepareSpec(seed=self.seed, train_problems=300, eval_problems=50, sft_steps=120)
        return PrepareSpec(seed=self.seed)

    @property
    def all_overrides(self) -> list[str]:
        return [*SMOKE_OVERRIDES, *self.overrides] if self.smoke else list(self.overrides)


def run_demo(settings: DemoSettings) -> list[VariantResult]:
    """Prepare once, then run every requested variant; returns their results in order."""
    started = time.monotonic()
    kind = "smoke-" if settings.smoke else ""
    root = settings.prepared_root or settings.workdir / f"{kind}prepared-s{settings.seed}"
    prepared = prepare(root, settings.prepare_spec, settings.log)
    settings.log(f"student ready: {prepared.student} ({'cached' if prepared.cached else f'{prepared.seconds:.0f} s'})")
    env = {**os.environ, KEY_ENV: os.environ.get(KEY_ENV) or "demo-" + secrets.token_hex(8),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    children = Children(env)
    results = []
    try:
        port = _start_teacher(children, settings)
        if settings.dashboard:
            _start_dashboard(children, settings)
        for variant in settings.variants:
            results.append(_run_variant(variant, prepared, port, children, settings, started))
    finally:
        children.stop()
    return results


def _variant_config(variant: str, prepared, port: int, settings: DemoSettings) -> tuple[OmniConfig, Path]:
    tag = f"{'smoke-' if settings.smoke else ''}{variant}-s{settings.seed}"
    out = settings.workdir / tag
    overrides = [
        f"run.name=demo-{tag}", f"run.output_dir={out}", f"run.seed={settings.seed}",
        f"student.path={prepared.student}", f"data.train={prepared.train_file}", f"eval.data_dir={prepared.eval_dir}",
        f"teachers.{TEACHER}.base_url=http://127.0.0.1:{port}", *VARIANTS[variant], *settings.all_overrides,
    ]
    cfg = load_config(settings.config_path, overrides)
    return cfg, out


def _start_teacher(children: Children, settings: DemoSettings) -> int:
    from workers.demo.supervise import free_port

    port = free_port()
    log = settings.workdir / "logs" / "teacher-emulator.log"
    child = children.start("teacher emulator", omniopd_command(
        "teacher", "emulate", "--provider", "gemini", "--port", str(port), "--config", str(settings.config_path),
        "--teacher", TEACHER, "--generator", "py:omniopd.demo.expert:generator", "--api-key-env", KEY_ENV,
        *settings.emulator_args,
    ), log)
    wait_for_port(port, child)
    settings.log(f"teacher: scripted expert behind an emulated Gemini API on 127.0.0.1:{port}")
    return port


def _start_dashboard(children: Children, settings: DemoSettings) -> None:
    """`omniopd dashboard` on the work directory: every variant's run, live (a child process,
    so the dashboard package stays out of the workers' imports)."""
    from workers.demo.supervise import free_port

    port = free_port()
    child = children.start("dashboard", omniopd_command(
        "dashboard", "--workdir", str(settings.workdir), "--port", str(port)), settings.workdir / "logs" / "dashboard.log")
    wait_for_port(port, child)
    settings.log(f"dashboard: http://127.0.0.1:{port}/ (live while the demo runs)")


def _run_variant(variant: str, prepared, port: int, children: Children, settings: DemoSettings,
                 started: float) -> VariantResult:
    from workers.broker import broker_for

    cfg, out = _variant_config(variant, prepared, port, settings)
    result_file = out / "demo-result.json"
    if settings.resume and result_file.is_file():
        settings.log(f"[{variant}] finished earlier: {result_file}")
        return VariantResult(**json.loads(result_file.read_text()))
    if not settings.resume and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "config.yaml"
    config_file.write_text(dump_config(cfg))
    c = str(config_file)
    env = children.env
    settings.log(f"[{variant}] run directory {out}")
    run_command(omniopd_command("db", "upgrade", "-c", c), env, what="db upgrade")
    run_command(omniopd_command("data", "import", "-c", c), env, what="data import")
    _open_run(cfg, config_file)
    with broker_for(cfg) as broker:
        before = _evaluate(c, cfg, step=0, env=env, label="before", settings=settings, variant=variant) \
            if settings.evaluate else float("nan")
        settings.log(f"[{variant}] forecast of the teacher spend (`omniopd plan`, L measured on {PLAN_SAMPLE} samples)")
        run_command(omniopd_command("plan", "-c", c, "--sample", str(PLAN_SAMPLE)), env, what="plan", capture=False)
        variant_children = Children(env)
        try:
            logs = out / "logs"
            variant_children.start("rollout worker", omniopd_command("worker", "rollout", "-c", c), logs / "rollout.log")
            for i in range(max(1, cfg.workers.audit)):
                variant_children.start(f"audit worker {i}", omniopd_command("worker", "audit", "-c", c),
                                       logs / f"audit{'' if i == 0 else i}.log")
            # expires reservations of dead workers and re-sends lost audits (demo.yaml: short timeouts)
            variant_children.start("maintenance worker", omniopd_command("worker", "maintenance", "-c", c),
                                   logs / "maintenance.log")
            evaluator = None
            if cfg.eval.every_steps is not None:  # the Pass@1 curve, evaluated beside the learner
                evaluator = variant_children.start("evaluator", omniopd_command(
                    "worker", "evaluator", "-c", c, "--until-finished"), logs / "evaluator.log")
            train_start = time.monotonic()
            settings.log(f"[{variant}] training: {cfg.learner.max_steps} steps of {cfg.learner.batch_size} trajectories")
            learner = variant_children.start("learner", omniopd_command("learner", "-c", c, "--loglevel", "WARNING"))
            code = wait_supervised(learner, [variant_children, children], settings.log,
                                   also=lambda: _revive_broker(broker, settings.log))
            if code != 0:
                raise RuntimeError(f"the learner exited with code {code}; see {out / 'logs'} and rerun with --resume")
            train_s = time.monotonic() - train_start
            if evaluator is not None:
                _wait_for_curve(evaluator, settings, variant)
        except KeyboardInterrupt:
            settings.log("interrupted: stopping every process (workers finish their current task, the learner "
                         "checkpoints; at most about a minute)")
            raise
        finally:
            variant_children.stop()
        steps = _status(c, env)["latest_step"]
        after = _evaluate(c, cfg, step=steps, env=env, label="after", settings=settings, variant=variant) \
            if settings.evaluate else float("nan")
    run_command(omniopd_command("spend", "-c", c), env, what="spend", capture=False)
    spend = json.loads(run_command(omniopd_command("spend", "-c", c, "--json"), env, what="spend"))
    plan = spend["plan"] or {}
    run_command(omniopd_command("plot", "-c", c, "--out", str(out / "training.png")), env, what="plot", capture=False)
    result = VariantResult(variant, settings.seed, before, after, steps, _spent_usd(spend),
                           plan.get("forecast_run_usd", float("nan")), plan.get("actual_over_forecast"), train_s,
                           time.monotonic() - started, str(out))
    result_file.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def _revive_broker(broker, say: Callable[[str], None]) -> None:
    if broker.revive():
        say("the embedded broker had died; started it again (its queues are restored from its append-only file)")


def _wait_for_curve(evaluator, settings: DemoSettings, variant: str) -> None:
    """Let the evaluator finish the checkpoints still due (it exits by itself once the last
    one is evaluated); a curve it cannot finish is reported, not fatal."""
    import subprocess

    settings.log(f"[{variant}] Pass@1 curve: evaluating the last checkpoints (log {evaluator.log})")
    try:
        code = evaluator.process.wait(timeout=CURVE_WAIT_S)
    except subprocess.TimeoutExpired:
        settings.log(f"[{variant}] the evaluator is still busy after {CURVE_WAIT_S} s; the curve may miss "
                     "its last points (`omniopd worker evaluator -c CONFIG --until-finished` completes it)")
        return
    if code != 0:
        settings.log(f"[{variant}] the evaluator exited with code {code}; the curve is incomplete:\n{evaluator.tail()}")


def _open_run(cfg: OmniConfig, config_file: Path) -> None:
    """Create the run row now, so the base model's evaluation links to it (step 0)."""
    from db.store import open_store
    from workers.store import ensure_run

    with open_store(cfg, config_file, pool_size=1) as store, store.sessions.begin() as session:
        ensure_run(session, cfg)


def _evaluate(config: str, cfg: OmniConfig, *, step: int, env, label: str, settings: DemoSettings, variant: str) -> float:
    settings.log(f"[{variant}] Pass@1 {label} training: {cfg.eval.samples} samples x held-out problems")
    out = Path(cfg.run.output_dir) / "eval" / f"step-{step}"
    run_command(omniopd_command("eval", "-c", config, "--benchmarks", "demo", "--run", cfg.run.name,
                                "--step", str(step), "--out", str(out), "--name", f"{cfg.run.name}-step{step}"),
                env, what=f"evaluation at step {step}", capture=False)
    report = json.loads((out / "results.json").read_text())
    return _pass_at_1(report)


def _pass_at_1(report: dict) -> float:
    """Pass@1 of the `demo` benchmark in an `omniopd eval` results.json."""
    return float(report["benchmarks"]["demo"]["score"]["pass_at_1"])


def _status(config: str, env) -> dict:
    return json.loads(run_command(omniopd_command("status", "-c", config, "--json"), env, what="status"))


def _spent_usd(spend: dict) -> float:
    """Spend of the whole run (the run-total budget row of `omniopd spend --json`), in USD."""
    return sum(b["spent_usd"] for b in spend["budgets"] if b["provider"] == "run total")


def summary_table(results: list[VariantResult]) -> str:
    """Markdown table of the variants side by side (the paper's Table 6 shape)."""
    lines = ["| variant | Pass@1 before | Pass@1 after | change | steps | teacher spend | plan | train time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = "" if r.plan_ratio is None else f" (actual/plan per trajectory {r.plan_ratio:.2f})"
        lines.append(f"| {r.variant} | {100 * r.pass_before:.1f}% | {100 * r.pass_after:.1f}% | "
                     f"{100 * r.delta:+.1f} pts | {r.steps} | ${r.spend_usd:.4f} | ${r.plan_usd:.4f}{ratio} | "
                     f"{r.train_s:.0f} s |")
    return "\n".join(lines)
