"""Rewards in the rollout task (workers/rollout/rewards.py + store_records): each sample's
reward is stored with its trajectory; a sample whose grading failed is recorded, then dropped
with reason `reward_failed` and the grader's message, and never handed on to the learner."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from db.models import Problem, Trajectory
from db.repo_rollouts import issue_batch, rollout_work
from db.repo_trajectories import SlotKey
from tests.db.conftest import make_problems, trajectory
from tests.workers.conftest import Store, write_config
from workers.rollout.records import GeneratedRecords
from workers.rollout.rewards import close_grader, with_rewards
from workers.rollout.task import hand_on, store_records


def test_rewards_are_stored_per_trajectory_and_failed_grades_are_dropped_with_the_reason(tmp_path):
    config = write_config(tmp_path / "run.yaml", loss={"method": "grpo", "beta": 0.0}, reward={"grader": "demo"},
                          rollout={"samples_per_prompt": 2}, learner={"batch_size": 2})
    store = Store(config)
    with store.sessions.begin() as s:
        pids = make_problems(s, 2, split="rewards")  # answers "0" and "1"
        s.execute(Problem.__table__.update().where(Problem.id == pids[1]).values(answer=None, tests=[{"input": "", "output": ""}]))
        slots = [SlotKey(p, 0, j) for p in pids for j in range(2)]
        batch = issue_batch(s, run_id=store.run_id, target_version=0, slots=slots)
        work = rollout_work(s, batch_id=batch)
    assert work.references[pids[0]] == ("0", None)
    texts = {(pids[0], 0): "Answer: 0", (pids[0], 1): "Answer: 5", (pids[1], 0): "Answer: 1", (pids[1], 1): "x"}
    made = GeneratedRecords(store.run_id, 0, [
        replace(trajectory(store.run_id, slot.problem_id, sample_index=slot.sample_index, chunks=0),
                completion_text=texts[(slot.problem_id, slot.sample_index)])
        for slot in work.pending
    ], [], {})
    try:
        made = with_rewards(made, work.references, store.config)
    finally:
        close_grader()
    assert set(made.reward_failures) == {SlotKey(pids[1], 0, 0), SlotKey(pids[1], 0, 1)}
    with store.sessions.begin() as s:
        new = store_records(s, made=made)
        hand_on(s, None, trajectory_ids=new, teacher=None)  # no audits: promoted to ready, nothing sent
    with store.sessions.begin() as s:
        rows = {(r.problem_id, r.sample_index): r for r in s.execute(
            select(Trajectory.problem_id, Trajectory.sample_index, Trajectory.state, Trajectory.reward,
                   Trajectory.drop_reason, Trajectory.drop_detail, Trajectory.meta))}
    assert len(new) == 2
    assert [rows[(pids[0], j)].reward for j in range(2)] == [1.0, 0.0]
    assert [rows[(pids[0], j)].state for j in range(2)] == ["ready", "ready"]
    assert rows[(pids[0], 1)].meta["reward_detail"] == "wrong"
    for j in range(2):
        failed = rows[(pids[1], j)]
        assert (failed.state, failed.reward, failed.drop_reason) == ("dropped", None, "reward_failed")
        assert failed.drop_detail == f"problem {pids[1]} has no answer to grade against"
