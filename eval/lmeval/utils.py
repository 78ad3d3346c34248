"""Functions the omniopd_* lm-eval task YAMLs call (`!function utils.NAME`).

- `load_docs` (the tasks' `custom_dataset`): reads `<data_dir>/<benchmark>.jsonl|.parquet`
  with OmniOPD's validated loader — no hub, no `datasets` JSON schema inference (which
  cannot type the mixed-type tests of call-based code problems). The data directory is
  `--metadata data_dir=PATH`, else `$OMNIOPD_EVAL_DATA_DIR`, else `data/eval` (the
  `eval.data_dir` config default). `--metadata max_items=N` evaluates a seeded subset.
- `doc_to_text`: the same prompt OmniOPD's own evaluation sends (Table 7 for math).
- `process_math` / `process_code`: grade all k samples of a doc (the task's
  `take_first_k` filter passes every repeat) with OmniOPD's graders; the metric is
  `pass_at_1`, the fraction of the k samples that are correct, averaged over docs.

Grading workers and the math timeout come from `$OMNIOPD_GRADING_WORKERS` (default: all
CPUs) and `$OMNIOPD_MATH_TIMEOUT_S` (default: the config default, 10 s).
"""

from __future__ import annotations

import atexit
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from eval.benchmarks import Grader, get_benchmark, make_grader
from eval.datasets import CodeItem, code_item, math_item

DATA_DIR_ENV = "OMNIOPD_EVAL_DATA_DIR"
_GRADERS: dict[str, Grader] = {}


def load_docs(benchmark: str, data_dir: str | None = None, max_items: int | str | None = None,
              seed: int | str = 0, **_metadata: Any) -> dict[str, Any]:
    """custom_dataset: {"test": Dataset of {id, benchmark, prompt, answer, item}}.

    `_metadata` swallows what lm-eval merges in (model_args, the task's version)."""
    import datasets

    bench = get_benchmark(benchmark)
    root = Path(data_dir or os.environ.get(DATA_DIR_ENV) or "data/eval")
    items = bench.load(root, max_items=int(max_items) if max_items else None, seed=int(seed))
    docs = []
    for item in items:
        row = item.to_dict() if isinstance(item, CodeItem) else asdict(item)
        docs.append({
            "id": item.id,
            "benchmark": bench.name,
            "prompt": bench.prompt(item),
            "answer": getattr(item, "answer", ""),
            "item": json.dumps(row, ensure_ascii=False),  # all-string columns: Arrow types them
        })
    return {"test": datasets.Dataset.from_list(docs)}


def doc_to_text(doc: dict[str, Any]) -> str:
    return doc["prompt"]


def _grader(kind: str) -> Grader:
    if kind not in _GRADERS:
        options: dict[str, Any] = {"workers": int(os.environ.get("OMNIOPD_GRADING_WORKERS", "0"))}
        if kind == "math":
            from omniopd.config import EvalConfig

            options["timeout_s"] = float(os.environ.get("OMNIOPD_MATH_TIMEOUT_S", EvalConfig().math_timeout_s))
        _GRADERS[kind] = make_grader(kind, **options)
    return _GRADERS[kind]


@atexit.register
def _close_graders() -> None:
    for grader in _GRADERS.values():
        grader.close()
    _GRADERS.clear()


def _responses(results: list[Any]) -> list[str]:
    # With the take_first_k filter, results == [[r_1, ..., r_k]]; without it, [r_1].
    if len(results) == 1 and isinstance(results[0], list | tuple):
        return [str(r) for r in results[0]]
    return [str(r) for r in results]


def _process(kind: str, doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    bench = get_benchmark(doc["benchmark"])
    row = json.loads(doc["item"])
    item = code_item(row) if bench.kind == "code" else math_item(row)  # demo items are MathItems too
    responses = _responses(results)
    verdicts = _grader(kind).grade([(item, r) for r in responses])
    return {"pass_at_1": sum(v.correct for v in verdicts) / len(verdicts)}


def process_math(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    return _process("math", doc, results)


def process_code(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    return _process("code", doc, results)
