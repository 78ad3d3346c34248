"""Test suites of code benchmarks (APPS, TACO, CodeContests, Codeforces) and output comparison.

Every public format is read into one `TestSuite`; `outputs_match` / `returns_match` are
the judge. The judge runs on the host: expected outputs never reach the sandbox.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BENCHMARKS = ("apps", "taco", "codecontests", "codeforces")


@dataclass(frozen=True)
class TestCase:
    """One test: stdin text and expected stdout, or (call-based) an argument list and a return value."""

    __test__ = False  # not a pytest class

    input: Any
    output: Any


@dataclass(frozen=True)
class TestSuite:
    """A problem's tests. Invariant: `fn_name` set iff every case's input is an argument list."""

    __test__ = False  # not a pytest class

    cases: tuple[TestCase, ...]
    fn_name: str | None = None
    """Call-based (APPS/TACO `fn_name`): call this function or `Solution` method."""
    file_io: bool = False
    """Codeforces `input_mode: file`: the program reads input.txt and writes output.txt."""
    time_limit_s: float | None = None
    """The problem's own time limit, when the dataset gives one."""
    memory_limit_mb: int | None = None
    """The problem's own memory limit, when the dataset gives one."""

    def __post_init__(self) -> None:
        if self.fn_name is not None and not all(isinstance(c.input, list) for c in self.cases):
            raise ValueError(f"call-based tests (fn_name={self.fn_name!r}) need argument lists as inputs")


@dataclass(frozen=True)
class Comparison:
    """How stdout is judged against the expected output.

    mode: "exact" (bytes equal), "lines" (trailing whitespace on each line and trailing
    blank lines ignored) or "tokens" (whitespace-separated tokens equal).
    float_tol: in "tokens" mode, a token pair that differs still matches when the expected
    token is a decimal (has '.', 'e' or 'E'), both parse as floats and
    |got - want| <= float_tol * max(1, |want|) (the usual "absolute or relative error"
    checker). Integer tokens are always compared exactly.
    """

    mode: str = "tokens"
    float_tol: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "lines", "tokens"):
            raise ValueError(f"unknown comparison mode {self.mode!r}: use exact, lines or tokens")


COMPARISONS = {
    # APPS's own harness accepts np.allclose-close floats (rtol 1e-5).
    "apps": Comparison("tokens", 1e-5),
    "taco": Comparison("tokens", 1e-5),
    # Codeforces-style checkers: absolute or relative error 1e-6 on real-valued answers.
    "codecontests": Comparison("tokens", 1e-6),
    "codeforces": Comparison("tokens", 1e-6),
}
DEFAULT_COMPARISON = Comparison("tokens", 1e-6)


# -- formats ------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """APPS stores some stdin tests as lists of lines."""
    if isinstance(value, list):
        return "\n".join(str(v) for v in value) + "\n"
    return str(value)


def from_apps(input_output: str | Mapping, **limits: Any) -> TestSuite:
    """APPS / TACO `input_output`: {"inputs": [...], "outputs": [...], "fn_name"?: str}."""
    if not input_output:  # some APPS test problems ship without tests
        return TestSuite((), **limits)
    data = json.loads(input_output) if isinstance(input_output, str) else input_output
    inputs, outputs = data.get("inputs") or [], data.get("outputs") or []
    fn_name = data.get("fn_name") or None
    if fn_name is not None:
        cases = tuple(TestCase(list(i) if isinstance(i, (list, tuple)) else [i], o) for i, o in zip(inputs, outputs, strict=True))
    else:
        cases = tuple(TestCase(_text(i), _text(o)) for i, o in zip(inputs, outputs, strict=True))
    return TestSuite(cases, fn_name=fn_name, **limits)


def from_codecontests(row: Mapping, splits: Sequence[str] = ("public_tests", "private_tests", "generated_tests")) -> TestSuite:
    """CodeContests: {public,private,generated}_tests = {"input": [...], "output": [...]}."""
    cases: list[TestCase] = []
    for split in splits:
        tests = row.get(split) or {}
        cases += [TestCase(i, o) for i, o in zip(tests.get("input", []), tests.get("output", []), strict=True)]
    limit = row.get("time_limit")
    if isinstance(limit, Mapping):  # {"seconds": s, "nanos": n}
        limit = (limit.get("seconds") or 0) + (limit.get("nanos") or 0) / 1e9
    memory = row.get("memory_limit_bytes")
    return TestSuite(
        tuple(cases),
        time_limit_s=float(limit) if limit else None,
        memory_limit_mb=int(memory) >> 20 if memory else None,
    )


def from_codeforces(row: Mapping | Sequence) -> TestSuite:
    """open-r1/codeforces: `official_tests` = [{"input", "output"}], time_limit (s), memory_limit (MB), input_mode."""
    if isinstance(row, Sequence):
        return TestSuite(tuple(TestCase(t["input"], t["output"]) for t in row))
    tests = row.get("official_tests") or row.get("tests") or []
    return TestSuite(
        tuple(TestCase(t["input"], t["output"]) for t in tests),
        file_io=row.get("input_mode") == "file",
        time_limit_s=float(row["time_limit"]) if row.get("time_limit") else None,
        memory_limit_mb=int(row["memory_limit"]) if row.get("memory_limit") else None,
    )


def parse_tests(tests: Any, benchmark: str | None = None) -> TestSuite:
    """Any supported format (a TestSuite, a dataset row, its JSON) -> TestSuite."""
    if isinstance(tests, TestSuite):
        return tests
    if isinstance(tests, (str, bytes)):
        tests = json.loads(tests)
    if isinstance(tests, Mapping):
        if "input_output" in tests:  # an APPS/TACO row
            return from_apps(tests["input_output"])
        if "inputs" in tests and "outputs" in tests:
            return from_apps(tests)
        if any(k in tests for k in ("public_tests", "private_tests", "generated_tests")):
            return from_codecontests(tests)
        if "official_tests" in tests or "tests" in tests:
            return from_codeforces(tests)
    if isinstance(tests, Sequence) and all(isinstance(t, Mapping) and "input" in t for t in tests):
        return from_codeforces(tests)
    raise ValueError(
        f"unrecognised tests for benchmark {benchmark!r}: expected APPS/TACO input_output "
        "({inputs, outputs[, fn_name]}), CodeContests ({public,private,generated}_tests) or "
        "Codeforces ([{input, output}] / official_tests)"
    )


# -- judging ------------------------------------------------------------------------------


def _is_decimal(token: str) -> bool:
    return any(c in token for c in ".eE")


def _close(got: float, want: float, tol: float) -> bool:
    return math.isfinite(got) and math.isfinite(want) and abs(got - want) <= tol * max(1.0, abs(want))


def _tokens_match(got: str, want: str, tol: float | None) -> bool:
    if got == want:
        return True
    if tol is None or not _is_decimal(want):
        return False
    try:
        return _close(float(got), float(want), tol)
    except ValueError:
        return False


def _snippet(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def outputs_match(got: str, want: str, comparison: Comparison = DEFAULT_COMPARISON) -> tuple[bool, str]:
    """(match, why not) for one stdin/stdout test."""
    if comparison.mode == "exact":
        return (True, "") if got == want else (False, f"expected {_snippet(want)}, got {_snippet(got)}")
    if comparison.mode == "lines":
        g = [line.rstrip() for line in got.rstrip().split("\n")]
        w = [line.rstrip() for line in want.rstrip().split("\n")]
        for n, (a, b) in enumerate(zip(g, w, strict=False), 1):
            if a != b:
                return False, f"line {n}: expected {_snippet(b)}, got {_snippet(a)}"
        return (True, "") if len(g) == len(w) else (False, f"expected {len(w)} lines, got {len(g)}")
    g, w = got.split(), want.split()
    for n, (a, b) in enumerate(zip(g, w, strict=False), 1):
        if not _tokens_match(a, b, comparison.float_tol):
            return False, f"token {n}: expected {_snippet(b)}, got {_snippet(a)}"
    if len(g) != len(w):
        return False, f"expected {len(w)} tokens, got {len(g)}"
    return True, ""


def _normalise(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    return value


def _equal(got: Any, want: Any, tol: float | None) -> bool:
    numeric = isinstance(got, (int, float)) and not isinstance(got, bool)
    if isinstance(want, float) and tol is not None and numeric:
        return _close(float(got), want, tol)
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(_equal(a, b, tol) for a, b in zip(got, want, strict=True))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(_equal(got[k], want[k], tol) for k in want)
    return got == want


def returns_match(got_json: str, want: Any, comparison: Comparison = DEFAULT_COMPARISON) -> tuple[bool, str]:
    """Call-based tests, judged as APPS does: equal to the expected value, or to its only
    element (APPS wraps most return values in a one-element list); tuples count as lists."""
    try:
        got = _normalise(json.loads(got_json))
    except (ValueError, RecursionError):
        return False, f"the function's return value is not JSON-serialisable: {_snippet(got_json)}"
    want = _normalise(want)
    tol = comparison.float_tol
    if _equal(got, want, tol) or (isinstance(want, list) and len(want) == 1 and _equal(got, want[0], tol)):
        return True, ""
    return False, f"expected {_snippet(json.dumps(want))}, got {_snippet(got_json)}"
