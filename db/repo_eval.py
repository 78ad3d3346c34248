"""Evaluation runs and per-sample results (resumable: nothing is graded twice).

The evaluator opens a run by key, asks `graded_samples` what is already stored, grades
only the rest and records them as it goes (`record_eval_results` ignores pairs that
exist, so a crash between grading and recording costs at most the unrecorded batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import EvalResult, EvalRun, PolicyVersion, utcnow
from db.repo_runs import PolicyVersionRecord, get_policy_version
from db.session import insert_ignoring_conflicts


@dataclass(frozen=True)
class EvalRunRecord:
    id: int
    key: str
    benchmark: str
    model: str
    samples: int
    status: str
    run_id: int | None
    policy_version: int | None
    step: int | None
    config: dict[str, Any]
    pass_at_1: float | None
    metrics: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class EvalResultIn:
    """The grade of sample `sample_index` (0..k-1) of item `item_id`."""

    item_id: str
    sample_index: int
    correct: bool
    score: float
    completion: str
    extracted: str | None = None
    seed: int | None = None
    n_tokens: int | None = None
    error: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def _record(r: EvalRun) -> EvalRunRecord:
    return EvalRunRecord(r.id, r.key, r.benchmark, r.model, r.samples, r.status, r.run_id, r.policy_version,
                         r.step, r.config, r.pass_at_1, r.metrics, r.created_at, r.finished_at)


def open_eval_run(
    session: Session,
    *,
    key: str,
    benchmark: str,
    model: str,
    samples: int,
    config: Mapping[str, Any],
    run_id: int | None = None,
    policy_version: int | None = None,
    step: int | None = None,
    now: datetime | None = None,
) -> EvalRunRecord:
    """Get or create the eval run `key`; a finished run is reopened as `running` only by
    recording new results into it (its stored results stay)."""
    row = session.scalars(select(EvalRun).where(EvalRun.key == key)).one_or_none()
    if row is not None:
        if (row.benchmark, row.samples) != (benchmark, samples):
            raise ValueError(
                f"eval run {key!r} exists for {row.benchmark} with k={row.samples}, not {benchmark} with k={samples}"
            )
        return _record(row)
    row = EvalRun(
        key=key, benchmark=benchmark, model=model, samples=samples, status="running", run_id=run_id,
        policy_version=policy_version, step=step, config=dict(config), metrics={}, created_at=now or utcnow(),
    )
    session.add(row)
    session.flush()
    return _record(row)


def graded_samples(session: Session, *, eval_run_id: int) -> set[tuple[str, int]]:
    """(item_id, sample_index) pairs already recorded."""
    rows = session.execute(select(EvalResult.item_id, EvalResult.sample_index).where(EvalResult.eval_run_id == eval_run_id))
    return {(item, k) for item, k in rows}


def record_eval_results(
    session: Session, *, eval_run_id: int, results: Sequence[EvalResultIn], now: datetime | None = None
) -> int:
    """Store results; pairs already stored are skipped. Returns how many were new."""
    if not results:
        return 0
    now = now or utcnow()
    table = EvalResult.__table__
    stmt = insert_ignoring_conflicts(session, table, unique=["eval_run_id", "item_id", "sample_index"]).returning(table.c.id)
    inserted = 0
    for start in range(0, len(results), 500):
        part = results[start : start + 500]
        rows = [{"eval_run_id": eval_run_id, "item_id": r.item_id, "sample_index": r.sample_index,
                 "correct": r.correct, "score": float(r.score), "completion": r.completion,
                 "extracted": r.extracted, "seed": r.seed, "n_tokens": r.n_tokens, "error": r.error,
                 "detail": dict(r.detail), "created_at": now} for r in part]
        inserted += len(session.execute(stmt, rows).all())
    session.execute(
        EvalRun.__table__.update().where(EvalRun.id == eval_run_id, EvalRun.status != "running").values(status="running")
    )
    return inserted


@dataclass(frozen=True)
class EvalResultView:
    item_id: str
    sample_index: int
    correct: bool
    score: float
    completion: str
    extracted: str | None
    error: str | None
    detail: dict[str, Any]
    seed: int | None = None
    n_tokens: int | None = None


def eval_results(session: Session, *, eval_run_id: int) -> list[EvalResultView]:
    stmt = select(EvalResult).where(EvalResult.eval_run_id == eval_run_id).order_by(EvalResult.item_id, EvalResult.sample_index)
    return [EvalResultView(r.item_id, r.sample_index, r.correct, r.score, r.completion, r.extracted, r.error, r.detail,
                           r.seed, r.n_tokens)
            for r in session.scalars(stmt)]


def result_outcomes(session: Session, *, eval_run_id: int) -> list[tuple[str, int, bool]]:
    """(item_id, sample_index, correct) of every stored result: what scoring and progress
    need, without loading completions."""
    rows = session.execute(
        select(EvalResult.item_id, EvalResult.sample_index, EvalResult.correct).where(EvalResult.eval_run_id == eval_run_id)
    )
    return [(item, k, bool(correct)) for item, k, correct in rows]


def iter_eval_results(session: Session, *, eval_run_id: int, chunk: int = 200) -> Iterator[EvalResultView]:
    """`eval_results` streamed `chunk` rows at a time (16 samples of 32K tokens per item
    add up: do not hold a whole benchmark's completions in memory to write them out)."""
    stmt = select(EvalResult).where(EvalResult.eval_run_id == eval_run_id).order_by(EvalResult.item_id, EvalResult.sample_index)
    for r in session.scalars(stmt.execution_options(yield_per=chunk)):
        yield EvalResultView(r.item_id, r.sample_index, r.correct, r.score, r.completion, r.extracted, r.error, r.detail,
                             r.seed, r.n_tokens)
        session.expunge(r)


def finish_eval_run(
    session: Session,
    *,
    eval_run_id: int,
    pass_at_1: float | None,
    metrics: Mapping[str, Any],
    status: str = "finished",
    now: datetime | None = None,
) -> None:
    """Store the summary (Pass@1 averaged over k, pass@k, intervals...) and close the run."""
    if status not in ("finished", "failed"):
        raise ValueError(f"status {status!r}: expected finished or failed")
    row = session.get(EvalRun, eval_run_id)
    if row is None:
        raise LookupError(f"no eval run {eval_run_id}")
    row.pass_at_1, row.metrics, row.status, row.finished_at = pass_at_1, dict(metrics), status, now or utcnow()
    session.flush()


def list_eval_runs(
    session: Session, *, run_id: int | None = None, benchmark: str | None = None, key_prefix: str | None = None
) -> list[EvalRunRecord]:
    """Eval runs in creation order, optionally of one training run (`run_id`: accuracy
    against `step` for plots), one benchmark, or keys starting with `key_prefix`."""
    stmt = select(EvalRun).order_by(EvalRun.id)
    if run_id is not None:
        stmt = stmt.where(EvalRun.run_id == run_id)
    if benchmark is not None:
        stmt = stmt.where(EvalRun.benchmark == benchmark)
    if key_prefix is not None:
        stmt = stmt.where(EvalRun.key.startswith(key_prefix, autoescape=True))
    return [_record(r) for r in session.scalars(stmt)]


def policy_version_at_step(session: Session, *, run_id: int, step: int) -> PolicyVersionRecord | None:
    """The newest policy version of run `run_id` saved at learner step `step`, if any
    (what `omniopd eval --run R --step S` evaluates and links its results to)."""
    version = session.scalars(
        select(PolicyVersion.version)
        .where(PolicyVersion.run_id == run_id, PolicyVersion.step == step)
        .order_by(PolicyVersion.version.desc())
        .limit(1)
    ).first()
    return None if version is None else get_policy_version(session, run_id=run_id, version=version)


def policy_versions(session: Session, *, run_id: int) -> list[PolicyVersionRecord]:
    """Every published policy version of run `run_id`, oldest first (what an evaluator of
    the run's checkpoints polls)."""
    rows = session.scalars(select(PolicyVersion).where(PolicyVersion.run_id == run_id).order_by(PolicyVersion.version))
    return [PolicyVersionRecord(r.run_id, r.version, r.path, r.step, r.created_at, r.meta) for r in rows]
