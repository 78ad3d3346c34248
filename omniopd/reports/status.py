"""`omniopd status`: where a run stands — the store's counts and the broker's queues.

The store part (`status_report`) reads one session; the broker part (`broker_view`) asks
the run's broker for queue depths and never starts one (an embedded broker that is not
running is reported, not started).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.repo_rollouts import RolloutStatus, rollout_status
from db.repo_runs import get_run
from db.repo_status import RunStatus, run_status
from omniopd.config import OmniConfig


@dataclass(frozen=True)
class StatusReport:
    """A run's trajectories, bundles, chunks, spend (`run`) and rollout batches (`rollouts`)."""

    run: RunStatus
    rollouts: RolloutStatus

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self.run), "rollouts": asdict(self.rollouts)}


def status_report(session: Session, *, run_name: str) -> StatusReport:
    """The store's view of run `run_name` (raises RunNotFound, naming the known runs)."""
    record = get_run(session, name=run_name)
    return StatusReport(
        run_status(session, run_id=record.id, run_name=record.name, run_status=record.status),
        rollout_status(session, run_id=record.id),
    )


def broker_view(config: OmniConfig) -> dict[str, Any]:
    """Queue depths from the broker, or why they are unavailable (never starts a broker)."""
    from workers.app import in_flight, make_celery, queue_depths, queue_names
    from workers.broker import BrokerNotRunning, broker_endpoint

    try:
        endpoint = broker_endpoint(config)
    except BrokerNotRunning as exc:
        return {"error": str(exc)}
    app = make_celery(config, broker_url=endpoint.url)
    try:
        return {"queues": queue_depths(app, queue_names(config)), "in_flight": in_flight(app)}
    except Exception as exc:  # unreachable Redis: report, do not crash the status page
        return {"error": f"broker unreachable ({type(exc).__name__}: {exc})"}
