"""The evaluation loop: generate k samples per item, grade them, store them as they are
graded, and reduce them to Pass@1 (paper §5.1, Tables 1-2).

    plan = EvalPlan.from_config(config.eval, seed=config.run.seed)
    report = run_evaluation(parse_benchmarks("math500,apps"), generator, plan, sessions=factory,
                            tag=evaluation_tag(generator.model, plan), grading=GradingSettings.from_config(config.eval))

Resumable: each benchmark is one `eval_runs` row keyed `<tag>/<benchmark>`; samples are
recorded to `eval_results` batch by batch (one transaction per batch) right after they
are graded, and a rerun with the same key asks `graded_samples` what is stored and
generates only the rest. An interruption loses at most the batch in flight; nothing is
graded (or stored) twice. Grading of batch b runs in a background thread while batch
b+1 is generated (graders are process or sandbox pools, so this costs little).

The tag names the evaluation: by default the model plus a hash of everything that
changes the samples (k, sampling, seed, item subset, endpoint API), so changing any of
them starts a new evaluation instead of mixing samples of two settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.benchmarks import Benchmark, Grader, make_grader
from eval.datasets import Item
from eval.generate import Completion, Generator, Request, SamplingSettings
from eval.passk import score_items
from eval.results import BenchmarkScore, ItemScore, SampleResult, Verdict, sample_seed

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from omniopd.config import EvalConfig


@dataclass(frozen=True)
class EvalPlan:
    """What is evaluated, apart from the model. Invariant: samples >= 1, batch_samples >= 1."""

    samples: int
    sampling: SamplingSettings
    data_dir: Path
    seed: int = 0
    """Base of the per-sample seeds, `sample_seed(seed, item_id, r)` (config `run.seed`)."""
    max_items: int | None = None
    """At most this many items per benchmark: a fixed random subset (subset seed 0), the
    same for every model, so checkpoints and teachers are compared on the same items."""
    ks: tuple[int, ...] = (1,)
    batch_samples: int = 64

    @classmethod
    def from_config(cls, eval_config: EvalConfig, *, seed: int, samples: int | None = None,
                    max_items: int | None = None, data_dir: Path | None = None) -> EvalPlan:
        e = eval_config
        return cls(
            samples=samples or e.samples,
            sampling=SamplingSettings(e.max_new_tokens, e.temperature, e.top_p),
            data_dir=Path(data_dir or e.data_dir),
            seed=seed,
            max_items=max_items or e.max_items,
            ks=tuple(e.pass_at_k),
            batch_samples=e.batch_samples,
        )

    def identity(self) -> dict[str, Any]:
        """Everything that changes which samples are drawn (part of the default tag)."""
        return {"samples": self.samples, "sampling": asdict(self.sampling), "seed": self.seed, "max_items": self.max_items}


@dataclass(frozen=True)
class StoreLink:
    """Ties an evaluation to a training run's checkpoint, so `list_eval_runs(run_id=...)`
    gives accuracy against learner step (plots). All None for a model outside any run."""

    run_id: int | None = None
    policy_version: int | None = None
    step: int | None = None


@dataclass(frozen=True)
class GradingSettings:
    """Grader options (config `eval.*`): math workers/timeout, sandbox limits."""

    workers: int = 0
    math_timeout_s: float = 10.0
    code_time_limit_s: float = 4.0
    code_memory_limit_mb: int = 1024
    allow_unsandboxed: bool = False
    disagreements: Path | None = None
    """Where math-verify vs the second grader's disagreements are appended (JSONL)."""

    @classmethod
    def from_config(cls, e: EvalConfig, *, disagreements: Path | None = None) -> GradingSettings:
        return cls(e.grading_workers, e.math_timeout_s, e.code_time_limit_s, e.code_memory_limit_mb,
                   e.allow_unsandboxed, disagreements)

    def grader(self, bench: Benchmark) -> Grader:
        if bench.grader_kind == "math":
            return make_grader("math", workers=self.workers, timeout_s=self.math_timeout_s, disagreements=self.disagreements)
        return make_grader("code", workers=self.workers, benchmark=bench.name, time_limit_s=self.code_time_limit_s,
                           memory_limit_mb=self.code_memory_limit_mb, allow_unsandboxed=self.allow_unsandboxed)


def evaluation_tag(model: str, plan: EvalPlan, *, extra: dict[str, Any] | None = None) -> str:
    """`<model name>-<8 hex>`: the model's last path component (or endpoint model name)
    and a hash of the model and the plan's identity; `extra` adds more (endpoint API)."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model.rstrip("/")).name or model)[:80] or "model"
    material = json.dumps({"model": model, **plan.identity(), **(extra or {})}, sort_keys=True)
    return f"{label}-{hashlib.blake2b(material.encode(), digest_size=4).hexdigest()}"


class ProgressSink:
    """Receives progress; the CLI draws rich bars. Default: nothing."""

    def start(self, benchmark: str, *, n_items: int, total: int, stored: Sequence[tuple[str, bool]]) -> None:
        """A benchmark begins; `stored` are (item_id, correct) of its samples already in the store."""

    def advance(self, benchmark: str, results: Sequence[SampleResult]) -> None:
        """`results` were graded and stored."""

    def finish(self, benchmark: str, score: BenchmarkScore) -> None:
        """A benchmark is complete."""


@dataclass(frozen=True)
class BenchmarkOutcome:
    """One benchmark's evaluation. Invariant: the store holds exactly k samples per item
    of the evaluated subset under `eval_run_id`; `generated + reused` = items x k."""

    benchmark: str
    key: str
    eval_run_id: int
    score: BenchmarkScore
    generated: int
    reused: int


# ------------------------------------------------------------------ store rows


def to_store_row(r: SampleResult) -> Any:
    from db.repo_eval import EvalResultIn

    return EvalResultIn(
        item_id=r.item_id, sample_index=r.sample_index, correct=r.correct,
        score=float(r.correct) if r.score is None else r.score, completion=r.response, extracted=r.extracted,
        seed=r.seed, n_tokens=r.completion_tokens,
        error=r.reason if r.reason.startswith(("grader_error", "prompt_too_long")) else None,
        detail={"reason": r.reason, "grading_s": r.grading_s, "finish_reason": r.finish_reason, "detail": r.detail},
    )


def from_store_row(benchmark: str, row: Any) -> SampleResult:
    d = row.detail or {}
    return SampleResult(
        benchmark=benchmark, item_id=row.item_id, sample_index=row.sample_index, seed=row.seed,
        response=row.completion, extracted=row.extracted, correct=row.correct,
        reason=d.get("reason", "correct" if row.correct else "wrong"), grading_s=float(d.get("grading_s", 0.0)),
        finish_reason=d.get("finish_reason"), completion_tokens=row.n_tokens, score=row.score, detail=d.get("detail", ""),
    )


def item_counts(items: Sequence[Item], outcomes: Sequence[tuple[str, int, bool]], k: int) -> list[ItemScore]:
    """Per-item (n, c) over samples 0..k-1, in the items' order; raises if any is missing."""
    n = {item.id: 0 for item in items}
    c = dict(n)
    for item_id, index, correct in outcomes:
        if item_id in n and index < k:
            n[item_id] += 1
            c[item_id] += int(correct)
    missing = sum(k - v for v in n.values())
    if missing:
        raise RuntimeError(f"{missing} samples are missing after generation; rerun to complete them")
    return [ItemScore(i, n[i], c[i]) for i in n]


# ------------------------------------------------------------------ the loop


def evaluate_benchmark(
    bench: Benchmark,
    items: Sequence[Item],
    generator: Generator,
    grader: Grader,
    *,
    sessions: sessionmaker[Session],
    key: str,
    plan: EvalPlan,
    link: StoreLink = StoreLink(),
    config: dict[str, Any] | None = None,
    progress: ProgressSink | None = None,
) -> BenchmarkOutcome:
    """Evaluate one benchmark under eval-run `key`, resuming from what the store holds."""
    from db.repo_eval import finish_eval_run, open_eval_run, record_eval_results, result_outcomes

    progress = progress or ProgressSink()
    k = plan.samples
    with sessions.begin() as s:
        run = open_eval_run(s, key=key, benchmark=bench.name, model=generator.model, samples=k,
                            config=config or {}, run_id=link.run_id, policy_version=link.policy_version, step=link.step)
        done = {(item_id, index): correct for item_id, index, correct in result_outcomes(s, eval_run_id=run.id)}
    _check_same_evaluation(run, generator.model, config)
    by_id = {item.id: item for item in items}
    todo = [Request(bench.name, item.id, r, bench.prompt(item), sample_seed(plan.seed, item.id, r))
            for item in items for r in range(k) if (item.id, r) not in done]
    stored = [(i, correct) for (i, r), correct in done.items() if i in by_id and r < k]
    progress.start(bench.name, n_items=len(items), total=len(items) * k, stored=stored)

    def grade_and_record(batch: Sequence[Request], completions: Sequence[Completion]) -> list[SampleResult]:
        results = grade_batch(bench.name, batch, completions, by_id, grader)
        with sessions.begin() as s:
            record_eval_results(s, eval_run_id=run.id, results=[to_store_row(r) for r in results])
        return results

    # One batch grades (and is recorded) in the background while the next generates;
    # leaving the `with` waits for it, so an interruption still stores a finished batch.
    with ThreadPoolExecutor(1, thread_name_prefix="omniopd-eval-grade") as background:
        pending: Future[list[SampleResult]] | None = None
        for start in range(0, len(todo), plan.batch_samples):
            batch = todo[start : start + plan.batch_samples]
            completions = generator.generate(batch)
            if pending is not None:
                progress.advance(bench.name, pending.result())
            pending = background.submit(grade_and_record, batch, completions)
        if pending is not None:
            progress.advance(bench.name, pending.result())

    with sessions.begin() as s:
        counts = item_counts(items, result_outcomes(s, eval_run_id=run.id), k)
        score = score_items(bench.name, counts, ks=plan.ks)
        finish_eval_run(s, eval_run_id=run.id, pass_at_1=score.pass_at_1, metrics=score.to_dict())
    progress.finish(bench.name, score)
    return BenchmarkOutcome(bench.name, key, run.id, score, generated=len(todo), reused=len(items) * k - len(todo))


def _check_same_evaluation(run: Any, model: str, config: dict[str, Any] | None) -> None:
    """Samples of another model or other settings must never be mixed into a run (only
    possible with a reused --name: default tags hash the model and settings)."""
    identity = ("samples", "sampling", "seed", "max_items")
    differs = [k for k in identity if config is not None and k in run.config and run.config[k] != config.get(k)]
    if run.model != model or differs:
        what = (f"model {run.model!r} (now {model!r})" if run.model != model
                else ", ".join(f"{k}={run.config[k]} (now {config[k]})" for k in differs))
        raise ValueError(f"eval run {run.key!r} already holds samples drawn with {what}; "
                         "evaluate under another --name (or the default tag)")


def grade_batch(
    benchmark: str, batch: Sequence[Request], completions: Sequence[Completion], items: dict[str, Item], grader: Grader
) -> list[SampleResult]:
    """Grade one batch; refused prompts are wrong with their reason, without a grader."""
    graded = [i for i, c in enumerate(completions) if c.refused is None]
    verdicts: dict[int, Verdict] = {}
    if graded:
        out = grader.grade([(items[batch[i].item_id], completions[i].text) for i in graded])
        verdicts = dict(zip(graded, out, strict=True))
    results = []
    for i, (req, comp) in enumerate(zip(batch, completions, strict=True)):
        verdict = verdicts.get(i) or Verdict(False, comp.refused or "not_generated", None, 0.0)
        results.append(SampleResult.from_verdict(
            verdict, benchmark=benchmark, item_id=req.item_id, sample_index=req.sample_index, seed=req.seed,
            response=comp.text, finish_reason=comp.finish_reason, completion_tokens=comp.completion_tokens,
        ))
    return results


@dataclass(frozen=True)
class EvaluationReport:
    """Every benchmark of one `omniopd eval` call, in the order they ran."""

    tag: str
    model: str
    plan: EvalPlan
    link: StoreLink
    outcomes: list[BenchmarkOutcome]


def run_evaluation(
    benchmarks: Sequence[Benchmark],
    generator: Generator,
    plan: EvalPlan,
    *,
    sessions: sessionmaker[Session],
    tag: str,
    grading: GradingSettings,
    link: StoreLink = StoreLink(),
    progress: ProgressSink | None = None,
) -> EvaluationReport:
    """Evaluate each benchmark in turn (items loaded and validated first, so a bad file
    fails before anything is generated). Graders are closed on every path."""
    loaded = [(b, b.load(plan.data_dir, max_items=plan.max_items, seed=0)) for b in benchmarks]
    config = {"tag": tag, **plan.identity(), "data_dir": str(plan.data_dir), "ks": list(plan.ks)}
    outcomes = []
    graders: dict[str, Grader] = {}
    try:
        for bench, items in loaded:
            # One math grader serves every math benchmark; code graders carry their benchmark's comparison.
            slot = "math" if bench.grader_kind == "math" else bench.name
            if slot not in graders:
                graders[slot] = grading.grader(bench)
            outcomes.append(evaluate_benchmark(bench, items, generator, graders[slot], sessions=sessions,
                                               key=f"{tag}/{bench.name}", plan=plan, link=link, config=config,
                                               progress=progress))
            if slot != "math":
                graders.pop(slot).close()
    finally:
        for grader in graders.values():
            grader.close()
    return EvaluationReport(tag, generator.model, plan, link, outcomes)
