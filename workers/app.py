"""The Celery application: queues, reliability settings, task registry, post-commit sends.

Queues (one per role, one per teacher, so each scales and rate-limits on its own):

    rollouts             GPU rollout workers      task ROLLOUT_TASK
    audits.<teacher>     CPU audit workers        task AUDIT_TASK (one per teacher in the config)
    maintenance          the maintenance worker   task MAINTENANCE_TASK

Reliability: acks_late + task_reject_on_worker_lost (a task whose worker process dies
goes back to the queue), prefetch 1 (a worker holds one message beyond the one it runs,
so a long GPU task never hides work from idle workers), a visibility timeout from the
config (a message unacknowledged that long — its worker host died — is redelivered),
JSON only, and messages carry ids only: the store holds the state.

Adding the tasks of a role (workers/rollout/task.py, workers/audit/task.py): write

    def register(app: Celery) -> None:
        @app.task(name=AUDIT_TASK, bind=True, shared=False)
        def audit(self, trajectory_id: int) -> None:
            rt = runtime(self.app)
            with rt.sessions.begin() as session:
                ...

and add the module to TASK_MODULES; the routes and queues are already here. (`shared=False`:
each app gets its own task objects; Celery's default would attach them to every app made
in the process and warn about duplicates.)
`runtime(app)` gives each worker process its config and its own engine (created after
the fork, never shared with the parent).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.canvas import Signature
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from omniopd.config import OmniConfig
from omniopd.objectives import OBJECTIVES
from omniopd.unreachable import Unreachable

log = logging.getLogger(__name__)

broker_state = Unreachable("broker", logging.getLogger("omniopd.broker"))
"""This process's view of the broker for its sends (after commit, and the outbox relay's):
one warning when it goes away, a reminder every 30 s, one line when it is back."""

PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
"""A send to a broker that is away fails within about a second (measured 0.6 s on Redis and
RabbitMQ), so a commit's sends never hold up the learner's loop or a task for long: what
the broker did not take waits in the store's outbox for the relay."""

ROLLOUT_QUEUE = "rollouts"
MAINTENANCE_QUEUE = "maintenance"
ROLLOUT_TASK = "omniopd.rollout.generate"
AUDIT_TASK = "omniopd.audit.trajectory"
MAINTENANCE_TASK = "omniopd.maintenance.sweep"

TASK_MODULES: tuple[str, ...] = ("workers.maintenance.sweep", "workers.rollout.task", "workers.audit.task")
"""Modules whose `register(app)` adds their tasks to every OmniOPD Celery app."""


def audit_queue(teacher: str) -> str:
    """Queue of the audits for one teacher (the key of `teachers` in the config)."""
    return f"audits.{teacher}"


def audit_teacher(config: OmniConfig) -> str | None:
    """The teacher whose queue gets this run's audits; None when the configured objective
    declares no audits (`config.loss.needs.audits`, omniopd/objectives).

    Raises ValueError (saying what to set) when audits are needed and no teacher is named.
    """
    if not config.loss.needs.audits:
        return None
    if not config.audit.teacher:
        without = [f"loss.method = {m}" for m, cls in OBJECTIVES.items() if not cls.needs.audits]
        hint = f" (or use {' or '.join(without)})" if without else ""
        raise ValueError(
            f"loss.method = {config.loss.method} trains on teacher audits of chunks, but audit.teacher "
            f"is empty: name one of `teachers` in audit.teacher{hint}"
        )
    return config.audit.teacher


def queue_names(config: OmniConfig) -> list[str]:
    """Every queue of the run: rollouts, one audit queue per teacher, maintenance."""
    return [ROLLOUT_QUEUE, *(audit_queue(t) for t in sorted(config.teachers)), MAINTENANCE_QUEUE]


def transport_options(config: OmniConfig) -> dict[str, Any]:
    """Options of the Redis transport (embedded and redis modes). RabbitMQ needs none: it
    redelivers a message whose consumer's connection dropped, and a run's queues are
    separated by its vhost (the path of broker.url), not by key prefixes."""
    if config.broker.mode == "rabbitmq":
        return {}
    visibility = config.broker.visibility_timeout_s
    return {
        "global_keyprefix": config.broker_key_prefix,
        "visibility_timeout": visibility,
        # Sweep for abandoned (unacked past the visibility timeout) messages often enough
        # that a short timeout really bounds redelivery; each sweep is one small Redis query.
        "unacked_restore_interval": max(1, min(10, visibility // 4)),
        "unacked_restore_throttle": 1,
        "health_check_interval": 10,  # notice a restarted Redis within seconds
    }


def make_celery(
    config: OmniConfig,
    *,
    broker_url: str,
    config_path: str | Path | None = None,
    extra_task_modules: Sequence[str] = (),
) -> Celery:
    """A Celery app for the run described by `config`, talking to `broker_url`
    (workers/broker.py resolves it; embedded mode has no fixed URL)."""
    app = Celery("omniopd", broker=broker_url, set_as_current=False)
    routes = {ROLLOUT_TASK: {"queue": ROLLOUT_QUEUE}, MAINTENANCE_TASK: {"queue": MAINTENANCE_QUEUE}}
    if config.audit.teacher:
        routes[AUDIT_TASK] = {"queue": audit_queue(config.audit.teacher)}
    app.conf.update(
        broker_transport_options=transport_options(config),
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a restarted Redis is waited for, not fatal
        task_publish_retry=True,
        task_publish_retry_policy=PUBLISH_RETRY,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,  # a task that raised is not retried forever
        worker_prefetch_multiplier=1,
        # Celery 5.7 lowers the prefetch count after a broker reconnection while tasks run,
        # then raises it back; on RabbitMQ a thread-pool worker (the audit workers) then
        # held its prefetched messages unacknowledged and ran none of them for minutes
        # (tests/workers/test_broker_outage.py). Prefetch is small here anyway.
        worker_enable_prefetch_count_reduction=False,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # the store is the result
        result_backend=None,
        task_default_queue=MAINTENANCE_QUEUE,
        task_create_missing_queues=True,
        task_routes=routes,
        task_default_delivery_mode="persistent",
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        enable_utc=True,
        beat_schedule={
            "omniopd-maintenance": {
                "task": MAINTENANCE_TASK,
                "schedule": config.maintenance.interval_s,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": config.maintenance.interval_s},
            }
        },
        beat_schedule_filename=str(Path(config.run.output_dir) / "celerybeat-schedule"),
    )
    app.omniopd_config = config  # read by runtime()
    app.omniopd_config_path = None if config_path is None else str(config_path)
    # Extra modules first: Celery keeps the first task registered under a name, so a test
    # module can stand in for a production task (tests/workers/probe_tasks.py).
    for name in (*extra_task_modules, *TASK_MODULES):
        importlib.import_module(name).register(app)
    return app


@dataclass
class Runtime:
    """What a task needs: the config and this process's store connection."""

    config: OmniConfig
    config_path: str | None
    engine: Engine
    sessions: sessionmaker[Session]
    pid: int


def runtime(app: Celery) -> Runtime:
    """The calling process's Runtime, created on first use (after a prefork fork, so each
    pool process has its own connection pool); checks the schema once, then waits for the
    store through outages (db/outage.py `wait_for_store`)."""
    from db.outage import wait_for_store
    from db.store import open_store

    current: Runtime | None = getattr(app, "omniopd_runtime", None)
    if current is not None and current.pid == os.getpid():
        return current
    config: OmniConfig = app.omniopd_config
    store = open_store(config, app.omniopd_config_path)
    # Checked at start-up (a wrong URL fails fast); from now on a store outage is waited for
    wait_for_store(store.engine)
    current = Runtime(config, app.omniopd_config_path, store.engine, store.sessions, os.getpid())
    app.omniopd_runtime = current
    return current


# ------------------------------------------------------------- send after commit

PENDING_KEY = "omniopd_after_commit"
MAX_ID_TEXT = 200


def _check_ids_only(args: Sequence[Any]) -> None:
    """Messages carry ids (ints, short strings, lists of ints), never payloads."""
    for arg in args:
        if isinstance(arg, bool) or not (
            isinstance(arg, int)
            or (isinstance(arg, str) and len(arg) <= MAX_ID_TEXT)
            or (isinstance(arg, list | tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in arg))
        ):
            raise TypeError(f"task arguments must be ids (int, short str, list of int); got {type(arg).__name__}")


SEND_GRACE_S = 10.0
"""The outbox relay leaves a message alone this long after its commit: the sender right
after the commit normally takes it out well before (its broker answers in milliseconds)."""


def enqueue_after_commit(session: Session, task: Task | Signature, *args: Any, queue: str | None = None) -> None:
    """Send `task(*args)` once the session's transaction commits; drop it on rollback.

    So a message never announces a row that does not exist. The message is also written
    to the store's outbox in the same transaction (db/models/outbox.py) and deleted once
    the broker took it; if the send fails after the commit (broker down, the process
    killed), the outbox relay (workers/outbox.py, in the learner and the maintenance
    worker) sends it as soon as the broker answers. Use in the outermost transaction only.
    """
    from db.repo_outbox import add_message

    if isinstance(task, Signature):
        if args:
            raise TypeError("pass args inside the signature, not to enqueue_after_commit")
        signature = task.clone()
        _check_ids_only(signature.args)
        if queue is not None:
            signature.set(queue=queue)
    else:
        _check_ids_only(args)
        signature = task.signature(args, queue=queue) if queue else task.signature(args)
    key = uuid.uuid4().hex
    config: OmniConfig = signature.app.omniopd_config  # every app of a run has it (make_celery)
    add_message(session, key=key, run_name=config.run.name, task=signature.task, args=list(signature.args),
                queue=signature.options.get("queue"), grace_s=SEND_GRACE_S)
    session.info.setdefault(PENDING_KEY, []).append((key, signature))


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    pending = session.info.pop(PENDING_KEY, [])
    if not pending:
        return
    sent = []
    for i, (key, signature) in enumerate(pending):
        try:
            signature.apply_async(task_id=key)
            sent.append(key)
        except Exception as exc:  # the commit stands; the outbox relay re-sends it
            # The rest would fail the same way, a second each: they wait in the outbox too.
            broker_state.failed(signature.app.conf.broker_url, exc,
                                f"{len(pending) - i} message(s) of this commit ({signature.task}) wait in the store's "
                                "outbox; the outbox relay re-sends them once the broker answers")
            break
    if sent:
        broker_state.succeeded(pending[0][1].app.conf.broker_url,
                               "sends go through again; the outbox relay re-sends the messages that waited")
        _forget_sent(session, sent)


def _forget_sent(session: Session, keys: list[str]) -> None:
    """Delete the outbox rows of messages the broker took (its own short transaction: the
    session's has ended). If this fails the relay sends them again: a duplicate, which
    every task tolerates, never a loss."""
    from db.repo_outbox import forget_messages

    try:
        with Session(session.get_bind()) as other, other.begin():
            forget_messages(other, keys=keys)
    except Exception as exc:
        log.warning("could not clear %d sent message(s) from the outbox (%s); the relay will send them again",
                    len(keys), exc)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)


# ------------------------------------------------------------------ inspection


def queue_depths(app: Celery, queues: Sequence[str]) -> dict[str, int]:
    """Messages waiting in each queue (not counting those a worker holds unacknowledged)."""
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=5)
        if conn.transport.driver_type == "amqp":
            return {queue: _amqp_depth(conn, queue) for queue in queues}
        channel = conn.default_channel
        # kombu 5.7's passive queue_declare checks existence without global_keyprefix and
        # reports every prefixed queue missing; _size (all priority lists) prefixes correctly.
        return {queue: int(channel._size(queue)) for queue in queues}


def _amqp_depth(conn: Any, queue: str) -> int:
    """Ready messages of a RabbitMQ queue (passive declare); 0 for a queue not declared yet.
    A refused passive declare closes its channel, so each queue gets its own."""
    from amqp.exceptions import NotFound

    channel = conn.channel()
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except NotFound:
        return 0
    finally:
        with contextlib.suppress(Exception):
            channel.close()


def in_flight(app: Celery) -> int | None:
    """Messages delivered to a worker and not yet acknowledged (running or prefetched); None
    on RabbitMQ, whose protocol does not report them (its management UI shows "Unacked")."""
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=5)
        if conn.transport.driver_type == "amqp":
            return None
        channel = conn.default_channel
        return int(channel.client.hlen(channel.unacked_key))


def inspection_app(config: OmniConfig, *, broker_url: str) -> Celery:
    """A Celery app that only looks at the run's broker (queue depths, pings): no task
    module is registered, so a read-only viewer (`omniopd dashboard`) never imports torch."""
    app = Celery("omniopd", broker=broker_url, set_as_current=False)
    app.conf.update(broker_transport_options=transport_options(config), broker_connection_retry_on_startup=False)
    return app


def ping_workers(app: Celery, timeout_s: float = 1.0) -> list[str]:
    """Hostnames of the run's workers that answered a broadcast ping within `timeout_s`. A
    worker with a solo pool (a rollout worker) answers only between tasks."""
    replies = app.control.ping(timeout=timeout_s) or []
    return sorted(name for reply in replies for name in reply)
