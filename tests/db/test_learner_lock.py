"""One learner per run: the lock refuses a second holder on PostgreSQL (advisory lock, any
host) and SQLite (flock), is free again once its holder lets go, and is per run."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from db.learner_lock import LearnerAlreadyRunning, learner_lock


def _second_holder_refused(make_engine) -> None:
    first, second = make_engine(), make_engine()
    try:
        with learner_lock(first, "run-a"):
            refused = pytest.raises(LearnerAlreadyRunning, match="another learner is already running run 'run-a'")
            with refused, learner_lock(second, "run-a"):
                pass
            with learner_lock(second, "run-b"):  # another run on the same store is free
                pass
        with learner_lock(second, "run-a"):  # released by the first
            pass
    finally:
        first.dispose()
        second.dispose()


@pytest.mark.services
def test_a_second_learner_on_one_run_is_refused_on_postgresql(postgres_url):
    _second_holder_refused(lambda: create_engine(postgres_url))


def test_a_second_learner_on_one_run_is_refused_on_sqlite(tmp_path):
    _second_holder_refused(lambda: create_engine(f"sqlite:///{tmp_path / 'omniopd.db'}"))
