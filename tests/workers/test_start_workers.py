"""scripts/start_workers.sh: the right workers, pinned to their GPUs, pid files, --stop."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from omniopd.cli import app
from tests.conftest import wait_left
from tests.workers.conftest import ROOT, Store, pid_alive, wait_for, write_config

SCRIPT = ROOT / "scripts" / "start_workers.sh"


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=wait_left(300),
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMNIOPD_PYTHON": sys.executable, **(env or {})},
    )


@pytest.mark.services
@pytest.mark.slow
def test_start_workers_starts_one_rollout_worker_per_gpu_and_stops_them(tmp_path, redis_url, redis_prefix):
    config = write_config(
        tmp_path / "run.yaml", broker={"mode": "redis", "url": redis_url, "key_prefix": redis_prefix},
        student={"path": str(tmp_path / "no-model-needed-until-a-task")}, workers={"rollout": 2, "audit": 0},
    )
    assert CliRunner().invoke(app, ["db", "upgrade", "--config", str(config)]).exit_code == 0
    Store(config).engine.dispose()  # the run exists (its learner would create it): workers wait for it
    logs = tmp_path / "out" / "logs"
    started = run_script(str(config), env={"CUDA_VISIBLE_DEVICES": "5,7"})
    pids = {}
    try:
        assert started.returncode == 0, started.stderr
        pids = {p.stem: int(p.read_text()) for p in logs.glob("*.pid")}
        assert set(pids) == {"rollout-0", "rollout-1", "maintenance"}  # workers.audit = 0
        for name in pids:
            wait_for(lambda name=name: " ready." in (logs / f"{name}.log").read_text(), 120, f"{name} to be ready")
        # Each worker logs the devices it was given (its /proc environ is no witness: before
        # the exec it is the script's, after start-up Celery's process title overwrites it).
        for i, gpu in ((0, "5"), (1, "7")):
            assert f"CUDA_VISIBLE_DEVICES={gpu}\n" in (logs / f"rollout-{i}.log").read_text()
        again = run_script(str(config), env={"CUDA_VISIBLE_DEVICES": "5,7"})
        assert again.returncode == 0 and again.stdout.count("already running") == 3
        stopped = run_script(str(config), "--stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not any(pid_alive(pid) for pid in pids.values()) and not list(logs.glob("*.pid"))
        assert all("warm shutdown" in (logs / f"{name}.log").read_text().lower() for name in pids)
    finally:
        for pid in pids.values():
            if pid_alive(pid):
                try:
                    os.killpg(pid, 9)
                except ProcessLookupError:  # not yet its own group leader (setsid not run yet)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, 9)


@pytest.mark.services
@pytest.mark.slow
def test_start_workers_starts_no_audit_worker_for_an_objective_that_declares_no_audits(
    tmp_path, redis_url, redis_prefix
):
    config = write_config(
        tmp_path / "run.yaml", broker={"mode": "redis", "url": redis_url, "key_prefix": redis_prefix},
        loss={"method": "opd_whitebox", "whitebox_teacher": "/m"}, workers={"rollout": 0, "audit": 2},
    )
    assert CliRunner().invoke(app, ["db", "upgrade", "--config", str(config)]).exit_code == 0
    Store(config).engine.dispose()  # the run exists (its learner would create it): workers wait for it
    logs = tmp_path / "out" / "logs"
    started = run_script(str(config))
    pids = {}
    try:
        assert started.returncode == 0, started.stderr
        pids = {p.stem: int(p.read_text()) for p in logs.glob("*.pid")}
        assert set(pids) == {"maintenance"}  # workers.audit = 2, but nothing will be audited
    finally:
        stopped = run_script(str(config), "--stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not any(pid_alive(pid) for pid in pids.values())


def test_start_workers_refuses_more_rollout_workers_than_gpus(tmp_path):
    config = write_config(tmp_path / "run.yaml", workers={"rollout": 3})
    result = run_script(str(config), env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert result.returncode == 2 and "needs 3 GPUs, found 2" in result.stderr
    assert not list((tmp_path / "out" / "logs").glob("*.pid"))


def test_rollout_worker_command_refuses_a_method_with_audits_but_no_teacher(tmp_path):
    config = write_config(tmp_path / "run.yaml", audit={"teacher": ""}, student={"path": "x"})
    result = CliRunner().invoke(app, ["worker", "rollout", "--config", str(config)])
    assert result.exit_code == 2 and "audit.teacher is empty" in result.output


@pytest.mark.services
@pytest.mark.slow
def test_start_workers_starts_the_evaluator_when_eval_every_steps_is_set(tmp_path, redis_url, redis_prefix):
    data = tmp_path / "data"
    data.mkdir()
    (data / "demo.jsonl").write_text('{"id": "d1", "prompt": "Compute 1 + 2.", "answer": "3"}\n')
    config = write_config(
        tmp_path / "run.yaml", broker={"mode": "redis", "url": redis_url, "key_prefix": redis_prefix},
        workers={"rollout": 0, "audit": 0}, eval={"benchmarks": ["demo"], "data_dir": str(data), "every_steps": 5},
    )
    assert CliRunner().invoke(app, ["db", "upgrade", "--config", str(config)]).exit_code == 0
    Store(config).engine.dispose()  # the run exists (its learner would create it): workers wait for it
    logs = tmp_path / "out" / "logs"
    started = run_script(str(config), env={"OMNIOPD_EVALUATOR_GPUS": "3"})
    pids = {}
    try:
        assert started.returncode == 0, started.stderr
        pids = {p.stem: int(p.read_text()) for p in logs.glob("*.pid")}
        assert set(pids) == {"maintenance", "evaluator"}
        wait_for(lambda: " ready." in (logs / "maintenance.log").read_text(), 120, "maintenance to be ready")
        wait_for(lambda: "CUDA_VISIBLE_DEVICES=3\n" in (logs / "evaluator.log").read_text(), 120, "the evaluator")
        assert pid_alive(pids["evaluator"])  # polling for the run's checkpoints (none yet)
    finally:
        stopped = run_script(str(config), "--stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not any(pid_alive(pid) for pid in pids.values())
    assert "evaluator stopped" in (logs / "evaluator.log").read_text()


@pytest.mark.services
def test_a_worker_whose_run_is_not_in_the_store_says_what_it_waits_for_then_refuses(tmp_path, postgres_url):
    config = write_config(tmp_path / "run.yaml", store={"url": postgres_url}, student={"path": "x"})
    assert CliRunner().invoke(app, ["db", "upgrade", "--config", str(config)]).exit_code == 0
    done = subprocess.run(
        [sys.executable, "-m", "omniopd", "worker", "rollout", "-c", str(config), "--wait-for-run", "3"], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250"}, capture_output=True, text=True, timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "waiting for run 'wtest' to appear in the store" in out  # the log line while it waits
    assert "refusing to start: no run named 'wtest' in the store (runs: none yet)" in out
    assert "Start the run's learner first" in out and "check run.name and store.url" in out
    assert " ready." not in out  # it never took work
