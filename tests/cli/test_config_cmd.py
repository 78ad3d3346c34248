"""`omniopd config` through the real console script."""

from __future__ import annotations

import subprocess
import sys


def omniopd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omniopd", *args], capture_output=True, text=True, timeout=120
    )


def test_validate_accepts_demo_config():
    result = omniopd("config", "validate", "--config", "configs/demo.yaml")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_validate_rejects_misspelled_key_with_exit_2():
    result = omniopd("config", "validate", "-c", "configs/demo.yaml", "--set", "chunking.mm=3")
    assert result.returncode == 2
    assert "chunking.mm: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_show_prints_resolved_defaults():
    result = omniopd("config", "show", "-c", "configs/demo.yaml", "--set", "estimator.n=3")
    assert result.returncode == 0, result.stderr
    assert "n: 3" in result.stdout
    assert "kl_vocab_slice: 8192" in result.stdout


def test_validate_refuses_grpo_without_a_grader_naming_the_key():
    result = omniopd("config", "validate", "-c", "configs/demo-grpo.yaml", "--set", "reward.grader=null")
    assert result.returncode == 2
    assert "loss.method = grpo learns from rule-based rewards, but reward.grader is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_refuses_a_grader_that_cannot_grade_the_dataset(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"id": "a", "prompt": "Compute 1 + 1.", "answer": "2"}\n'
                    '{"id": "b", "prompt": "Print 4.", "tests": [{"input": "", "output": "4"}]}\n')
    fits = omniopd("config", "validate", "-c", "configs/demo-grpo.yaml", "--set", f"data.train={data}")
    assert fits.returncode == 2
    assert ("reward.grader = demo grades each problem against its `answer`, but 1 of the 2 problems of data.train "
            f"({data}) have none (first: id 'b'); set reward.grader to the grader of this dataset (code)") in fits.stderr
    data.write_text('{"id": "a", "prompt": "Compute 1 + 1.", "answer": "2"}\n')
    assert omniopd("config", "validate", "-c", "configs/demo-grpo.yaml", "--set", f"data.train={data}").returncode == 0
