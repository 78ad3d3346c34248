"""The Celery app's contract with the rest of OmniOPD: names, routes, reliability settings."""

from __future__ import annotations

from omniopd.config import parse_config
from workers.app import AUDIT_TASK, MAINTENANCE_TASK, ROLLOUT_TASK, make_celery, queue_names


def config(**extra):
    return parse_config({
        "run": {"name": "r1"},
        "teachers": {"claude": {"kind": "anthropic", "model": "m"}, "qwen": {"kind": "openai_compat", "model": "q"}},
        "audit": {"teacher": "claude"},
        **extra,
    })


def test_one_queue_per_role_and_per_teacher():
    assert queue_names(config()) == ["rollouts", "audits.claude", "audits.qwen", "maintenance"]


def test_tasks_route_to_their_queues_and_survive_dead_workers():
    app = make_celery(config(broker={"visibility_timeout_s": 7200}), broker_url="memory://")
    routes = app.conf.task_routes
    assert routes[ROLLOUT_TASK] == {"queue": "rollouts"}
    assert routes[AUDIT_TASK] == {"queue": "audits.claude"}  # the run's auditing teacher
    assert routes[MAINTENANCE_TASK] == {"queue": "maintenance"}
    assert MAINTENANCE_TASK in app.tasks
    conf = app.conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost, conf.worker_prefetch_multiplier) == (True, True, 1)
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 7200 and options["global_keyprefix"] == "omniopd:r1:"


def test_an_explicit_key_prefix_wins():
    app = make_celery(config(broker={"key_prefix": "shared-redis/run7:"}), broker_url="memory://")
    assert app.conf.broker_transport_options["global_keyprefix"] == "shared-redis/run7:"


def test_queue_depths_on_rabbitmq_count_waiting_messages_and_undeclared_queues_as_empty(rabbitmq_url):
    import pytest

    from workers.app import in_flight, inspection_app, queue_depths

    pytest.importorskip("amqp")
    cfg = parse_config({"broker": {"mode": "rabbitmq", "url": rabbitmq_url}, "teachers": {"t": {"kind": "gemini", "model": "m"}},
                        "audit": {"teacher": "t"}})
    app = make_celery(cfg, broker_url=rabbitmq_url)
    assert app.conf.broker_transport_options == {}  # Redis's key prefix and visibility timeout mean nothing here
    app.send_task(ROLLOUT_TASK, args=[1], queue="rollouts")
    app.send_task(ROLLOUT_TASK, args=[2], queue="rollouts")
    app.close()
    viewer = inspection_app(cfg, broker_url=rabbitmq_url)
    try:
        assert queue_depths(viewer, queue_names(cfg)) == {"rollouts": 2, "audits.t": 0, "maintenance": 0}
        assert in_flight(viewer) is None  # AMQP does not report unacknowledged messages
    finally:
        viewer.close()
