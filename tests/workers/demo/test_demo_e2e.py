"""End to end through the real processes: `omniopd demo --smoke` starts the provider emulator,
a rollout worker, an audit worker and the learner around a SQLite store and an embedded
broker; Ctrl-C stops them all, `--resume` finishes the run, and the spend matches the plan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dashboard.browser import check_live_dashboard
from tests.workers.conftest import ROOT, pid_alive, wait_for


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (the demo's work directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and pid_alive(int(entry.name)):
            found.append(cmdline)
    return found


def demo(workdir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "160"}
    return subprocess.Popen(
        [sys.executable, "-m", "omniopd", "demo", "--smoke", "--workdir", str(workdir), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc to find leftover processes")
def test_demo_smoke_interrupted_and_resumed_end_to_end(tmp_path):
    workdir = tmp_path / "demo"
    run_dir = workdir / "smoke-full-s0"
    first = demo(workdir)
    try:
        # The demo serves its dashboard: the page loads in a real browser while the run is live.
        check_live_dashboard(workdir, "demo-smoke-full-s0", tmp_path)
        # Interrupt once the learner has published a checkpoint (real training happened).
        wait_for(lambda: any((run_dir / "checkpoints").glob("step-*")) or first.poll() is not None, 240,
                 "the learner's first checkpoint")
        assert first.poll() is None, first.communicate()[0]
        os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        out, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 130, out
    assert "--resume" in out
    wait_for(lambda: not processes_mentioning(str(workdir)), 10, "every demo process to exit")

    second = demo(workdir, "--resume")
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    assert not processes_mentioning(str(workdir))
    result = json.loads((run_dir / "demo-result.json").read_text())
    assert result["steps"] == 8
    assert 0 <= result["pass_before"] <= 1 and 0 <= result["pass_after"] <= 1
    assert result["spend_usd"] > 0
    # `omniopd plan` (L measured on student samples) and the ledger agree within 20% per trajectory.
    assert result["plan_ratio"] == pytest.approx(1.0, abs=0.2)
    assert (run_dir / "training.png").stat().st_size > 10_000
    assert (run_dir / "plan.json").is_file()
    assert "Pass@1 on held-out problems" in out and "| full |" in out
