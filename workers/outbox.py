"""The outbox relay: sends the messages that are in the store's outbox and not in the broker.

A message is written to the outbox with the transaction that creates its row and deleted
once the broker took it (workers/app.py, `enqueue_after_commit`). What is left there
older than a few seconds was never taken: the broker was down at the commit, or the
sending process died right after it. The relay sends it again, as the same Celery task id,
every `maintenance.outbox_interval_s`, until the broker takes it. While the broker is away
the process logs one warning naming it, a reminder every 30 s, and one line when it is
back (omniopd/unreachable.py; `broker_state` is shared with the sends after commit).

It runs as a thread in the learner (so in every mode: the demo, `start_learner.sh`, a
production run) and once per maintenance sweep. A message sent twice (the delete after
a successful send was lost) is the same task twice, which every task tolerates: tasks
re-read their rows and do only what is left.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from db.repo_outbox import due_messages, forget_messages, note_failure
from workers.app import broker_state

log = logging.getLogger("omniopd.outbox")


@dataclass(frozen=True)
class RelayReport:
    sent: int
    failed: int
    error: str | None = None


def relay_once(app: Celery, sessions: sessionmaker[Session], *, run_name: str, retry_s: float) -> RelayReport:
    """Send every due message of `run_name` once; a message that fails is tried again after
    `retry_s`. Stops at the first failure (the broker is down: the rest would wait for the
    same timeout each)."""
    with sessions.begin() as session:
        due = due_messages(session, run_name=run_name, lease_s=retry_s)
    if not due:
        return RelayReport(0, 0)
    sent: list[str] = []
    error = None
    url = app.conf.broker_url
    for message in due:
        options = {"queue": message.queue} if message.queue else {}
        try:
            app.signature(message.task, args=tuple(message.args), **options).apply_async(task_id=message.key)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            with sessions.begin() as session:
                note_failure(session, key=message.key, error=error)
            broker_state.failed(url, exc, f"{len(due) - len(sent)} message(s) wait in the store's outbox; the relay "
                                          f"tries again every {retry_s:.0f} s")
            break
        sent.append(message.key)
    with sessions.begin() as session:
        forget_messages(session, keys=sent)
    report = RelayReport(len(sent), len(due) - len(sent), error)
    if sent and not broker_state.succeeded(url, f"the outbox relay re-sent {len(sent)} message(s) that waited"):
        log.warning("outbox: re-sent %d message(s) the broker had not taken", len(sent))
    return report


PROBE_S = 5.0
"""With nothing to send, the relay asks the broker whether it answers this often, so a
process that sends little (the learner between its driver's batches) still says when its
broker went away and when it came back."""


class BrokerProbe:
    """One held connection to the broker, and a round trip on it: a Redis PING, or reading
    whatever RabbitMQ has for it (nothing; a closed connection raises)."""

    def __init__(self, app: Celery):
        self.app = app
        self._conn = None

    def check(self) -> None:
        """Return if the broker answers; raise (the connection's error) if not."""
        if self._conn is None:
            self._conn = self.app.connection_for_write()
        conn = self._conn
        try:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
            if conn.transport.driver_type == "amqp":
                with contextlib.suppress(socket.timeout, TimeoutError):
                    conn.drain_events(timeout=0.01)
            else:
                conn.default_channel.client.ping()
        except Exception:
            self.close()  # a new connection next time
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.collect()


class OutboxRelay:
    """`relay_once` every `interval_s` in a daemon thread, for as long as the `with` block;
    with nothing to send, a look at the broker every `PROBE_S` (so its outage is logged)."""

    def __init__(self, app: Celery, sessions: sessionmaker[Session], *, run_name: str, interval_s: float):
        self.app, self.sessions, self.run_name, self.interval_s = app, sessions, run_name, interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)
        self._probe = BrokerProbe(app)
        self._probed = 0.0

    def _loop(self) -> None:
        try:
            while not self._done.wait(self.interval_s):
                try:
                    report = relay_once(self.app, self.sessions, run_name=self.run_name,
                                        retry_s=max(5.0, 2 * self.interval_s))
                except Exception:  # the store may be down for a moment: the next pass tries again
                    log.exception("outbox relay pass failed")
                    continue
                if report.sent == report.failed == 0:
                    self._look_at_broker()
        finally:
            self._probe.close()

    def _look_at_broker(self) -> None:
        if time.monotonic() - self._probed < PROBE_S:
            return
        self._probed = time.monotonic()
        url = self.app.conf.broker_url
        try:
            self._probe.check()
        except Exception as exc:
            broker_state.failed(url, exc, "nothing waits to be sent now; what the learner sends meanwhile waits in "
                                          "the store's outbox and the relay re-sends it once the broker answers")
            return
        broker_state.succeeded(url, "sends go through again")

    def __enter__(self) -> OutboxRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)
