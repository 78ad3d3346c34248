"""CodeGrader: the code benchmarks' Grader — sandbox verdicts in the benchmark vocabulary,
per-item limits and float tolerance, and a refusal to run without bubblewrap."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.benchmarks import make_grader
from eval.code import CodeGrader
from eval.datasets import CodeItem, CodeTests, load_items

DATA = Path(__file__).parent / "data"
ADD = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


@pytest.fixture(scope="module")
def items() -> dict[str, CodeItem]:
    return {item.id: item for item in load_items(DATA / "ours_code.jsonl", "code")}


@pytest.mark.sandbox
def test_verdicts_use_the_benchmark_reason_vocabulary(bwrap: str, items: dict[str, CodeItem]) -> None:
    c1, c2 = items["c1"], items["c2"]
    pairs = [
        (c1, "Here it is.\n" + ADD),
        (c1, "```python\nprint(4)\n```"),
        (c1, "I cannot solve this."),
        (c1, "```python\nraise SystemExit(3)\n```"),
        (c2, "```python\ndef total(xs):\n    return sum(xs)\n```"),
        (c2, "```python\ndef total(xs) return 0\n```"),
    ]
    grader = make_grader("code", workers=2)
    try:
        assert isinstance(grader, CodeGrader)
        verdicts = grader.grade(pairs)
    finally:
        grader.close()
    assert [v.reason for v in verdicts] == [
        "pass", "wrong_answer: test 0", "no_code", "runtime_error: test 0", "pass", "compile_error",
    ]
    assert [v.correct for v in verdicts] == [True, False, False, False, True, False]
    assert [v.score for v in verdicts] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert verdicts[0].extracted == "a, b = map(int, input().split())\nprint(a + b)\n" and verdicts[2].extracted is None
    assert "expected '3', got '4'" in verdicts[1].detail and "exit code 3" in verdicts[3].detail
    assert all(v.seconds >= 0 for v in verdicts)


@pytest.mark.sandbox
def test_an_items_own_time_limit_and_float_tolerance_win_over_the_defaults(bwrap: str, items: dict[str, CodeItem]) -> None:
    spin = "```python\nimport time\nt = time.process_time()\nwhile time.process_time() - t < 1.5:\n    pass\nprint(3)\n```"
    tests = CodeTests(("1 2\n",), ("3\n",))
    strict = CodeItem("t1", "Print 3.", tests, time_limit_s=1.0)
    default = CodeItem("t2", "Print 3.", tests)
    pi = items["c3"]  # float_tolerance 1e-6 on "3.14159265"
    with CodeGrader(workers=2, time_limit_s=4.0) as grader:
        verdicts = grader.grade([(strict, spin), (default, spin), (pi, "```python\nprint(3.1415927)\n```"),
                                 (pi, "```python\nprint(3.1416)\n```")])
    assert [v.reason for v in verdicts] == ["time_limit: test 0", "pass", "pass", "wrong_answer: test 0"]


@pytest.mark.sandbox
def test_the_k_samples_of_a_problem_are_graded_each_in_its_own_sandbox(bwrap: str, items: dict[str, CodeItem]) -> None:
    # a sample that leaves a file behind cannot affect the next one
    leave = "```python\nimport os\nprint(3 if not os.path.exists('/tmp/x') else 0)\nopen('/tmp/x', 'w').write('1')\n```"
    with CodeGrader(workers=1) as grader:
        verdicts = grader.grade([(items["c1"], leave)] * 4)
    assert [v.reason for v in verdicts] == ["pass"] * 4


def test_without_bubblewrap_the_grader_refuses_before_anything_is_generated(monkeypatch: pytest.MonkeyPatch) -> None:
    import eval.code
    from eval.sandbox import SandboxUnavailable

    monkeypatch.setattr(eval.code, "find_bwrap", lambda: None)
    monkeypatch.setattr(eval.code, "sandbox_python", lambda: "/usr/bin/python3")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        CodeGrader(workers=1)
