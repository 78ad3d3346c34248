"""`omniopd demo`: the whole system on one CPU machine, end to end, with real processes.

For each variant (the full method, or a Table 6 ablation) in its own run directory:

1. prepare (cached per seed): training / held-out problems and a tiny student that has
   half-learned the task (`omniopd.demo.prepare`);
2. the store (SQLite) at the current schema, the problems imported, the embedded broker
   started and owned by this process;
3. Pass@1 of the base student on the held-out problems (`omniopd eval`, linked to step 0);
4. the teacher, shared by the variants: by default a scripted expert served by the provider
   emulator in the Gemini wire format with rate limits and prices (`omniopd teacher
   emulate`); with `teacher="model"` a trained tiny teacher model (`omniopd.demo.teacher`)
   served by a real vLLM OpenAI-compatible server (`omniopd models serve`) and reached in
   raw mode, the production path. Then a rollout worker, an audit worker and the
   maintenance worker (`omniopd worker ...`), and the learner (`omniopd learner`), all real
   processes talking through Celery and the store; while the learner runs, a child that
   dies is started again (the embedded broker and the teacher's server too), and one that
   keeps dying stops the demo with its name and log (workers/demo/supervise.py);
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
from omniopd.demo.prepare import PrepareSpec, prepare, training_problems
from omniopd.demo.teacher import SERVED_NAME, TeacherSpec, prepare_teacher
from workers.demo.offline import needs_offline_teacher, offline_teacher_overrides
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
PLAN_SAMPLE = 64  # student samples `omniopd plan` measures the trajectory length on
KEY_ENV = "OMNIOPD_DEMO_KEY"
SMOKE_OVERRIDES = ["learner.max_steps=8", "learner.checkpoint_every=2", "learner.batch_size=8", "eval.samples=1",
                   "eval.every_steps=4", "eval.curve_items=24", "eval.curve_samples=1"]
CURVE_WAIT_S = 600  # after training, how long the evaluator may take for the checkpoints still due
TEACHER_SERVER_WAIT_S = 900  # vLLM's server starts in 20-60 s on a quiet CPU machine, minutes under load
HF_BACKEND = ["--set", "rollout.backend=hf"]  # plan and evaluations: no second vLLM engine beside training


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
    teacher: str = "scripted"
    ci_before: tuple[float, float] | None = None  # 95% bootstrap interval over problems
    ci_after: tuple[float, float] | None = None
    phi_interior: float | None = None  # share of teacher samples with 0 < phi < 1
    k_sem_interior: float | None = None  # share of audited chunks with 0 < k_sem < N
    distinct: float | None = None  # distinct continuations per chunk / N
    teacher_tokens: int | None = None  # input + output tokens the teacher was billed for
    separation: dict | None = None  # mean k_sem/N of chunks whose result is right vs wrong (`_separation`)

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
    evaluate_before: bool = True
    """Measure the base student's Pass@1 too (`--compare` measures it once, in its first arm)."""
    emulator_args: list[str] = field(default_factory=list)
    """Extra `omniopd teacher emulate` options, e.g. ["--ttft-ms", "400"] for a realistic latency."""
    dashboard: bool = True
    """Serve `omniopd dashboard` on the work directory while the demo runs (its address is printed)."""
    prepared_root: Path | None = None
    """Where the prepared student and data live (default <workdir>/[smoke-]prepared-s<seed>)."""
    teacher: str = "scripted"
    """"scripted": the expert behind the provider emulator; "model": a trained teacher model behind vLLM's server."""
    teacher_tokenizer: str = "student"
    """With teacher="model": the student's tokenizer, or "other" (a different BPE: text is all they share)."""
    teacher_spec: TeacherSpec | None = None
    """The teacher model's sizes and training (default: the demo's, or a smaller one for --smoke)."""

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
    def model_teacher_spec(self) -> TeacherSpec:
        if self.teacher_spec is not None:
            return self.teacher_spec
        if self.smoke:  # the smoke student's size, briefly trained: enough to write the format
            return TeacherSpec(seed=self.seed, tokenizer=self.teacher_tokenizer, layers=2, hidden_size=128, heads=4,  # type: ignore[arg-type]
                               intermediate_size=256, steps=150)
        return TeacherSpec(seed=self.seed, tokenizer=self.teacher_tokenizer)  # type: ignore[arg-type]

    @property
    def teacher_tag(self) -> str:
        """Prefix of the run directories: runs with different teachers never share one."""
        if self.teacher != "model":
            return ""
        return "model-" if self.teacher_tokenizer == "student" else f"model-{self.teacher_tokenizer}-"

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
        base = load_config(settings.config_path)
        if needs_offline_teacher(base):  # white-box logits or the teacher's given solutions: no server
            teacher = offline_teacher_overrides(base, prepared, settings.prepare_spec, settings.model_teacher_spec,
                                                settings.log)
        elif not base.loss.needs.audits:
            teacher: list[str] = []  # the objective (grpo) declares no audits: no teacher to serve
            settings.log("teacher: none (the objective declares no audits)")
        elif settings.teacher == "model":
            teacher = _start_model_teacher(children, settings, prepared, base.audit.teacher)
        else:
            teacher = _start_teacher(children, settings, base.audit.teacher)
        if settings.dashboard:
            _start_dashboard(children, settings)
        for variant in settings.variants:
            results.append(_run_variant(variant, prepared, teacher, children, settings, started))
    finally:
        children.stop()
    return results


def _variant_config(variant: str, prepared, teacher: list[str], settings: DemoSettings) -> tuple[OmniConfig, Path]:
    """The variant's config and run directory; `teacher`: the overrides that reach the teacher the variants share."""
    tag = f"{'smoke-' if settings.smoke else ''}{settings.teacher_tag}{variant}-s{settings.seed}"
    out = settings.workdir / tag
    overrides = [
        f"run.name=demo-{tag}", f"run.output_dir={out}", f"run.seed={settings.seed}",
        f"student.path={prepared.student}", f"data.train={prepared.train_file}", f"eval.data_dir={prepared.eval_dir}",
        *teacher, *VARIANTS.get(variant, []), *settings.all_overrides,
    ]
    cfg = load_config(settings.config_path, overrides)
    return cfg, out


def _start_teacher(children: Children, settings: DemoSettings, name: str) -> list[str]:
    """Serve the scripted expert through the emulator as the config's teacher `name`; the
    config overrides that reach it."""
    from workers.demo.supervise import free_port

    port = free_port()
    log = settings.workdir / "logs" / "teacher-emulator.log"
    child = children.start("teacher emulator", omniopd_command(
        "teacher", "emulate", "--provider", "gemini", "--port", str(port), "--config", str(settings.config_path),
        "--teacher", name, "--generator", "py:omniopd.demo.expert:generator", "--api-key-env", KEY_ENV,
        *settings.emulator_args,
    ), log)
    wait_for_port(port, child)
    settings.log(f"teacher: scripted expert behind an emulated Gemini API on 127.0.0.1:{port}")
    return [f"teachers.{name}.base_url=http://127.0.0.1:{port}"]


def _start_model_teacher(children: Children, settings: DemoSettings, prepared, name: str) -> list[str]:
    """Prepare (cached) the teacher model, serve it with vLLM's OpenAI-compatible server, wait
    until it lists the model; the config overrides that reach it. A server that never serves
    stops the demo with a message naming its URL and model; one that dies later is restarted
    by the supervisor (`wait_supervised`), which names it the same way if it keeps dying."""
    from omniopd.teachers.vllm_server import wait_until_serving
    from workers.demo.supervise import free_port

    spec = settings.model_teacher_spec
    model = prepare_teacher(prepared.root, spec, training_problems(settings.prepare_spec), prepared.student, settings.log)
    settings.log(f"teacher model ready: {model.path} ({'cached' if model.cached else f'{model.seconds:.0f} s'})")
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log = settings.workdir / "logs" / f"teacher-vllm-{spec.tokenizer}.log"
    child = children.start(f"the teacher's vLLM server (model {SERVED_NAME!r} at {url})", omniopd_command(
        "models", "serve", str(model.path), "--port", str(port), "--name", SERVED_NAME, "--max-model-len", "512",
    ), log)
    settings.log(f"teacher: starting vLLM's OpenAI-compatible server for {model.path} on {url} (log {log})")
    waited = wait_until_serving(url, SERVED_NAME, timeout_s=TEACHER_SERVER_WAIT_S, alive=child.process.poll, log=log,
                                on_wait=lambda s: settings.log(f"teacher: waiting for the vLLM server ({s:.0f} s)"))
    settings.log(f"teacher: model {SERVED_NAME!r} served by vLLM on {url} after {waited:.0f} s (raw /v1/completions)")
    return [f"teachers.{name}.base_url={url}", f"teachers.{name}.model={SERVED_NAME}",
            f"teachers.{name}.chat_template_from={model.path}"]


def _start_dashboard(children: Children, settings: DemoSettings) -> None:
    """`omniopd dashboard` on the work directory: every variant's run, live (a child process,
    so the dashboard package stays out of the workers' imports)."""
    from workers.demo.supervise import free_port

    port = free_port()
    child = children.start("dashboard", omniopd_command(
        "dashboard", "--workdir", str(settings.workdir), "--port", str(port)), settings.workdir / "logs" / "dashboard.log")
    wait_for_port(port, child)
    settings.log(f"dashboard: http://127.0.0.1:{port}/ (live while the demo runs)")


def _run_variant(variant: str, prepared, teacher: list[str], children: Children, settings: DemoSettings,
                 started: float) -> VariantResult:
    from workers.broker import broker_for

    cfg, out = _variant_config(variant, prepared, teacher, settings)
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
            if settings.evaluate and settings.evaluate_before else None
        audits = cfg.loss.needs.audits  # an objective without audits (grpo) asks the teacher nothing
        if audits:
            settings.log(f"[{variant}] forecast of the teacher spend (`omniopd plan`, L measured on {PLAN_SAMPLE} samples)")
            run_command(omniopd_command("plan", "-c", c, "--sample", str(PLAN_SAMPLE), *HF_BACKEND), env, what="plan",
                        capture=False)
        variant_children = Children(env)
        try:
            logs = out / "logs"
            variant_children.start("rollout worker", omniopd_command("worker", "rollout", "-c", c), logs / "rollout.log")
            for i in range(max(1, cfg.workers.audit) if audits else 0):
                variant_children.start(f"audit worker {i}", omniopd_command("worker", "audit", "-c", c),
                                       logs / f"audit{'' if i == 0 else i}.log")
            # expires reservations of dead workers and re-sends lost audits (demo.yaml: short timeouts)
            variant_children.start("maintenance worker", omniopd_command("worker", "maintenance", "-c", c),
                                   logs / "maintenance.log")
            evaluator = None
            if cfg.eval.every_steps is not None:  # the Pass@1 curve, evaluated beside the learner
                evaluator = variant_children.start("evaluator", omniopd_command(
                    "worker", "evaluator", "-c", c, "--until-finished", *HF_BACKEND), logs / "evaluator.log")
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
            if settings.evaluate else None
    run_command(omniopd_command("spend", "-c", c), env, what="spend", capture=False)
    spend = json.loads(run_command(omniopd_command("spend", "-c", c, "--json"), env, what="spend"))
    plan = spend["plan"] or {}
    audit = spend["audit"]
    run_command(omniopd_command("plot", "-c", c, "--out", str(out / "training.png")), env, what="plot", capture=False)
    separation = _separation(cfg, config_file)
    nan = float("nan")
    result = VariantResult(
        variant, settings.seed, before[0] if before else nan, after[0] if after else nan, steps, _spent_usd(spend),
        plan.get("forecast_run_usd", nan), plan.get("actual_over_forecast"), train_s, time.monotonic() - started,
        str(out), teacher=_teacher_label(cfg, settings),
        ci_before=before[1] if before else None, ci_after=after[1] if after else None,
        phi_interior=audit["phi_interior_fraction"], k_sem_interior=audit["k_sem_interior_fraction"],
        distinct=audit["distinct_fraction"], teacher_tokens=spend["total"]["input_tokens"] + spend["total"]["output_tokens"],
        separation=separation,
    )
    result_file.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def _teacher_label(cfg: OmniConfig, settings: DemoSettings) -> str:
    """Which teacher the variant learned from, for the summary table."""
    if needs_offline_teacher(cfg):
        return "model (weights or solutions, offline)"
    if not cfg.loss.needs.audits:
        return "none"
    return settings.teacher if settings.teacher == "scripted" else f"model ({settings.teacher_tokenizer} tokenizer)"


def _separation(cfg: OmniConfig, config_file: Path) -> dict | None:
    """How well the teacher's audits tell right from wrong: the mean k_sem/N (the frequentist
    proxy, Eq. 9) of audited chunks that open with a step's result, split by whether the
    student wrote that result right, each with a 95% normal interval. A phi that measures
    phrasing rather than correctness shows two close means; the learner's signal is their gap."""
    import statistics

    from db.repo_runs import get_run
    from db.repo_spend import audited_chunk_texts
    from db.store import open_store
    from omniopd.demo.task import chunk_result_is_right

    with open_store(cfg, config_file, read_only=True, pool_size=1) as store, store.sessions.begin() as session:
        chunks = audited_chunk_texts(session, run_id=get_run(session, name=cfg.run.name).id)
    groups: dict[str, list[float]] = {"right": [], "wrong": []}
    for chunk in chunks:
        verdict = chunk_result_is_right(chunk.before, chunk.text)
        if verdict is not None:
            groups["right" if verdict else "wrong"].append(chunk.k_sem / chunk.n)
    out = {}
    for name, values in groups.items():
        if len(values) < 2:
            return None
        half = 1.96 * statistics.stdev(values) / len(values) ** 0.5
        out[name] = {"mean": statistics.fmean(values), "half_width": half, "n": len(values)}
    return out


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
    """Create the run row now, so the base model's evaluation links to it (step 0), and mark
    it running: a resumed run still says `stopped`, and the evaluator (`--until-finished`),
    started before the learner, would take that for the end of the run and leave at once."""
    from db.repo_runs import set_run_status
    from db.store import open_store
    from workers.store import ensure_run

    with open_store(cfg, config_file, pool_size=1) as store, store.sessions.begin() as session:
        set_run_status(session, run_id=ensure_run(session, cfg).id, status="running")


def _evaluate(config: str, cfg: OmniConfig, *, step: int, env, label: str, settings: DemoSettings,
              variant: str) -> tuple[float, tuple[float, float]]:
    """Pass@1 on the held-out problems and its 95% bootstrap interval."""
    settings.log(f"[{variant}] Pass@1 {label} training: {cfg.eval.samples} samples x held-out problems")
    out = Path(cfg.run.output_dir) / "eval" / f"step-{step}"
    run_command(omniopd_command("eval", "-c", config, "--benchmarks", "demo", "--run", cfg.run.name,
                                "--step", str(step), "--out", str(out), "--name", f"{cfg.run.name}-step{step}",
                                *HF_BACKEND),
                env, what=f"evaluation at step {step}", capture=False)
    report = json.loads((out / "results.json").read_text())
    return _pass_at_1(report)


def _pass_at_1(report: dict) -> tuple[float, tuple[float, float]]:
    """Pass@1 of the `demo` benchmark in an `omniopd eval` results.json, with its interval."""
    score = report["benchmarks"]["demo"]["score"]
    return float(score["pass_at_1"]), (float(score["ci_low"]), float(score["ci_high"]))


def _status(config: str, env) -> dict:
    return json.loads(run_command(omniopd_command("status", "-c", config, "--json"), env, what="status"))


def _spent_usd(spend: dict) -> float:
    """Spend of the whole run (the run-total budget row of `omniopd spend --json`), in USD."""
    return sum(b["spent_usd"] for b in spend["budgets"] if b["provider"] == "run total")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _with_ci(value: float, ci: tuple[float, float] | None) -> str:
    return f"{100 * value:.1f}%" + ("" if ci is None else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]")


def _separation_text(sep: dict | None) -> str:
    if not sep:
        return "-"
    return " vs ".join(f"{sep[k]['mean']:.2f} ± {sep[k]['half_width']:.2f}" for k in ("right", "wrong"))


def summary_table(results: list[VariantResult]) -> str:
    """Markdown table of the variants side by side (the paper's Table 6 shape): Pass@1 with
    95% bootstrap intervals, teacher spend, and how informative the audits were."""
    lines = ["| variant | teacher | Pass@1 before | Pass@1 after | change | steps | teacher spend | plan | "
             "phi in (0,1) | k_sem in (0,N) | distinct | k_sem/N right vs wrong | train time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = "" if r.plan_ratio is None else f" (actual/plan per trajectory {r.plan_ratio:.2f})"
        lines.append(f"| {r.variant} | {r.teacher} | {_with_ci(r.pass_before, r.ci_before)} | "
                     f"{_with_ci(r.pass_after, r.ci_after)} | {100 * r.delta:+.1f} pts | {r.steps} | "
                     f"${r.spend_usd:.4f} | ${r.plan_usd:.4f}{ratio} | {_pct(r.phi_interior)} | "
                     f"{_pct(r.k_sem_interior)} | {_pct(r.distinct)} | {_separation_text(r.separation)} | "
                     f"{r.train_s:.0f} s |")
    return "\n".join(lines)
