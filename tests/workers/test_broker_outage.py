"""A broker that goes away mid-run, on Redis (a private redis-server, stopped and started
again: the machine's Redis is shared) and on RabbitMQ (reached through a TCP gate of the
test's own, closed and opened again: workers/rehearsal/tcp_gate.py). The worker stays up: its consumer logs
the broker it waits for (password hidden) and resumes; the audit in flight during the outage
is not lost (acks_late: redelivered, its effect once); a message sent during the outage
fails fast into the store's outbox, the sender logs one warning naming the broker, and the
relay sends it once the broker is back."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import pytest

from omniopd.config import redact_url
from tests.workers.conftest import Store, probe_lines, wait_for, write_config
from tests.workers.test_celery_reliability import enqueue_audits, start_worker
from workers.app import AUDIT_TASK, enqueue_after_commit, make_celery
from workers.chaos.run import RedisServer
from workers.outbox import relay_once
from workers.rehearsal.tcp_gate import TcpGate

pytestmark = [pytest.mark.services, pytest.mark.slow]

OUTAGE_S = 8.0


class RedisBroker:
    def __init__(self, tmp_path):
        self.server = RedisServer(tmp_path / "redis")
        self.server.start()
        self.url = self.server.url
        self.shown = self.url.replace("redis://", "redis://:**@")  # Celery's own mask (shown with no password too)
        self.section = {"mode": "redis", "url": self.url, "visibility_timeout_s": 4}

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.stop()


class RabbitBroker:
    def __init__(self, url: str):
        parts = urlsplit(url)
        self.gate = TcpGate(parts.hostname, parts.port or 5672)  # the test's own way to the shared server
        self.gate.start()
        self.url = parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{self.gate.port}").geturl()
        self.shown = self.url.replace(f":{parts.password}@", ":**@")  # Celery's own mask
        self.section = {"mode": "rabbitmq", "url": self.url}

    def down(self) -> None:
        assert self.gate.stop() >= 1  # the worker's connections, at least

    def up(self) -> None:
        self.gate.start()

    def close(self) -> None:
        self.gate.stop()


@pytest.fixture(params=["redis", "rabbitmq"])
def outage_broker(request, tmp_path):
    broker = RedisBroker(tmp_path) if request.param == "redis" else RabbitBroker(request.getfixturevalue("rabbitmq_url"))
    yield broker
    broker.close()


def test_a_worker_waits_for_its_broker_and_nothing_sent_or_in_flight_is_lost(tmp_path, postgres_url, outage_broker,
                                                                              processes, caplog):
    b = outage_broker
    config_path = write_config(tmp_path / "run.yaml", store={"url": postgres_url}, broker=b.section)
    store = Store(config_path)
    first, later = store.trajectories(1, chunks=2, n=4), store.trajectories(1, chunks=1, n=2)
    queued = store.trajectories(12, chunks=1, n=4)  # running, prefetched or queued when the broker goes
    # a thread pool of 4, like the audit workers (Celery's prefetch reduction after a
    # reconnection stalled such a worker on RabbitMQ: workers/app.py)
    start_worker(processes, config_path, tmp_path, "worker", pool="threads", concurrency=4, delay=0.5)
    enqueue_audits(store, b.url, first + queued)
    wait_for(lambda: len(probe_lines(config_path, "sample")) >= 6, 90, "the audits to be under way")
    b.down()
    try:
        # A send during the outage fails fast into the outbox, with one warning naming the broker.
        app = make_celery(store.config, broker_url=b.url)
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="omniopd.broker"), store.sessions.begin() as s:
            enqueue_after_commit(s, app.signature(AUDIT_TASK, args=(later[0],)))
        send_s = time.monotonic() - t0
        time.sleep(OUTAGE_S)
    finally:
        b.up()
    back = time.monotonic()
    assert send_s < 5.0, f"a send to a broker that is away took {send_s:.1f} s"
    warned = [r.getMessage() for r in caplog.records if r.name == "omniopd.broker"]
    assert len(warned) == 1 and warned[0].startswith(f"broker unreachable at {redact_url(b.url)} ("), warned
    with caplog.at_level(logging.WARNING, logger="omniopd.broker"):
        sent = wait_for(lambda: relay_once(app, store.sessions, run_name=store.config.run.name, retry_s=1.0).sent, 60,
                        "the relay to send the message that waited in the outbox")
    assert sent == 1 and any("broker reachable again at" in r.getMessage() for r in caplog.records)
    every = first + queued + later
    wait_for(lambda: store.states(every) == ["ready"] * len(every), 120, "every audit to finish after the outage")
    # ~15 s of work left and a reconnection within 8 s of the broker's return; a worker that
    # sat on its prefetched messages took a minute or more
    assert time.monotonic() - back < 40, f"the audits took {time.monotonic() - back:.0f} s after the outage"
    deliveries = [line for line in probe_lines(config_path, "deliver") if line[1] == str(first[0])]
    assert len(deliveries) == 2  # the audit in flight: its ack was lost with the connection, so it came again
    stored = [(line[1], line[2]) for line in probe_lines(config_path, "sample") if line[4] == "new=1"]
    assert len(stored) == len(set(stored)) == 2 * 4 + 12 * 4 + 2  # every sample stored once, none lost
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert f"consumer: Cannot connect to {b.shown}" in log, log[-3000:]
    assert "Trying again in" in log
    password = urlsplit(b.url).password
    assert not password or f":{password}@" not in log
    store.engine.dispose()


def test_the_learners_relay_says_when_its_broker_goes_and_comes_back_with_nothing_to_send(tmp_path, postgres_url,
                                                                                          outage_broker, caplog):
    """The learner may have nothing to send during an outage; its outbox relay still looks
    at the broker every PROBE_S and logs one warning naming it, and one line when it is back."""
    from workers.outbox import PROBE_S, OutboxRelay

    b = outage_broker
    store = Store(write_config(tmp_path / "run.yaml", store={"url": postgres_url}, broker=b.section))
    app = make_celery(store.config, broker_url=b.url)
    with caplog.at_level(logging.WARNING, logger="omniopd.broker"), \
            OutboxRelay(app, store.sessions, run_name=store.config.run.name, interval_s=0.5):
        time.sleep(1.5)
        b.down()
        try:
            wait_for(lambda: any("broker unreachable" in r.getMessage() for r in caplog.records), PROBE_S + 10,
                     "the relay to notice the broker is away")
        finally:
            b.up()
        wait_for(lambda: any("broker reachable again" in r.getMessage() for r in caplog.records), PROBE_S + 10,
                 "the relay to notice the broker is back")
    lines = [r.getMessage() for r in caplog.records if r.name == "omniopd.broker"]
    assert len(lines) == 2 and lines[0].startswith(f"broker unreachable at {redact_url(b.url)} ("), lines
    store.engine.dispose()
