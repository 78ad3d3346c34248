"""Code grading: extract the program from a model response, run it on a problem's tests in
one sandbox, judge each output on the host, stop at the first failure.

    verdict = grade_code(response, row["input_output"], language="python", time_limit_s=4)
    with GradingPool(workers=cfg.eval.grading_workers) as pool:   # a sandbox slot (uid) per worker
        verdicts = pool.grade_many(responses, tests, benchmark="apps", **grading_options(cfg.eval))
    with CodeGrader(workers=2, benchmark="apps") as grader:          # the benchmark Grader
        verdicts = grader.grade([(code_item, response), ...])       # eval.results.Verdict

Test formats: see eval/code_tests.py (APPS/TACO incl. call-based, CodeContests, Codeforces).
"""

from __future__ import annotations

import os
import queue
import re
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

from eval.code_tests import (
    COMPARISONS,
    DEFAULT_COMPARISON,
    Comparison,
    TestSuite,
    from_apps,
    outputs_match,
    parse_tests,
    returns_match,
)
from eval.results import Verdict as GradeVerdict
from eval.sandbox import (
    DEFAULT_UID_BASE,
    INSTALL_HINT,
    Limits,
    RunResult,
    Sandbox,
    SandboxUnavailable,
    Slot,
    acquire_slot,
    find_bwrap,
    sandbox_python,
)

VERDICT_STATUSES = (
    "pass", "wrong_answer", "time_limit", "memory_limit", "output_limit",
    "runtime_error", "compile_error", "no_code",
)  # fmt: skip

# ```lang ... ``` blocks; the tag is the first word after the fence (```python3 title=x).
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
_OPEN_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*)\Z", re.M | re.S)
LANGUAGE_TAGS = {
    "python": "python", "python3": "python", "py": "python", "py3": "python",
    "cpp": "cpp", "c++": "cpp", "cc": "cpp", "cxx": "cpp", "c": "c",
}  # fmt: skip


@dataclass(frozen=True)
class Program:
    """An extracted program: `language` is a key of eval.sandbox.LANGUAGES."""

    language: str
    source: str


def _guess_language(code: str) -> str:
    headers = re.findall(r"^\s*#\s*include\s*[<\"]([^>\"]+)[>\"]", code, re.M)
    if not headers:
        return "python"
    cpp_headers = any(not h.endswith(".h") or "++" in h for h in headers)  # <iostream>, <bits/stdc++.h>
    cpp_syntax = re.search(r"\b(std::|using\s+namespace|cin|cout|template\s*<|class\s+\w+\s*\{)", code)
    return "cpp" if cpp_headers or cpp_syntax else "c"


def extract_code(response: str, language: str | None = None) -> Program | None:
    """The program in a model response: the last fenced block in `language` (python/cpp/c).

    Reasoning before a closing </think> is ignored. Blocks tagged with another language
    (```java, ```text) are skipped; an untagged block counts, its language guessed. With no
    closed block, a final unclosed block (a truncated response) is taken; with no fence at
    all, the whole response is taken if it is plainly code (compiles as Python, or has
    #include and main). None when nothing qualifies.
    """
    text = response.rsplit("</think>", 1)[-1]
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    if not blocks and (m := _OPEN_FENCE.search(text)):
        blocks = [(m.group(1).lower(), m.group(2))]
    for tag, code in reversed(blocks):
        if not code.strip():
            continue
        if tag:
            if tag not in LANGUAGE_TAGS:
                continue
            lang = LANGUAGE_TAGS[tag]
        else:
            lang = _guess_language(code)
        if language is None or lang == language:
            return Program(lang, code)
    if blocks or "```" in text:
        return None
    return _bare_code(text.strip(), language)


def _bare_code(text: str, language: str | None) -> Program | None:
    if not text:
        return None
    lang = _guess_language(text)
    if language is not None and lang != language:
        return None
    if lang != "python":
        return Program(lang, text) if re.search(r"\bmain\s*\(", text) else None
    try:
        compile(text, "<response>", "exec")  # parses only; nothing of the response runs here
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None
    # A sentence or two of prose can compile (e.g. a bare name); require code-like lines.
    return Program("python", text) if re.search(r"^\s*(import|from|def|class|print|for|while|if)\b|=", text, re.M) else None


@dataclass(frozen=True)
class Verdict:
    """One sample's grade. Invariant: status in VERDICT_STATUSES; test_index (0-based) is
    set exactly when a test failed; tests_passed <= tests_total."""

    status: str
    reason: str
    test_index: int | None = None
    tests_passed: int = 0
    tests_total: int = 0
    language: str | None = None
    compile_time_s: float = 0.0
    max_test_time_s: float = 0.0
    """Largest CPU time of one test."""
    total_time_s: float = 0.0
    """Host wall time of the whole sample: sandbox start, compile, tests, cleanup."""
    detail: str = ""
    """Compiler messages or the failing test's stderr tail (may be truncated)."""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict:
        return asdict(self)


_FAILURES = {
    "time_limit": "time limit exceeded",
    "memory_limit": "memory limit exceeded",
    "output_limit": "output limit exceeded",
    "runtime_error": "runtime error",
}


def _run_failure(result: RunResult, index: int) -> tuple[str, str]:
    reason = f"{_FAILURES[result.status]} on test {index}"
    if result.signal:
        reason += f" (signal {result.signal})"
    elif result.status == "runtime_error" and result.exit_code is not None:
        reason += f" (exit code {result.exit_code})"
    if result.note:
        reason += f": {result.note}"
    return result.status, reason


def grade_code(
    response: str,
    tests: Any,
    *,
    language: str | None = None,
    time_limit_s: float | None = None,
    memory_limit_mb: int | None = None,
    comparison: Comparison | None = None,
    benchmark: str | None = None,
    limits: Limits | None = None,
    slot: Slot | int | None = None,
    allow_unsandboxed: bool = False,
) -> Verdict:
    """Grade one model response against one problem's tests (any format parse_tests reads).

    Limits: `time_limit_s` (CPU s per test) and `memory_limit_mb` win over the problem's
    own limits, which win over `limits` (default Limits(): 4 s, 1024 MiB); `limits` also
    sets everything else (output cap, processes, file sizes, compiler limits). The
    comparison defaults to the benchmark's (COMPARISONS). Raises SandboxUnavailable when
    bubblewrap is missing and `allow_unsandboxed` is False, ValueError on empty tests.
    """
    start = time.monotonic()
    suite = parse_tests(tests, benchmark)
    if not suite.cases:
        raise ValueError("this problem has no tests: it cannot be graded")
    total = len(suite.cases)
    program = extract_code(response, language)
    if program is None:
        what = f"{language} code" if language else "code block"
        return Verdict("no_code", f"no {what} found in the response", tests_total=total, language=language)
    if suite.fn_name is not None and program.language != "python":
        return Verdict("compile_error", "call-based problems need a Python solution", tests_total=total, language=program.language)
    base = limits or Limits()
    limits = Limits(**{
        **asdict(base),
        "time_s": time_limit_s or suite.time_limit_s or base.time_s,
        "memory_mb": memory_limit_mb or suite.memory_limit_mb or base.memory_mb,
    })  # fmt: skip
    comparison = comparison or COMPARISONS.get(benchmark or "", DEFAULT_COMPARISON)
    with Sandbox(program.source, program.language, limits=limits, fn_name=suite.fn_name, slot=slot, allow_unsandboxed=allow_unsandboxed) as box:
        verdict = _run_suite(box, suite, comparison, program.language)
    return Verdict(**{**asdict(verdict), "total_time_s": time.monotonic() - start})


def _run_suite(box: Sandbox, suite: TestSuite, comparison: Comparison, language: str) -> Verdict:
    total = len(suite.cases)
    if suite.fn_name:
        results = box.call_many(case.input for case in suite.cases)
    else:
        results = box.run_many((case.input for case in suite.cases), file_io=suite.file_io)
    slowest = 0.0
    for index, (case, result) in enumerate(zip(suite.cases, results, strict=False)):  # results stop early
        slowest = max(slowest, result.cpu_s)
        stderr = result.stderr.decode("utf-8", "replace")[-2000:]
        failed = {"test_index": index, "tests_passed": index, "max_test_time_s": slowest, "detail": stderr}
        common = {"tests_total": total, "language": language, "compile_time_s": box.compiled.time_s}
        if result.status != "ok":
            status, reason = _run_failure(result, index)
            return Verdict(status, reason, **failed, **common)
        got = result.stdout.decode("utf-8", "replace")
        if suite.fn_name:
            ok, why = returns_match(got, case.output, comparison)
        else:
            ok, why = outputs_match(got, str(case.output), comparison)
        if not ok:
            results.close()  # the runner may be one test ahead; close() kills it
            return Verdict("wrong_answer", f"wrong answer on test {index}: {why}", **failed, **common)
    compiled = box.compiled
    common = {"tests_total": total, "language": language, "compile_time_s": compiled.time_s}
    if not compiled.ok:
        return Verdict("compile_error", "compile error", detail=compiled.messages[-4000:], **common)
    return Verdict("pass", f"passed all {total} tests", tests_passed=total, max_test_time_s=slowest, **common)


class GradingPool:
    """Grade many samples concurrently, one worker slot (a uid of its own) per thread.

    The slots are taken at construction and held until `close`, so other grading
    processes on the host get other uids. Each sample still gets a fresh sandbox.
    """

    def __init__(self, workers: int = 0, *, uid_base: int = DEFAULT_UID_BASE, allow_unsandboxed: bool = False) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.allow_unsandboxed = allow_unsandboxed
        self._slots: queue.Queue[Slot] = queue.Queue()
        self._held: list[Slot] = []
        try:
            for _ in range(self.workers):
                slot = acquire_slot(uid_base=uid_base)
                self._held.append(slot)
                self._slots.put(slot)
        except BaseException:
            self.close()
            raise
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="omniopd-grade")

    def __enter__(self) -> GradingPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def grade(self, response: str, tests: Any, **kwargs: Any) -> Verdict:
        """grade_code on a free slot (blocks until one is free); thread-safe."""
        slot = self._slots.get()
        try:
            return grade_code(response, tests, slot=slot, **{"allow_unsandboxed": self.allow_unsandboxed, **kwargs})
        finally:
            self._slots.put(slot)

    def submit(self, response: str, tests: Any, **kwargs: Any) -> Future[Verdict]:
        """grade_code on the next free slot, without waiting: a future of its Verdict.

        Pass a parsed TestSuite when several samples share one problem (parse once).
        """
        return self._executor.submit(self.grade, response, tests, **kwargs)

    def grade_many(self, responses: Sequence[str], tests: Sequence[Any], **kwargs: Any) -> list[Verdict]:
        """Verdicts for responses[i] against tests[i], in order; kwargs go to grade_code."""
        parsed: dict[int, TestSuite] = {}  # k samples of one problem share one tests object
        for t in tests:
            if id(t) not in parsed:
                parsed[id(t)] = parse_tests(t, kwargs.get("benchmark"))
        suites = [parsed[id(t)] for t in tests]
        futures = [self.submit(r, s, **kwargs) for r, s in zip(responses, suites, strict=True)]
        return [f.result() for f in futures]

    def close(self) -> None:
        if hasattr(self, "_executor"):
            self._executor.shutdown(wait=True)
        for slot in self._held:
            slot.release()
        self._held = []


def grading_options(eval_config: Any) -> dict:
    """grade_code keyword arguments from the config's `eval` section (omniopd.config.EvalConfig)."""
    return {
        "time_limit_s": eval_config.code_time_limit_s,
        "memory_limit_mb": eval_config.code_memory_limit_mb,
        "allow_unsandboxed": eval_config.allow_unsandboxed,
    }


def grade_code_batch(responses: Sequence[str], tests: Sequence[Any], *, workers: int = 0, **kwargs: Any) -> list[Verdict]:
    """One-shot GradingPool(workers).grade_many(responses, tests, **kwargs)."""
    allow = kwargs.pop("allow_unsandboxed", False)
    with GradingPool(workers, allow_unsandboxed=allow) as pool:
        return pool.grade_many(responses, tests, **kwargs)


# ------------------------------------------------------------------ the benchmark grader

_SHORT_DETAIL = 2000  # characters of judge message / compiler output kept per sample


class CodeGrader:
    """The `Grader` of code benchmarks (eval.benchmarks.GRADERS["code"]): (CodeItem, response)
    pairs -> eval.results.Verdict, one fresh sandbox per sample, on a GradingPool.

    Reasons: `pass`, `wrong_answer: test i`, `time_limit: test i`, `memory_limit: test i`,
    `output_limit: test i`, `runtime_error: test i`, `compile_error`, `no_code` (i is the
    0-based index of the first failing test; grading stops there). `score` is the
    fraction of tests passed before it, `extracted` the program that ran, `detail` the
    judge's message (expected vs got, exit code, compiler output).

    Limits: an item's own `time_limit_s` / `memory_limit_mb` win; `time_limit_s` /
    `memory_limit_mb` here are the defaults for items without (config `eval.code_*`).
    The output comparison is the item's `float_tolerance` when it has one, else the
    benchmark's (`benchmark`, else the item's `source` when it names one; COMPARISONS).
    Sandbox infrastructure failures (bubblewrap cannot start) raise SandboxError: they
    are never scored.
    """

    def __init__(
        self,
        *,
        workers: int = 0,
        time_limit_s: float | None = None,
        memory_limit_mb: int | None = None,
        benchmark: str | None = None,
        allow_unsandboxed: bool = False,
        limits: Limits | None = None,
    ) -> None:
        base = limits or Limits()
        self.limits = Limits(**{
            **asdict(base),
            "time_s": time_limit_s or base.time_s,
            "memory_mb": memory_limit_mb or base.memory_mb,
        })  # fmt: skip
        self.benchmark = benchmark
        # Fail before anything is generated (and paid for), not at the first code block.
        sandbox_python()
        if find_bwrap() is None and not allow_unsandboxed:
            raise SandboxUnavailable(
                f"bubblewrap (bwrap) is not installed, so model-written code cannot be graded safely; install it "
                f"with `{INSTALL_HINT}` (docs/sandbox.md), or set eval.allow_unsandboxed: true on a machine you can lose"
            )
        self.pool = GradingPool(workers, allow_unsandboxed=allow_unsandboxed)

    def __enter__(self) -> CodeGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.pool.close()

    def suite(self, item: Any) -> tuple[TestSuite, Comparison]:
        """An item's tests as a TestSuite with its own limits, and its output comparison."""
        suite = from_apps(item.tests.to_dict())
        suite = replace(suite, time_limit_s=item.time_limit_s, memory_limit_mb=item.memory_limit_mb)
        benchmark = self.benchmark or (item.source if item.source in COMPARISONS else None)
        comparison = COMPARISONS.get(benchmark or "", DEFAULT_COMPARISON)
        if item.tests.float_tolerance is not None:
            comparison = Comparison("tokens", item.tests.float_tolerance)
        return suite, comparison

    def grade(self, pairs: Sequence[tuple[Any, str]]) -> list[GradeVerdict]:
        prepared: dict[int, tuple[TestSuite, Comparison]] = {}  # the k samples of a problem share it
        futures = []
        for item, response in pairs:
            if id(item) not in prepared:
                prepared[id(item)] = self.suite(item)
            suite, comparison = prepared[id(item)]
            futures.append(self.pool.submit(response, suite, comparison=comparison, limits=self.limits))
        verdicts = []
        for (_, response), future in zip(pairs, futures, strict=True):
            program = extract_code(response)
            verdicts.append(benchmark_verdict(future.result(), None if program is None else program.source))
        return verdicts


def benchmark_verdict(verdict: Verdict, source: str | None) -> GradeVerdict:
    """A sandbox Verdict in the benchmark vocabulary of eval.results (see CodeGrader)."""
    reason = verdict.status
    if verdict.test_index is not None:
        reason += f": test {verdict.test_index}"
    total = verdict.tests_total
    return GradeVerdict(
        correct=verdict.passed,
        reason=reason,
        extracted=source,
        seconds=verdict.total_time_s,
        score=verdict.tests_passed / total if total else float(verdict.passed),
        detail=(verdict.reason + (f"\n{verdict.detail}" if verdict.detail else ""))[:_SHORT_DETAIL],
    )
