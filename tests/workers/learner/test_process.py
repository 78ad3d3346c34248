"""The real `omniopd learner` process, killed and stopped: exactly-once training over the
whole run across a SIGKILL mid-step and a restart, then a clean SIGTERM (one run, two
processes: each start costs tens of seconds of imports on a busy 2-core machine). Bundles are written into the
store by the test; the driver is the fake StoreDriver, injected with --driver."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import PolicyVersion, Trajectory, utcnow
from db.repo_bundles import learner_steps
from db.session import make_session_factory
from omniopd.train import checkpoint_root, list_checkpoints
from tests.workers.conftest import Store, pid_alive, wait_for, write_config
from tests.workers.learner_fakes import insert_bundles

pytestmark = pytest.mark.slow

LEARNER_ID = "learner-under-test"


def setup_run(tmp_path: Path, model_dir: str, count: int, **learner) -> tuple[Path, Store, list[int]]:
    path = write_config(
        tmp_path / "run.yaml",
        student={"path": model_dir, "device": "cpu"},
        learner={"batch_size": 2, "max_steps": 100, "lr": 1e-3, "tensorboard": False, "poll_s": 0.05,
                 "learner_id": LEARNER_ID, "max_policy_lag": 100, **learner},
        loss={"normalisation": "token"},
    )
    store = Store(path)
    # Long enough completions make a step last long enough (~0.5 s) to be caught in the middle.
    ids = insert_bundles(store.sessions, store.run_id, count, tokens=400, prompt_tokens=8,
                         chunks=((10, 60, "audited"), (150, 200, "audited"), (300, 350, "skipped_budget")))
    return path, store, ids


def start_learner(processes, config: Path, log: Path):
    return processes(["-m", "omniopd", "learner", "--config", str(config), "--no-progress",
                      "--driver", "tests.workers.learner_fakes:StoreDriver"], log)


def progress(reader, since=None) -> tuple[int, int]:
    """(latest step recorded [after `since`], bundles held by the learner right now)."""
    with reader.begin() as s:
        held = s.scalar(select(func.count()).select_from(Trajectory).where(
            Trajectory.claimed_by == LEARNER_ID, Trajectory.state == "ready"))
        steps = [r for r in learner_steps(s, run_id=1) if since is None or r.created_at >= since]
        return (steps[-1].step if steps else 0), held


def wait_mid_step(proc, reader, log: Path, *, recorded: int, since=None) -> None:
    """Return once step `recorded` is in the store (recorded after `since`) and the next
    one's bundles are claimed: the learner is between claim and record of step recorded + 1."""
    def ready():
        assert proc.poll() is None, f"the learner exited early ({proc.returncode}):\n{log.read_text()[-3000:]}"
        step, held = progress(reader, since)
        assert step <= recorded, f"missed the window: step {step} recorded already"
        return step == recorded and held == 2
    wait_for(ready, 240, f"step {recorded} recorded and step {recorded + 1} under way", interval=0.01)


def test_sigkill_mid_step_restart_then_sigterm_train_every_bundle_exactly_once(processes, tmp_path, tiny_model_dir):
    """Process 1 is SIGKILLed while step 4 runs (step 3 recorded, checkpoint at step 2).
    Process 2 resumes from the checkpoint, trains step 3 again and gets SIGTERM during the
    last step: it finishes it, records it, checkpoints, stops the broker and exits 0."""
    config, store, ids = setup_run(tmp_path, tiny_model_dir, 8, checkpoint_every=2)
    reader = make_session_factory(store.engine, read_only=True)
    root = checkpoint_root(store.config.run.output_dir)
    log = tmp_path / "learner.log"
    first = start_learner(processes, config, log)
    wait_mid_step(first, reader, log, recorded=3)  # step 3 recorded but not checkpointed; step 4 in flight
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    killed_at = utcnow()
    assert progress(reader) == (3, 2)  # the kill landed between claim and record
    assert [c.step for c in list_checkpoints(root)] == [2]

    second = start_learner(processes, config, log)
    wait_mid_step(second, reader, log, recorded=3, since=killed_at)  # step 3 trained again, step 4 (the last) in flight
    broker = json.loads((Path(store.config.run.output_dir) / "broker" / "embedded.json").read_text())
    assert broker["owner_pid"] == second.pid  # the learner owns the run's embedded broker
    second.send_signal(signal.SIGTERM)
    assert second.wait(120) == 0, log.read_text()[-3000:]
    assert "learner stopped: stop requested" in log.read_text()

    with reader.begin() as s:
        steps = learner_steps(s, run_id=store.run_id)
        consumed = dict(s.execute(select(Trajectory.id, Trajectory.consumed_step).where(Trajectory.run_id == store.run_id)).all())
        versions = [tuple(v) for v in s.execute(select(PolicyVersion.version, PolicyVersion.step).where(
            PolicyVersion.run_id == store.run_id).order_by(PolicyVersion.version))]
        held = s.scalar(select(func.count()).select_from(Trajectory).where(Trajectory.claimed_by.is_not(None)))
    # none lost, none repeated: every bundle consumed by exactly one of the surviving steps
    assert sorted(consumed) == sorted(ids) and all(v is not None for v in consumed.values())
    assert [r.step for r in steps] == [1, 2, 3, 4] and [r.n_bundles for r in steps] == [2] * 4
    assert sorted(consumed.values()) == [1, 1, 2, 2, 3, 3, 4, 4] and held == 0
    # training continued from the checkpoint at step 2: step 3 was trained again by process 2
    assert [r.metrics["resumed_from_step"] for r in steps] == [0, 0, 2, 2]
    assert steps[2].created_at >= killed_at and steps[1].created_at < killed_at
    assert [r.policy_version for r in steps] == [0, 0, 1, 1]
    # SIGTERM: the step in flight was finished, checkpointed and published
    assert versions == [(0, 0), (1, 2), (2, 4)] and [c.step for c in list_checkpoints(root)] == [2, 4]
    deadline = time.monotonic() + 10
    while pid_alive(broker["server_pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(broker["server_pid"])


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_learner_resumes_from_the_intact_one(
        processes, tmp_path, tiny_model_dir):
    """The newest checkpoint's weights are cut short (a disk that filled): the restarted
    learner says which checkpoint is damaged and why, resumes from the one before, trains
    the lost step again and finishes; no traceback."""
    config, store, _ = setup_run(tmp_path, tiny_model_dir, 6, checkpoint_every=1, max_steps=2)
    reader = make_session_factory(store.engine, read_only=True)
    root = checkpoint_root(store.config.run.output_dir)
    log = tmp_path / "learner.log"
    first = start_learner(processes, config, log)
    assert first.wait(240) == 0, log.read_text()[-3000:]
    weights = root / "step-00000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    second = processes(["-m", "omniopd", "learner", "--config", str(config), "--no-progress", "--set",
                        "learner.max_steps=3", "--driver", "tests.workers.learner_fakes:StoreDriver"], log)
    assert second.wait(240) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text
    assert f"checkpoint {root / 'step-00000002'} is damaged (model.safetensors is " in text
    assert f"resuming from {root / 'step-00000001'}: 2 bundles of the lost steps will be trained again" in text
    with reader.begin() as s:
        steps = learner_steps(s, run_id=store.run_id)
        versions = [tuple(v) for v in s.execute(select(PolicyVersion.version, PolicyVersion.step).where(
            PolicyVersion.run_id == store.run_id).order_by(PolicyVersion.version))]
        consumed = sorted(s.scalars(select(Trajectory.consumed_step).where(Trajectory.run_id == store.run_id)))
    assert [r.step for r in steps] == [1, 2, 3] and consumed == [1, 1, 2, 2, 3, 3]
    assert [r.metrics["resumed_from_step"] for r in steps] == [0, 1, 1]
    assert versions == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert [c.step for c in list_checkpoints(root)][-2:] == [2, 3] and len(list(root.glob("damaged-step-00000002-*"))) == 1
