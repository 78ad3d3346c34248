"""Test-suite formats and the output judge (no sandbox needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.code_tests import (
    Comparison,
    TestCase,
    TestSuite,
    outputs_match,
    parse_tests,
    returns_match,
)

DATA = Path(__file__).parent / "data"


def row(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def test_every_fixture_format_is_recognised():
    sizes = {name: len(parse_tests(row(name)).cases) for name in
             ["apps_stdin", "apps_call", "codecontests", "codeforces", "codeforces_float", "codeforces_file_io", "taco"]}  # fmt: skip
    assert sizes == {"apps_stdin": 4, "apps_call": 4, "codecontests": 4, "codeforces": 4,
                     "codeforces_float": 3, "codeforces_file_io": 2, "taco": 2}  # fmt: skip


def test_apps_lines_lists_are_joined_and_call_based_keeps_arguments():
    stdin = parse_tests(row("apps_stdin")["input_output"])
    assert stdin.cases[3].input == "4\n2 2 2 2\n" and stdin.cases[3].output == "8\n"
    call = parse_tests(row("apps_call"))
    assert call.fn_name == "two_sum" and call.cases[0].input == [[2, 7, 11, 15], 9]


def test_problem_limits_are_read():
    cc = parse_tests(row("codecontests"))
    assert (cc.time_limit_s, cc.memory_limit_mb) == (2.0, 256)
    cf = parse_tests(row("codeforces"))
    assert (cf.time_limit_s, cf.memory_limit_mb, cf.file_io) == (1.0, 256, False)
    assert parse_tests(row("codeforces_file_io")).file_io


def test_codeforces_plain_list_and_json_string_forms():
    tests = [{"input": "1\n", "output": "2\n"}]
    assert parse_tests(tests).cases == parse_tests(json.dumps(tests)).cases


def test_apps_problem_without_tests_parses_to_an_empty_suite():
    assert parse_tests({"input_output": ""}).cases == ()


def test_unknown_format_says_what_is_expected():
    with pytest.raises(ValueError, match="CodeContests"):
        parse_tests({"foo": 1})


def test_call_based_suite_requires_argument_lists():
    with pytest.raises(ValueError, match="argument lists"):
        TestSuite(cases=(TestCase("1 2\n", 3),), fn_name="add")


def test_token_comparison_ignores_whitespace_but_not_content():
    assert outputs_match("1 2\n3\n", "1 2 3")[0]
    assert outputs_match("1  2 \n\n", "1 2\n")[0]
    ok, why = outputs_match("1 2 4", "1 2 3")
    assert not ok and "token 3" in why
    assert not outputs_match("1 2", "1 2 3")[0]


def test_lines_and_exact_modes():
    lines = Comparison("lines")
    assert outputs_match("a b  \nc\n\n", "a b\nc", lines)[0]
    assert not outputs_match("a  b\nc", "a b\nc", lines)[0]
    exact = Comparison("exact")
    assert outputs_match("x\n", "x\n", exact)[0] and not outputs_match("x", "x\n", exact)[0]


def test_float_tolerance_is_absolute_or_relative_and_never_for_integers():
    tol = Comparison("tokens", 1e-6)
    assert outputs_match("3.141592654", "3.1415926536", tol)[0]
    assert outputs_match("3141592.654", "3141592.6535897931", tol)[0]  # relative
    assert outputs_match("0.0000001", "0.0", tol)[0]  # absolute
    assert not outputs_match("3.1416", "3.1415926536", tol)[0]
    assert not outputs_match("1000001", "1000000", tol)[0]  # integer tokens are exact
    assert not outputs_match("nan", "1.5", tol)[0]
    assert not outputs_match("3.141592654", "3.1415926536", Comparison("tokens", None))[0]


def test_call_based_returns_match_like_apps():
    assert returns_match("[0, 1]", [[0, 1]])[0]  # APPS wraps return values in a list
    assert returns_match("[0, 1]", [0, 1])[0]
    assert returns_match("true", [True])[0]
    assert not returns_match("[1, 0]", [[0, 1]])[0]
    assert returns_match("0.30000000000000004", [0.3], Comparison("tokens", 1e-9))[0]
    assert not returns_match("0.30000000000000004", [0.3], Comparison("tokens", None))[0]
    ok, why = returns_match("not json", [1])
    assert not ok and "JSON" in why


def test_grading_options_come_from_the_eval_config():
    from eval.code import grading_options
    from omniopd.config import EvalConfig

    options = grading_options(EvalConfig(code_time_limit_s=2.5, code_memory_limit_mb=512))
    assert options == {"time_limit_s": 2.5, "memory_limit_mb": 512, "allow_unsandboxed": False}
