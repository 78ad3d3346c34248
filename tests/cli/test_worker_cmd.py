"""`omniopd worker maintenance` as a real process in embedded mode: it starts the run's
broker, sweeps on schedule, shows up in `omniopd status`, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omniopd.cli import app
from tests.workers.conftest import pid_alive, wait_for
from workers.broker import find_embedded_broker

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_maintenance_worker_runs_sweeps_and_stops_cleanly_on_sigterm(tmp_path):
    config = tmp_path / "run.yaml"
    out = tmp_path / "out"
    config.write_text(f"run: {{name: maint, output_dir: {out}}}\nmaintenance: {{interval_s: 1}}\n")
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade", "--config", str(config)]).exit_code == 0
    log = tmp_path / "worker.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "omniopd", "worker", "maintenance", "--config", str(config)], cwd=ROOT,
            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        wait_for(lambda: log.read_text().count("maintenance: run 'maint'") >= 2, 90, "two scheduled sweeps")
        broker = find_embedded_broker(out)
        assert broker is not None and broker.owner_pid == proc.pid
        status = runner.invoke(app, ["status", "--config", str(config), "--run", "maint", "--json"])
        assert status.exit_code == 2 and "no run named 'maint'" in status.output  # the learner creates runs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
        wait_for(lambda: not pid_alive(broker.server_pid), 15, "the embedded broker to stop")
        assert find_embedded_broker(out) is None
        assert "is not in the store yet" in log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_maintenance_once_reports_what_it_did(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"run: {{name: once, output_dir: {tmp_path / 'out'}}}\n")
    runner = CliRunner()
    refused = runner.invoke(app, ["worker", "maintenance", "--config", str(config), "--once"])
    assert refused.exit_code == 2 and "omniopd db upgrade --config" in refused.output
    assert runner.invoke(app, ["db", "upgrade", "--config", str(config)]).exit_code == 0
    from db.store import open_store
    from omniopd.config import load_config
    from workers.store import ensure_run

    cfg = load_config(config)
    with open_store(cfg) as store, store.sessions.begin() as s:
        ensure_run(s, cfg)
    result = runner.invoke(app, ["worker", "maintenance", "--config", str(config), "--once"])
    assert result.exit_code == 0, result.output
    assert "run 'once': expired 0 reservations" in result.output
    assert find_embedded_broker(tmp_path / "out") is None  # the broker it needed was stopped again


def test_rollout_worker_refuses_a_reward_grader_that_cannot_start(tmp_path, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text(f"run: {{name: code-rl, output_dir: {tmp_path / 'out'}}}\nstudent: {{path: /models/s}}\n"
                      "loss: {method: grpo}\nreward: {grader: code}\nrollout: {samples_per_prompt: 2}\n")
    monkeypatch.setenv("OMNIOPD_SANDBOX_PYTHON", str(tmp_path / "no-python"))  # the sandbox cannot run here
    result = CliRunner().invoke(app, ["worker", "rollout", "--config", str(config)])
    assert result.exit_code == 2
    assert "reward.grader = code cannot start in this worker: the sandbox needs a system Python 3" in result.output
