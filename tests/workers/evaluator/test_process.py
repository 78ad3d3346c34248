"""The evaluator as a real process beside a (stand-in) learner: every due checkpoint is
evaluated although the learner prunes it a step later, the results are linked to the run
and step in the store and logged to TensorBoard, and the learner never waits for it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from db.repo_eval import eval_results, list_eval_runs
from db.repo_runs import publish_policy_version, set_run_status
from tests.conftest import wait_left
from tests.workers.conftest import ROOT, Store, wait_for, write_config
from workers.evaluator.service import curve_benchmarks, curve_plan, curve_prefix


def config_for(tmp_path: Path, model: str) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"id": f"d{i}", "prompt": f"Compute {i} + 2.", "answer": str(i + 2)} for i in range(6)]
    (data / "demo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # 6 items, 3 on the curve
    return write_config(
        tmp_path / "run.yaml", run={"name": "curve", "seed": 3}, student={"path": model, "device": "cpu"},
        rollout={"backend": "hf"}, learner={"tensorboard": True, "checkpoint_every": 2, "keep_checkpoints": 1},
        eval={"benchmarks": ["demo"], "data_dir": str(data), "samples": 2, "max_new_tokens": 8, "every_steps": 4,
              "curve_items": 3, "curve_samples": 2, "curve_poll_s": 0.2, "grading_workers": 1, "pass_at_k": [1]},
    )


def publish(store: Store, model: str, checkpoints: Path, version: int, step: int) -> None:
    """What the learner does at a checkpoint: write it (a temporary directory renamed), publish it
    as the next policy version, delete all but the newest learner.keep_checkpoints = 1."""
    tmp = checkpoints / f".tmp-step-{step:08d}"
    shutil.copytree(model, tmp)
    (tmp / "trainer_state.json").write_text(f'{{"step": {step}}}')
    final = tmp.rename(checkpoints / f"step-{step:08d}")
    with store.sessions.begin() as s:
        publish_policy_version(s, run_id=store.run_id, version=version, path=str(final), step=step)
    for child in sorted(checkpoints.glob("step-*"))[:-1]:  # keep 1
        shutil.rmtree(child)


@pytest.mark.slow
def test_evaluator_evaluates_every_due_checkpoint_although_the_learner_prunes_it(
    tmp_path: Path, tiny_model_dir: str, processes
) -> None:
    config = config_for(tmp_path, tiny_model_dir)
    store = Store(config)
    out = Path(store.config.run.output_dir)
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True)
    snapshots = out / "eval-snapshots"
    evaluator = processes(["-m", "omniopd", "worker", "evaluator", "-c", str(config), "--until-finished"],
                          tmp_path / "evaluator.log")
    # The learner publishes steps 2..10 and prunes each checkpoint at the next one. It never
    # waits for an evaluation; it only gives the evaluator's watcher the time a learner step
    # would (here: until a due checkpoint is linked, standing in for the steps between two
    # checkpoints), so what this checks is the snapshot, not a race.
    for version, step in enumerate((2, 4, 6, 8, 10), start=1):
        publish(store, tiny_model_dir, checkpoints, version, step)
        if step in (4, 8):  # due: they cross multiples of eval.every_steps = 4 (10 is due as the last)
            wait_for(lambda s=step: (snapshots / f"step-{s:08d}" / ".snapshot-complete").is_file()
                     or evaluator.poll() is not None, 60, f"the evaluator to snapshot step {step}")
    with store.sessions.begin() as s:
        set_run_status(s, run_id=store.run_id, status="finished")
    assert len(list(checkpoints.glob("step-*"))) == 1  # steps 4 and 8 were deleted by the learner
    with store.sessions.begin() as s:
        ended_with_evaluations_left = len(list_eval_runs(s, run_id=store.run_id)) < 4
    assert evaluator.wait(timeout=wait_left(240)) == 0, (tmp_path / "evaluator.log").read_text()[-3000:]
    assert ended_with_evaluations_left  # the learner finished without waiting for the curve

    cfg = store.config
    prefix = curve_prefix(cfg.run.name, curve_plan(cfg), curve_benchmarks(cfg))
    with store.sessions.begin() as s:
        runs = list_eval_runs(s, run_id=store.run_id)
        items = [{r.item_id for r in eval_results(s, eval_run_id=run.id)} for run in runs]
    assert len(items[0]) == 3 and all(i == items[0] for i in items)  # the same held-out subset at every step
    assert [(r.key, r.step, r.policy_version, r.status) for r in runs] == [
        (f"{prefix}{step}/demo", step, version, "finished") for step, version in ((0, 0), (4, 2), (8, 4), (10, 5))
    ]
    for run in runs:
        metrics = run.metrics
        assert metrics["n_items"] == 3 and metrics["samples_per_item"] == 2
        assert metrics["ci_low"] <= run.pass_at_1 <= metrics["ci_high"] and metrics["confidence"] == 0.95
    assert not any(snapshots.glob("step-*"))  # dropped once evaluated

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/demo/pass_at_1")] == [0, 4, 8, 10]
    assert [e.value for e in events.Scalars("eval/demo/pass_at_1")] == pytest.approx([r.pass_at_1 for r in runs])
    assert {"eval/demo/ci_low", "eval/demo/ci_high"} <= set(events.Tags()["scalars"])


def test_evaluator_refuses_a_config_without_every_steps(tmp_path: Path, tiny_model_dir: str) -> None:
    config = config_for(tmp_path, tiny_model_dir)
    proc = subprocess.run([sys.executable, "-m", "omniopd", "worker", "evaluator", "-c", str(config), "--once",
                           "--set", "eval.every_steps=null"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "eval.every_steps is not set" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_evaluated_is_reported_and_the_curve_goes_on(tmp_path: Path, tiny_model_dir: str) -> None:
    import threading

    from workers.evaluator.loop import Evaluator

    config = config_for(tmp_path, tiny_model_dir)
    store = Store(config)
    broken = tmp_path / "checkpoints" / "step-00000004"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    with store.sessions.begin() as s:
        publish_policy_version(s, run_id=store.run_id, version=1, path=str(broken), step=4)
    summary = Evaluator(store.config, config).run(threading.Event(), once=True)
    assert (summary.evaluated, summary.failed) == ([0], [4])
    with store.sessions.begin() as s:
        # step 4's evaluation stays open, for a restart to resume; its snapshot stays too
        assert [(r.step, r.status) for r in list_eval_runs(s, run_id=store.run_id)] == [(0, "finished"), (4, "running")]
    assert (Path(store.config.run.output_dir) / "eval-snapshots" / "step-00000004" / "model.safetensors").is_file()
