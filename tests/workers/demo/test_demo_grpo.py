"""GRPO end to end through the real processes: `omniopd demo --smoke --config
configs/demo-grpo.yaml` runs a rollout worker that grades every sample with the demo
checker, and the learner that trains whole groups — no audit worker, no teacher call, no
spend. The assertions are ones a broken pipeline fails: every stored reward agrees with an
independent reading of the sample's last answer, every group is consumed by one step, each
step trains batch_size / G groups, and nothing was asked of the teacher."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from tests.workers.demo.finished_demo import finished_demo

pytestmark = pytest.mark.slow

ANSWER = re.compile(r"^Answer: *(-?\d+) *$", re.M)  # a whole `Answer: N` line, as the task writes it


@pytest.mark.long_running(seconds=60)
def test_grpo_demo_grades_every_sample_and_trains_whole_groups_without_a_teacher(tmp_path):
    result = finished_demo("--smoke", "--no-dashboard", "--config", "configs/demo-grpo.yaml", "--workdir", str(tmp_path),
                           timeout=580)
    assert "Pass@1 on held-out problems:" in result.stdout and "teacher spend $0.0000" in result.stdout
    run_dir = tmp_path / "smoke-full-s0"
    assert not (run_dir / "logs" / "audit.log").exists()  # the objective declares no audits

    from sqlalchemy import func, select

    from db.models import Problem, TeacherCall, Trajectory
    from db.repo_bundles import learner_steps
    from db.session import make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{run_dir / 'omniopd.db'}")
    try:
        with make_session_factory(engine, read_only=True).begin() as s:
            rows = s.execute(select(Trajectory.problem_id, Trajectory.epoch, Trajectory.attempt, Trajectory.state,
                                    Trajectory.reward, Trajectory.completion_text, Trajectory.consumed_step,
                                    Trajectory.drop_reason, Problem.answer)
                             .join(Problem, Problem.id == Trajectory.problem_id)).all()
            calls = s.scalar(select(func.count()).select_from(TeacherCall))
            steps = learner_steps(s, run_id=1)
    finally:
        engine.dispose()
    assert calls == 0 and rows
    for r in rows:
        if r.drop_reason == "stale_policy":
            continue
        stated = ANSWER.findall(r.completion_text)
        expected = 1.0 if stated and int(stated[-1]) == int(r.answer) else 0.0
        assert r.reward == expected, (r.completion_text, r.answer, r.reward)
    groups = defaultdict(set)
    for r in rows:
        if r.state == "consumed":
            groups[(r.problem_id, r.epoch, r.attempt)].add(r.consumed_step)
    assert groups and all(len(s) == 1 for s in groups.values())  # a group is trained by one step
    assert [m.step for m in steps] == list(range(1, 9))  # the smoke demo's 8 steps
    assert all(m.metrics["groups"] == 1 and m.metrics["samples"] == 8 for m in steps)  # smoke batch 8 = 1 group of 8
    assert all(0.0 <= m.metrics["reward_mean"] <= 1.0 for m in steps)
