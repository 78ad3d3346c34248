"""One learner per run: the lock a learner holds for its whole life.

Two learners on one run would both claim bundles, both write checkpoints into one directory
and both publish policy versions; the second must refuse to start instead. The lock:

- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) keyed by the run's
  name, held on a connection of its own. It works across hosts, and the server drops it the
  moment the holder's connection closes, so a killed learner (SIGKILL, a lost host) never
  leaves it behind. The same is true when the server restarts or the network cuts that
  connection while the learner lives (a store outage): the lock is gone. The learner
  therefore calls `LearnerLock.ensure()` before its store writes: it checks the lock's
  connection (one `SELECT 1`) and, if that connection died, takes the lock again on a new
  one (waiting for the store like any connection, db/outage.py) and logs "learner lock
  re-acquired ...". If another learner took the lock in the meantime, `ensure` raises
  `LearnerLockLost` and the caller must stop without writing anything more.
- SQLite (one machine by nature): an exclusive `flock` on `<store file>.learner-<run>.lock`,
  which the kernel releases when the process dies; nothing can take it from a live holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from typing import IO

from sqlalchemy import Connection, Engine, text

from db.outage import first_line, is_disconnect

log = logging.getLogger("omniopd.learner")


class LearnerAlreadyRunning(RuntimeError):
    """Another learner holds the run."""


class LearnerLockLost(RuntimeError):
    """This learner's lock died with its connection and another learner holds the run now."""


def lock_key(run_name: str) -> int:
    """The run's advisory-lock key: a signed 64-bit number derived from its name."""
    digest = hashlib.sha256(f"omniopd learner {run_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class LearnerLock:
    """The run's learner lock (module docstring): `acquire`, `ensure` before writes, `release`."""

    def __init__(self, engine: Engine, run_name: str) -> None:
        self.engine, self.run_name = engine, run_name
        self.key = lock_key(run_name)
        self._conn: Connection | None = None
        self._file: IO[str] | None = None
        self._held = False  # PostgreSQL: acquired and not released (its connection may have died)
        self.reacquired = 0  # times the lock was taken again after its connection died

    @property
    def refusal(self) -> str:
        return (f"another learner is already running run {self.run_name!r} on this store (it holds the run's "
                "learner lock); stop it first (Ctrl-C or SIGTERM on it), or give this run another run.name")

    def acquire(self) -> None:
        """Take the lock; LearnerAlreadyRunning if another process holds it."""
        if self.engine.dialect.name == "postgresql":
            if not self._take():
                raise LearnerAlreadyRunning(self.refusal)
            self._held = True
            return
        database = self.engine.url.database
        if not database or database == ":memory:":
            return  # an in-memory store is one process's own
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.run_name)
        handle = open(f"{os.path.abspath(database)}.learner-{safe}.lock", "a")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise LearnerAlreadyRunning(self.refusal) from None
        self._file = handle

    def _take(self) -> bool:
        """PostgreSQL: try the advisory lock on a fresh connection of its own; keep it if taken."""
        conn = self.engine.connect()
        try:
            taken = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}))
            conn.commit()  # the lock is the session's, not the transaction's
        except BaseException:
            conn.close()
            raise
        if not taken:
            conn.close()
            return False
        self._conn = conn
        return True

    def ensure(self) -> None:
        """Make sure this process still holds the lock (PostgreSQL: its connection is alive);
        re-acquire it on a new connection if the connection died; LearnerLockLost if another
        learner holds it now. Cheap: one `SELECT 1` when nothing happened."""
        if not self._held:
            return
        reason = "an earlier re-acquisition was cut short"
        if self._conn is not None:
            try:
                self._conn.exec_driver_sql("SELECT 1")
                self._conn.commit()
                return
            except Exception as exc:
                if not is_disconnect(exc):
                    raise
                reason = first_line(exc)
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if not self._take():  # waits for the store first (db/outage.py), like every connection
            raise LearnerLockLost(
                f"the learner lock of run {self.run_name!r} died with its connection ({reason}) and another "
                "learner took the run meanwhile"
            )
        self.reacquired += 1
        log.warning("learner lock re-acquired for run %r on a new connection (the old one died: %s)",
                    self.run_name, reason)

    def release(self) -> None:
        self._held = False
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # a dropped connection has released it already
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
                conn.commit()
            with contextlib.suppress(Exception):
                conn.close()
        if self._file is not None:
            handle, self._file = self._file, None
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


@contextlib.contextmanager
def learner_lock(engine: Engine, run_name: str) -> Iterator[LearnerLock]:
    """Hold the run's learner lock for the block; LearnerAlreadyRunning if another process holds it."""
    lock = LearnerLock(engine, run_name)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
