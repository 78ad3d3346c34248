"""The rollout worker's engine: built once per worker process on the newest published
checkpoint, kept, and synced to each newer policy version before a batch.

A solo worker holds one model, so run one worker per GPU (`CUDA_VISIBLE_DEVICES`, see
docs/workers.md and scripts/start_workers.sh); a prefork worker pins pool process i to
the i-th GPU of OMNIOPD_ROLLOUT_GPUS. A weight sync that cannot be verified, or an engine
that cannot start, stops the worker (exit code 3) and puts the message back for a
healthy worker: generating with wrong weights would train on a policy nobody has.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any, NoReturn

from billiard.process import current_process
from celery.exceptions import Reject, WorkerShutdown

from db.repo_runs import PolicyVersionRecord
from omniopd.config import OmniConfig

if TYPE_CHECKING:
    from omniopd.rollout import ReloadReport, RolloutEngine

log = logging.getLogger(__name__)

EXIT_WEIGHT_SYNC = 3
"""Exit code of a rollout worker stopped by a failed weight sync or engine start."""
GPUS_ENV = "OMNIOPD_ROLLOUT_GPUS"
"""Comma-separated GPU ids for a prefork rollout worker: pool process i gets the i-th."""
FATAL_FILE_ENV = "OMNIOPD_ROLLOUT_FATAL_FILE"
"""Prefork: where a pool process writes why it stopped the worker (the command then exits 3)."""

_ENGINE: tuple[tuple[int, str], RolloutEngine] | None = None


def _engine_key(config: OmniConfig) -> tuple[int, str]:
    # Per process (a forked pool process must build its own) and per model/rollout settings.
    sections = {"student": config.student.model_dump(mode="json"), "rollout": config.rollout.model_dump(mode="json")}
    return os.getpid(), json.dumps(sections, sort_keys=True)


def synced_engine(config: OmniConfig, latest: PolicyVersionRecord) -> tuple[RolloutEngine, ReloadReport | None]:
    """This process's engine holding policy `latest`, and the report of the load it took
    (None when it already held it). Any failure stops the worker (`stop_worker`)."""
    from omniopd.rollout import ReloadReport, WeightSyncError, build_engine, load_version

    global _ENGINE
    key = _engine_key(config)
    if _ENGINE is not None and _ENGINE[0] != key:
        close_engine()
    try:
        if _ENGINE is None:
            # A fresh load of the newest checkpoint is the checkpoint: no stale weights to
            # catch, so no probe (the probe guards in-place reloads).
            t0 = time.perf_counter()
            engine = build_engine(config, model_path=latest.path)
            engine.policy_version = latest.version
            _ENGINE = (key, engine)
            atexit.register(close_engine)
            report = ReloadReport(latest.version, latest.path, "start", time.perf_counter() - t0, 0.0, None)
            log.info("rollout engine (%s) started on policy v%d from %s in %.1fs",
                     engine.backend, latest.version, latest.path, report.seconds)
            return engine, report
        engine = _ENGINE[1]
        if engine.policy_version == latest.version:
            return engine, None
        report = load_version(engine, latest.path, latest.version, tolerance=config.rollout.probe_tolerance)
        log.info("weight sync v%d -> %s: %s in %.3fs, probe max |Δ logprob| %s (checked in %.2fs)",
                 latest.version, latest.path, report.method, report.seconds, report.max_abs_diff, report.verify_seconds)
        return engine, report
    except WeightSyncError as exc:
        stop_worker(f"weight sync to policy v{latest.version} failed: {exc}")
    except Exception as exc:  # the model cannot even be loaded: every task would fail alike
        stop_worker(f"could not start the rollout engine on {latest.path}: {type(exc).__name__}: {exc}")


def stop_worker(reason: str) -> NoReturn:
    """Stop this rollout worker and put the current message back for a healthy one.

    Solo pool: WorkerShutdown leaves the task unacknowledged (acks_late), the worker exits
    with EXIT_WEIGHT_SYNC and its connection's unacked messages return to the queue.
    Prefork pool process: note the reason in FATAL_FILE_ENV's file, ask the worker's main
    process for a warm shutdown and requeue the message.
    """
    log.critical("stopping this rollout worker: %s", reason)
    close_engine()
    if current_process().name == "MainProcess":
        raise WorkerShutdown(EXIT_WEIGHT_SYNC)
    if os.environ.get(FATAL_FILE_ENV):
        with open(os.environ[FATAL_FILE_ENV], "a") as handle:
            handle.write(reason + "\n")
    os.kill(os.getppid(), signal.SIGTERM)
    raise Reject(reason, requeue=True)


WARM_ENV = "OMNIOPD_ROLLOUT_WARM"  # "1": a solo vLLM rollout worker builds its engine before taking work


def warm_engine(config: OmniConfig, config_path: str | None = None) -> None:
    """Build this process's engine on the run's newest policy before the worker takes a
    message (a solo worker: the first task then finds it). vLLM takes minutes to start on a
    CPU; built inside the first task, the engine would hold that batch all the while. A
    failure stops the worker as it would at its first task (exit code 3)."""
    from db.repo_runs import get_run, latest_policy_version
    from db.store import open_store

    store = open_store(config, config_path, read_only=True, pool_size=1)
    try:
        with store.sessions.begin() as session:
            latest = latest_policy_version(session, run_id=get_run(session, name=config.run.name).id)
    finally:
        store.dispose()
    log.info("building the %s rollout engine on policy v%d before taking work", config.rollout.backend, latest.version)
    synced_engine(config, latest)


def close_engine(*_: Any, **__: Any) -> None:
    global _ENGINE
    if _ENGINE is not None and _ENGINE[0][0] == os.getpid():
        engine, _ENGINE = _ENGINE[1], None
        engine.close()


def pin_gpu(*_: Any, **__: Any) -> None:
    """Prefork pool process i sees only GPU i of OMNIOPD_ROLLOUT_GPUS (before CUDA starts)."""
    gpus = [g for g in os.environ.get(GPUS_ENV, "").split(",") if g.strip()]
    if gpus:
        index = getattr(current_process(), "index", 0) or 0
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        log.info("rollout pool process %d pinned to GPU %s", index, os.environ["CUDA_VISIBLE_DEVICES"])
