"""Store outages on a real PostgreSQL server (db/outage.py): which errors are the server
going away (from real terminated sessions and refused connections, not hand-made ones),
the connect-level wait (one warning naming the URL without its password, a reminder, the
"reachable again" line), start-up that still fails fast, and re-running a unit.

An outage is made per test on a database of its own: `ALTER DATABASE ... WITH
ALLOW_CONNECTIONS false` plus `pg_terminate_backend` of its sessions refuses and cuts every
connection to it exactly as a stopped server would ("database ... is not currently
accepting connections"), without touching the shared server."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from types import SimpleNamespace

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from db.migrate import StoreUnreachable
from db.outage import is_disconnect, rerun_on_disconnect, wait_for_store
from db.session import make_engine
from db.store import open_store
from tests.db.outage_helpers import Outage

pytestmark = pytest.mark.services

PASSWORD = "s3cret-Pw-9f1"


@pytest.fixture
def outage(postgres_url, postgres_admin_url):
    made = Outage(postgres_admin_url, make_url(postgres_url).database)
    yield made
    made.close()


@pytest.fixture
def password_url(postgres_url, postgres_admin_url):
    """The test database through a role with a password (the server trusts local logins, so
    the password is only there to prove it never reaches a log line or an error)."""
    role = f"omniopd_pw_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{PASSWORD}'"))
    yield make_url(postgres_url).set(username=role, password=PASSWORD).render_as_string(hide_password=False)
    with admin.connect() as c:
        database = make_url(postgres_url).database
        c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"), {"r": role})
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        c.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
    admin.dispose()


# ------------------------------------------------------------------ is_disconnect


def test_a_terminated_session_is_a_disconnect_and_a_constraint_error_is_not(postgres_url, outage):
    engine = make_engine(postgres_url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("CREATE TABLE t (id int PRIMARY KEY)"))
            c.execute(sa.text("INSERT INTO t VALUES (1)"))
        with pytest.raises(sa.exc.IntegrityError) as constraint, engine.begin() as c:
            c.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert not is_disconnect(constraint.value) and not is_disconnect(constraint.value.orig)
        with pytest.raises(sa.exc.ProgrammingError) as typo, engine.begin() as c:
            c.execute(sa.text("SELEKT 1"))
        assert not is_disconnect(typo.value)

        conn = engine.connect()
        outage.terminate(conn.scalar(sa.text("SELECT pg_backend_pid()")))
        with pytest.raises(sa.exc.OperationalError) as cut:
            conn.execute(sa.text("SELECT 1"))
        conn.close()
        assert "terminating connection due to administrator command" in str(cut.value)
        assert is_disconnect(cut.value) and is_disconnect(cut.value.orig)
    finally:
        engine.dispose()

    raw = psycopg.connect(make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False))
    outage.terminate(raw.info.backend_pid)
    with pytest.raises(psycopg.OperationalError) as first:
        raw.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError) as closed:  # the connection is closed
        raw.execute("SELECT 1")
    assert is_disconnect(first.value) and is_disconnect(closed.value)


def test_a_refused_connection_is_a_disconnect_and_a_missing_database_is_not(postgres_url, outage):
    outage.begin()
    engine = make_engine(postgres_url)
    try:
        with pytest.raises(sa.exc.OperationalError) as refused:
            engine.connect()
        assert "is not currently accepting connections" in str(refused.value)
        assert is_disconnect(refused.value)
        down = make_engine(make_url(postgres_url).set(port=1).render_as_string(hide_password=False))
        with pytest.raises(sa.exc.OperationalError) as no_server:
            down.connect()
        down.dispose()
        assert is_disconnect(no_server.value)  # connection refused: nothing listens
        missing = make_engine(make_url(postgres_url).set(database="omniopd_no_such_db").render_as_string(hide_password=False))
        with pytest.raises(sa.exc.OperationalError) as typo:
            missing.connect()
        missing.dispose()
        assert "does not exist" in str(typo.value) and not is_disconnect(typo.value)
    finally:
        engine.dispose()


def test_sqlite_busy_and_plain_errors_are_not_disconnects(tmp_path):
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x int)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as busy:
        other.execute("BEGIN IMMEDIATE")
    holder.close()
    other.close()
    assert "locked" in str(busy.value) and not is_disconnect(busy.value)
    assert not is_disconnect(ValueError("connection refused"))  # only driver errors count


# ------------------------------------------------------------------ the connect-level wait


def test_a_transaction_started_during_an_outage_waits_and_completes(password_url, outage, caplog):
    engine = make_engine(password_url)
    wait = wait_for_store(engine, retry_s=0.3, remind_s=1.0)
    assert wait is not None and wait_for_store(engine) is wait  # installed once
    with engine.begin() as c:  # a pooled connection, cut by the outage
        c.execute(sa.text("SELECT 1"))
    result: list[int] = []

    def work() -> None:
        with engine.begin() as c:
            result.append(c.scalar(sa.text("SELECT 41 + 1")))

    caplog.set_level(logging.INFO, logger="omniopd.store")
    outage.begin()
    t0 = time.monotonic()
    threads = [threading.Thread(target=work) for _ in range(3)]  # three waiters, one warning
    for t in threads:
        t.start()
    time.sleep(3.0)
    assert result == [] and all(t.is_alive() for t in threads)
    outage.end()
    for t in threads:
        t.join(timeout=20)
    waited = time.monotonic() - t0
    engine.dispose()
    assert result == [42, 42, 42] and 3.0 <= waited < 15

    lines = [r.getMessage() for r in caplog.records if r.name == "omniopd.store"]
    first = [m for m in lines if m.startswith("store unreachable")]
    assert len(first) == 1, lines
    shown = make_url(password_url).render_as_string(hide_password=True)
    assert shown in first[0] and "***" in shown and "is not currently accepting connections" in first[0]
    assert any(m.startswith("store still unreachable after") for m in lines)  # the reminder (remind_s=1)
    back = [k for k, m in enumerate(lines) if m.startswith("store reachable again after")]
    assert len(back) == 1 and back[0] > lines.index(first[0])
    assert not any(PASSWORD in m for m in lines)
    assert not any(PASSWORD in r.getMessage() or PASSWORD in (r.exc_text or "") for r in caplog.records)
    assert wait.outages == 1


def test_start_up_with_the_store_unreachable_still_fails_fast(password_url, outage):
    outage.begin()
    for url in (password_url, make_url(password_url).set(port=1).render_as_string(hide_password=False)):
        config = SimpleNamespace(store_url=url, store=SimpleNamespace(pool_size=1, sqlite_busy_timeout_ms=1000))
        t0 = time.monotonic()
        with pytest.raises(StoreUnreachable) as refused:
            open_store(config)
        assert time.monotonic() - t0 < 5
        assert PASSWORD not in str(refused.value)


def test_a_wrong_database_is_not_waited_for_even_with_the_wait_on(postgres_url):
    engine = make_engine(make_url(postgres_url).set(database="omniopd_no_such_db").render_as_string(hide_password=False))
    wait_for_store(engine, retry_s=0.1)
    t0 = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match="does not exist"):
        engine.connect()
    assert time.monotonic() - t0 < 5
    engine.dispose()


# ------------------------------------------------------------------ re-running a unit


def test_a_unit_cut_mid_transaction_runs_again_once_the_store_is_back(postgres_url, outage, caplog):
    engine = make_engine(postgres_url)
    wait_for_store(engine, retry_s=0.3)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE t (id int PRIMARY KEY)"))
    runs = 0

    def unit() -> int:
        nonlocal runs
        runs += 1
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO t VALUES (:i) ON CONFLICT DO NOTHING"), {"i": 7})
            if runs == 1:  # the store goes away in the middle of the first try
                outage.begin()
                outage.end_after(1.5)
            return c.scalar(sa.text("SELECT count(*) FROM t"))

    caplog.set_level(logging.INFO, logger="omniopd.store")
    assert rerun_on_disconnect(unit, what="the test unit", retry_s=0.1) == 1
    assert runs == 2
    assert any(m.getMessage().startswith("store connection lost during the test unit") for m in caplog.records)
    with pytest.raises(sa.exc.IntegrityError):  # other errors are not re-run
        rerun_on_disconnect(lambda: _insert_twice(engine), what="a duplicate")
    engine.dispose()


def _insert_twice(engine: sa.Engine) -> None:
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO t VALUES (8), (8)"))
