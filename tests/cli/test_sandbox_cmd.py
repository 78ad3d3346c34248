"""`omniopd sandbox run` through the real module entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval.sandbox import find_bwrap
from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _needs_bwrap():
    if find_bwrap() is None:
        unavailable("bubblewrap", "bwrap is not on PATH (apt-get install bubblewrap)", "OMNIOPD_REQUIRE_SANDBOX")


def omniopd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "omniopd", *args], capture_output=True, text=True, timeout=100, cwd=REPO, env=env
    )


def test_run_prints_stdout_and_ok_verdict(tmp_path):
    program = tmp_path / "sum.py"
    program.write_text("a, b = map(int, input().split())\nprint(a + b)\n")
    (tmp_path / "in.txt").write_text("3 4\n")
    result = omniopd("sandbox", "run", str(program), "--stdin", str(tmp_path / "in.txt"))
    assert result.returncode == 0, result.stderr
    assert "7" in result.stdout and "ok" in result.stdout


def test_run_reports_time_limit_as_json_with_exit_1(tmp_path):
    program = tmp_path / "spin.py"
    program.write_text("while True:\n    pass\n")
    result = omniopd("sandbox", "run", str(program), "--time-limit", "0.5", "--memory-limit", "128", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "time_limit" and report["language"] == "python"


def test_run_extracts_the_program_from_a_model_response(tmp_path):
    response = tmp_path / "response.md"
    response.write_text("Sure:\n```python\nprint(input()[::-1])\n```\n")
    (tmp_path / "in.txt").write_text("abc\n")
    result = omniopd("sandbox", "run", str(response), "--extract", "--stdin", str(tmp_path / "in.txt"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stdout"] == "cba\n"


def test_unknown_suffix_is_a_usage_error(tmp_path):
    program = tmp_path / "prog.rb"
    program.write_text("puts 1\n")
    result = omniopd("sandbox", "run", str(program))
    assert result.returncode == 2 and "--language" in result.stderr
