"""Problems: idempotent import of validated rows, and look-ups for the rollout driver.

Policy for bad rows (chosen so that a 17k-row dataset with three broken lines is still
usable, and nobody misses the three): the good rows are imported, every bad row is
reported with its line and reason, and the CLI exits non-zero when there was any
(`--strict` imports nothing unless every row is good). Re-importing is idempotent by
content hash: a row already in the store is counted, not duplicated; a row whose id is
in the store with different content is reported as a conflict, never overwritten
(trajectories may already refer to the old text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.models import Problem, utcnow
from db.problem_files import ProblemRow, RowError

BATCH = 500


@dataclass
class ImportResult:
    inserted: int = 0
    already_present: int = 0
    conflicts: list[RowError] = field(default_factory=list)
    refused: list[RowError] = field(default_factory=list)  # rows the database itself refused


def import_problems(session: Session, *, rows: Sequence[ProblemRow], where_label: str = "line",
                    now: datetime | None = None) -> ImportResult:
    """Insert rows not yet in the store (by content hash); report id conflicts."""
    now = now or utcnow()
    result = ImportResult()
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        stored = dict(session.execute(select(Problem.uid, Problem.content_hash).where(Problem.uid.in_([r.uid for r in batch]))).all())
        fresh = []
        for row in batch:
            known = stored.get(row.uid)
            if known is None:
                fresh.append(row)
            elif known == row.content_hash:
                result.already_present += 1
            else:
                result.conflicts.append(
                    RowError(f"{where_label} {row.line}", f"id {row.uid!r} is already in the store with different content; give the changed problem a new id")
                )
        if fresh:
            _insert(session, fresh, now, where_label, result)
    return result


def _insert(session: Session, rows: Sequence[ProblemRow], now: datetime, where_label: str, result: ImportResult) -> None:
    """Insert a batch in a savepoint; if the database refuses it, insert row by row, so one
    row it cannot hold is reported and the good rows still go in."""
    values = [
        {"uid": r.uid, "content_hash": r.content_hash, "prompt": r.prompt, "answer": r.answer,
         "tests": r.tests, "split": r.split, "source": r.source, "meta": r.meta, "created_at": now}
        for r in rows
    ]
    try:
        with session.begin_nested():
            session.execute(insert(Problem), values)
        result.inserted += len(rows)
        return
    except DBAPIError:
        pass
    for row, value in zip(rows, values, strict=True):
        try:
            with session.begin_nested():
                session.execute(insert(Problem), [value])
            result.inserted += 1
        except DBAPIError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            result.refused.append(RowError(f"{where_label} {row.line}", f"the store refused it: {reason}"))


@dataclass(frozen=True)
class ProblemRecord:
    id: int
    uid: str
    prompt: str
    answer: str | None
    tests: list[dict[str, str]] | None
    split: str
    source: str | None
    meta: dict


def problem_ids(session: Session, *, split: str, limit: int | None = None) -> list[int]:
    """Ids of the split's problems in import order (the driver's data order starts here)."""
    stmt = select(Problem.id).where(Problem.split == split).order_by(Problem.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def get_problems(session: Session, *, ids: Sequence[int]) -> list[ProblemRecord]:
    """The problems with `ids`, in the order given; a missing id is an error."""
    rows = {p.id: p for p in session.scalars(select(Problem).where(Problem.id.in_(list(ids))))}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise LookupError(f"no problems with ids {missing[:10]}")
    return [
        ProblemRecord(p.id, p.uid, p.prompt, p.answer, p.tests, p.split, p.source, p.meta)
        for p in (rows[i] for i in ids)
    ]
