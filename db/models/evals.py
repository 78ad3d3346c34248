"""Evaluation runs and per-sample results.

An eval run is keyed by a caller-chosen `key` (e.g. a hash of benchmark, model and
sampling settings): reopening the same key returns the same run, and the unique
(eval_run_id, item_id, sample_index) lets an interrupted evaluation resume by grading
only the samples that have no row yet.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, states_check

EVAL_STATUSES = ("running", "finished", "failed")


class EvalRun(Base):
    __tablename__ = "eval_runs"
    __table_args__ = (
        CheckConstraint(states_check("status", EVAL_STATUSES), name="status"),
        CheckConstraint("samples >= 1", name="samples_pos"),
        Index(None, "run_id", "policy_version"),
        Index(None, "benchmark"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    benchmark: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(Text)  # checkpoint path or endpoint URL + model name
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    policy_version: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int | None] = mapped_column(Integer)  # learner step of the checkpoint
    samples: Mapped[int] = mapped_column(Integer)  # k per item
    status: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # sampling and grading settings
    pass_at_1: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)  # pass@k, CIs, counts
    created_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class EvalResult(Base):
    __tablename__ = "eval_results"
    __table_args__ = (
        UniqueConstraint("eval_run_id", "item_id", "sample_index"),
        CheckConstraint("sample_index >= 0", name="sample_index_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    eval_run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(String(300))
    sample_index: Mapped[int] = mapped_column(Integer)
    correct: Mapped[bool] = mapped_column(Boolean)
    score: Mapped[float] = mapped_column(Float)  # 0/1 for pass/fail; fraction of tests for code
    completion: Mapped[str] = mapped_column(Text)
    extracted: Mapped[str | None] = mapped_column(Text)  # extracted answer (math)
    seed: Mapped[int | None] = mapped_column(Integer)
    n_tokens: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)  # grading error / timeout / sandbox verdict
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)
