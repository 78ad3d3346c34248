"""Rollout batches: what the driver issued, so a restarted driver neither loses nor repeats work.

A batch is one rollout task's worth of slots (docs/workers.md). The driver writes the batch
and its slots in the transaction that sends its message; the rollout task marks it
`recorded` in the transaction that stores its trajectories. So the store alone says

- which slots were ever issued (`rollout_slots`, unique per slot: a slot is issued once),
- which batches are in flight (`issued`, not yet `recorded`), and when each was last sent
  (a batch whose message was lost is sent again after `rollout.reissue_after_s`),
- what the worker that recorded a batch saw (`meta`: worker, timings, weight reload).

    rollout_batch:  issued ──> recorded
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, states_check

BATCH_STATES = ("issued", "recorded")


class RolloutBatch(Base):
    """One rollout task: its slots are in `rollout_slots`; the message carries only `id`."""

    __tablename__ = "rollout_batches"
    __table_args__ = (
        CheckConstraint(states_check("state", BATCH_STATES), name="state"),
        CheckConstraint("target_version >= 0 AND sends >= 1", name="counts"),
        CheckConstraint("(state = 'recorded') = (recorded_at IS NOT NULL)", name="recorded_at"),
        Index(None, "run_id", "state"),
        Index(None, "run_id", "reloaded_version"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    target_version: Mapped[int] = mapped_column(Integer)  # newest published version when issued
    state: Mapped[str] = mapped_column(String(16))
    sends: Mapped[int] = mapped_column(Integer)  # 1 + times the driver re-sent a lost message
    created_at: Mapped[datetime] = mapped_column(DateTime)
    sent_at: Mapped[datetime] = mapped_column(DateTime)  # last send
    recorded_at: Mapped[datetime | None] = mapped_column(DateTime)
    reloaded_version: Mapped[int | None] = mapped_column(Integer)  # the worker loaded this version first
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)  # worker, timings, weight reload, refused prompts


class RolloutSlot(Base):
    """A slot (problem, epoch, sample_index, attempt) issued in a batch; unique per run, so
    no slot is ever issued twice (a re-sample of a dropped slot is the next attempt)."""

    __tablename__ = "rollout_slots"
    __table_args__ = (
        UniqueConstraint("run_id", "problem_id", "epoch", "sample_index", "attempt"),
        CheckConstraint("epoch >= 0 AND sample_index >= 0 AND attempt >= 0", name="counts_nonneg"),
        Index(None, "batch_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("rollout_batches.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    problem_id: Mapped[int] = mapped_column(ForeignKey("problems.id"))
    epoch: Mapped[int] = mapped_column(Integer)
    sample_index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
