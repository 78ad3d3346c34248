"""Two learners started on one run: the second refuses at once with a message that says
what to do, and leaves the run as it was (its status is not set to failed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine

from db.learner_lock import learner_lock
from tests.conftest import wait_left
from tests.workers.conftest import ROOT, Store, write_config

pytestmark = pytest.mark.services


def test_a_second_learner_on_a_running_run_refuses_and_changes_nothing(tmp_path, postgres_url):
    config = write_config(tmp_path / "run.yaml", store={"url": postgres_url}, student={"path": str(tmp_path / "none")})
    store = Store(config)
    from db.repo_runs import get_run, set_run_status

    with store.sessions.begin() as s:
        set_run_status(s, run_id=store.run_id, status="running")
    holder = create_engine(postgres_url)
    try:
        with learner_lock(holder, store.config.run.name):  # the first learner, as far as the store can tell
            done = subprocess.run(
                [sys.executable, "-m", "omniopd", "learner", "-c", str(config), "--no-progress"], cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}, capture_output=True, text=True,
                timeout=wait_left(180),
            )
    finally:
        holder.dispose()
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "another learner is already running run 'wtest'" in out and "stop it first" in out
    with store.sessions.begin() as s:
        assert get_run(s, name="wtest").status == "running"
    store.engine.dispose()
