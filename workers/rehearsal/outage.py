"""Outages in the rehearsal (`omniopd rehearse --outage`): the store, then the broker, go away
for a while mid-run and come back, while every process of the run stays up (nothing is
restarted); then checks that they all lived through it, said what they waited for, and
lost nothing (the rehearsal's usual checks: finished, trained exactly once, ledger = bill).

    the store    the rehearsal's own PostgreSQL database refuses connections
                 (`ALTER DATABASE ... WITH ALLOW_CONNECTIONS false`) and its sessions are
                 terminated (pg_terminate_backend); then it allows them again. Run from the
                 admin connection (another database), so no other database is touched.
    the broker   Redis: the run's own redis-server (RunBroker starts one on a free port when
                 the run has a broker outage; never the machine's shared Redis) is stopped
                 (SIGTERM: its append-only file keeps the queues) and started again on the
                 same port. RabbitMQ: the run reaches the shared server through a TCP
                 gate of its own (tcp_gate.py), which is closed (every connection dropped,
                 new ones refused) and opened again; the server, and every other vhost's
                 and user's connections to it, are untouched. (Why not rabbitmqctl: see
                 tcp_gate.py.) The rate-limit buckets stay on the shared Redis:
                 the broker outage takes the broker away and nothing else (the limiter
                 waiting for its own Redis is tests/teachers/test_ratelimit_redis_outage.py).

The first outage starts once the learner has recorded `after_step` steps; the broker's
once a step was recorded after the store came back (so the store outage is over for the
learner too), at most `gap_s` later.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from workers.chaos.invariants import Check
from workers.chaos.run import Database, RedisServer
from workers.rehearsal.tcp_gate import TcpGate

SERVICES = ("store", "broker")
STORE_LINES = ("store unreachable", "store reachable again")
"""What a process logs when it starts and stops waiting for the store (the learner's and the
tasks' store waits log these)."""
BROKER_LEARNER_LINES = ("broker unreachable at", "broker reachable again at")
"""What a process logs when its sends start and stop failing (omniopd/unreachable.py)."""
CELERY_LOST = ("consumer: Connection to broker lost", "consumer: Cannot connect to")
"""What a Celery worker's consumer logs when its broker connection drops and while it waits."""


RECOVERY_S = 8.0
"""After an outage, work takes about this long to flow at its full rate again: a Celery
consumer retries its broker 2, 6, 12, 20... s after losing it (so a 15 s outage ends for it
within 5 s), and the store waits poll within seconds."""


@dataclass
class Window:
    service: str
    started: float  # time.monotonic()
    ended: float | None = None

    @property
    def seconds(self) -> float:
        return round((self.ended or time.monotonic()) - self.started, 1)


def pauses(windows: list[Window], t0: float) -> list[tuple[float, float]]:
    """The outages as (start, end) seconds after `t0` (a time.monotonic()), each extended by
    RECOVERY_S: when the run could not go at its full rate. Overlapping ones are merged."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted((w.started - t0, (w.ended or w.started) - t0 + RECOVERY_S) for w in windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


@dataclass
class OutagePlan:
    services: tuple[str, ...] = SERVICES
    seconds: float = 15.0  # how long each outage lasts
    after_step: int = 2  # the first starts once the learner recorded this many steps
    gap_s: float = 60.0  # the broker's starts at most this long after the store came back


@dataclass
class Outages:
    """Injects the plan's outages from a thread while the run goes on (`start`, then `stop` when
    the run ended)."""

    plan: OutagePlan
    store_url: str
    db: Database
    broker: str  # redis | rabbitmq
    redis_server: RedisServer | None  # the run's own broker (redis), stopped and started again
    gate: TcpGate | None  # the run's way to RabbitMQ (rabbitmq), closed and opened again
    log: Callable[[str], None]
    windows: list[Window] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)  # process -> pid when the first outage started
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, watch: Callable[[], dict[str, int]]) -> None:
        """Begin waiting for the first step in a thread; `watch()` gives the run's processes
        (name -> pid) when the first outage starts."""
        self._thread = threading.Thread(target=self._run, args=(watch,), name="rehearsal-outages", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop waiting (the run ended); an outage in progress is ended first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.plan.seconds + 60)

    def _run(self, watch: Callable[[], dict[str, int]]) -> None:
        try:
            if not self._wait_steps(self.plan.after_step, timeout_s=None):
                return
            self.pids = watch()
            if "store" in self.plan.services:
                self._outage("store", self._store_down, self._store_up)
                steps = self._steps()
                if "broker" in self.plan.services:
                    self._wait_steps(steps + 1, timeout_s=self.plan.gap_s)
            if "broker" in self.plan.services and not self._stop.is_set():
                self._outage("broker", self._broker_down, self._broker_up)
        except Exception as exc:  # reported by the check: the rehearsal itself goes on
            self.error = f"{type(exc).__name__}: {exc}"
            self.log(f"  outage harness failed: {self.error}")

    def _outage(self, service: str, down: Callable[[], None], up: Callable[[], None]) -> None:
        window = Window(service, time.monotonic())
        self.windows.append(window)
        self.log(f"  outage: the {service} goes away for {self.plan.seconds:.0f} s")
        try:
            down()
            self._stop.wait(self.plan.seconds)
        finally:
            up()
            window.ended = time.monotonic()
        self.log(f"  outage: the {service} is back after {window.seconds:.0f} s")

    def _steps(self) -> int:
        """Steps the learner recorded so far (0 while the store is away)."""
        from db.models import LearnerStep

        engine = create_engine(self.store_url, poolclass=NullPool, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                return int(conn.scalar(select(func.count()).select_from(LearnerStep)) or 0)
        except Exception:  # the schema not made yet, or the store away: no step seen
            return 0
        finally:
            engine.dispose()

    def _wait_steps(self, steps: int, *, timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._stop.is_set():
            if self._steps() >= steps:
                return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            self._stop.wait(1.0)
        return False

    # ------------------------------------------------------------- the store

    def _store_down(self) -> None:
        with self.db.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.db.name}" WITH ALLOW_CONNECTIONS false'))
        self.db.kill_connections()

    def _store_up(self) -> None:
        with self.db.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.db.name}" WITH ALLOW_CONNECTIONS true'))

    # ------------------------------------------------------------- the broker

    def _broker_down(self) -> None:
        if self.broker == "redis":
            assert self.redis_server is not None, "a Redis broker outage needs the run's own redis-server"
            self.redis_server.stop()
            return
        assert self.gate is not None, "a RabbitMQ broker outage needs the run's own TCP gate"
        self.gate.stop()

    def _broker_up(self) -> None:
        if self.broker == "redis":
            assert self.redis_server is not None
            self.redis_server.start()  # same port; the append-only file restores the queues
            return
        assert self.gate is not None
        self.gate.start()  # the same port


# ------------------------------------------------------------------ checks


def outages_happened(outages: Outages) -> Check:
    """Every planned outage was injected and ended."""
    done = {w.service: w for w in outages.windows if w.ended is not None}
    missing = [s for s in outages.plan.services if s not in done]
    counts = "; ".join(f"{w.service} away {w.seconds:.0f} s" for w in outages.windows) or "none injected"
    if missing:
        counts += f"; not injected: {', '.join(missing)} (the run ended first, or no step was recorded after the store came back)"
    if outages.error:
        counts += f"; the harness failed: {outages.error}"
    return Check("the planned outages happened", not missing and outages.error is None, counts)


def survived(outages: Outages, alive: Callable[[int], bool], learner_exit: int | None) -> Check:
    """Every process that ran when the first outage started was still the same process after
    the last (nothing died or was restarted); the learner then exited 0 by itself."""
    dead = sorted(name for name, pid in outages.pids.items() if name != "learner" and not alive(pid))
    ok = bool(outages.pids) and not dead and learner_exit == 0
    counts = (f"{len(outages.pids)} processes when the outages began ({', '.join(sorted(outages.pids))}); "
              f"gone by the end of the run: {', '.join(dead) or 'none'}; the learner exited {learner_exit}")
    return Check("every process lived through the outages", ok, counts)


def said_what_they_waited_for(outages: Outages, logs: Path, broker_password: str | None) -> Check:
    """The learner and the workers logged the service they waited for: for the store, the
    learner and at least one worker logged "store unreachable" and "store reachable again";
    for the broker, every worker's consumer logged its lost connection (Celery's lines) and
    the learner its unreachable broker and its return (or had nothing to send meanwhile: then
    said so). No log shows the broker's password."""
    texts = {p.stem: p.read_text(errors="replace") for p in sorted(logs.glob("*.log"))
             if p.stem == "learner" or re.match(r"(rollout|audit|maintenance|evaluator)\b", p.stem)}
    workers = [name for name in texts if name != "learner"]
    learner = texts.get("learner", "")
    parts, ok = [], True
    services = {w.service for w in outages.windows}
    if "store" in services:
        both = [n for n, t in texts.items() if all(line in t for line in STORE_LINES)]
        store_ok = "learner" in both and any(n != "learner" for n in both)
        ok &= store_ok
        parts.append(f"store: {len(both)} of {len(texts)} logs have both '{STORE_LINES[0]}' and '{STORE_LINES[1]}' "
                     f"({', '.join(both) or 'none'})")
    if "broker" in services:
        lost = [n for n in workers if any(line in texts[n] for line in CELERY_LOST)]
        learner_lines = [sum(line in row for row in learner.splitlines()) for line in BROKER_LEARNER_LINES]
        senders = [n for n, t in texts.items() if BROKER_LEARNER_LINES[0] in t]
        broker_ok = workers and len(lost) == len(workers) and learner_lines[0] == learner_lines[1] and (
            learner_lines[0] >= 1)
        ok &= bool(broker_ok)
        parts.append(f"broker: {len(lost)} of {len(workers)} workers logged their consumer's lost connection; the "
                     f"learner logged '{BROKER_LEARNER_LINES[0]}' {learner_lines[0]}x and "
                     f"'{BROKER_LEARNER_LINES[1]}' {learner_lines[1]}x; '{BROKER_LEARNER_LINES[0]}' in the logs of "
                     f"{', '.join(senders) or 'no process'}")
    if broker_password:
        leaked = [n for n, t in texts.items() if f":{broker_password}@" in t]
        ok &= not leaked
        parts.append(f"the broker's password in {', '.join(leaked) or 'no log'}")
    return Check("the processes logged what they waited for", ok and bool(services), "; ".join(parts) or "no outage")
