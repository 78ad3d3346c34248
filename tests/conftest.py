"""Shared fixtures: real PostgreSQL and Redis for integration tests.

Tests that need a service use these fixtures. Without the service they skip, saying
why; under `OMNIOPD_REQUIRE_SERVICES=1` (set by .ci/run) they fail instead, so CI never
goes green by skipping. Every test gets its own PostgreSQL database and its own Redis
key prefix, so test runs (and several developers on one machine) never collide.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest

# Several tests interrupt a child process with SIGINT (Ctrl-C) and check that it stops
# cleanly. A shell starts background jobs (`scripts/test.sh &`) with SIGINT ignored, and
# children inherit an ignored signal, so those tests would see nothing happen. Restoring
# Python's handler here makes every child start with the default disposition again.
signal.signal(signal.SIGINT, signal.default_int_handler)

REQUIRE_SERVICES = os.environ.get("OMNIOPD_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get(
    "OMNIOPD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("OMNIOPD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(what: str, why: object, flag: str = "OMNIOPD_REQUIRE_SERVICES") -> None:
    """Skip (or fail, when `flag`=1 in the environment) because `what` is missing."""
    message = f"{what} is not available: {why}"
    if os.environ.get(flag) == "1":
        pytest.fail(f"{message} ({flag}=1, so this is an error)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """URL of the server's maintenance database (must be able to CREATE DATABASE)."""
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # any driver or connection error
        unavailable(f"PostgreSQL at {POSTGRES_URL}", exc)
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str):
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    import sqlalchemy as sa

    name = f"omniopd_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(postgres_admin_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis server."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        unavailable(f"Redis at {REDIS_URL}", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str):
    """A key prefix unique to this test; its keys are deleted afterwards."""
    import redis

    prefix = f"omniopd-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny untied Qwen3 model + tokenizer built offline once per test session."""
    from omniopd.models.tiny import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-model")))
