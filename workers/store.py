"""The run row as the processes of a run create it from their config (db/store.py opens
the store itself)."""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import Session, sessionmaker

from db.repo_runs import RunNotFound, RunRecord, get_run, open_run
from omniopd.config import OmniConfig, public_dict
from omniopd.money import usd_to_micros


def ensure_run(session: Session, config: OmniConfig) -> RunRecord:
    """Get or create the config's run, with one budget per configured teacher
    (teachers.<name>.budget_usd) and the run-wide cap (audit.budget_usd): the config's USD
    caps become integer micro-USD here, once, rounded up."""
    return open_run(
        session,
        name=config.run.name,
        config=public_dict(config),  # no secret reaches the store
        base_model_path=config.student.path,
        provider_caps={
            name: None if t.budget_usd is None else usd_to_micros(t.budget_usd) for name, t in config.teachers.items()
        },
        run_cap=None if config.audit.budget_usd is None else usd_to_micros(config.audit.budget_usd),
    )


RUN_WAIT_LOG_S = 30.0  # how often a waiting worker says again what it waits for


def wait_for_run(sessions: sessionmaker[Session], name: str, *, timeout_s: float, log: logging.Logger) -> RunRecord:
    """The run called `name`, waiting up to `timeout_s` for its learner to create it.

    A worker started a moment before its learner waits, saying so; one whose config names a
    run that never appears (a typo in run.name, another store.url) refuses: RunNotFound,
    saying what to check. Without this it would wait on an empty queue forever (the queue
    names carry the run's name)."""
    deadline = time.monotonic() + timeout_s
    said = 0.0
    while True:
        try:
            with sessions.begin() as session:
                return get_run(session, name=name)
        except RunNotFound as exc:
            now = time.monotonic()
            if now >= deadline:
                raise RunNotFound(
                    f"refusing to start: {exc}. Waited {timeout_s:.0f} s. Start the run's learner first "
                    "(scripts/start_learner.sh), or check run.name and store.url in the config"
                ) from None
            if now - said >= RUN_WAIT_LOG_S:
                log.warning("waiting for run %r to appear in the store (its learner creates it; %.0f s more before "
                            "this worker refuses): %s", name, deadline - now, exc)
                said = now
        time.sleep(1.0)
