"""Store outages for tests: a real one on a database of the shared PostgreSQL server
(`Outage`), and a connection lost around one COMMIT (`CutCommit`), which no real outage
can time precisely."""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg
import sqlalchemy as sa


class Outage:
    """Refuse and cut every connection to one database of the shared server, then let them in again."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.database = database

    def begin(self) -> None:
        with self.admin.connect() as c:
            c.execute(sa.text(f'ALTER DATABASE "{self.database}" WITH ALLOW_CONNECTIONS false'))
            c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                      {"d": self.database})

    def end(self) -> None:
        with self.admin.connect() as c:
            c.execute(sa.text(f'ALTER DATABASE "{self.database}" WITH ALLOW_CONNECTIONS true'))

    def terminate(self, pid: int) -> None:
        with self.admin.connect() as c:
            c.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    def end_after(self, seconds: float) -> threading.Thread:
        thread = threading.Thread(target=lambda: (time.sleep(seconds), self.end()), daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.end()
        self.admin.dispose()


def disconnect_error() -> sa.exc.OperationalError:
    """What SQLAlchemy raises when the server closes the connection under a COMMIT."""
    return sa.exc.OperationalError("COMMIT", {}, psycopg.OperationalError("server closed the connection unexpectedly"),
                                   connection_invalidated=True)


class CutCommit:
    """A session factory (only `begin()`) over a real one: once `armed` (before or during a
    transaction), that transaction loses its connection `after` its COMMIT went through
    (the caller cannot tell) or `before` it (rolled back); `cut` counts the losses."""

    def __init__(self, sessions, when: str) -> None:
        self.sessions, self.when = sessions, when
        self.armed = False
        self.cut = 0

    @contextlib.contextmanager
    def begin(self):
        with self.sessions.begin() as s:
            yield s
            if self.armed and self.when == "before":
                self.armed, self.cut = False, self.cut + 1
                raise disconnect_error()
        if self.armed and self.when == "after":
            self.armed, self.cut = False, self.cut + 1
            raise disconnect_error()


