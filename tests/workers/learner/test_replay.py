"""The replay driver (SFT on the teacher's solutions) against a real store: it records every
(problem, epoch) once as a ready trajectory of the teacher's text, paced ahead of the learner,
continues after a restart without recording a slot twice, and refuses a file that lacks a
training problem."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from db.models import Trajectory
from tests.workers.rollout_support import fake_learner_step, rollout_run, slot_states
from workers.app import make_celery
from workers.learner.replay import ReplayDriver


def solutions_file(tmp_path, problems: int, skip: int | None = None):
    path = tmp_path / "solutions.jsonl"
    path.write_text("".join(json.dumps({"id": f"train-{k}", "completion": f"{k} + 1 = {k + 1}\nAnswer: {k + 1}"}) + "\n"
                            for k in range(problems) if k != skip))
    return path


def replay_run(tmp_path, tiny_model_dir, problems: int, skip: int | None = None):
    return rollout_run(
        tmp_path, problems, student={"path": tiny_model_dir}, loss={"method": "sft", "sft_source": "trajectories"},
        data={"epochs": 2, "prompt_template": "none", "teacher_solutions": str(solutions_file(tmp_path, problems, skip))},
        learner={"pipeline_depth": 2, "batch_size": 2},
    )


def make_driver(store):
    return ReplayDriver(app=make_celery(store.config, broker_url="memory://"), sessions=store.sessions,
                        config=store.config, run_id=store.run_id)


def test_every_problem_and_epoch_is_replayed_once_paced_ahead_of_the_learner(tmp_path, tiny_model_dir):
    store = replay_run(tmp_path, tiny_model_dir, 5)
    driver = make_driver(store)
    for _ in range(20):
        report = driver.tick(trained_version=0)
        if report.exhausted:
            break
        waiting = sum(state == "ready" for rows in slot_states(store).values() for _, state, _ in rows)
        assert 0 < waiting <= 2 * 2  # pipeline_depth x batch_size ahead, never more
        assert fake_learner_step(store, version=0, limit=2) == 2 or not driver.order
    assert report.exhausted
    slots = slot_states(store)
    assert sorted(slots) == sorted((p, e, 0) for p in store.problem_ids for e in (0, 1))  # 5 problems x 2 epochs
    assert all(rows == [(0, "consumed", 0)] for rows in slots.values())
    with store.sessions.begin() as s:
        rows = s.execute(select(Trajectory.completion_text, Trajectory.meta)).all()
    assert {r.completion_text for r in rows} == {f"{k} + 1 = {k + 1}\nAnswer: {k + 1}" for k in range(5)}
    assert all(r.meta["source"] == "teacher_solutions" for r in rows)


def test_the_completion_is_the_solution_in_the_students_tokens_with_its_eos(tmp_path, tiny_model_dir):
    from omniopd.models.loading import load_tokenizer

    store = replay_run(tmp_path, tiny_model_dir, 1)
    make_driver(store).tick(trained_version=0)
    tok = load_tokenizer(tiny_model_dir)
    with store.sessions.begin() as s:
        t = s.scalars(select(Trajectory).where(Trajectory.epoch == 0)).one()
    from db.arrays import unpack_i32

    ids = list(unpack_i32(t.completion_token_ids))
    assert ids == [*tok("0 + 1 = 1\nAnswer: 1", add_special_tokens=False)["input_ids"], tok.eos_token_id]
    from omniopd.rollout.prompts import render_text

    assert t.state == "ready" and t.prompt_text == render_text(tok, "question 0", "none")  # as the rollout renders it


def test_a_restarted_driver_continues_without_recording_a_slot_twice(tmp_path, tiny_model_dir):
    store = replay_run(tmp_path, tiny_model_dir, 4)
    make_driver(store).tick(trained_version=0)  # 4 recorded (2 x 2 ahead)
    fake_learner_step(store, version=0, limit=2)
    again = make_driver(store)  # a restarted learner's driver
    while not again.tick(trained_version=0).exhausted:
        fake_learner_step(store, version=0, limit=2)
    slots = slot_states(store)
    assert len(slots) == 8 and all(len(rows) == 1 for rows in slots.values())


def test_a_training_problem_without_a_solution_is_refused_with_its_id(tmp_path, tiny_model_dir):
    store = replay_run(tmp_path, tiny_model_dir, 3, skip=1)
    with pytest.raises(ValueError, match=r"has no solution for 1 training problems \(first: id 'train-1'\)"):
        make_driver(store)


def test_teacher_solutions_with_an_objective_that_samples_the_student_is_refused():
    from omniopd.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"data\.teacher_solutions is set, but loss\.method = omniopd learns from"):
        parse_config({"data": {"teacher_solutions": "s.jsonl"}})
    assert parse_config({"data": {"teacher_solutions": "s.jsonl"},
                         "loss": {"method": "sft", "sft_source": "trajectories"}}).data.teacher_solutions
