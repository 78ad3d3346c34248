"""`omniopd plot` and `omniopd learner` through the real CLI app."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from db.repo_bundles import claim_ready_bundles, record_step_and_consume
from db.repo_eval import finish_eval_run, open_eval_run
from omniopd.cli import app
from tests.db.conftest import ready_bundles
from tests.workers.conftest import Store, write_config


def omniopd(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def store(tmp_path) -> Store:
    path = write_config(tmp_path / "run.yaml")
    store = Store(path)
    store.config_path = path
    return store


def _record_steps(store: Store, count: int) -> None:
    ids = ready_bundles(store.sessions, store.run_id, count)
    with store.sessions.begin() as s:
        claim_ready_bundles(s, run_id=store.run_id, limit=count, min_policy_version=0, learner_id="L", lease_s=60)
        for step, tid in enumerate(ids, start=1):
            loss = 0.35 - 0.01 * step
            record_step_and_consume(s, run_id=store.run_id, step=step, learner_id="L", trajectory_ids=[tid],
                                    policy_version=0, metrics={"loss": loss, "chunk_loss": loss - 0.01, "kl": 0.001 * step},
                                    loss=loss, n_tokens=100, wall_s=1.0)


def test_plot_writes_the_three_panel_png_with_eval_accuracy(store, tmp_path):
    _record_steps(store, 6)
    with store.sessions.begin() as s:
        for step, acc in ((0, 0.2), (5, 0.3)):
            run = open_eval_run(s, key=f"k{step}", benchmark="math500", model="m", samples=4, config={},
                                run_id=store.run_id, policy_version=step, step=step)
            finish_eval_run(s, eval_run_id=run.id, pass_at_1=acc, metrics={})
    out = tmp_path / "fig.png"
    result = omniopd("plot", "--config", store.config_path, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    default = omniopd("plot", "--config", store.config_path)
    assert default.exit_code == 0 and (Path(store.config.run.output_dir) / "plots" / "wtest-training.png").is_file()


def test_plot_without_steps_says_what_to_run(store):
    result = omniopd("plot", "--config", store.config_path)
    assert result.exit_code == 1 and "no learner steps yet" in result.output and "omniopd learner" in result.output
    unknown = omniopd("plot", "--config", store.config_path, "--run", "nope")
    assert unknown.exit_code == 2 and "no run named 'nope'" in unknown.output


def test_learner_refuses_a_driver_it_cannot_import(store):
    result = omniopd("learner", "--config", store.config_path, "--driver", "no.such.module:Driver")
    assert result.exit_code == 2 and "cannot load the driver" in result.output
    result = omniopd("learner", "--config", store.config_path, "--driver", "nocolon")
    assert result.exit_code == 2 and "MODULE:CALLABLE" in result.output
