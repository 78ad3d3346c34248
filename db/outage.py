"""Riding out a store outage: the database server goes away mid-run and comes back.

Three pieces, used together by every long-lived process of a run (learner, workers):

- `is_disconnect(exc)`: is this error the server being gone or refusing connections (a
  restart, a failover, a network cut)? Only those are waited for; every other error
  (a constraint violation, SQLite's busy lock, a programming error) still raises.
- `wait_for_store(engine)`: switched on once start-up has checked the store (a wrong URL
  or a server that is down at start-up still fails fast with `StoreUnreachable`). From
  then on, while the server is unreachable, opening a connection blocks and retries every
  `retry_s` instead of raising, and says so:

      WARNING store unreachable, waiting for it: postgresql+psycopg://omni:***@db:5432/omniopd (<first line of the error>); retrying every 1 s
      WARNING store still unreachable after 30 s, waiting: postgresql+psycopg://omni:***@db:5432/omniopd (<error>)
      INFO    store reachable again after 42 s: postgresql+psycopg://omni:***@db:5432/omniopd

  One warning per outage and engine, however many threads wait; a reminder every
  `remind_s`. The password is never shown (the URL is rendered with hide_password, and
  any occurrence of the password in a driver message is masked).
  Because the pool pre-pings every connection it hands out (db/session.py), a transaction
  that STARTS during an outage waits here and then runs normally.
- `rerun_on_disconnect(unit, what=...)`: a transaction IN FLIGHT when the connection drops
  raises; this runs `unit` again once the store is back (the connect-level wait does the
  waiting). `unit` opens its own transaction (`with sessions.begin() as s: ...`).

Which units may be re-run. A unit whose transaction failed before its COMMIT left nothing
behind (the server rolled it back), so re-running it is always correct. The one hard case
is a connection lost DURING the COMMIT: the caller cannot know whether it happened. A unit
may be passed to `rerun_on_disconnect` only if a re-run after a commit that did happen is
harmless, i.e. it re-reads the store and does only what is left:

- reads (status, counts, budget state) and idempotent writes (inserts that skip existing
  rows, state moves guarded by the current state, settling a reservation at the same
  amount) qualify as they are;
- writes that are not idempotent must detect their own earlier commit first: the
  learner's step record checks whether the step is already recorded with exactly its
  bundles (`db.repo_bundles.step_already_recorded`); opening a teacher call finds the
  ledger row of its idempotency key (`db.repo_ledger.find_open_call`);
- a unit that sends or pays for something outside the store (an HTTP request to a
  teacher) must NOT be re-run whole: retry only its store transactions.

This module imports nothing of OmniOPD's outside `db`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("omniopd.store")

T = TypeVar("T")

RETRY_S = 1.0  # how often a waiting connection attempt tries again
REMIND_S = 30.0  # how often a long wait says again what it waits for

DISCONNECT_SQLSTATES = frozenset({
    "57P01",  # admin_shutdown: terminating connection due to administrator command
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: the database system is starting up / shutting down
    "08000", "08001", "08003", "08004", "08006", "08007",  # connection_exception class
    "53300",  # too_many_connections: the server refuses new sessions for now
})
DISCONNECT_MESSAGES = (
    "connection refused",
    "server closed the connection",
    "terminating connection",
    "is not currently accepting connections",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "connection is closed",
    "connection timeout",
    "timeout expired",
    "connection timed out",
    "connection reset",
    "could not receive data from server",
    "could not send data to server",
    "no route to host",
    "network is unreachable",
    "ssl connection has been closed unexpectedly",
    "consuming input failed",
    "sending query failed",
)


def is_disconnect(exc: BaseException) -> bool:
    """True when `exc` says the database server is gone or refusing connections for now.

    SQLAlchemy errors: those that invalidated their connection, or that wrap such a driver
    error. psycopg errors: OperationalError / InterfaceError with a connection-class
    SQLSTATE or one of the messages of a stopped, restarting or unreachable server.
    Everything else (constraint violations, SQLite busy, programming errors) is False.
    """
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        return exc.orig is not None and _driver_disconnect(exc.orig)
    return _driver_disconnect(exc)


def _driver_disconnect(exc: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    if not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    if getattr(exc, "sqlstate", None) in DISCONNECT_SQLSTATES:
        return True
    message = str(exc).lower()
    return any(m in message for m in DISCONNECT_MESSAGES)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an error's message (driver errors run over lines)."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    for line in str(orig).splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(orig).__name__


class StoreWait:
    """The connect-level wait of one engine (module docstring); `wait_for_store` installs it."""

    def __init__(self, engine: Engine, *, retry_s: float = RETRY_S, remind_s: float = REMIND_S,
                 logger: logging.Logger | None = None) -> None:
        url = make_url(engine.url)
        self.url = url.render_as_string(hide_password=True)
        self._password = str(url.password) if url.password else None
        self.retry_s, self.remind_s = retry_s, remind_s
        self.log = logger or log
        self._lock = threading.Lock()
        self._since: float | None = None  # when the current outage was first seen
        self._reminded = 0.0
        self.outages = 0  # outages seen (for tests and reports)

    def masked(self, text: str) -> str:
        """`text` with the URL's password masked (a driver message could echo a DSN)."""
        return text.replace(self._password, "***") if self._password else text

    def connect(self, dialect, cargs, cparams):
        """Open a DBAPI connection, waiting while the server is unreachable."""
        while True:
            try:
                conn = dialect.connect(*cargs, **cparams)
            except Exception as exc:
                if not _driver_disconnect(exc):
                    raise
                self._waiting(exc)
                time.sleep(self.retry_s)
                continue
            self._back()
            return conn

    def _waiting(self, exc: BaseException) -> None:
        now = time.monotonic()
        reason = self.masked(first_line(exc))
        with self._lock:
            if self._since is None:
                self._since, self._reminded = now, now
                self.outages += 1
                self.log.warning("store unreachable, waiting for it: %s (%s); retrying every %g s",
                                 self.url, reason, self.retry_s)
            elif now - self._reminded >= self.remind_s:
                self._reminded = now
                self.log.warning("store still unreachable after %.0f s, waiting: %s (%s)",
                                 now - self._since, self.url, reason)

    def _back(self) -> None:
        if self._since is None:  # the common case: no outage, no lock
            return
        with self._lock:
            if self._since is None:
                return
            waited, self._since = time.monotonic() - self._since, None
        self.log.info("store reachable again after %.0f s: %s", waited, self.url)


def wait_for_store(engine: Engine, **kwargs) -> StoreWait | None:
    """From now on, new connections of a PostgreSQL `engine` wait for an unreachable server
    instead of failing (module docstring). Call after start-up checked the store. SQLite
    (a local file) has no server to wait for: None. Installing twice is a no-op."""
    if engine.dialect.name != "postgresql":
        return None
    current = engine.__dict__.get("omniopd_store_wait")
    if current is not None:
        return current
    wait = StoreWait(engine, **kwargs)

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _conn_rec, cargs, cparams):
        return wait.connect(dialect, cargs, cparams)

    engine.__dict__["omniopd_store_wait"] = wait
    return wait


def rerun_on_disconnect(
    unit: Callable[[], T],
    *,
    what: str,
    logger: logging.Logger | None = None,
    retry_s: float = RETRY_S,
    on_disconnect: Callable[[BaseException], None] | None = None,
) -> T:
    """Run `unit()`; while it fails because the store went away, wait and run it again.

    `unit` must open its own transaction and be safe to re-run (module docstring). The
    waiting happens when the re-run connects (`wait_for_store`); `retry_s` only spaces the
    re-runs on an engine without it. `on_disconnect(exc)` is called before each re-run
    (the learner re-checks its lock there). Other errors propagate unchanged."""
    logger = logger or log
    while True:
        try:
            return unit()
        except Exception as exc:
            if not is_disconnect(exc):
                raise
            logger.warning("store connection lost during %s (%s); waiting for the store, then running it again",
                           what, first_line(exc))
            if on_disconnect is not None:
                on_disconnect(exc)
            time.sleep(retry_s)
