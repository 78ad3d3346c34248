"""Result files of an evaluation and comparisons between two evaluations.

`write_outputs` and `write_samples` put three things in an evaluation's output folder:

    results.json          every number: per benchmark its eval-run key, Pass@1, interval,
                          pass@k and per-item (n, c); the tables as eval.tables.to_json
    results.md            the tables, shaped like the paper's Tables 1 (math) and 2 (code)
    samples/<bench>.jsonl one SampleResult per line (response, extracted answer, verdict)

`compare` reads two evaluations — `results.json` files or eval-run keys / tags in the
store — and reports B - A per benchmark on the items both contain, with a paired
bootstrap interval (`eval.passk.paired_difference`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.benchmarks import BENCHMARKS
from eval.passk import Estimate, paired_difference
from eval.results import BenchmarkScore
from eval.tables import ResultsTable, TableRow, results_table, to_json, to_markdown

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from eval.evaluate import EvaluationReport

TABLE_GROUPS = (("math", "Math (paper Table 1)"), ("code", "Code (paper Table 2)"), ("demo", "Demo"))
"""Benchmark kind -> table title; each table has its own Average column, as in the paper."""


def report_tables(
    scores: Mapping[str, BenchmarkScore], labels: Sequence[str], headers: Sequence[str]
) -> list[tuple[str, str, ResultsTable]]:
    """(kind, title, table) for each kind of benchmark present, one row labelled `labels`."""
    out = []
    for kind, title in TABLE_GROUPS:
        names = [b for b in BENCHMARKS if b in scores and BENCHMARKS[b].kind == kind]
        if names:
            row = TableRow(tuple(labels), {b: scores[b] for b in names})
            out.append((kind, title, results_table([row], label_headers=tuple(headers), benchmarks=names)))
    return out


def report_json(report: EvaluationReport, tables: Sequence[tuple[str, str, ResultsTable]]) -> dict[str, Any]:
    return {
        "tag": report.tag,
        "model": report.model,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "plan": {**report.plan.identity(), "data_dir": str(report.plan.data_dir), "ks": list(report.plan.ks)},
        "link": {"run_id": report.link.run_id, "policy_version": report.link.policy_version, "step": report.link.step},
        "benchmarks": {
            o.benchmark: {"key": o.key, "eval_run_id": o.eval_run_id, "generated": o.generated, "reused": o.reused,
                          "score": o.score.to_dict()}
            for o in report.outcomes
        },
        "tables": {kind: {"title": title, **to_json(table)} for kind, title, table in tables},
    }


def report_markdown(report: EvaluationReport, tables: Sequence[tuple[str, str, ResultsTable]]) -> str:
    lines = [f"# Evaluation {report.tag}", "", f"Model: `{report.model}`", ""]
    if report.link.run_id is not None:
        lines += [f"Training run {report.link.run_id}, policy version {report.link.policy_version}, "
                  f"step {report.link.step}.", ""]
    for _, title, table in tables:
        lines += [f"## {title}", "", to_markdown(table)]
    lines += ["| Benchmark | eval run key | items | k | Pass@1 | " + " | ".join(f"pass@{k}" for k in report.plan.ks) + " |",
              "|---|---|---:|---:|---:|" + "---:|" * len(report.plan.ks)]
    for o in report.outcomes:
        ks = " | ".join(f"{100 * o.score.pass_at_k[k]:.2f}" if k in o.score.pass_at_k else "-" for k in report.plan.ks)
        lines.append(f"| {o.benchmark} | `{o.key}` | {o.score.n_items} | {o.score.samples_per_item} | "
                     f"{100 * o.score.pass_at_1:.2f} | {ks} |")
    return "\n".join(lines) + "\n"


def write_outputs(
    report: EvaluationReport, out_dir: Path, *, labels: Sequence[str] | None = None, headers: Sequence[str] = ("Model",)
) -> dict[str, Path]:
    """Write results.json, results.md and samples/<benchmark>.jsonl; returns their paths."""
    tables = report_tables({o.benchmark: o.score for o in report.outcomes}, labels or (report.tag,), headers)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    paths["json"].write_text(json.dumps(report_json(report, tables), indent=2) + "\n")
    paths["markdown"].write_text(report_markdown(report, tables))
    return paths


def write_samples(sessions: Any, report: EvaluationReport, out_dir: Path) -> dict[str, Path]:
    """samples/<benchmark>.jsonl: every stored sample of the evaluation, one SampleResult
    per line, streamed from the store (a benchmark's completions can be gigabytes)."""
    from db.repo_eval import iter_eval_results
    from eval.evaluate import from_store_row

    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    paths = {}
    for o in report.outcomes:
        path = paths[o.benchmark] = out_dir / "samples" / f"{o.benchmark}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        evaluated = {it.item_id for it in o.score.items}
        with sessions.begin() as s, tmp.open("w", encoding="utf-8") as f:
            for row in iter_eval_results(s, eval_run_id=o.eval_run_id):
                if row.item_id in evaluated and row.sample_index < report.plan.samples:
                    f.write(json.dumps(from_store_row(o.benchmark, row).to_dict(), ensure_ascii=False) + "\n")
        tmp.replace(path)
    return paths


# ------------------------------------------------------------------ comparing two evaluations


@dataclass(frozen=True)
class ScoreSet:
    """One evaluation's scores by benchmark; `name` is what the user passed."""

    name: str
    scores: dict[str, BenchmarkScore]


def load_json_scores(path: Path) -> ScoreSet:
    """Scores from a results.json written by `omniopd eval`."""
    try:
        data = json.loads(path.read_text())
        scores = {b: BenchmarkScore.from_dict(v["score"]) for b, v in data["benchmarks"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a results.json of `omniopd eval` ({type(exc).__name__}: {exc})") from None
    return ScoreSet(str(path), scores)


def load_store_scores(session: Session, key: str) -> ScoreSet:
    """Scores of eval run `key`, or of every benchmark evaluated under tag `key`
    (eval-run keys are `<tag>/<benchmark>`). Unfinished runs are refused."""
    from db.repo_eval import list_eval_runs

    runs = [r for r in list_eval_runs(session, key_prefix=key) if r.key == key or r.key.startswith(key + "/")]
    if not runs:
        raise LookupError(f"no eval run or evaluation tag {key!r} in the store (and no such file)")
    unfinished = [r.key for r in runs if r.status != "finished" or not r.metrics]
    if unfinished:
        raise LookupError(f"eval run(s) {', '.join(unfinished)} are not finished: rerun that evaluation to complete them")
    return ScoreSet(key, {r.benchmark: BenchmarkScore.from_dict(r.metrics) for r in runs})


@dataclass(frozen=True)
class Difference:
    """B - A on one benchmark, over the `diff.n_items` items both evaluated."""

    benchmark: str
    a: float
    b: float
    diff: Estimate


def compare(a: ScoreSet, b: ScoreSet, *, confidence: float = 0.95, seed: int = 0) -> list[Difference]:
    """Paired differences on the benchmarks both evaluated (registry order)."""
    shared = [n for n in BENCHMARKS if n in a.scores and n in b.scores]
    shared += sorted(set(a.scores) & set(b.scores) - set(shared))
    if not shared:
        raise ValueError(f"{a.name} and {b.name} share no benchmark ({sorted(a.scores)} vs {sorted(b.scores)})")
    return [Difference(n, a.scores[n].pass_at_1, b.scores[n].pass_at_1,
                       paired_difference(a.scores[n], b.scores[n], confidence=confidence, seed=seed)) for n in shared]


def compare_markdown(a: ScoreSet, b: ScoreSet, diffs: Sequence[Difference], confidence: float = 0.95) -> str:
    lines = [f"A = {a.name}", f"B = {b.name}", "",
             f"| Benchmark | A | B | B - A [{int(confidence * 100)}% paired bootstrap] | items |",
             "|---|---:|---:|---:|---:|"]
    for d in diffs:
        title = BENCHMARKS[d.benchmark].title if d.benchmark in BENCHMARKS else d.benchmark
        lines.append(f"| {title} | {100 * d.a:.2f} | {100 * d.b:.2f} | {100 * d.diff.value:+.2f} "
                     f"[{100 * d.diff.ci_low:+.2f}, {100 * d.diff.ci_high:+.2f}] | {d.diff.n_items} |")
    return "\n".join(lines) + "\n"


def compare_json(a: ScoreSet, b: ScoreSet, diffs: Sequence[Difference]) -> dict[str, Any]:
    return {"a": a.name, "b": b.name, "benchmarks": [
        {"benchmark": d.benchmark, "a": d.a, "b": d.b, "difference": d.diff.value, "ci_low": d.diff.ci_low,
         "ci_high": d.diff.ci_high, "n_items": d.diff.n_items} for d in diffs]}
