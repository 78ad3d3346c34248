"""Answer extraction per the paper's Table 7 template and the last \\boxed{}."""

from __future__ import annotations

import pytest

from eval.math import TABLE7_TEMPLATE, extract_answer, last_boxed, math_prompt


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Some work.\nAnswer: 42", "42"),
        ("Some work.\nAnswer: $42$", "42"),
        ("Some work.\nAnswer: $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("Work\n**Answer:** 7", "7"),
        ("Work\n**Answer**: 7", "7"),
        ("Work\nFinal Answer: \\(x=3\\)", "x=3"),
        ("Work\nanswer: 12.", "12"),
        ("Answer: 1\nOn reflection that was wrong.\nAnswer: 2", "2"),
        ("Work\nAnswer:\n\n$$\\left( 3, \\frac{\\pi}{2} \\right)$$", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("Answer: $1$ and $2$", "$1$ and $2$"),
        ("Answer: 3.5", "3.5"),
        ("Answer: 10\\%", "10\\%"),
    ],
)
def test_answer_line_of_table7_template_is_extracted_and_cleaned(response: str, expected: str) -> None:
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("so the result is \\boxed{5}.", "5"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("nested \\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
        ("escaped braces \\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\fbox{7}", "7"),
        ("no braces \\boxed 9 done", "9"),
    ],
)
def test_last_boxed_answer_is_used_when_there_is_no_answer_line(response: str, expected: str) -> None:
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("\\boxed{3}\nAnswer: 4\nsee \\boxed{5}", "5"),  # a later box revises the Answer: line
        ("\\boxed{18}\nActually Answer: 19", "19"),  # a later Answer: revises the box
        ("Answer: 18\nWait, let me recheck... Answer: 19", "19"),  # a marker inside a line counts
        ("We conclude. Answer: 19", "19"),
        ("Answer: so \\boxed{5}.", "5"),  # a box inside the Answer: line is that line's answer
        ("\\boxed{\\text{Answer: 5}}", "\\text{Answer: 5}"),  # a marker inside a box is the box's text
        ("Answer: 19\nTo double-check the answer: 19 - 1 = 18 holds.", "19"),  # lower-case prose is no marker
        ("Answer: 18\nAnswer:", "18"),  # an empty final marker (truncation) states nothing
    ],
)
def test_the_answer_stated_last_wins_whatever_its_form(response: str, expected: str) -> None:
    assert extract_answer(response) == expected


def test_truncated_box_falls_back_to_an_earlier_complete_one() -> None:
    assert last_boxed("\\boxed{1} and then \\boxed{\\frac{2}{") == "1"


@pytest.mark.parametrize("response", ["", "I do not know.", "The answer is unclear", "\\boxed{unclosed"])
def test_response_without_answer_line_or_box_has_no_answer(response: str) -> None:
    assert extract_answer(response) is None


def test_prompt_is_the_papers_table7_template() -> None:
    prompt = math_prompt("What is $1+1$?")
    assert prompt.startswith("Solve the following math problem step by step. The last line of your response should be of the form Answer: $Answer")
    assert prompt.endswith("answer to the problem.\n\nWhat is $1+1$?")
    assert "{Question}" in TABLE7_TEMPLATE
