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


def test_validate_refuses_a_whitebox_teacher_without_weights_naming_the_key(tmp_path):
    api = omniopd("config", "validate", "-c", "configs/demo.yaml", "--set", "loss.method=opd_whitebox",
                  "--set", "loss.whitebox_teacher=emulated")
    assert api.returncode == 2
    assert "loss.whitebox_teacher = 'emulated' is the API teacher teachers.emulated (gemini), which serves text" in api.stderr
    empty = tmp_path / "teacher"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    folder = omniopd("config", "validate", "-c", "configs/demo-opd.yaml", "--set", f"loss.whitebox_teacher={empty}")
    assert folder.returncode == 2
    assert f"loss.whitebox_teacher = {empty}: no model weights there" in folder.stderr and "Traceback" not in folder.stderr
    (empty / "model.safetensors").write_bytes(b"")
    ok = omniopd("config", "validate", "-c", "configs/demo-opd.yaml", "--set", f"loss.whitebox_teacher={empty}")
    assert ok.returncode == 0, ok.stderr


def test_validate_refuses_whitebox_opd_without_a_teacher_naming_the_key():
    result = omniopd("config", "validate", "-c", "configs/demo-opd.yaml", "--set", "loss.whitebox_teacher=null")
    assert result.returncode == 2
    assert "loss.method = opd_whitebox needs loss.whitebox_teacher (a model path)" in result.stderr
