"""Runs and policy versions.

A run is found by name (the config's `run.name`); `open_run` creates it with its config
snapshot, its budgets and policy version 0 (the base model) on first use and returns the
existing run afterwards (a resumed run keeps its first snapshot; budget caps follow the
config, so raising a cap and resuming works).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import RUN_STATUSES, PolicyVersion, Run, utcnow
from db.repo_budget import set_budget_caps


@dataclass(frozen=True)
class RunRecord:
    id: int
    name: str
    status: str
    config: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class PolicyVersionRecord:
    """A published student checkpoint; version 0 is the base model."""

    run_id: int
    version: int
    path: str
    step: int
    created_at: datetime
    meta: dict[str, Any]


class RunNotFound(LookupError):
    pass


def _run_record(run: Run) -> RunRecord:
    return RunRecord(run.id, run.name, run.status, run.config, run.created_at)


def open_run(
    session: Session,
    *,
    name: str,
    config: Mapping[str, Any],
    base_model_path: str,
    provider_caps: Mapping[str, int | None],
    run_cap: int | None,
    now: datetime | None = None,
) -> RunRecord:
    """Get or create the run `name`; (re)apply budget caps (micro-USD, None = no cap)."""
    now = now or utcnow()
    run = session.scalars(select(Run).where(Run.name == name)).one_or_none()
    if run is None:
        run = Run(name=name, status="created", config=dict(config), created_at=now, updated_at=now)
        session.add(run)
        session.flush()
        session.add(PolicyVersion(run_id=run.id, version=0, path=base_model_path, step=0, meta={}, created_at=now))
    set_budget_caps(session, run_id=run.id, provider_caps=provider_caps, run_cap=run_cap, now=now)
    session.flush()
    return _run_record(run)


def get_run(session: Session, *, name: str) -> RunRecord:
    """The run called `name`; RunNotFound names the runs that exist."""
    run = session.scalars(select(Run).where(Run.name == name)).one_or_none()
    if run is None:
        names = session.scalars(select(Run.name).order_by(Run.id).limit(20)).all()
        known = ", ".join(names) or "none yet"
        raise RunNotFound(
            f"no run named {name!r} in the store (runs: {known}); a run is created when its learner first starts"
        )
    return _run_record(run)


def list_runs(session: Session) -> list[RunRecord]:
    return [_run_record(r) for r in session.scalars(select(Run).order_by(Run.id))]


def set_run_status(session: Session, *, run_id: int, status: str, now: datetime | None = None) -> None:
    """created | running | finished | failed | stopped (finished/failed/stopped stamp finished_at)."""
    if status not in RUN_STATUSES:
        raise ValueError(f"run status {status!r}: expected one of {', '.join(RUN_STATUSES)}")
    now = now or utcnow()
    run = session.get(Run, run_id)
    if run is None:
        raise RunNotFound(f"no run with id {run_id}")
    run.status = status
    run.updated_at = now
    run.finished_at = now if status in ("finished", "failed", "stopped") else None


def _version_record(row: PolicyVersion) -> PolicyVersionRecord:
    return PolicyVersionRecord(row.run_id, row.version, row.path, row.step, row.created_at, row.meta)


def publish_policy_version(
    session: Session,
    *,
    run_id: int,
    version: int,
    path: str,
    step: int,
    meta: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> PolicyVersionRecord:
    """Publish checkpoint `path` as `version`. Idempotent for the same path; a different
    path under an existing version is an error (unique (run, version))."""
    existing = session.scalars(
        select(PolicyVersion).where(PolicyVersion.run_id == run_id, PolicyVersion.version == version)
    ).one_or_none()
    if existing is not None:
        if existing.path != path:
            raise ValueError(
                f"policy version {version} of run {run_id} is already published at {existing.path!r}; "
                f"refusing to republish it at {path!r}"
            )
        return _version_record(existing)
    row = PolicyVersion(
        run_id=run_id, version=version, path=path, step=step, meta=dict(meta or {}), created_at=now or utcnow()
    )
    session.add(row)
    session.flush()
    return _version_record(row)


def latest_policy_version(session: Session, *, run_id: int) -> PolicyVersionRecord:
    """The newest published version (version 0 exists from `open_run` on)."""
    row = session.scalars(
        select(PolicyVersion).where(PolicyVersion.run_id == run_id).order_by(PolicyVersion.version.desc()).limit(1)
    ).one_or_none()
    if row is None:
        raise RunNotFound(f"run {run_id} has no policy version; was it created with open_run?")
    return _version_record(row)


def get_policy_version(session: Session, *, run_id: int, version: int) -> PolicyVersionRecord | None:
    row = session.scalars(
        select(PolicyVersion).where(PolicyVersion.run_id == run_id, PolicyVersion.version == version)
    ).one_or_none()
    return None if row is None else _version_record(row)

