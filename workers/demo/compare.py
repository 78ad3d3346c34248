"""`omniopd demo --compare`: the paper's Table 1 on the quick-start task.

Base inference, GRPO (self-exploratory RL on the demo checker's reward, no teacher), SFT
(offline imitation of the teacher's full solutions), white-box OPD (Eq. 2 on the teacher's
logits) and OmniOPD (Eq. 8, the teacher behind vLLM as a black box), on one prepared student,
one data set, one seed and one number of learner steps. Every arm is one `omniopd demo` run
(workers/demo/run.py: real rollout/audit/maintenance workers, learner and evaluator
processes) in its own directory under <workdir>/compare-s<seed>/; the teacher of SFT, OPD and
OmniOPD is the same trained teacher model (`omniopd.demo.teacher`).

Base Pass@1 is measured once, in the first arm that runs (every arm starts from the same
student).
An arm that finished (its demo-result.json and the arm's record here) is not run again with
`--resume`. Results: compare.md (the table), compare.json and compare.png (Pass@1 curves).

Teacher tokens and spend, per arm, of what the method asks of its teacher:
- GRPO: none.
- SFT: the one offline pass (prompt tokens in, solution tokens out, omniopd/demo/solutions.py),
  priced like the served teacher (configs/prices.yaml `demo-teacher`: emulated dollars).
- OPD: the tokens the teacher reads (a forward pass over every trained sequence); no API
  sells logits, so no price: it needs the teacher's weights on your own hardware.
- OmniOPD: the ledger's billed tokens and spend (`omniopd spend`), emulated dollars.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workers.demo.run import DemoSettings, VariantResult, run_demo


@dataclass(frozen=True)
class Arm:
    """One row of the table: the demo config it runs and how it reaches its teacher."""

    key: str  # its name in --arms (any case) and, lower-cased, its directory
    label: str
    config: Path
    access: str
    teacher: str = "scripted"  # DemoSettings.teacher: "model" serves the teacher over vLLM


ARMS: dict[str, Arm] = {a.key.lower(): a for a in (
    Arm("SFT", "SFT (teacher's solutions)", Path("configs/demo-sft.yaml"), "full solutions, offline"),
    Arm("OPD", "OPD (white-box)", Path("configs/demo-opd.yaml"), "logits (weights)"),
    Arm("GRPO", "GRPO", Path("configs/demo-grpo.yaml"), "none (rule-based reward)"),
    Arm("OmniOPD", "OmniOPD", Path("configs/demo-model.yaml"), "text (black-box API)", teacher="model"),
)}
"""Run in this order: the cheap arms first, the one that starts vLLM servers last."""
COMPARE_STEPS = 100  # learner steps of every arm (the model-teacher demo's); --set learner.max_steps=N
SMOKE_COMPARE = ["learner.max_steps=4", "eval.every_steps=null", "rollout.backend=hf"]
"""--smoke: the demo's smoke settings, 4 steps, no curve evaluator, and no vLLM engine for the
student (the teacher is still served by vLLM): a CI check that every arm runs, not a result."""


@dataclass
class ArmResult:
    """One arm's outcome as the table shows it (saved as <arm>/compare-arm.json)."""

    arm: str
    result: dict
    wall_s: float
    teacher_tokens: int
    spend_usd: float | None  # None: no price (logits are sold by no API)
    curve: list[tuple[int, float, float | None, float | None]] = field(default_factory=list)


@dataclass
class CompareSettings:
    workdir: Path
    seed: int
    resume: bool
    overrides: list[str]
    arms: list[str]
    log: Callable[[str], None] = print
    smoke: bool = False

    @property
    def root(self) -> Path:
        return self.workdir / f"{'smoke-' if self.smoke else ''}compare-s{self.seed}"


def run_compare(settings: CompareSettings) -> tuple[list[ArmResult], dict]:
    """Run every arm (or reuse a finished one with --resume); the arms and the base row."""
    from omniopd.config import load_config

    kind = "smoke-" if settings.smoke else ""
    prepared_root = settings.workdir / f"{kind}prepared-s{settings.seed}"
    settings.root.mkdir(parents=True, exist_ok=True)
    steps = SMOKE_COMPARE if settings.smoke else [f"learner.max_steps={COMPARE_STEPS}"]
    records = {name: settings.root / name / "compare-arm.json" for name in ARMS}
    finished = {name: ArmResult(**json.loads(path.read_text())) for name, path in records.items()
                if settings.resume and path.is_file()}  # every arm's: one run per arm may feed the table
    results: list[ArmResult] = []
    for name in settings.arms:
        arm = ARMS[name]
        record = records[name]
        if name in finished:
            settings.log(f"[{name}] finished earlier: {record}")
            results.append(finished[name])
            continue
        # base Pass@1 once: in the first arm that runs, unless an arm (even one still running) measured it
        evaluate_before = _measured_base(settings.root) is None
        demo = DemoSettings(
            config_path=arm.config, workdir=settings.root / name, seed=settings.seed, variants=[name],
            resume=settings.resume, overrides=[*steps, *settings.overrides],
            log=settings.log, smoke=settings.smoke, dashboard=False, prepared_root=prepared_root,
            teacher=arm.teacher, evaluate_before=evaluate_before,
        )
        settings.log(f"[{name}] {arm.label}: {arm.config}")
        r = run_demo(demo)[0]
        wall = r.total_s  # the arm's own run (a variant finished earlier keeps its first timing)
        cfg = load_config(Path(r.output_dir) / "config.yaml")
        tokens, spend = _teacher_cost(name, r, cfg, demo, settings.log)
        out = ArmResult(name, asdict(r), wall, tokens, spend, _curve(cfg, Path(r.output_dir) / "config.yaml"))
        record.write_text(json.dumps(asdict(out), indent=2) + "\n")
        results.append(out)
    base = _base([*results, *finished.values()], settings.root)
    summary = {"seed": settings.seed, "steps": results[0].result["steps"] if results else 0, "base": base,
               "arms": [asdict(a) for a in results]}
    (settings.root / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = compare_table(results, base)
    (settings.root / "compare.md").write_text(table + "\n")
    plot_compare(results, base, settings.root / "compare.png", seed=settings.seed)
    return results, base


def _base(results: list[ArmResult], root: Path | None = None) -> dict:
    """Base inference: the Pass@1 before training that one arm measured (every arm starts from it)."""
    for a in results:
        if not math.isnan(a.result["pass_before"]):
            return {"pass": a.result["pass_before"], "ci": a.result["ci_before"]}
    found = _measured_base(root) if root is not None else None
    return found or {"pass": math.nan, "ci": None}


def _measured_base(root: Path) -> dict | None:
    """The base student's Pass@1 if an arm under `root` evaluated it (<arm>/<run>/eval/step-0)."""
    from workers.demo.run import _pass_at_1

    for path in sorted(root.glob("*/*/eval/step-0/results.json")):
        value, ci = _pass_at_1(json.loads(path.read_text()))
        return {"pass": value, "ci": list(ci)}
    return None


def _teacher_cost(name: str, r: VariantResult, cfg, demo: DemoSettings, log) -> tuple[int, float | None]:
    """(teacher tokens, spend in USD or None) of one arm (module docstring)."""
    from db.repo_runs import get_run
    from db.repo_trajectories import consumed_tokens
    from db.store import open_store
    from omniopd.demo.prepare import prepare
    from omniopd.teachers.pricing import cost_usd, load_prices, price_for
    from omniopd.teachers.types import Usage
    from workers.demo.offline import teacher_solutions

    if cfg.data.teacher_solutions is not None:
        prepared = prepare(demo.prepared_root, demo.prepare_spec, log)  # cached: the paths only
        made = teacher_solutions(prepared, demo.prepare_spec, Path(cfg.data.teacher_solutions).parent, cfg, log)
        price = price_for("demo-teacher", load_prices(cfg.audit.prices_file))
        return made.tokens, cost_usd(Usage(input=made.input_tokens, output=made.output_tokens), price)
    if cfg.loss.needs.teacher_logits:
        with open_store(cfg, Path(r.output_dir) / "config.yaml", read_only=True, pool_size=1) as store, \
                store.sessions.begin() as session:
            return consumed_tokens(session, run_id=get_run(session, name=cfg.run.name).id), None
    return int(r.teacher_tokens or 0), float(r.spend_usd)


def _curve(cfg, config_file: Path) -> list[tuple[int, float, float | None, float | None]]:
    """The evaluator's Pass@1 curve of the run (its subset of held-out problems, during training)."""
    from db.repo_eval import list_eval_runs
    from db.repo_runs import get_run
    from db.store import open_store

    with open_store(cfg, config_file, read_only=True, pool_size=1) as store, store.sessions.begin() as session:
        evals = list_eval_runs(session, run_id=get_run(session, name=cfg.run.name).id)
        points = {}
        for e in evals:
            m = e.metrics or {}
            if e.status == "finished" and e.pass_at_1 is not None and e.step and m.get("n_items") == cfg.eval.curve_items:
                points[e.step] = (e.step, e.pass_at_1, m.get("ci_low"), m.get("ci_high"))
    return [points[s] for s in sorted(points)]


def _ci(ci) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _tokens(n: int) -> str:
    return "0" if not n else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def compare_table(results: list[ArmResult], base: dict) -> str:
    """The Table 1-shaped Markdown table: one row per method, Pass@1 with 95% bootstrap
    intervals over the held-out problems, change from base, teacher tokens and spend, wall time."""
    lines = ["| method | teacher access | Pass@1 (95% CI) | change from base | learner steps | teacher tokens | "
             "teacher spend | wall time |", "|---|---|---|---|---|---|---|---|"]
    lines.append(f"| base | - | {100 * base['pass']:.1f}%{_ci(base['ci'])} | - | 0 | 0 | - | - |")
    for a in results:
        r = a.result
        spend = "n/a (weights)" if a.spend_usd is None else f"${a.spend_usd:.3f}"
        change = r["pass_after"] - base["pass"]
        lines.append(f"| {ARMS[a.arm].label} | {ARMS[a.arm].access} | {100 * r['pass_after']:.1f}%{_ci(r['ci_after'])} "
                     f"| {100 * change:+.1f} pts | {r['steps']} | {_tokens(a.teacher_tokens)} | {spend} | "
                     f"{a.wall_s / 60:.1f} min |")
    return "\n".join(lines)


def plot_compare(results: list[ArmResult], base: dict, out: Path, *, seed: int) -> Path:
    """Pass@1 against learner step, one line per arm: base at step 0, the evaluator's curve
    (a subset of the held-out problems) joined, the final Pass@1 on all of them as a square
    with its 95% interval."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for k, a in enumerate(results):
        color = f"C{k}"
        steps = [0] + [p[0] for p in a.curve]
        values = [base["pass"]] + [p[1] for p in a.curve]
        ax.plot(steps, [100 * v for v in values], "-o", color=color, markersize=3, label=ARMS[a.arm].label)
        r = a.result
        if r["ci_after"]:
            low, high = r["ci_after"]
            ax.errorbar([r["steps"]], [100 * r["pass_after"]], yerr=[[100 * (r["pass_after"] - low)],
                        [100 * (high - r["pass_after"])]], fmt="s", color=color, capsize=3)
    ax.axhline(100 * base["pass"], color="gray", linestyle=":", linewidth=1, label="base")
    ax.set_xlabel("learner step")
    ax.set_ylabel("Pass@1 (%)")
    ax.set_title(f"demo task, seed {seed}: lines = evaluator curve (subset); squares = all held-out, 95% CI")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
