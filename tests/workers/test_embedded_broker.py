"""The embedded broker: found by every process of a run, stopped by its owner on every
way out, never left behind as an orphan redis-server, and its queue survives a restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from omniopd.config import parse_config
from tests.workers.conftest import ROOT, pid_alive, wait_for
from workers.broker import (
    BrokerNotRunning,
    broker_endpoint,
    broker_for,
    find_embedded_broker,
    socket_path,
)


def start_owner(output_dir, mode: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.workers.broker_owner", str(output_dir), mode], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"broker owner did not start: {proc.stderr.read()}")
    return proc, json.loads(line)


def no_redis_serving(socket: str) -> bool:
    found = subprocess.run(["pgrep", "-f", f"redis-server unixsocket:{socket}"], capture_output=True, text=True)
    return found.stdout.strip() == ""


@pytest.mark.parametrize(
    "how",
    ["normal exit", "exception", "ctrl-c", "sigterm", "sigkill"],
)
def test_owner_leaves_no_orphan_redis_server_on_any_exit_path(tmp_path, how):
    mode = {"normal exit": "exit", "exception": "raise"}.get(how, "wait")
    proc, info = start_owner(tmp_path, mode)
    try:
        assert info["owned"] and pid_alive(info["server_pid"])
        if how in ("ctrl-c", "sigterm", "sigkill"):
            proc.send_signal({"ctrl-c": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}[how])
        code = proc.wait(30)
        expected = {"normal exit": 0, "exception": 1, "ctrl-c": -signal.SIGINT, "sigterm": 128 + signal.SIGTERM,
                    "sigkill": -signal.SIGKILL}[how]
        assert code == expected, proc.stderr.read()
        wait_for(lambda: not pid_alive(info["server_pid"]), 15, "the redis-server to exit")
        assert no_redis_serving(str(socket_path(tmp_path)))
        assert find_embedded_broker(tmp_path) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_other_processes_join_the_running_broker_and_never_stop_it(tmp_path):
    owner, info = start_owner(tmp_path, "wait")
    try:
        joiner, joined = start_owner(tmp_path, "exit")
        assert joiner.wait(30) == 0
        assert not joined["owned"] and joined["server_pid"] == info["server_pid"] and joined["url"] == info["url"]
        assert pid_alive(info["server_pid"]), "a joining process stopped the owner's broker"
        config = parse_config({"run": {"output_dir": str(tmp_path)}})
        assert broker_endpoint(config).url == info["url"]
    finally:
        owner.send_signal(signal.SIGTERM)
        owner.wait(30)
    wait_for(lambda: not pid_alive(info["server_pid"]), 15, "the redis-server to exit")
    with pytest.raises(BrokerNotRunning, match="no embedded broker is running"):
        broker_endpoint(parse_config({"run": {"output_dir": str(tmp_path)}}))


def test_queued_messages_survive_a_broker_restart(tmp_path):
    import redis

    config = parse_config({"run": {"output_dir": str(tmp_path)}})
    with broker_for(config) as endpoint:
        assert endpoint.owned
        client = redis.Redis.from_url(endpoint.redis_url)
        client.lpush("queue", "message")
        client.close()
    with broker_for(config) as endpoint:
        client = redis.Redis.from_url(endpoint.redis_url)
        assert client.rpop("queue") == b"message"
        client.close()


def test_a_deep_output_dir_gets_a_short_fixed_socket_path(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = socket_path(deep)
    assert len(str(path)) <= 100
    assert path == socket_path(deep)  # every process of the run computes the same one
    started = time.monotonic()
    with broker_for(parse_config({"run": {"output_dir": str(deep)}})) as endpoint:
        assert str(path) in endpoint.url
    assert time.monotonic() - started < 60


def test_a_killed_embedded_broker_is_revived_by_its_owner_with_its_queues(tmp_path):
    import os

    import redis

    config = parse_config({"run": {"output_dir": str(tmp_path)}})
    with broker_for(config) as endpoint:
        assert not endpoint.revive()  # alive: nothing to do
        client = redis.Redis.from_url(endpoint.redis_url)
        client.lpush("queue", "message")
        client.close()
        time.sleep(1.5)  # appendfsync everysec: the append-only file has it
        old = endpoint.server.process.pid
        os.kill(old, signal.SIGKILL)
        endpoint.server.process.wait(10)
        assert endpoint.revive()
        assert endpoint.server.process.pid != old and find_embedded_broker(tmp_path).server_pid == endpoint.server.process.pid
        client = redis.Redis.from_url(endpoint.redis_url)
        assert client.rpop("queue") == b"message"
        client.close()
