"""Shared fixtures: real PostgreSQL and Redis for integration tests.

Tests that need a service use these fixtures. Without the service they skip, saying
why; under `OMNIOPD_REQUIRE_SERVICES=1` (set by .ci/run) they fail instead, so CI never
goes green by skipping. Every test gets its own PostgreSQL database and its own Redis
key prefix, so test runs (and several developers on one machine) never collide.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

# Several tests interrupt a child process with SIGINT (Ctrl-C) and check that it stops
# cleanly. A shell starts background jobs (`scripts/test.sh &`) with SIGINT ignored, and
# children inherit an ignored signal, so those tests would see nothing happen. Restoring
# Python's handler here makes every child start with the default disposition again.
signal.signal(signal.SIGINT, signal.default_int_handler)

# ------------------------------------------------------------------ one wait budget per test
#
# A test's waits (wait_for, subprocess and process timeouts) are each a worst case; several
# of them can add up to more than pytest's timeout, and pytest-timeout then kills the test
# in the middle of a wait with no word of what it waited for. Each test instead gets a wait
# budget: its timeout less WAIT_MARGIN_S (teardown: processes are stopped and waited for),
# and `wait_left(seconds)` caps a wait at what is left of it, so the waits of one test
# together never exceed its timeout and a slow one fails with its own message.

WAIT_MARGIN_S = 45.0
_wait_deadline: float | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _wait_deadline
    marker = item.get_closest_marker("timeout")
    timeout = marker.args[0] if marker is not None and marker.args else getattr(item.config, "_env_timeout", None)
    _wait_deadline = time.monotonic() + float(timeout) - WAIT_MARGIN_S if timeout else None


def wait_left(seconds: float) -> float:
    """`seconds`, or what is left of the current test's wait budget if that is less (never below 1 s)."""
    if _wait_deadline is None:
        return seconds
    return max(1.0, min(seconds, _wait_deadline - time.monotonic()))


# ------------------------------------------------------------------ the long runs first, balanced
#
# scripts/test.sh runs the suite on two pytest-xdist processes (`-n 2 --dist load
# --maxschedchunk 1`): xdist hands each process the next two tests of the collection order and
# tops it up one test at a time as it finishes one, so a process takes the next test when it
# is free. A few end-to-end runs take minutes each (`@pytest.mark.long_running(seconds=...)`,
# their length measured on the 2-core CI machine); left where they are collected (mostly at
# the end, under tests/workers) they would meet in the last minutes, queued behind one another
# on one process while the other idles. So they go first: the two each process starts with
# are those of an LPT split (longest first, each to the process with less work so far), the
# other long ones follow longest first (taken by whichever process is free), and the short
# tests after them, in their collected order, fill the gaps. Without xdist the long runs
# simply come first.


def _long_running_s(item: pytest.Item) -> float:
    marker = item.get_closest_marker("long_running")
    return float(marker.kwargs.get("seconds", 0)) if marker is not None else 0.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    long = sorted((item for item in items if _long_running_s(item) > 0), key=_long_running_s, reverse=True)
    rest = [item for item in items if _long_running_s(item) == 0]
    shares: list[list[pytest.Item]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for item in long:
        k = loads.index(min(loads))
        shares[k].append(item)
        loads[k] += _long_running_s(item)
    fillers = iter(rest)
    first = []  # what each process starts with: two of its share, a short test where the share is smaller
    for share in shares:
        take = share[:2]
        while len(take) < 2 and (filler := next(fillers, None)) is not None:
            take.append(filler)
        first += take
    items[:] = first + [item for item in long if item not in first] + list(fillers)


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


RABBITMQ_URL = os.environ.get("OMNIOPD_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")


@pytest.fixture
def rabbitmq_url():
    """A RabbitMQ vhost of this test's own on the real server (RabbitMQ runs on these
    machines at 127.0.0.1:5672); deleted with its queues afterwards."""
    import socket
    from urllib.parse import urlsplit

    from workers.rehearsal.vhost import temporary_vhost

    parts = urlsplit(RABBITMQ_URL)
    try:
        socket.create_connection((parts.hostname, parts.port or 5672), timeout=2).close()
    except OSError as exc:
        unavailable(f"RabbitMQ at {parts.hostname}:{parts.port or 5672}", exc)
    try:
        vhost = temporary_vhost(RABBITMQ_URL, prefix="omniopd-test")
        url = vhost.__enter__()
    except RuntimeError as exc:
        unavailable("a RabbitMQ vhost for the test", exc)
    try:
        yield url
    finally:
        vhost.__exit__(None, None, None)


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


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread for a module that runs tiny models in-process: they are dominated by
    per-op overhead, and one thread is faster on shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny untied Qwen3 model + tokenizer built offline once per test session."""
    from omniopd.models.tiny import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-model")))
