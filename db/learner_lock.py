"""One learner per run: the lock a learner holds for its whole life.

Two learners on one run would both claim bundles, both write checkpoints into one directory
and both publish policy versions; the second must refuse to start instead. The lock:

- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) keyed by the run's
  name, held on a connection of its own. It works across hosts, and the server drops it the
  moment the holder's connection closes, so a killed learner (SIGKILL, a lost host) never
  leaves it behind. If the server or the network ends that connection while the learner
  lives, the lock is gone: a second learner could then start; `LearnerLock.held` tells.
- SQLite (one machine by nature): an exclusive `flock` on `<store file>.learner-<run>.lock`,
  which the kernel releases when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, text


class LearnerAlreadyRunning(RuntimeError):
    """Another learner holds the run."""


def lock_key(run_name: str) -> int:
    """The run's advisory-lock key: a signed 64-bit number derived from its name."""
    digest = hashlib.sha256(f"omniopd learner {run_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def learner_lock(engine: Engine, run_name: str) -> Iterator[None]:
    """Hold the run's learner lock for the block; LearnerAlreadyRunning if another process holds it."""
    refusal = (f"another learner is already running run {run_name!r} on this store (it holds the run's learner "
               "lock); stop it first (Ctrl-C or SIGTERM on it), or give this run another run.name")
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            key = lock_key(run_name)
            if not conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}):
                raise LearnerAlreadyRunning(refusal)
            conn.commit()  # the lock is the session's, not the transaction's
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a dropped connection has released it already
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    conn.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield  # an in-memory store is one process's own
        return
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_name)
    path = Path(f"{os.path.abspath(database)}.learner-{safe}.lock")
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LearnerAlreadyRunning(refusal) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
