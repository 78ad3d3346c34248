"""The rollout task: a batch of slots -> trajectories with entropies and chunks -> audits.

Message: `omniopd.rollout.generate(batch_id)` on queue `rollouts`. The batch row (written
by the driver, workers/learner/driver.py) holds the run, the slots (problem, epoch, sample_index,
attempt) and the policy version the driver targeted; the message carries only its id, so
a message is tiny, and the store alone says what was asked for.

What one task does (each step safe to repeat):

1. re-read the batch: the slots that still lack a trajectory (`rollout_work`); none left
   (a redelivered or duplicated message) -> mark it recorded and return;
2. weight sync: compare the engine's loaded version with the newest published one; on a
   difference reload it and verify the probe (`load_version`). A failed sync stops the
   worker (exit code 3) with the error, and the message goes back to the queue for a
   healthy worker: generating with wrong weights would train on a policy nobody has;
3. generate, score (Eq. 6), select chunks (Eq. 7) -> `TrajectoryIn` (workers/rollout/records.py);
4. one transaction: record the trajectories (a filled slot is left alone, so a racing
   copy cannot store one twice), drop refused prompts with reason `prompt_too_long`,
   mark the batch recorded (with the worker, timings and any weight reload), and, after
   the commit, enqueue one audit per new trajectory on `audits.<teacher>` — or, when the
   objective declares no audits (`needs.audits`, omniopd/objectives), promote the
   trajectories straight to `ready` (`hand_on`).

The engine is built once per worker process (first task) on the newest published
checkpoint and kept; a solo worker holds one model, so run one worker per GPU
(`CUDA_VISIBLE_DEVICES`, see docs/workers.md and scripts/start_workers.sh).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, NoReturn

from billiard.process import current_process
from celery import Celery, signals
from celery.exceptions import Reject, WorkerShutdown

from db.repo_audit import promote_if_complete
from db.repo_rollouts import record_batch, rollout_work
from db.repo_runs import PolicyVersionRecord, latest_policy_version
from db.repo_trajectories import drop_trajectories, record_trajectories
from omniopd.config import OmniConfig
from omniopd.objectives import OBJECTIVES
from workers.app import AUDIT_TASK, ROLLOUT_TASK, audit_queue, enqueue_after_commit, runtime

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from omniopd.rollout import ReloadReport, RolloutEngine
    from workers.rollout.records import GeneratedRecords

log = logging.getLogger(__name__)

EXIT_WEIGHT_SYNC = 3
"""Exit code of a rollout worker stopped by a failed weight sync or engine start."""
GPUS_ENV = "OMNIOPD_ROLLOUT_GPUS"
"""Comma-separated GPU ids for a prefork rollout worker: pool process i gets the i-th."""
FATAL_FILE_ENV = "OMNIOPD_ROLLOUT_FATAL_FILE"
"""Prefork: where a pool process writes why it stopped the worker (the command then exits 3)."""


def register(app: Celery) -> None:
    """Add the rollout task to `app` (torch and the engines load only when a task runs)."""

    @app.task(name=ROLLOUT_TASK, bind=True, shared=False)
    def generate(self, batch_id: int) -> None:
        from workers.rollout.records import generate_records

        rt = runtime(self.app)
        teacher = audit_teacher(rt.config)
        with rt.sessions.begin() as session:
            work = rollout_work(session, batch_id=batch_id)
            latest = latest_policy_version(session, run_id=work.run_id)
        if not work.pending:  # redelivered after it was recorded, or a duplicate
            with rt.sessions.begin() as session:
                record_batch(session, batch_id=batch_id, meta={})
            return
        engine, reload = synced_engine(rt.config, latest)
        worker = self.request.hostname or ""
        made = generate_records(engine, run_id=work.run_id, slots=work.pending, questions=work.questions,
                                config=rt.config, meta={"batch_id": batch_id, "target_version": work.target_version,
                                                        "worker": worker})
        with rt.sessions.begin() as session:
            new = store_records(session, made=made)
            record_batch(session, batch_id=batch_id, meta=batch_meta(made, reload, worker))
            hand_on(session, self.app, trajectory_ids=new, teacher=teacher)
        log.info("rollout batch %d: %d trajectories (%d new), %d refused, policy v%d, %.2fs generate + %.2fs score",
                 batch_id, len(made.trajectories), len(new), len(made.refused), made.policy_version,
                 made.generate_seconds, made.score_seconds)

    signals.worker_process_init.connect(_pin_gpu, weak=False, dispatch_uid="omniopd-rollout-pin-gpu")
    signals.worker_process_shutdown.connect(_close_engine, weak=False, dispatch_uid="omniopd-rollout-close")


def store_records(session: Session, *, made: GeneratedRecords) -> list[int]:
    """Record a batch's trajectories; refused prompts fill their slots as dropped
    (`prompt_too_long`). Returns the ids of the trajectories this call created (a slot
    filled by a racing copy of the task is left alone and not returned)."""
    from workers.rollout.records import REFUSED_REASON

    recorded = record_trajectories(session, trajectories=[*made.trajectories, *made.refused_records()])
    generated, refused = recorded[: len(made.trajectories)], recorded[len(made.trajectories) :]
    drop_trajectories(
        session, trajectory_ids=[r.id for r in refused if r.created], reason=REFUSED_REASON,
        detail="; ".join(r.detail for r in made.refused)[:2000],
    )
    return [r.id for r in generated if r.created]


def batch_meta(made: GeneratedRecords, reload: ReloadReport | None, worker: str) -> dict[str, Any]:
    """What the batch row keeps of the worker's run (`omniopd status` shows the last reload)."""
    meta: dict[str, Any] = {
        "worker": worker, "policy_version": made.policy_version, "trajectories": len(made.trajectories),
        "refused": len(made.refused), "completion_tokens": made.completion_tokens,
        "generate_s": round(made.generate_seconds, 4), "score_s": round(made.score_seconds, 4),
    }
    if reload is not None:
        meta["reload"] = {**asdict(reload), "worker": worker}
    return meta


def hand_on(session: Session, app: Celery, *, trajectory_ids: list[int], teacher: str | None) -> None:
    """Send each new trajectory on: one audit on `audits.<teacher>` after the commit, or,
    with no auditing teacher (`audit_teacher` is None: nothing to audit), promote it
    straight to `ready` — a bundle at once."""
    for trajectory_id in trajectory_ids:
        if teacher:
            audit = app.signature(AUDIT_TASK, args=(trajectory_id,))
            enqueue_after_commit(session, audit, queue=audit_queue(teacher))
        else:
            promote_if_complete(session, trajectory_id=trajectory_id)


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


# ------------------------------------------------------------- engine and weight sync

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
        _close_engine()
    try:
        if _ENGINE is None:
            # A fresh load of the newest checkpoint is the checkpoint: no stale weights to
            # catch, so no probe (the probe guards in-place reloads).
            t0 = time.perf_counter()
            engine = build_engine(config, model_path=latest.path)
            engine.policy_version = latest.version
            _ENGINE = (key, engine)
            atexit.register(_close_engine)
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
    _close_engine()
    if current_process().name == "MainProcess":
        raise WorkerShutdown(EXIT_WEIGHT_SYNC)
    if os.environ.get(FATAL_FILE_ENV):
        with open(os.environ[FATAL_FILE_ENV], "a") as handle:
            handle.write(reason + "\n")
    os.kill(os.getppid(), signal.SIGTERM)
    raise Reject(reason, requeue=True)


def _close_engine(*_: Any, **__: Any) -> None:
    global _ENGINE
    if _ENGINE is not None and _ENGINE[0][0] == os.getpid():
        engine, _ENGINE = _ENGINE[1], None
        engine.close()


def _pin_gpu(*_: Any, **__: Any) -> None:
    """Prefork pool process i sees only GPU i of OMNIOPD_ROLLOUT_GPUS (before CUDA starts)."""
    gpus = [g for g in os.environ.get(GPUS_ENV, "").split(",") if g.strip()]
    if gpus:
        index = getattr(current_process(), "index", 0) or 0
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        log.info("rollout pool process %d pinned to GPU %s", index, os.environ["CUDA_VISIBLE_DEVICES"])
