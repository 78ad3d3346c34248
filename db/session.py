"""Engine and session factory for SQLite (embedded) and PostgreSQL (production).

One URL selects the backend (`OmniConfig.store_url`).

SQLite: WAL journal (readers never block the writer), a busy timeout (a writer waits for
the lock instead of failing), foreign keys on, and every read-write transaction starts
with `BEGIN IMMEDIATE`, i.e. takes the database write lock up front. That single rule
makes budget reservations and bundle claims correct under concurrent processes: two
transactions can never both read the same state and then both write (the classic
deferred-transaction race, which SQLite reports as SQLITE_BUSY_SNAPSHOT at best).
Read-only factories (`read_only=True`: status, dashboards) begin deferred and do not
block writers.

PostgreSQL (psycopg 3): READ COMMITTED; the repository functions that must be atomic
lock rows explicitly (`SELECT ... FOR UPDATE`, `FOR UPDATE SKIP LOCKED` for claims).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

READ_ONLY_OPTION = "omniopd_read_only"


SUPPORTED = "sqlite:///path/omniopd.db or postgresql+psycopg://user@host:5432/db"


def normalise_url(url: str) -> str:
    """PostgreSQL URLs without a driver get psycopg 3 (psycopg2 is not a dependency).
    ValueError, saying what is supported, for anything else than SQLite and psycopg."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"store URL {url!r} is not a database URL; write {SUPPORTED}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql" and parsed.drivername != "postgresql+psycopg":
        raise ValueError(f"store URL {url!r}: the {parsed.drivername} driver is not supported; write {SUPPORTED}")
    return parsed.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store URL (None for PostgreSQL)."""
    parsed = make_url(normalise_url(url))
    return Path(parsed.database or "").expanduser() if parsed.get_backend_name() == "sqlite" else None


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    sqlite_busy_timeout_ms: int = 30_000,
    echo: bool = False,
) -> Engine:
    """An engine for `url`; SQLite files get their directory created and the PRAGMAs above."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise ValueError(
                f"store URL {url!r}: use a SQLite file (sqlite:///path/omniopd.db); an in-memory "
                "database cannot be shared between the processes of a run"
            )
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": sqlite_busy_timeout_ms / 1000})
        _configure_sqlite(engine, sqlite_busy_timeout_ms)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,  # survive a database restart between transactions
            connect_args={"connect_timeout": 10},
        )
    raise ValueError(f"store URL {url!r}: only SQLite and PostgreSQL are supported; write {SUPPORTED}")


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Hand transaction control to SQLAlchemy: the sqlite3 module's own implicit
        # BEGIN is deferred and skipped before SELECTs, which breaks atomicity.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions for `engine`. Callers own the transaction (`with factory.begin() as s:`).

    read_only=True: on SQLite the transaction does not take the write lock, so it never
    delays writers; such sessions must not write (repository functions that need the
    lock refuse them).
    """
    bind = engine.execution_options(**{READ_ONLY_OPTION: True}) if read_only else engine
    return sessionmaker(bind=bind, expire_on_commit=False)


def backend(session: Session) -> str:
    """'sqlite' or 'postgresql' for the session's bind."""
    return session.get_bind().dialect.name


def insert_ignoring_conflicts(session: Session, table: Table, *, unique: Sequence[str]):
    """`INSERT ... ON CONFLICT (unique) DO NOTHING` into `table` on the session's backend.

    How the idempotent writes (a redelivered task storing the same rows again) skip rows
    that exist: `unique` names the columns of the table's unique constraint. Add
    `.returning(table.c.id)` to learn which rows were new (both backends support it).
    """
    dialect = postgresql if backend(session) == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=list(unique))


def refuse_writes(engine: Engine) -> None:
    """Make every connection of `engine` refuse writes in the database itself, not only by
    convention: SQLite's `PRAGMA query_only`, PostgreSQL's read-only transactions. For
    viewers that must never change the store they watch (`omniopd dashboard`). Pooled
    connections are dropped, so every later one is opened this way."""
    sqlite_backend = engine.dialect.name == "sqlite"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        if sqlite_backend:
            dbapi_connection.execute("PRAGMA query_only = ON")
        else:  # psycopg 3: every transaction this connection starts is READ ONLY
            dbapi_connection.read_only = True

    engine.dispose()


def require_writable(session: Session, what: str) -> None:
    """Refuse a read-only session where correctness depends on holding the write lock."""
    if session.get_bind().get_execution_options().get(READ_ONLY_OPTION, False):
        raise RuntimeError(f"{what} needs a read-write session (make_session_factory(engine))")
