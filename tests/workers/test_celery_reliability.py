"""Celery with real Redis: killed workers and a restarted Redis lose no task, and each
task's effect on the store happens exactly once (acks_late + idempotent tasks)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from db.models import Chunk, TeacherSample
from tests.conftest import unavailable
from tests.workers.conftest import Store, pid_alive, probe_lines, wait_for, write_config
from workers.app import AUDIT_TASK, enqueue_after_commit, make_celery
from workers.broker import broker_endpoint, find_embedded_broker

pytestmark = [pytest.mark.slow]


def start_worker(processes, config_path, tmp_path, name, pool="prefork", concurrency=1, delay=0.4):
    return processes(
        ["-m", "tests.workers.probe_tasks", str(config_path), pool, str(concurrency)],
        tmp_path / f"{name}.log", env={"OMNIOPD_PROBE_DELAY": str(delay)},
    )


def enqueue_audits(store: Store, broker_url: str, ids: list[int]) -> None:
    app = make_celery(store.config, broker_url=broker_url)
    with store.sessions.begin() as s:
        for tid in ids:
            enqueue_after_commit(s, app.signature(AUDIT_TASK, args=(tid,)))


def assert_each_sample_stored_once(store: Store, config_path, chunks: int, n: int) -> None:
    stored = [(line[1], line[2]) for line in probe_lines(config_path, "sample") if line[4] == "new=1"]
    assert Counter(stored).most_common(1)[0][1] == 1, "a sample was stored twice"
    assert len(stored) == chunks * n
    with store.sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(TeacherSample)) == chunks * n
        assert s.scalar(select(func.count()).select_from(Chunk).where(Chunk.state == "audited")) == chunks


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request) -> dict:
    """The broker section of a run on each production broker: the machine's Redis (a key
    prefix of the test's own) or RabbitMQ (a vhost of the test's own)."""
    if request.param == "redis":
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        return {"mode": "redis", "url": url, "key_prefix": prefix, "visibility_timeout_s": 600}
    return {"mode": "rabbitmq", "url": request.getfixturevalue("rabbitmq_url")}


@pytest.mark.services
def test_worker_process_killed_mid_task_is_redelivered_and_its_effect_happens_once(
    tmp_path, postgres_url, broker, processes
):
    config_path = write_config(tmp_path / "run.yaml", store={"url": postgres_url}, broker=broker)
    store = Store(config_path)
    (tid,) = store.trajectories(1, chunks=2, n=3)
    worker = start_worker(processes, config_path, tmp_path, "worker")
    enqueue_audits(store, broker["url"], [tid])
    samples = wait_for(lambda: len(probe_lines(config_path, "sample")) >= 2 and probe_lines(config_path, "sample"),
                       90, "the audit to be under way")
    child = int(samples[0][3])
    assert child != worker.pid  # the pool process running the task, not the worker's main process
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: store.states([tid]) == ["ready"], 90, "the redelivered audit to finish")
    deliveries = probe_lines(config_path, "deliver")
    assert len(deliveries) == 2 and deliveries[0][2] == str(child) != deliveries[1][2]
    assert_each_sample_stored_once(store, config_path, chunks=2, n=3)
    store.engine.dispose()


def test_whole_worker_killed_with_its_embedded_broker_resumes_after_restart(tmp_path, processes):
    """SIGKILL of the worker's process group (host crash): the embedded broker dies with
    it (no orphan), keeps the unacknowledged message on disk, and a new worker gets it
    once the visibility timeout has passed."""
    config_path = write_config(tmp_path / "run.yaml", broker={"mode": "embedded", "visibility_timeout_s": 2})
    store = Store(config_path)
    (tid,) = store.trajectories(1, chunks=1, n=4)
    first = start_worker(processes, config_path, tmp_path, "first", delay=0.5)
    output_dir = store.config.run.output_dir
    broker = wait_for(lambda: find_embedded_broker(output_dir), 60, "the embedded broker")
    enqueue_audits(store, broker_endpoint(store.config).url, [tid])
    wait_for(lambda: probe_lines(config_path, "sample"), 60, "the audit to be under way")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    wait_for(lambda: not pid_alive(broker.server_pid), 15, "the orphaned embedded redis-server to exit")
    start_worker(processes, config_path, tmp_path, "second", delay=0.1)
    wait_for(lambda: store.states([tid]) == ["ready"], 90, "the audit to be redelivered to the new worker")
    assert len(probe_lines(config_path, "deliver")) == 2
    assert_each_sample_stored_once(store, config_path, chunks=1, n=4)
    store.engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_restarted_during_a_run_workers_reconnect_and_queued_tasks_complete(tmp_path, processes):
    port = _free_port()
    data = tmp_path / "redis"
    data.mkdir()
    redis_cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
                 "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"]
    if shutil.which("redis-server") is None:  # its own server: restarting the shared one would hurt others
        unavailable("redis-server on PATH", "needed to start a private Redis that the test can restart")
    server = processes(redis_cmd, tmp_path / "redis1.log", python=False)
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    wait_for(lambda: _pings(client), 20, "the test's redis-server")
    config_path = write_config(tmp_path / "run.yaml", broker={"mode": "redis", "url": url, "visibility_timeout_s": 3})
    store = Store(config_path)
    ids = store.trajectories(10, chunks=1, n=2)
    start_worker(processes, config_path, tmp_path, "worker", pool="threads", concurrency=2, delay=0.3)
    enqueue_audits(store, url, ids)
    wait_for(lambda: len(probe_lines(config_path, "done")) >= 2, 90, "the first audits")
    server.send_signal(signal.SIGTERM)  # a clean restart; the append-only file keeps the queue
    server.wait(30)
    time.sleep(1.0)  # the workers notice the broker is gone
    processes(redis_cmd, tmp_path / "redis2.log", python=False)
    wait_for(lambda: _pings(client), 20, "the restarted redis-server")
    wait_for(lambda: store.states(ids) == ["ready"] * 10, 120, "every queued audit to complete after the restart")
    assert_each_sample_stored_once(store, config_path, chunks=10, n=2)
    client.close()
    store.engine.dispose()


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False

