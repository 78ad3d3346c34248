"""Config -> an evaluation: the one place that reads `OmniConfig` for `omniopd eval`.

    report, paths = evaluate_config(config, "run.yaml", "math500,aime24", Target(model="runs/x/ckpt-100"))
    report, paths = evaluate_config(config, "run.yaml", "math", Target(endpoint="http://127.0.0.1:8000",
                                                                       endpoint_model="Qwen/Qwen3-32B"))
    report, paths = evaluate_config(config, "run.yaml", "math500", Target(run="my-run", step=200))

It opens the store (which must be at the current schema: `omniopd db upgrade`), resolves a
training run's checkpoint, builds the generator, names the evaluation, runs
`eval.evaluate.run_evaluation` and writes the result files. The CLI and any other caller
(a learner evaluating its checkpoints) share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.benchmarks import parse_benchmarks
from eval.evaluate import (
    EvalPlan,
    EvaluationReport,
    GradingSettings,
    ProgressSink,
    StoreLink,
    evaluation_tag,
    run_evaluation,
)
from eval.generate import EndpointGenerator, Generator, LocalGenerator
from eval.report import write_outputs, write_samples

if TYPE_CHECKING:
    from omniopd.config import OmniConfig


@dataclass(frozen=True)
class Target:
    """What to evaluate: a local checkpoint (`model`), an OpenAI-compatible `endpoint`, or
    the policy version a training `run` saved at `step` (which also links the results
    to that run and step). Invariant: not both `model` and `endpoint`."""

    model: str | None = None
    endpoint: str | None = None
    endpoint_model: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable holding the endpoint's API key (never the key)."""
    run: str | None = None
    step: int | None = None

    def __post_init__(self) -> None:
        if self.model is not None and self.endpoint is not None:
            raise ValueError("give either a model or an endpoint, not both")
        if self.model is None and self.endpoint is None and not (self.run and self.step is not None):
            raise ValueError("nothing to evaluate: give --model PATH, --endpoint URL, or --run NAME --step S")
        if self.step is not None and self.run is None:
            raise ValueError("--step needs --run (the training run the step belongs to)")


def resolve_link(sessions: Any, target: Target) -> tuple[StoreLink, str | None]:
    """StoreLink for `target.run`/`step`, and the path of the policy version saved at that step."""
    from db.repo_eval import policy_version_at_step
    from db.repo_runs import RunNotFound, get_run

    if target.run is None:
        return StoreLink(), None
    with sessions.begin() as s:
        try:
            record = get_run(s, name=target.run)
        except RunNotFound as exc:
            raise LookupError(f"run {target.run!r}: {exc}") from None
        version = None if target.step is None else policy_version_at_step(s, run_id=record.id, step=target.step)
    if version is None and target.model is None and target.endpoint is None:
        raise LookupError(f"run {target.run!r} has no policy version saved at step {target.step}; "
                          "give the checkpoint with --model")
    link = StoreLink(record.id, None if version is None else version.version, target.step)
    return link, None if version is None else version.path


def make_generator(config: OmniConfig, plan: EvalPlan, target: Target, checkpoint: str | None) -> Generator:
    e = config.eval
    if target.endpoint is not None:
        return EndpointGenerator(target.endpoint, target.endpoint_model, plan.sampling, api=e.endpoint_api,
                                 api_key_env=target.api_key_env, concurrency=e.endpoint_concurrency,
                                 retries=e.endpoint_retries, timeout_s=e.endpoint_timeout_s)
    return LocalGenerator(config, str(target.model or checkpoint), plan.sampling, max_prompt_tokens=e.max_prompt_tokens)


def evaluate_config(
    config: OmniConfig,
    config_path: str | Path | None,
    benchmarks: str | Sequence[str] | None,
    target: Target,
    *,
    samples: int | None = None,
    max_items: int | None = None,
    data_dir: Path | None = None,
    out: Path | None = None,
    name: str | None = None,
    labels: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
    progress: ProgressSink | None = None,
    on_start: Any = None,
) -> tuple[EvaluationReport, dict[str, Path]]:
    """Evaluate `target` on `benchmarks` (default `eval.benchmarks`) with the config's
    `eval` settings; returns the report and the written files (results.json, .md, samples).

    `labels` = (headers, values) of the tables' row (default: ("Model",), (tag,)).
    `on_start(tag, model)` is called once the evaluation is named.
    """
    from db.store import open_store

    benches = parse_benchmarks(benchmarks or config.eval.benchmarks)
    plan = EvalPlan.from_config(config.eval, seed=config.run.seed, samples=samples, max_items=max_items, data_dir=data_dir)
    store = open_store(config, config_path, pool_size=1)
    generator = None
    try:
        sessions = store.sessions
        link, checkpoint = resolve_link(sessions, target)
        generator = make_generator(config, plan, target, checkpoint)
        extra: dict[str, Any] = {"endpoint_api": config.eval.endpoint_api} if target.endpoint else {}
        if link.run_id is not None:  # each checkpoint of a run is its own evaluation
            extra |= {"run_id": link.run_id, "step": link.step}
        tag = name or evaluation_tag(generator.model, plan, extra=extra)
        out_dir = out or (config.eval.output_dir or config.run.output_dir / "eval") / tag
        if on_start is not None:
            on_start(tag, generator.model)
        grading = GradingSettings.from_config(config.eval, disagreements=out_dir / "math_disagreements.jsonl")
        report = run_evaluation(benches, generator, plan, sessions=sessions, tag=tag, grading=grading, link=link,
                                progress=progress)
        headers, row = labels or (("Model",), (tag,))
        paths = write_outputs(report, out_dir, labels=row, headers=headers)
        paths |= {f"samples:{b}": p for b, p in write_samples(sessions, report, out_dir).items()}
    finally:
        if generator is not None:
            generator.close()
        store.dispose()
    return report, paths
