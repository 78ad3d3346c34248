"""Math grading: math-verify with our rules, every regression row, the second grader
and its disagreement log, and the external timeout on a pathological answer."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from eval.math import MathGrader, extract_answer, verify_answer
from eval.math_check import simple_equal

REGRESSIONS = Path(__file__).parents[2] / "eval" / "data" / "math_regressions.jsonl"
ALL_ROWS = [json.loads(line) for line in REGRESSIONS.read_text().splitlines() if line.strip()]
ROWS = [r for r in ALL_ROWS if "prediction" in r]  # an extracted answer against the gold
RESPONSES = [r for r in ALL_ROWS if "response" in r]  # a whole response: extraction, then grading


def test_regression_file_is_well_formed() -> None:
    assert len(ROWS) >= 40 and len(RESPONSES) >= 15
    for row in ALL_ROWS:
        assert set(row) <= {"gold", "prediction", "response", "extracted", "expected", "note", "rule"}
        assert ("prediction" in row) != ("response" in row)
        assert ("extracted" in row) == ("response" in row)
        assert isinstance(row["expected"], bool) and row["note"]
    assert {r["rule"] for r in ROWS if "rule" in r} == {"R1", "R2", "R3", "R4"}


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['gold']} | {r['prediction']}" for r in ROWS])
def test_every_regression_row_gets_the_verdict_we_want(row: dict) -> None:
    assert verify_answer(row["gold"], row["prediction"]) is row["expected"], row["note"]


@pytest.mark.parametrize("row", RESPONSES, ids=[r["response"][:40] for r in RESPONSES])
def test_every_response_row_is_graded_by_its_final_answer(row: dict) -> None:
    """Revisions, truncations and mixed forms: the answer stated last is extracted, then graded."""
    extracted = extract_answer(row["response"])
    assert extracted == row["extracted"], row["note"]
    assert verify_answer(row["gold"], extracted) is row["expected"], row["note"]


@pytest.mark.parametrize("row", [r for r in ROWS if "rule" in r], ids=lambda r: f"{r['rule']}: {r['prediction']}")
def test_each_rule_is_still_needed_by_plain_math_verify(row: dict) -> None:
    """Plain math-verify misgrades every row a rule exists for. If this fails after a
    math-verify upgrade, the rule may be obsolete: check and remove it (eval/math.py)."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    plain = verify(parse(f"${row['gold']}$", parsing_timeout=None), parse(f"${row['prediction']}$", parsing_timeout=None), timeout_seconds=None)
    assert plain is not row["expected"]


def test_gold_goes_first_because_math_verify_is_not_symmetric() -> None:
    # an interval gold accepts the inequality; the reverse is math-verify's own rule
    assert verify_answer("(1,2)", "1<x<2")
    assert verify_answer("1<x<2", "(1,2)")


@pytest.mark.parametrize(
    ("gold", "answer", "expected"),
    [("2", "2", True), ("\\frac{1}{2}", "0.5", True), ("4\\frac{1}{2}", "\\frac{9}{2}", True), ("033", "33", True),
     ("3, 4", "4, 3", True), ("(3,4)", "(4,3)", False), ("5", "5\\text{ cm}", True), ("1,000", "1000", True),
     ("\\sqrt{2}", "1.41421356", True), ("2", "3", False), ("x^2", "(x)^2", False)],
)
def test_second_grader_compares_normalised_strings_numbers_and_lists(gold: str, answer: str, expected: bool) -> None:
    assert simple_equal(gold, answer) is expected


def test_second_grader_never_evaluates_code() -> None:
    assert simple_equal("0", "__import__('os').system('true')") is False
    assert simple_equal("1", "9**9**9**9") is False  # refused, not computed


def test_grader_grades_in_workers_and_logs_disagreements(tmp_path: Path) -> None:
    log = tmp_path / "review" / "disagreements.jsonl"
    golds = ["5", "(1,2)", "\\frac{1}{2}", "7"]
    responses = ["Answer: 5", "Answer: $1<x<2$", "so \\boxed{0.5}", "I give up"]
    with MathGrader(workers=2, timeout_s=30, disagreements=log) as grader:
        verdicts = grader.grade_answers(golds, responses, item_ids=["a", "b", "c", "d"])
    assert [v.correct for v in verdicts] == [True, True, True, False]
    assert [v.reason for v in verdicts] == ["correct", "correct", "correct", "no_answer"]
    assert [v.extracted for v in verdicts] == ["5", "1<x<2", "0.5", None]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["item_id"], r["math_verify"], r["check"]) for r in rows] == [("b", True, False)]


def test_grader_grades_a_revised_response_by_its_final_answer() -> None:
    """The issue's three cases, through the grader every evaluation uses."""
    responses = ["Answer: 18\nWait, let me recheck... Answer: 19", "We conclude. Answer: 19", "\\boxed{18}\nActually Answer: 19"]
    with MathGrader(workers=1, timeout_s=30, check=False) as grader:
        verdicts = grader.grade_answers(["19"] * 3, responses)
    assert [(v.correct, v.reason, v.extracted) for v in verdicts] == [(True, "correct", "19")] * 3


def test_pathological_answer_times_out_and_the_stuck_worker_is_killed() -> None:
    with MathGrader(workers=1, timeout_s=2.0, check=False) as grader:
        verdicts = grader.grade_answers(["5", "3"], ["Answer: 99999999!", "Answer: 3"])
        assert grader.pool.timeouts == 1
        (killed,) = grader.pool.killed_pids
    assert verdicts[0].reason == "timeout" and not verdicts[0].correct and verdicts[0].extracted == "99999999!"
    assert verdicts[1].correct  # graded by the replacement worker
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)


def test_regression_rows_keep_their_verdicts_through_extraction_and_the_pool() -> None:
    with MathGrader(workers=2, timeout_s=30, check=False) as grader:
        verdicts = grader.grade_answers([r["gold"] for r in ROWS], [f"Work.\nAnswer: {r['prediction']}" for r in ROWS])
    wrong = [(r["gold"], r["prediction"]) for r, v in zip(ROWS, verdicts, strict=True) if v.correct is not r["expected"]]
    assert wrong == []
