"""Which checkpoints the evaluator evaluates, and evaluating one.

Due versions (`due_versions`): version 0 (the base model, step 0); every version whose
step crosses a multiple of `eval.every_steps` (the first checkpoint at or past it:
checkpoints come every `learner.checkpoint_every` steps, which need not divide it); and,
once the run has ended, its last version. Each is evaluated once, on `eval.curve_items`
held-out items (a fixed subset, the same at every step) with `eval.curve_samples` samples
each, under the tag `<run>-curve-<8 hex>-step<S>`: the hex hashes the plan, so changing
the subset or k starts a new curve instead of mixing two. The results are ordinary
evaluations in the store, linked to the run, the policy version and the step
(`eval_runs.run_id/policy_version/step`), which is what `omniopd plot` draws.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.benchmarks import Benchmark, parse_benchmarks
from eval.evaluate import EvalPlan, EvaluationReport

if TYPE_CHECKING:
    from db.repo_runs import PolicyVersionRecord
    from omniopd.config import OmniConfig

RUN_ENDED = ("finished", "stopped", "failed")
"""Run statuses after which no version will be published until the learner is restarted."""


@dataclass(frozen=True)
class DueVersion:
    """A published policy version the curve needs: its number, learner step and checkpoint path."""

    version: int
    step: int
    path: str


def due_versions(versions: Sequence[PolicyVersionRecord], every_steps: int, *, run_ended: bool) -> list[DueVersion]:
    """The versions (in `versions`, any order) that the curve evaluates, by step."""
    ordered = sorted(versions, key=lambda v: v.version)
    due: dict[int, DueVersion] = {}
    previous_step = None
    for v in ordered:
        crosses = previous_step is not None and v.step // every_steps > previous_step // every_steps
        if v.version == 0 or crosses:
            due.setdefault(v.step, DueVersion(v.version, v.step, v.path))
        previous_step = v.step if previous_step is None else max(previous_step, v.step)
    if run_ended and ordered:
        last = ordered[-1]
        due.setdefault(last.step, DueVersion(last.version, last.step, last.path))
    return [due[s] for s in sorted(due)]


def curve_plan(config: OmniConfig) -> EvalPlan:
    """The evaluation plan of the curve: the `eval` settings with the curve's subset and k."""
    return EvalPlan.from_config(config.eval, seed=config.run.seed, samples=config.eval.curve_samples,
                                max_items=config.eval.curve_items)


def curve_benchmarks(config: OmniConfig) -> list[Benchmark]:
    return parse_benchmarks(config.eval.benchmarks)


def curve_prefix(run_name: str, plan: EvalPlan, benchmarks: Sequence[Benchmark]) -> str:
    material = json.dumps({**plan.identity(), "data_dir": str(plan.data_dir),
                           "benchmarks": [b.name for b in benchmarks]}, sort_keys=True)
    return f"{run_name}-curve-{hashlib.blake2b(material.encode(), digest_size=4).hexdigest()}-step"


def curve_tag(prefix: str, step: int) -> str:
    return f"{prefix}{step}"


def evaluated_steps(session: Any, *, run_id: int, prefix: str, benchmarks: Sequence[Benchmark]) -> set[int]:
    """Steps whose curve evaluation finished on every benchmark."""
    from db.repo_eval import list_eval_runs

    finished: dict[int, set[str]] = {}
    for run in list_eval_runs(session, run_id=run_id, key_prefix=prefix):
        tag, _, bench = run.key.rpartition("/")
        if run.status == "finished" and tag[len(prefix):].isdigit():
            finished.setdefault(int(tag[len(prefix):]), set()).add(bench)
    wanted = {b.name for b in benchmarks}
    return {step for step, done in finished.items() if wanted <= done}


def evaluate_version(config: OmniConfig, config_path: str | Path | None, due: DueVersion, model_path: str, *,
                     prefix: str, out_dir: Path) -> EvaluationReport:
    """Evaluate one checkpoint (at `model_path`, the version's snapshot) on the curve's plan,
    linked to the run and `due.step`; resumes whatever an earlier attempt stored."""
    from eval.runner import Target, evaluate_config

    plan = curve_plan(config)
    report, _ = evaluate_config(
        config, config_path, config.eval.benchmarks, Target(model=model_path, run=config.run.name, step=due.step),
        samples=plan.samples, max_items=plan.max_items, out=out_dir, name=curve_tag(prefix, due.step),
    )
    return report
