"""Which checkpoints the evaluator evaluates, and snapshots that survive the learner's pruning."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from db.repo_runs import PolicyVersionRecord
from workers.evaluator.service import due_versions
from workers.evaluator.snapshots import SnapshotError, is_complete, take_snapshot


def versions(*steps: int) -> list[PolicyVersionRecord]:
    return [PolicyVersionRecord(1, v, f"ckpt/step-{s}", s, datetime(2026, 1, 1), {}) for v, s in enumerate(steps)]


def steps_of(due) -> list[int]:
    return [d.step for d in due]


def test_base_model_and_every_checkpoint_on_a_multiple_are_due() -> None:
    assert steps_of(due_versions(versions(0, 2, 4, 6, 8), 4, run_ended=False)) == [0, 4, 8]


def test_a_checkpoint_interval_that_does_not_divide_every_steps_takes_the_first_past_each_multiple() -> None:
    # checkpoints every 4 steps, a point every 10: steps 12 (past 10) and 20
    assert steps_of(due_versions(versions(0, 4, 8, 12, 16, 20, 24), 10, run_ended=False)) == [0, 12, 20]


def test_the_last_version_is_due_once_the_run_has_ended() -> None:
    assert steps_of(due_versions(versions(0, 5, 10, 13), 10, run_ended=False)) == [0, 10]
    assert steps_of(due_versions(versions(0, 5, 10, 13), 10, run_ended=True)) == [0, 10, 13]
    assert steps_of(due_versions(versions(0, 5, 10), 10, run_ended=True)) == [0, 10]
    assert steps_of(due_versions(versions(0), 10, run_ended=True)) == [0]


def checkpoint(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"weights")
    (path / "sub" / "state.json").write_text("{}")
    return path


def test_snapshot_hard_links_the_files_and_outlives_the_pruned_checkpoint(tmp_path: Path) -> None:
    src = checkpoint(tmp_path / "checkpoints" / "step-4")
    snap = take_snapshot(src, tmp_path / "snapshots" / "step-4")
    assert is_complete(snap)
    assert os.stat(snap / "model.safetensors").st_ino == os.stat(src / "model.safetensors").st_ino  # no copy
    shutil.rmtree(src)  # what the learner's prune_checkpoints does
    assert (snap / "model.safetensors").read_bytes() == b"weights" and (snap / "sub" / "state.json").is_file()
    assert take_snapshot(src, snap) == snap  # idempotent once complete, even with the source gone


def test_an_incomplete_or_vanished_checkpoint_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    src = checkpoint(tmp_path / "ckpt")
    (src / "model.safetensors").unlink()
    with pytest.raises(SnapshotError, match="incomplete"):
        take_snapshot(src, tmp_path / "snap")
    assert not (tmp_path / "snap").exists()
    leftover = tmp_path / "snap2"
    leftover.mkdir()
    (leftover / "partial").write_text("x")  # an interrupted earlier link: redone, not trusted
    good = take_snapshot(checkpoint(tmp_path / "ckpt2"), leftover)
    assert not (good / "partial").exists() and is_complete(good)
