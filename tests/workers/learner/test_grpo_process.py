"""GRPO through the real `omniopd learner` process: whole groups are claimed and trained
together, and exactly once, across a SIGKILL mid-step and a restart. Groups with rewards are
written into the store by the test (one with a sample whose grading failed, dropped with its
reason); the driver is the fake StoreDriver."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Trajectory, utcnow
from db.repo_bundles import learner_steps
from db.session import make_session_factory
from omniopd.train import checkpoint_root, list_checkpoints
from tests.workers.conftest import Store, wait_for, write_config
from tests.workers.learner_fakes import insert_groups

pytestmark = pytest.mark.slow

LEARNER_ID = "grpo-learner-under-test"
# Nine prompts, G = 2: two groups per step (learner.batch_size 4). Group 2 is all-equal (zero
# advantage, still trained and counted); group 5 lost a sample to a failed grader.
REWARDS = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, None], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]


def start_learner(processes, config: Path, log: Path):
    return processes(["-m", "omniopd", "learner", "--config", str(config), "--no-progress",
                      "--driver", "tests.workers.learner_fakes:StoreDriver"], log)


def held(reader) -> int:
    with reader.begin() as s:
        return s.scalar(select(func.count()).select_from(Trajectory).where(
            Trajectory.claimed_by == LEARNER_ID, Trajectory.state == "ready"))


def latest(reader, since=None) -> int:
    with reader.begin() as s:
        steps = [r for r in learner_steps(s, run_id=1) if since is None or r.created_at >= since]
    return steps[-1].step if steps else 0


def test_grpo_groups_are_trained_together_and_exactly_once_across_a_sigkill(processes, tmp_path, tiny_model_dir):
    config = write_config(
        tmp_path / "run.yaml",
        student={"path": tiny_model_dir, "device": "cpu"},
        learner={"batch_size": 4, "max_steps": 100, "lr": 1e-3, "tensorboard": False, "poll_s": 0.05,
                 "learner_id": LEARNER_ID, "max_policy_lag": 100, "checkpoint_every": 2},
        loss={"method": "grpo", "beta": 0.0, "normalisation": "sequence"},
        reward={"grader": "demo"},
        rollout={"samples_per_prompt": 2},
    )
    store = Store(config)
    # Long completions make a step last long enough to be caught between claim and record.
    groups = insert_groups(store.sessions, store.run_id, REWARDS, tokens=400, prompt_tokens=8)
    reader = make_session_factory(store.engine, read_only=True)
    log = tmp_path / "learner.log"

    first = start_learner(processes, config, log)

    def mid_step_4():  # step 3 recorded (checkpoint at 2), step 4's two groups claimed
        assert first.poll() is None, f"the learner exited early ({first.returncode}):\n{log.read_text()[-3000:]}"
        step = latest(reader)
        assert step <= 3, f"missed the window: step {step} recorded already"
        return step == 3 and held(reader) == 4

    wait_for(mid_step_4, 240, "step 3 recorded and step 4 under way", interval=0.01)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    killed_at = utcnow()
    assert [c.step for c in list_checkpoints(checkpoint_root(store.config.run.output_dir))] == [2]

    second = start_learner(processes, config, log)  # resumes at step 2 and runs until every group is trained
    assert second.wait(300) == 0, log.read_text()[-3000:]
    assert "every problem is sampled and every bundle trained" in log.read_text()

    with reader.begin() as s:
        steps = learner_steps(s, run_id=store.run_id)
        rows = {r.id: r for r in s.execute(select(Trajectory.id, Trajectory.state, Trajectory.consumed_step,
                                                  Trajectory.reward, Trajectory.drop_reason))}
    # The failed sample was never trained on; its reason is stored.
    failed = groups[5][1]
    assert rows[failed].state == "dropped" and rows[failed].drop_reason == "reward_failed"
    trained = [[t for t in g if t != failed] for g in groups]
    # Every other sample consumed exactly once, by the surviving steps, a group always by one step.
    for g in trained:
        assert all(rows[t].state == "consumed" for t in g)
        assert len({rows[t].consumed_step for t in g}) == 1, f"group {g} split across steps"
    per_step = [sum(1 for g in trained if rows[g[0]].consumed_step == r.step) for r in steps]
    assert [r.step for r in steps] == [1, 2, 3, 4, 5] and per_step == [2, 2, 2, 2, 1]
    assert [r.n_bundles for r in steps] == [sum(len(g) for g in trained if rows[g[0]].consumed_step == r.step)
                                            for r in steps]
    assert [rows[t].reward for t in groups[0]] == [1.0, 0.0]
    # Steps 3-5 were trained by the restarted process from the step-2 checkpoint.
    assert [r.metrics["resumed_from_step"] for r in steps] == [0, 0, 2, 2, 2]
    assert all(r.created_at >= killed_at for r in steps[2:]) and steps[1].created_at < killed_at
    # Every group is counted, all-equal ones too (groups 2 and 8, and group 5's lone sample).
    assert sum(r.metrics["groups"] for r in steps) == len(REWARDS)
    assert sum(r.metrics["groups_all_equal"] for r in steps) == 3
