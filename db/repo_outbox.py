"""The outbox's repository (db/models/outbox.py): write a message with its transaction,
take the ones the broker never got, forget the ones it took.

Two relays at once (the learner's and the maintenance worker's) never send the same
message at the same moment: `due_messages` takes rows with SKIP LOCKED on PostgreSQL (SQLite
serialises writers) and pushes their `next_try_at` past the send it is about to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db.models import OutboxMessage, utcnow


@dataclass(frozen=True)
class Outgoing:
    """A message as the relay sends it."""

    key: str
    task: str
    args: list[Any]
    queue: str | None
    tries: int


def add_message(
    session: Session, *, key: str, run_name: str, task: str, args: Sequence[Any], queue: str | None, grace_s: float,
    now: datetime | None = None,
) -> None:
    """Keep the message with the caller's transaction; the relay leaves it alone for
    `grace_s` (the sender after the commit normally deletes it well before)."""
    now = now or utcnow()
    session.add(OutboxMessage(
        key=key, run_name=run_name, task=task, args=list(args), queue=queue, created_at=now,
        next_try_at=now + timedelta(seconds=grace_s), tries=0,
    ))


def forget_messages(session: Session, *, keys: Sequence[str]) -> int:
    """The broker took these messages."""
    if not keys:
        return 0
    return session.execute(delete(OutboxMessage).where(OutboxMessage.key.in_(list(keys)))).rowcount


def due_messages(session: Session, *, run_name: str, lease_s: float, limit: int = 500,
                 now: datetime | None = None) -> list[Outgoing]:
    """Messages of `run_name` not taken by the broker and due for a send, oldest first;
    each is leased for `lease_s` (a relay that dies mid-send leaves it to the next)."""
    now = now or utcnow()
    rows = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.run_name == run_name, OutboxMessage.next_try_at <= now)
        .order_by(OutboxMessage.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    out = []
    for row in rows:
        row.tries += 1
        row.next_try_at = now + timedelta(seconds=lease_s)
        out.append(Outgoing(row.key, row.task, list(row.args), row.queue, row.tries))
    return out


def note_failure(session: Session, *, key: str, error: str) -> None:
    """Say why the last send of a message failed (shown by `omniopd status`)."""
    row = session.get(OutboxMessage, key)
    if row is not None:
        row.last_error = error[:500]


@dataclass(frozen=True)
class OutboxState:
    """What waits in the outbox of a run."""

    waiting: int
    oldest: datetime | None
    last_error: str | None


def outbox_state(session: Session, *, run_name: str) -> OutboxState:
    waiting, oldest = session.execute(
        select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.run_name == run_name)
    ).one()
    error = session.scalar(
        select(OutboxMessage.last_error).where(OutboxMessage.run_name == run_name, OutboxMessage.last_error.is_not(None))
        .order_by(OutboxMessage.created_at.desc()).limit(1)
    )
    return OutboxState(int(waiting or 0), oldest, error)
