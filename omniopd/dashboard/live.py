"""What only the broker knows, right now: queue depths, messages held by workers, which workers
answer a ping, and the shared rate limiter's buckets.

Heartbeats come from two places, because neither alone is reliable:

- the store (`db.repo_dashboard.worker_activity`, in the run snapshot): the last batch each
  rollout worker recorded, the last step of each learner, the last teacher call per audit
  queue. It is the same with the embedded broker, a shared Redis or any other broker, and
  it outlives the run (a finished run still shows who did what, and when); but a worker
  that is idle because no work is left looks the same as a dead one;
- a broadcast ping over the run's broker (`workers.app.ping_workers`): an answer means the
  worker's consumer is alive now. A rollout worker runs a solo pool, so it cannot answer
  while it generates; an embedded broker is gone when the run stops.

The page shows both: "answered a ping" beside "last work recorded N s ago". Nothing here
starts a broker or writes a key: an embedded broker that is not running is reported as such.
"""

from __future__ import annotations

from typing import Any

from omniopd.config import OmniConfig
from omniopd.teachers.ratelimit import Account, read_limiter_state

PING_TIMEOUT_S = 0.5


def broker_state(config: OmniConfig, *, ping: bool = True) -> dict[str, Any]:
    """Queue depths, messages delivered and not acknowledged, workers that answered a ping and
    the shared limiter of each configured teacher; or, instead, why the broker is unavailable."""
    from workers.app import in_flight, inspection_app, ping_workers, queue_depths, queue_names
    from workers.broker import BrokerNotRunning, broker_endpoint

    try:
        endpoint = broker_endpoint(config)
    except BrokerNotRunning as exc:
        return {"error": f"{exc} (the run's embedded broker stops with the run)"}
    app = inspection_app(config, broker_url=endpoint.url)
    try:
        out: dict[str, Any] = {
            "queues": queue_depths(app, queue_names(config)),
            "in_flight": in_flight(app),
            "pinged": ping_workers(app, PING_TIMEOUT_S) if ping else None,
        }
    except Exception as exc:  # an unreachable broker is shown in words, the page keeps serving
        return {"error": f"broker unreachable ({type(exc).__name__}: {_first_line(exc)})"}
    finally:
        app.close()
    out["limiters"] = limiter_states(config, endpoint.redis_url) if endpoint.redis_url else []
    return out


def limiter_states(config: OmniConfig, redis_url: str) -> list[dict[str, Any]]:
    """The shared buckets of every configured teacher that has rate limits (read-only)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    out = []
    try:
        for name, teacher in sorted(config.teachers.items()):
            entry: dict[str, Any] = {"teacher": name, "provider": teacher.kind, "model": teacher.model}
            try:
                # The dashboard finds the buckets only with the key the workers use in its environment.
                state = read_limiter_state(client, teacher.rate_limits, account=Account.of_teacher(teacher))
            except redis.RedisError as exc:
                entry["error"] = f"rate-limit state unreadable ({type(exc).__name__}: {_first_line(exc)})"
            else:
                entry.update(
                    seen=state.seen, cooldown_s=state.cooldown_s, override_s=state.override_s,
                    buckets=[{"dim": b.dim, "per_min": b.per_min, "depth": b.depth, "level": b.level} for b in state.buckets],
                )
            out.append(entry)
    finally:
        client.close()
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
