"""grade_code on real-format problems (tests/eval/data): right solutions pass, wrong ones
fail with the right reason, on the right test, and grading stops there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eval.code import GradingPool, grade_code
from eval.code_tests import Comparison
from eval.sandbox import Limits

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(120)]

DATA = Path(__file__).parent / "data"
QUICK = Limits(time_s=1.0, memory_mb=256, output_bytes=1 << 20, host_grace_s=2.0)


def row(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def py(code: str) -> str:
    return f"Here is my solution.\n\n```python\n{code}```\n\nIt runs in O(n)."


def grade(response: str, tests, **kwargs):
    kwargs.setdefault("limits", QUICK)
    return grade_code(response, tests, **kwargs)


THEATRE_RIGHT = "n, m, a = map(int, input().split())\nprint(((n + a - 1) // a) * ((m + a - 1) // a))\n"
THEATRE_WRONG = "n, m, a = map(int, input().split())\nprint((n // a) * (m // a))\n"


def test_apps_stdin_correct_solution_passes(bwrap):
    data = row("apps_stdin")
    solution = json.loads(data["solutions"])[0]
    verdict = grade(py(solution), data["input_output"], benchmark="apps")
    assert verdict.status == "pass", verdict
    assert verdict.tests_passed == verdict.tests_total == 4
    assert verdict.language == "python"


def test_apps_stdin_wrong_solution_fails_on_the_first_bad_test_and_stops(bwrap):
    wrong = "n = int(input())\nxs = list(map(int, input().split()))\nprint(sum(x for x in xs if x > 0 and x % 2 == 0))\n"
    verdict = grade(py(wrong), row("apps_stdin")["input_output"], benchmark="apps")
    assert verdict.status == "wrong_answer"
    assert verdict.test_index == 2 and verdict.tests_passed == 2
    assert "wrong answer on test 2" in verdict.reason and "'8'" in verdict.reason


def test_taco_row_is_graded_like_apps(bwrap):
    data = row("taco")
    assert grade(py("print(input().upper())\n"), data, benchmark="taco").passed
    assert grade(py("print(input().title())\n"), data, benchmark="taco").status == "wrong_answer"


def test_apps_call_based_function_passes(bwrap):
    data = row("apps_call")
    verdict = grade(py(json.loads(data["solutions"])[0]), data["input_output"], benchmark="apps")
    assert verdict.status == "pass", verdict


def test_apps_call_based_solution_class_and_tuple_return_pass(bwrap):
    solution = (
        "from typing import List\n"
        "class Solution:\n"
        "    def two_sum(self, nums: List[int], target: int):\n"
        "        print('debug output is ignored')\n"
        "        for i in range(len(nums)):\n"
        "            for j in range(i + 1, len(nums)):\n"
        "                if nums[i] + nums[j] == target:\n"
        "                    return (i, j)\n"
    )
    verdict = grade(py(solution), row("apps_call")["input_output"], benchmark="apps")
    assert verdict.status == "pass", verdict


def test_apps_call_based_wrong_return_value_is_a_wrong_answer(bwrap):
    wrong = "def two_sum(nums, target):\n    return [0, 1]\n"
    verdict = grade(py(wrong), row("apps_call")["input_output"], benchmark="apps")
    assert verdict.status == "wrong_answer" and verdict.test_index == 1


def test_apps_call_based_missing_function_is_a_runtime_error(bwrap):
    verdict = grade(py("def other(nums, target):\n    return [0, 1]\n"), row("apps_call")["input_output"])
    assert verdict.status == "runtime_error" and verdict.test_index == 0
    assert "two_sum" in verdict.detail


def test_codecontests_python_runs_public_private_and_generated_tests(bwrap):
    data = row("codecontests")
    verdict = grade(py(data["solutions"]["solution"][0]), data, benchmark="codecontests")
    assert verdict.status == "pass" and verdict.tests_total == 4


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed (C++ grading needs it)")
def test_cpp_solution_compiles_in_the_sandbox_and_passes(bwrap):
    cpp = (
        "```cpp\n#include <iostream>\n#include <string>\n#include <algorithm>\n"
        "int main() { int t; std::cin >> t; std::string s;\n"
        "  while (t--) { std::cin >> s; std::reverse(s.begin(), s.end()); std::cout << s << '\\n'; } }\n```\n"
    )
    verdict = grade(cpp, row("codecontests"), benchmark="codecontests")
    assert verdict.status == "pass", verdict
    assert verdict.language == "cpp" and verdict.compile_time_s > 0


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed (C++ grading needs it)")
def test_cpp_compile_error_is_reported_with_the_compiler_message(bwrap):
    verdict = grade("```c++\nint main() { return undefined_name; }\n```", row("codecontests"))
    assert verdict.status == "compile_error"
    assert "undefined_name" in verdict.detail


def test_python_syntax_error_is_a_compile_error(bwrap):
    verdict = grade(py("print('unclosed'\n"), row("codeforces"))
    assert verdict.status == "compile_error" and "SyntaxError" in verdict.detail


def test_codeforces_right_and_wrong_solutions(bwrap):
    data = row("codeforces")
    assert grade(py(THEATRE_RIGHT), data, benchmark="codeforces").status == "pass"
    wrong = grade(py(THEATRE_WRONG), data, benchmark="codeforces")
    assert (wrong.status, wrong.test_index, wrong.tests_passed) == ("wrong_answer", 1, 1)


def test_codeforces_file_io_problem_reads_input_txt(bwrap):
    right = "a, b = map(int, open('input.txt').read().split())\nopen('output.txt', 'w').write(f'{a + b}\\n')\n"
    assert grade(py(right), row("codeforces_file_io")).status == "pass"


def test_float_answers_pass_within_tolerance_only(bwrap):
    data = row("codeforces_float")
    right = "import math\nr = float(input())\nprint('%.9f' % (math.pi * r * r))\n"
    assert grade(py(right), data, benchmark="codeforces").status == "pass"
    strict = grade(py(right), data, comparison=Comparison("tokens", None))
    assert strict.status == "wrong_answer"  # 3.141592654 != 3.1415926536 character for character
    sloppy = grade(py("r = float(input())\nprint(3.14 * r * r)\n"), data, benchmark="codeforces")
    assert sloppy.status == "wrong_answer" and sloppy.test_index == 0


def test_time_limit_verdict(bwrap):
    verdict = grade(py("input()\nwhile True:\n    pass\n"), row("codeforces"), time_limit_s=0.5)
    assert verdict.status == "time_limit" and verdict.test_index == 0
    assert "time limit exceeded on test 0" in verdict.reason


def test_memory_limit_verdict(bwrap):
    verdict = grade(py("x = bytearray(10**9)\n"), row("codeforces"), memory_limit_mb=128)
    assert verdict.status == "memory_limit"


def test_runtime_error_verdict_keeps_the_traceback(bwrap):
    verdict = grade(py("n, m, a = map(int, input().split())\nprint(n // (a - a))\n"), row("codeforces"))
    assert verdict.status == "runtime_error" and "exit code 1" in verdict.reason
    assert "ZeroDivisionError" in verdict.detail


def test_output_flood_verdict(bwrap):
    verdict = grade(py("while True:\n    print('x' * 10000)\n"), row("codeforces"))
    assert verdict.status == "output_limit"


def test_no_code_verdicts(bwrap):
    data = row("codeforces")
    assert grade("I think the answer is to use ceiling division.", data).status == "no_code"
    java = "```java\nclass Main { public static void main(String[] a) {} }\n```"
    assert grade(java, data).status == "no_code"
    assert grade(py(THEATRE_RIGHT), data, language="cpp").status == "no_code"


def test_expected_outputs_never_enter_the_sandbox(bwrap):
    marker = "EXPECTED-7d41c2e9"
    tests = [{"input": "hello\n", "output": f"{marker}\n"}]
    snoop = (
        "import os, sys\n"
        "seen = sys.stdin.read()\n"
        "for d, dirs, files in os.walk('/'):\n"
        "    if d.startswith(('/proc', '/usr', '/dev')):\n"
        "        dirs[:] = []\n"
        "        continue\n"
        "    for f in files:\n"
        "        path = os.path.realpath(os.path.join(d, f))\n"
        "        if path.startswith('/usr') or not os.path.isfile(path):\n"
        "            continue\n"
        "        try:\n"
        "            seen += open(path, errors='ignore').read()\n"
        "        except OSError:\n"
        "            pass\n"
        "tag = 'EXPECTED-'\n"
        "print(seen[seen.find(tag):seen.find(tag) + 17] if seen.count(tag) > 1 else 'not found')\n"
    )
    verdict = grade(py(snoop), tests)
    assert verdict.status == "wrong_answer" and "got 'not'" in verdict.reason


def test_pool_grades_many_samples_in_order(bwrap):
    data = row("codeforces")
    responses = [py(THEATRE_RIGHT), py(THEATRE_WRONG), "no code here", py(THEATRE_RIGHT)]
    with GradingPool(workers=2) as pool:
        verdicts = pool.grade_many(responses, [data] * len(responses), limits=QUICK, benchmark="codeforces")
    assert [v.status for v in verdicts] == ["pass", "wrong_answer", "no_code", "pass"]


def test_grading_stops_at_the_first_failure_and_kills_the_test_running_ahead(slot):
    tests = [{"input": "first\n", "output": "2\n"}, {"input": "sleep\n", "output": "1\n"}]
    solution = "import time\nif input() == 'sleep':\n    time.sleep(3600)\nprint(1)\n"
    verdict = grade(py(solution), tests, slot=slot)
    assert (verdict.status, verdict.test_index, verdict.tests_passed) == ("wrong_answer", 0, 0)
    # the slot fixture fails if the sleeping second test survived


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed (C++ grading needs it)")
def test_compiler_bomb_is_a_compile_error_within_the_compile_limits(bwrap):
    bomb = '```cpp\n#include "/dev/zero"\nint main() {}\n```'
    limits = Limits(compile_time_s=2, compile_memory_mb=512)
    verdict = grade(bomb, row("codeforces"), limits=limits)
    assert verdict.status == "compile_error"


def test_problem_without_tests_cannot_be_graded():
    with pytest.raises(ValueError, match="no tests"):
        grade_code(py("print(1)\n"), {"input_output": ""})
