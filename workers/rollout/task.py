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
   when the objective declares rewards (`needs.rewards`), grade every sample with the
   configured grader (workers/rollout/rewards.py): its reward, or its failure;
4. one transaction (re-run when the store goes away mid-way: db/outage.py): record the trajectories (a filled slot is left alone, so a racing
   copy cannot store one twice), drop refused prompts with reason `prompt_too_long`,
   mark the batch recorded (with the worker, timings and any weight reload), and, after
   the commit, enqueue one audit per new trajectory on `audits.<teacher>` — or, when the
   objective declares no audits (`needs.audits`, omniopd/objectives), promote the
   trajectories straight to `ready` (`hand_on`).

The engine and its weight sync live in workers/rollout/engine.py.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from celery import Celery, signals

from db.outage import rerun_on_disconnect
from db.repo_audit import promote_if_complete
from db.repo_rollouts import record_batch, rollout_work
from db.repo_runs import latest_policy_version
from db.repo_trajectories import drop_trajectories, record_trajectories
from workers.app import (
    AUDIT_TASK,
    ROLLOUT_TASK,
    audit_queue,
    audit_teacher,
    enqueue_after_commit,
    runtime,
)
from workers.rollout.engine import close_engine, pin_gpu, synced_engine

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from omniopd.rollout import ReloadReport
    from workers.rollout.records import GeneratedRecords

log = logging.getLogger(__name__)


def register(app: Celery) -> None:
    """Add the rollout task to `app` (torch and the engines load only when a task runs)."""

    @app.task(name=ROLLOUT_TASK, bind=True, shared=False)
    def generate(self, batch_id: int) -> None:
        from workers.rollout.records import generate_records

        rt = runtime(self.app)
        teacher = audit_teacher(rt.config)

        def read():
            with rt.sessions.begin() as session:
                work = rollout_work(session, batch_id=batch_id)
                return work, latest_policy_version(session, run_id=work.run_id)

        def record_empty() -> None:
            with rt.sessions.begin() as session:
                record_batch(session, batch_id=batch_id, meta={})

        # Each store transaction waits for the store and runs again if it goes away
        # (db/outage.py); all are safe to re-run (see store()). Generation is never redone.
        work, latest = rerun_on_disconnect(read, what=f"reading rollout batch {batch_id}", logger=log)
        if not work.pending:  # redelivered after it was recorded, or a duplicate
            rerun_on_disconnect(record_empty, what=f"closing rollout batch {batch_id}", logger=log)
            return
        engine, reload = synced_engine(rt.config, latest)
        worker = self.request.hostname or ""
        made = generate_records(engine, run_id=work.run_id, slots=work.pending, questions=work.questions,
                                config=rt.config, meta={"batch_id": batch_id, "target_version": work.target_version,
                                                        "worker": worker})
        if rt.config.loss.needs.rewards:
            from workers.rollout.rewards import with_rewards

            made = with_rewards(made, work.references, rt.config)
        def store() -> list[int]:
            # Re-run after a commit whose outcome is unknown: the slots are filled, so no
            # trajectory is recorded twice and `new` is empty; the audits of the first
            # commit wait in the outbox and the relay sends them (workers/outbox.py).
            with rt.sessions.begin() as session:
                new = store_records(session, made=made)
                record_batch(session, batch_id=batch_id, meta=batch_meta(made, reload, worker))
                hand_on(session, self.app, trajectory_ids=new, teacher=teacher)
                return new

        new = rerun_on_disconnect(store, what=f"recording rollout batch {batch_id}", logger=log)
        log.info("rollout batch %d: %d trajectories (%d new), %d refused, policy v%d, %.2fs generate + %.2fs score",
                 batch_id, len(made.trajectories), len(new), len(made.refused), made.policy_version,
                 made.generate_seconds, made.score_seconds)

    signals.worker_process_init.connect(pin_gpu, weak=False, dispatch_uid="omniopd-rollout-pin-gpu")
    signals.worker_process_shutdown.connect(close_engine, weak=False, dispatch_uid="omniopd-rollout-close")


def store_records(session: Session, *, made: GeneratedRecords) -> list[int]:
    """Record a batch's trajectories; refused prompts fill their slots as dropped
    (`prompt_too_long`), samples whose reward failed are dropped (`reward_failed`, the
    grader's message as detail). Returns the ids of the trajectories this call created and
    did not drop (a slot filled by a racing copy of the task is left alone and not returned)."""
    from workers.rollout.records import REFUSED_REASON
    from workers.rollout.rewards import REWARD_FAILED

    recorded = record_trajectories(session, trajectories=[*made.trajectories, *made.refused_records()])
    generated, refused = recorded[: len(made.trajectories)], recorded[len(made.trajectories) :]
    drop_trajectories(
        session, trajectory_ids=[r.id for r in refused if r.created], reason=REFUSED_REASON,
        detail="; ".join(r.detail for r in made.refused)[:2000],
    )
    failed = {r.id for r in generated if r.created and r.slot in made.reward_failures}
    for r in generated:
        if r.id in failed:
            drop_trajectories(session, trajectory_ids=[r.id], reason=REWARD_FAILED,
                              detail=made.reward_failures[r.slot][:2000])
    return [r.id for r in generated if r.created and r.id not in failed]


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
