"""One chaos run: the demo task in production mode under a fault schedule (schedule.py).

    its own PostgreSQL database (created, dropped at the end), its own redis-server on a TCP
    port (appendonly, so a restart keeps the queues), the emulated teacher with the
    schedule's faults, and real processes: learner, rollout worker, two audit workers,
    maintenance worker, each started again when it dies (a SIGKILL included);
    while the learner trains, the schedule's faults: SIGKILL of a process, a Redis restart,
    every database connection of the run terminated (pg_terminate_backend);
    the budgets sampled every half second (caps, invariants.py);
    the end: the learner exits by itself (max steps, budget), or an overbilling alarm stops
    the run, or the deadline does (a stall: the run fails); then the maintenance worker gets
    its TTL to expire the reservations of killed workers, everything stops, and the
    invariants are checked.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from omniopd.config import OmniConfig, dump_config, load_config
from workers.chaos import invariants
from workers.chaos.schedule import Schedule, draw_schedule
from workers.demo.supervise import Children, free_port, omniopd_command, run_command

KEY_ENV = "OMNIOPD_CHAOS_KEY"
ROLES = {"kill learner": "learner", "kill rollout": "rollout worker", "kill audit": "audit worker",
         "kill maintenance": "maintenance worker"}
MAX_RESTARTS = 12  # of one process in one run: beyond, it is broken, not unlucky


@dataclass
class ChaosSettings:
    workdir: Path
    postgres_url: str  # a database the harness may connect to, to create and drop its own
    student: Path
    train_file: Path
    config_path: Path = Path("configs/demo.yaml")
    window_s: float = 90.0  # faults are injected during the first window_s of training
    mean_gap_s: float = 12.0
    deadline_s: float = 900.0  # a run not over by then has stalled
    max_steps: int = 6
    log: Callable[[str], None] = print


@dataclass
class ChaosResult:
    seed: int
    schedule: Schedule
    injected: Counter = field(default_factory=Counter)
    restarts: Counter = field(default_factory=Counter)
    checks: list[invariants.Check] = field(default_factory=list)
    sampler: invariants.CapSampler = field(default_factory=invariants.CapSampler)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


class RedisServer:
    """A private redis-server on 127.0.0.1:port that the harness restarts at will."""

    def __init__(self, directory: Path):
        self.directory, self.port, self.process = directory, free_port(), None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from workers.broker import _redis_executable

        self.process = subprocess.Popen(
            [_redis_executable(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--logfile", "redis.log"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return
            except redis.RedisError:
                time.sleep(0.1)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: it writes its append-only file and exits
            self.process.wait(15)
        self.process = None


class Database:
    """The run's own PostgreSQL database (so terminating its connections touches no one else's)."""

    def __init__(self, admin_url: str, name: str):
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        self.name = name
        self.url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def create(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}"'))
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))

    def kill_connections(self) -> int:
        with self.admin.connect() as conn:
            return len(conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
            ), {"db": self.name}).all())

    def drop(self) -> None:
        self.kill_connections()
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}"'))
        self.admin.dispose()


def _config(settings: ChaosSettings, schedule: Schedule, out: Path, store_url: str, broker_url: str,
            teacher_url: str) -> OmniConfig:
    return load_config(settings.config_path, [
        f"run.name=chaos-s{schedule.seed}", f"run.output_dir={out}", f"run.seed={schedule.seed}",
        f"student.path={settings.student}", f"data.train={settings.train_file}", "eval.every_steps=null",
        f"store.url={store_url}", "broker.mode=redis", f"broker.url={broker_url}",
        f"teachers.emulated.base_url={teacher_url}", "teachers.emulated.timeout_s=5",
        f"teachers.emulated.api_key_env={KEY_ENV}",
        "teachers.emulated.rate_limits.max_retries=3", "teachers.emulated.rate_limits.backoff_max_s=4",
        f"teachers.emulated.budget_usd={schedule.teacher_cap_usd}", f"audit.budget_usd={schedule.run_cap_usd}",
        "audit.reservation_ttl_s=15", "audit.retry_delay_s=3", "maintenance.interval_s=3", "maintenance.stuck_after_s=25",
        "maintenance.max_requeues=20", "rollout.reissue_after_s=40", "rollout.batch_problems=8",
        f"learner.max_steps={settings.max_steps}", "learner.checkpoint_every=2", "learner.batch_size=8",
        "learner.claim_lease_s=60", "learner.tensorboard=false", "workers.audit=2",
    ])


def run_schedule(seed: int, settings: ChaosSettings) -> ChaosResult:
    """One run under the schedule of `seed`; the result holds every check with its counts."""
    from omniopd.teachers.emulator import EmulatorConfig, EmulatorThread
    from omniopd.teachers.emulator.generators import from_spec

    started = time.monotonic()
    schedule = draw_schedule(seed, window_s=settings.window_s, mean_gap_s=settings.mean_gap_s)
    result = ChaosResult(seed, schedule)
    out = settings.workdir / f"s{seed}"
    shutil.rmtree(out, ignore_errors=True)  # a fresh run (its database is new too): no old checkpoint to resume
    out.mkdir(parents=True)
    key = "chaos-" + secrets.token_hex(8)
    env = {**os.environ, KEY_ENV: key, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    db = Database(settings.postgres_url, f"omniopd_chaos_s{seed}_{os.getpid()}")
    redis_server = RedisServer(out / "redis")
    emulator = EmulatorConfig(provider="gemini", api_key=key, seed=seed, faults=schedule.teacher_faults,
                              limits={"requests_per_min": schedule.requests_per_min})
    children = Children(env)
    db.create()
    redis_server.start()
    try:
        with EmulatorThread(emulator, from_spec("py:omniopd.demo.expert:generator")) as teacher:
            cfg = _config(settings, schedule, out, db.url, redis_server.url, teacher.url)
            config_file = out / "config.yaml"
            config_file.write_text(dump_config(cfg))
            c = str(config_file)
            run_command(omniopd_command("db", "upgrade", "-c", c), env, what="db upgrade")
            run_command(omniopd_command("data", "import", "-c", c), env, what="data import")
            logs = out / "logs"
            learner = children.start("learner", omniopd_command("learner", "-c", c, "--no-progress"), logs / "learner.log")
            children.start("rollout worker", omniopd_command("worker", "rollout", "-c", c), logs / "rollout.log")
            for i in range(2):
                children.start("audit worker", omniopd_command("worker", "audit", "-c", c), logs / f"audit{i}.log")
            children.start("maintenance worker", omniopd_command("worker", "maintenance", "-c", c),
                           logs / "maintenance.log")
            finished, reason = _supervise(result, settings, cfg, children, learner, db, redis_server)
            _wait_for_expiry(cfg, children, settings)
            children.stop(timeout_s=30)
            result.checks = _checks(cfg, teacher, finished, reason, result)
    finally:
        children.stop(timeout_s=10)
        redis_server.stop()
        db.drop()
    result.seconds = round(time.monotonic() - started, 1)
    return result


def _supervise(result: ChaosResult, settings: ChaosSettings, cfg: OmniConfig, children: Children, learner,
               db: Database, redis_server: RedisServer) -> tuple[bool, str]:
    """Restart what dies, inject the due faults, sample the caps; (finished, the reason)."""
    from db.store import open_store

    store = open_store(cfg, read_only=True, pool_size=1)
    due = list(result.schedule.events)
    t0 = time.monotonic()
    try:
        while True:
            now = time.monotonic() - t0
            code = learner.process.poll()
            if code == 0:
                return True, _learner_reason(learner)
            for child in children.items:
                dead = child.process.poll()
                if dead is None or (child is learner and dead == 0):
                    continue
                if child.restarts >= MAX_RESTARTS:
                    return False, f"{child.name} died {child.restarts + 1} times (exit {dead}); log {child.log}"
                result.restarts[child.name] += 1
                children.restart(child)
            while due and due[0].at_s <= now:
                _inject(due.pop(0).kind, children, db, redis_server, result, settings)
            alarm = _sample(store, cfg, result)
            if alarm:
                learner.process.send_signal(signal.SIGTERM)
                learner.process.wait(120)
                return True, f"stopped by the overbilling alarm: {alarm}"
            if now > settings.deadline_s:
                return False, f"deadline of {settings.deadline_s:.0f} s passed: the run stalled ({_learner_reason(learner)})"
            time.sleep(0.5)
    finally:
        store.dispose()


def _inject(kind: str, children: Children, db: Database, redis_server: RedisServer, result: ChaosResult,
            settings: ChaosSettings) -> None:
    if kind in ROLES:
        targets = [c for c in children.items if c.name == ROLES[kind] and c.process.poll() is None]
        if not targets:
            return
        target = targets[result.seed % len(targets)] if len(targets) > 1 else targets[0]
        os.kill(target.process.pid, signal.SIGKILL)
    elif kind == "restart redis":
        redis_server.stop()
        redis_server.start()
    elif kind == "kill db connections":
        db.kill_connections()
    result.injected[kind] += 1
    settings.log(f"  [s{result.seed}] injected: {kind}")


def _sample(store, cfg: OmniConfig, result: ChaosResult) -> str | None:
    """Sample the caps; the overbilling alarm, if one is set. A killed connection is tried
    again at the next sample."""
    from db.repo_budget import budgets
    from db.repo_runs import RunNotFound, get_run

    try:
        with store.sessions.begin() as s:
            run_id = get_run(s, name=cfg.run.name).id
            result.sampler.sample(s, run_id)
            return next((b.alarm for b in budgets(s, run_id=run_id) if b.alarm), None)
    except RunNotFound:
        return None
    except Exception:  # the harness kills these connections itself: sample again next time
        return None


def _learner_reason(learner) -> str:
    lines = learner.log.read_text(errors="replace").splitlines() if learner.log and learner.log.is_file() else []
    stops = [line.strip() for line in lines if "learner stopped:" in line]
    return stops[-1] if stops else "the learner printed no reason"


def _wait_for_expiry(cfg: OmniConfig, children: Children, settings: ChaosSettings) -> None:
    """Keep the maintenance worker (restarted if killed) until no reservation is open, at
    most the TTL and a few sweeps."""
    from sqlalchemy import func, select

    from db.models import Reservation
    from db.store import open_store

    store = open_store(cfg, read_only=True, pool_size=1)
    deadline = time.monotonic() + cfg.audit.reservation_ttl_s + 4 * cfg.maintenance.interval_s + 20
    try:
        for child in children.items:
            if child.name != "maintenance worker" and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)  # nothing new may open a reservation now
        while time.monotonic() < deadline:
            maint = next(c for c in children.items if c.name == "maintenance worker")
            if maint.process.poll() is not None:
                children.restart(maint)
            try:
                with store.sessions.begin() as s:
                    if not s.scalar(select(func.count()).select_from(Reservation).where(Reservation.state == "reserved")):
                        return
            except Exception:  # a connection killed by the last fault: look again in a second
                pass
            time.sleep(1.0)
    finally:
        store.dispose()


def _checks(cfg: OmniConfig, teacher, finished: bool, reason: str, result: ChaosResult) -> list[invariants.Check]:
    from db.repo_runs import get_run
    from db.store import open_store
    from omniopd.teachers import teacher_price
    from omniopd.teachers.pricing import cost_micros
    from omniopd.teachers.types import Usage

    price = teacher_price(cfg.teachers["emulated"], cfg.audit.prices_file)
    log = list(teacher.emulator.log)
    billed = sum(cost_micros(Usage(**{k: e.usage.get(k, 0) for k in ("input", "cached_input", "cache_write", "output",
                                                                      "reasoning")}), price)
                 for e in log if e.usage)
    store = open_store(cfg, read_only=True, pool_size=1)
    try:
        with store.sessions.begin() as s:
            run_id = get_run(s, name=cfg.run.name).id
            return [
                invariants.trained_at_most_once(s, run_id),
                invariants.paid_attempts_in_ledger(s, run_id, requests=len(log), billed_micros=billed),
                invariants.caps_kept(result.sampler, s, run_id),
                invariants.no_open_reservation(s, run_id),
                invariants.outcome(finished, reason),
            ]
    finally:
        store.dispose()
