"""The outbox: a message whose send failed after its commit is kept by the store and
re-sent by the relay once the broker answers (real Redis, real SQLite store)."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import func, select

from db.models import OutboxMessage, utcnow
from tests.workers.conftest import Store, wait_for, write_config
from workers.app import AUDIT_TASK, audit_queue, enqueue_after_commit, make_celery, queue_depths
from workers.outbox import OutboxRelay, relay_once

pytestmark = pytest.mark.services


def _dead_broker_url() -> str:
    with socket.socket() as s:  # a port nobody listens on: every send is refused
        s.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{s.getsockname()[1]}/0"


@pytest.fixture
def run(tmp_path, redis_url, redis_prefix):
    config_path = write_config(tmp_path / "run.yaml", broker={"mode": "redis", "url": redis_url, "key_prefix": redis_prefix})
    store = Store(config_path)
    down = make_celery(store.config, broker_url=_dead_broker_url(), config_path=config_path)
    down.conf.broker_transport_options = {**down.conf.broker_transport_options, "max_retries": 1}
    up = make_celery(store.config, broker_url=redis_url, config_path=config_path)
    yield store, down, up
    store.engine.dispose()


def _waiting(store: Store) -> int:
    with store.sessions.begin() as s:
        return s.scalar(select(func.count()).select_from(OutboxMessage))


def test_a_message_the_broker_refused_after_commit_is_kept_and_relayed_once_it_answers(run):
    store, down, up = run
    queue = audit_queue("emu")
    (tid,) = store.trajectories(1)
    with store.sessions.begin() as s:
        enqueue_after_commit(s, down.signature(AUDIT_TASK, args=(tid,), queue=queue))
    assert _waiting(store) == 1  # the commit stands, the message is not lost
    assert relay_once(up, store.sessions, run_name=store.config.run.name, retry_s=5).sent == 0  # still in its grace
    with store.sessions.begin() as s:  # as if the grace had passed
        s.execute(OutboxMessage.__table__.update().values(next_try_at=utcnow()))
    report = relay_once(up, store.sessions, run_name=store.config.run.name, retry_s=5)
    assert (report.sent, report.failed) == (1, 0)
    assert _waiting(store) == 0 and queue_depths(up, [queue]) == {queue: 1}


def test_a_relay_that_cannot_reach_the_broker_keeps_the_message_and_says_why(run):
    store, down, _ = run
    with store.sessions.begin() as s:
        enqueue_after_commit(s, down.signature(AUDIT_TASK, args=(1,)))
    with store.sessions.begin() as s:
        s.execute(OutboxMessage.__table__.update().values(next_try_at=utcnow()))
    report = relay_once(down, store.sessions, run_name=store.config.run.name, retry_s=5)
    assert (report.sent, report.failed) == (0, 1) and report.error
    with store.sessions.begin() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.tries == 1 and row.last_error and row.next_try_at > utcnow()


def test_a_sent_message_leaves_the_outbox_and_the_relay_thread_sends_the_rest(run):
    store, down, up = run
    queue = audit_queue("emu")
    with store.sessions.begin() as s:
        enqueue_after_commit(s, up.signature(AUDIT_TASK, args=(1,), queue=queue))
    assert _waiting(store) == 0 and queue_depths(up, [queue]) == {queue: 1}
    with store.sessions.begin() as s:
        enqueue_after_commit(s, down.signature(AUDIT_TASK, args=(2,), queue=queue))
        enqueue_after_commit(s, down.signature(AUDIT_TASK, args=(3,), queue=queue))
    with store.sessions.begin() as s:
        s.execute(OutboxMessage.__table__.update().values(next_try_at=utcnow()))
    with OutboxRelay(up, store.sessions, run_name=store.config.run.name, interval_s=0.2):
        wait_for(lambda: _waiting(store) == 0, 20, "the relay to send the outbox")
    assert queue_depths(up, [queue]) == {queue: 3}
