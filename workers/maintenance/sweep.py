"""The maintenance sweep: repairs what crashes leave behind, and says what it found.

Each sweep, for the config's run:
1. expires budget reservations older than `audit.reservation_ttl_s` that never settled,
   charging them in full (outcome unknown = charged at R), and marks their calls unknown;
2. clears bundle leases that expired (their learner died; the bundles are claimable);
3. re-sends the audit of every trajectory stuck in generated/auditing with no progress for
   `maintenance.stuck_after_s` (its message was lost, or its worker host died and the
   broker would wait a whole visibility timeout); after `maintenance.max_requeues`
   re-sends it is dropped with reason `audit_lost` instead of looping forever;
4. counts invariant violations (pending chunks under a ready/consumed trajectory);
5. sends the messages left in the store's outbox (workers/outbox.py): their send after
   the commit failed, e.g. while the broker was down.

It runs as the `omniopd.maintenance.sweep` task, scheduled by the beat embedded in
`omniopd worker maintenance`, or inline with `omniopd worker maintenance --once`.
Running two sweeps at once is harmless (rows are locked with SKIP LOCKED, sends are
idempotent).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from celery import Celery

from db.models import utcnow
from db.outage import rerun_on_disconnect
from db.repo_budget import expire_stale
from db.repo_maintenance import (
    inconsistent_chunks,
    mark_requeued,
    release_expired_claims,
    stuck_audits,
)
from db.repo_runs import RunNotFound, get_run
from db.repo_trajectories import drop_trajectories
from omniopd.money import micros_to_usd
from workers.app import AUDIT_TASK, MAINTENANCE_TASK, audit_queue, enqueue_after_commit, runtime
from workers.outbox import relay_once

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    run: str
    run_exists: bool = True
    expired_reservations: int = 0
    expired_usd: float = 0.0
    released_claims: int = 0
    requeued: list[int] = field(default_factory=list)
    dropped_audit_lost: list[int] = field(default_factory=list)
    stuck_without_teacher: list[int] = field(default_factory=list)  # no audit.teacher to send to
    inconsistent_chunks: int = 0
    outbox_sent: int = 0
    outbox_unsent: int = 0

    def summary(self) -> str:
        if not self.run_exists:
            return f"run {self.run!r} is not in the store yet; nothing to maintain"
        return (
            f"run {self.run!r}: expired {self.expired_reservations} reservations (${self.expired_usd:.4f} charged), "
            f"released {self.released_claims} expired claims, re-queued {len(self.requeued)} audits, "
            f"dropped {len(self.dropped_audit_lost)} as audit_lost, {len(self.stuck_without_teacher)} stuck with no "
            f"teacher configured, {self.inconsistent_chunks} inconsistent chunks, re-sent {self.outbox_sent} "
            f"messages from the outbox ({self.outbox_unsent} still unsent)"
        )


def sweep(app: Celery, *, now: datetime | None = None) -> SweepReport:
    """One maintenance pass over the app's run (see the module docstring); logs its report."""
    report = _sweep(app, now or utcnow())
    if report.run_exists:
        rt = runtime(app)
        relayed = relay_once(app, rt.sessions, run_name=rt.config.run.name, retry_s=rt.config.maintenance.interval_s)
        report.outbox_sent, report.outbox_unsent = relayed.sent, relayed.failed
    trouble = report.dropped_audit_lost or report.inconsistent_chunks or report.stuck_without_teacher or report.outbox_unsent
    log.log(logging.WARNING if trouble else logging.INFO, "maintenance: %s", report.summary())
    return report


def _sweep(app: Celery, now: datetime) -> SweepReport:
    rt = runtime(app)
    config = rt.config
    report = SweepReport(config.run.name)
    teacher = config.audit.teacher
    with rt.sessions.begin() as session:
        try:
            run = get_run(session, name=config.run.name)
        except RunNotFound:
            report.run_exists = False
            return report
        expiry = expire_stale(session, now=now, ttl_s=config.audit.reservation_ttl_s, run_id=run.id)
        report.expired_reservations, report.expired_usd = expiry.count, micros_to_usd(expiry.charged)
        report.released_claims = release_expired_claims(session, run_id=run.id, now=now)
        stuck = stuck_audits(session, run_id=run.id, older_than=now - timedelta(seconds=config.maintenance.stuck_after_s))
        lost = [t.id for t in stuck if t.audit_requeues >= config.maintenance.max_requeues]
        again = [t.id for t in stuck if t.audit_requeues < config.maintenance.max_requeues]
        if lost:
            drop_trajectories(
                session, trajectory_ids=lost, reason="audit_lost", now=now,
                detail=f"no audit progress after {config.maintenance.max_requeues} re-queues",
            )
            report.dropped_audit_lost = lost
        if again and not teacher:
            report.stuck_without_teacher = again
        elif again:
            mark_requeued(session, trajectory_ids=again, now=now)
            for trajectory_id in again:
                enqueue_after_commit(session, app.signature(AUDIT_TASK, args=(trajectory_id,), queue=audit_queue(teacher)))
            report.requeued = again
        report.inconsistent_chunks = inconsistent_chunks(session, run_id=run.id)
    return report


def register(app: Celery) -> None:
    @app.task(name=MAINTENANCE_TASK, bind=True, shared=False)
    def maintenance_sweep(self) -> dict:
        # The sweep re-reads everything and its sends are idempotent: when the store goes
        # away mid-sweep it waits for it and sweeps again (db/outage.py), not acked as failed.
        return asdict(rerun_on_disconnect(lambda: sweep(self.app), what="the maintenance sweep", logger=log))
