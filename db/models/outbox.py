"""The outbox: messages whose transaction committed and that the broker has not taken yet.

A message to a worker is written here in the transaction that creates the row it
announces, and deleted once the broker accepted it (workers/app.py sends right after the
commit). So a message whose send failed (broker down, process killed between commit and
send) is still here, and the relay (workers/outbox.py) sends it again as soon as the
broker answers: the store owns the message, the broker only delivers it.

    outbox row:  written (with its transaction) ──> deleted (the broker took it)
                      └─ tries + 1, next_try_at later, last_error (a send failed)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base


class OutboxMessage(Base):
    """One Celery message, ids only; `key` is also the Celery task id, so a re-send of a
    message the broker did take (its delete was lost) is the same task twice, which every
    task tolerates (they re-read their rows)."""

    __tablename__ = "outbox"
    __table_args__ = (Index(None, "run_name", "next_try_at"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_name: Mapped[str] = mapped_column(String(200))  # whose broker (each run has its own key prefix)
    task: Mapped[str] = mapped_column(String(200))  # Celery task name
    args: Mapped[list[Any]] = mapped_column(JSON)  # ids only (workers/app.py checks)
    queue: Mapped[str | None] = mapped_column(String(200))  # None: the app's routes decide
    created_at: Mapped[datetime] = mapped_column(DateTime)
    next_try_at: Mapped[datetime] = mapped_column(DateTime)  # the relay leaves it alone before this
    tries: Mapped[int] = mapped_column(Integer, default=0)  # sends by the relay so far
    last_error: Mapped[str | None] = mapped_column(Text)
