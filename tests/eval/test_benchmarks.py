"""The benchmark registry: names, kinds, prompts, graders."""

from __future__ import annotations

import pytest

from eval.benchmarks import (
    BENCHMARKS,
    GRADERS,
    code_prompt,
    get_benchmark,
    make_grader,
    parse_benchmarks,
)
from eval.datasets import CodeItem, CodeTests, MathItem
from eval.results import Verdict
from omniopd.config import EvalConfig


def test_registry_holds_the_papers_benchmarks_and_the_demo_task() -> None:
    assert list(BENCHMARKS) == ["math500", "aime24", "aime25", "amc23", "olympiadbench", "apps", "codecontests", "codeforces", "taco", "demo"]
    assert {b.kind for b in BENCHMARKS.values()} == {"math", "code", "demo"}
    for name in EvalConfig.model_fields["benchmarks"].description.split(": ")[1].rstrip(".").split(", "):
        assert name in BENCHMARKS  # every name the config documents exists


def test_benchmark_specs_expand_groups_and_reject_unknown_names() -> None:
    assert [b.name for b in parse_benchmarks("math500,aime24")] == ["math500", "aime24"]
    assert [b.name for b in parse_benchmarks("code")] == ["apps", "codecontests", "codeforces", "taco"]
    with pytest.raises(KeyError, match="unknown benchmark 'gsm8k'"):
        get_benchmark("gsm8k")


def test_prompts_per_kind() -> None:
    item = MathItem("a", "What is 1+1?", "2")
    assert get_benchmark("aime24").prompt(item).endswith("\n\nWhat is 1+1?")
    assert get_benchmark("demo").prompt(MathItem("d", "2 + 3 =", "5")) == "2 + 3 ="
    call = CodeItem("c", "Sum a list.", CodeTests(([[1]],), (1,), fn_name="total"), starter_code="def total(xs):")
    prompt = code_prompt(call)
    assert "Complete the given starter code" in prompt and "def total(xs):" in prompt
    stdin = CodeItem("s", "Print 1.", CodeTests(("",), ("1\n",)))
    assert "standard input" in get_benchmark("apps").prompt(stdin)


class _FakeGrader:
    def __init__(self, **options):
        self.options = options

    def grade(self, pairs):
        return [Verdict(r == item.answer, "correct" if r == item.answer else "wrong", r, 0.0) for item, r in pairs]

    def close(self):
        pass


def test_make_grader_builds_registered_factories(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(GRADERS, "math", _FakeGrader)
    grader = make_grader("math", workers=1)
    assert grader.options == {"workers": 1}
    assert [v.correct for v in grader.grade([(MathItem("a", "p", "2"), "2"), (MathItem("b", "p", "2"), "3")])] == [True, False]
    monkeypatch.setitem(GRADERS, "math", "eval.nonexistent:Grader")
    with pytest.raises(RuntimeError, match=r"cannot load eval\.nonexistent:Grader"):
        make_grader("math")
