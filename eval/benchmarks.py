"""The benchmark registry: name -> kind, column title, prompt, file and grader.

Everything that runs an evaluation (the `omniopd eval` loop, lm-eval tasks, scripts)
looks benchmarks up here, so adding one is one entry. Graders are chosen by kind:
`GRADERS["math"]` is `eval.math.MathGrader`; the code grader (sandboxed, eval/code.py)
is `eval.code.CodeGrader`; `make_grader` imports either on demand. Every grader
implements `Grader`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from eval.datasets import CodeItem, Item, Kind, MathItem, load_items, subsample
from eval.math import math_prompt
from eval.results import Verdict

CODE_INSTRUCTIONS = (
    "Solve the following programming problem in Python 3. {io}"
    " Think step by step, then give your complete solution in one ```python code block at the end."
    "\n\n{question}"
)
_STDIN_IO = "Your program reads from standard input and writes to standard output."
_CALL_IO = "Complete the given starter code; your function is called with the test arguments and its return value is checked."


def code_prompt(item: CodeItem) -> str:
    """Prompt for a code problem (the paper gives no code template; this one states the I/O contract)."""
    io = _CALL_IO if item.tests.fn_name else _STDIN_IO
    question = item.problem
    if item.starter_code.strip():
        question += f"\n\nStarter code:\n```python\n{item.starter_code.rstrip()}\n```"
    return CODE_INSTRUCTIONS.format(io=io, question=question)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark. `kind` picks the schema, prompt and grader; `title` is its column
    name in the paper's Tables 1-2; items live in `<data_dir>/<name>.jsonl|.parquet`."""

    name: str
    kind: Kind
    title: str
    description: str

    @property
    def grader_kind(self) -> Literal["math", "code"]:
        return "code" if self.kind == "code" else "math"

    def prompt(self, item: Item) -> str:
        if self.kind == "demo":
            return item.problem  # the quick-start task's prompts are used as written
        if isinstance(item, MathItem):
            return math_prompt(item.problem)
        return code_prompt(item)

    def path(self, data_dir: Path | str) -> Path:
        """The item file under `data_dir`: `<name>.jsonl`, else `<name>.parquet`."""
        data_dir = Path(data_dir)
        for suffix in (".jsonl", ".parquet"):
            candidate = data_dir / f"{self.name}{suffix}"
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"no {self.name}.jsonl or {self.name}.parquet in {data_dir}. Convert the public release with "
            f"`omniopd data convert {self.name} SRC {data_dir}/{self.name}.jsonl` (docs/eval.md)."
        )

    def load(self, data_dir: Path | str, *, max_items: int | None = None, seed: int = 0) -> list[Item]:
        """Validated items, at most `max_items` of them (a seeded random subset)."""
        return subsample(load_items(self.path(data_dir), self.kind), max_items, seed)


# Paper order: Table 1 (math) then Table 2 (code), then the quick-start task.
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("math500", "math", "MATH-500", "500 MATH test problems (HuggingFaceH4/MATH-500)"),
        Benchmark("aime24", "math", "AIME-24", "AIME 2024 I and II, 30 problems"),
        Benchmark("aime25", "math", "AIME-25", "AIME 2025 I and II, 30 problems"),
        Benchmark("amc23", "math", "AMC-23", "AMC 12 2023, 40 problems (AI-MO validation set)"),
        Benchmark("olympiadbench", "math", "OlympiadBench", "OlympiadBench, text-only English open-ended math"),
        Benchmark("apps", "code", "APPS", "APPS (codeparrot/apps)"),
        Benchmark("codecontests", "code", "CodeContests", "CodeContests (deepmind/code_contests)"),
        Benchmark("codeforces", "code", "Codeforces", "Codeforces (open-r1/codeforces)"),
        Benchmark("taco", "code", "TACO", "TACO (BAAI/TACO)"),
        Benchmark("demo", "demo", "Demo", "the quick-start synthetic task: rows {id, prompt, answer}"),
    )
}
MATH_BENCHMARKS = tuple(n for n, b in BENCHMARKS.items() if b.kind == "math")
CODE_BENCHMARKS = tuple(n for n, b in BENCHMARKS.items() if b.kind == "code")


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


def parse_benchmarks(spec: str | Sequence[str]) -> list[Benchmark]:
    """`"math500,aime24"` (or a list) -> benchmarks; `math`/`code` expand to their group."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[Benchmark] = []
    for raw in names:
        name = raw.strip()
        group = {"math": MATH_BENCHMARKS, "code": CODE_BENCHMARKS}.get(name, (name,))
        out += [get_benchmark(n) for n in group if n]
    return list(dict.fromkeys(out))


class Grader(Protocol):
    """Grades (item, response) pairs; one Verdict per pair, in order. Never raises for a
    bad response (that is a wrong verdict with a reason); `close()` frees workers."""

    def grade(self, pairs: Sequence[tuple[Any, str]]) -> list[Verdict]: ...

    def close(self) -> None: ...


# Grader factory of each kind, as "module:attribute" (imported on first use, so the
# sandbox is only loaded when code is graded) or a callable. The code grader is
# eval/code.py's `CodeGrader`, built by the sandbox work: same interface as MathGrader.
GRADERS: dict[str, str | Callable[..., Grader]] = {
    "math": "eval.math:MathGrader",
    "code": "eval.code:CodeGrader",
}


def make_grader(kind: Literal["math", "code"], **options: Any) -> Grader:
    """A grader for `kind` (`math` options: workers, timeout_s, disagreements, check)."""
    factory = GRADERS[kind]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ModuleNotFoundError, AttributeError) as exc:
            raise RuntimeError(f"no {kind} grader: cannot load {GRADERS[kind]} ({exc})") from exc
    return factory(**options)
