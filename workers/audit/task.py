"""The audit task: one trajectory per message, on queue `audits.<teacher>` (thread pool).

Glue only; the work is `workers.audit.service.audit_trajectory`. Each worker process
builds its audit context once (teacher client on its own event loop, price, in-flight
cap) and shares it between its threads. A delivery that ends with a chunk still pending
after transient provider errors is sent again after `audit.retry_delay_s`; the last of
`audit.retries` redeliveries gives such a chunk up as `failed`.
"""

from __future__ import annotations

import logging
import os
import threading

from celery import Celery

from db.outage import rerun_on_disconnect
from workers.app import AUDIT_TASK, runtime
from workers.audit.service import AuditContext, audit_trajectory, make_audit_context

_CREATE = threading.Lock()
log = logging.getLogger("omniopd.audit")


def audit_context(app: Celery) -> AuditContext:
    """This process's audit context, created once on first use (after a fork, if any)."""
    with _CREATE:  # the pool's threads start together; one context per process
        current: AuditContext | None = getattr(app, "omniopd_audit", None)
        if current is not None and getattr(app, "omniopd_audit_pid", None) == os.getpid():
            return current
        from workers.broker import limiter_redis_url

        rt = runtime(app)
        # The buckets are the account's (omniopd/teachers/ratelimit.py), shared with every run on it.
        current = make_audit_context(rt.config, rt.sessions, redis_url=limiter_redis_url(rt.config))
        app.omniopd_audit, app.omniopd_audit_pid = current, os.getpid()
        return current


def register(app: Celery) -> None:
    @app.task(name=AUDIT_TASK, bind=True, shared=False, max_retries=None)
    def audit(self, trajectory_id: int) -> dict:
        ctx = audit_context(self.app)
        last = self.request.retries >= ctx.config.audit.retries
        # Each store transaction inside waits for the store and runs again (db/outage.py);
        # this is the net for any other: the audit is resumable and never pays twice for a
        # stored sample, so it runs again in-process instead of being acked as failed.
        outcome = rerun_on_disconnect(lambda: audit_trajectory(ctx, trajectory_id, last_delivery=last),
                                      what=f"the audit of trajectory {trajectory_id}", logger=log)
        if outcome.retry and not last:
            raise self.retry(countdown=ctx.config.audit.retry_delay_s)
        return outcome.as_dict()
