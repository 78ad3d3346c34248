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
