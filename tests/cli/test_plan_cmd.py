"""`omniopd plan`: the pre-run forecast (paper Appendix B) through the real CLI, and its cap gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from omniopd.cli import app
from omniopd.config import load_config
from omniopd.reports.forecast import forecast_for_config
from omniopd.reports.plan import in_flight_trajectories, make_plan, trained_trajectories
from omniopd.teachers.forecast import requested_output_tokens

PRICE = {"input": 0.30, "cached_input": 0.03, "cache_write": 0.0, "output": 2.50}


def omniopd(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def config_file(tmp_path, tiny_model_dir) -> Path:
    train = tmp_path / "train.jsonl"
    rows = [{"id": f"q{i}", "prompt": f"Compute {i} + {i + 1}.", "answer": str(2 * i + 1)} for i in range(40)]
    rows.append({"id": "bad"})  # a bad row is not a training problem (data import reports it)
    train.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = {
        "run": {"name": "plan-test", "output_dir": str(tmp_path / "run")},
        "student": {"path": tiny_model_dir, "device": "cpu"},
        "rollout": {"backend": "hf", "max_new_tokens": 32, "max_prompt_tokens": 64, "batch_problems": 4},
        "chunking": {"m": 3, "c": 4},
        "estimator": {"n": 4},
        "teachers": {"flash": {"kind": "gemini", "model": "gemini-2.5-flash", "api_key_env": "K", "prices": PRICE}},
        "audit": {"teacher": "flash", "budget_usd": 1.0},
        "learner": {"batch_size": 8, "max_steps": 20},
        "data": {"train": str(train), "prompt_template": "none", "epochs": 1},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_forecast_is_the_trajectory_forecast_times_the_trained_trajectories(config_file):
    cfg = load_config(config_file)
    plan = make_plan(cfg, trajectory_tokens=30)
    assert plan.trajectory_source == "given" and plan.prompt_tokens > 0
    # 40 problems x 1 epoch x 1 sample < 20 steps x 8: the data ends the run first.
    assert plan.trajectories == trained_trajectories(cfg, 40) == 40
    one = forecast_for_config(cfg, prompt_tokens=plan.prompt_tokens, trajectory_tokens=30)
    assert plan.per_trajectory == one
    assert plan.run.cost_usd == pytest.approx(40 * one.cost_usd)
    assert plan.per_step.cost_usd == pytest.approx(8 * one.cost_usd)
    # Each continuation writes at most what the audit asks for, fewer near the end of the answer.
    per_continuation = requested_output_tokens(4, cfg.teachers["flash"].max_new_tokens_factor)
    assert 40 * 3 * 4 * 4 <= plan.run.output_tokens < 40 * 3 * 4 * per_continuation
    assert plan.in_flight == in_flight_trajectories(cfg) > 0
    assert not plan.over_cap and plan.steps_within_cap == 20


def test_without_a_length_the_plan_assumes_max_new_tokens_and_sampling_measures_it(config_file):
    cfg = load_config(config_file)
    upper = make_plan(cfg)
    assert upper.trajectory_tokens == 32 and "upper bound" in upper.trajectory_source
    sampled = make_plan(cfg, sample=3)
    assert 1 <= sampled.trajectory_tokens <= 32 and "3 student samples" in sampled.trajectory_source


def test_plan_refuses_above_the_cap_unless_forced_and_saves_the_plan(config_file, tmp_path):
    ok = omniopd("plan", "-c", config_file, "-L", 30)
    assert ok.exit_code == 0, ok.output
    saved = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert saved["trajectories"] == 40 and saved["over_cap"] is False
    assert "per trajectory" in ok.output or "trajectory" in ok.output
    tight = omniopd("plan", "-c", config_file, "-L", 30, "--set", "audit.budget_usd=0.0001", "--no-write")
    assert tight.exit_code == 3
    assert "exceeds the run cap" in tight.output and "--force" in tight.output
    forced = omniopd("plan", "-c", config_file, "-L", 30, "--set", "audit.budget_usd=0.0001", "--no-write", "--force",
                     "--json")
    assert forced.exit_code == 0
    assert "warning" in forced.output
    teacher_cap = omniopd("plan", "-c", config_file, "-L", 30, "--set", "teachers.flash.budget_usd=0.0001", "--no-write")
    assert teacher_cap.exit_code == 3 and "flash cap" in teacher_cap.output


def test_plan_explains_a_config_without_a_teacher(config_file):
    result = omniopd("plan", "-c", config_file, "--set", "audit.teacher=", "-L", 10)
    assert result.exit_code == 2 and "audit.teacher is not set" in result.output


def test_start_learner_refuses_an_over_cap_run_before_starting_it(config_file):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMNIOPD_PYTHON": sys.executable, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [str(root / "scripts" / "start_learner.sh"), str(config_file), "--set", "audit.budget_usd=0.0001", "--no-progress"],
        cwd=root, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "exceeds the run cap" in result.stderr and "pass --force" in result.stderr
    assert "learner stopped" not in result.stdout  # the learner never ran
