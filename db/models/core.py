"""Runs, problems, policy versions, trajectories, chunks, teacher samples, learner steps.

State machines (enforced by CHECK constraints on the values and by the repository
functions on the transitions):

    trajectory: generated -> auditing -> ready -> consumed
                generated | auditing | ready -> dropped (drop_reason says why)
                consumed -> ready only through `rewind_to_step` (learner resumed from an
                older checkpoint: the steps after it never happened)
    chunk:      pending -> audited | skipped_budget | failed

A trajectory in `ready` is an audit bundle; a claim by a learner is a lease on it
(`claimed_by`, `claim_expires_at`), not a state, so a bundle whose learner died is
claimable again once the lease expires or the learner restarts and releases it.
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
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.models.base import Base, BigId, states_check

RUN_STATUSES = ("created", "running", "finished", "failed", "stopped")
TRAJECTORY_STATES = ("generated", "auditing", "ready", "consumed", "dropped")
CHUNK_STATES = ("pending", "audited", "skipped_budget", "failed")
CHUNK_TERMINAL = ("audited", "skipped_budget", "failed")
ENTROPY_SOURCES = ("exact", "topk")


class Run(Base):
    """One training run, keyed by `run.name` of its config."""

    __tablename__ = "runs"
    __table_args__ = (CheckConstraint(states_check("status", RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # resolved config at creation
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class Problem(Base):
    """A dataset item. `uid` is the file's `id`; `content_hash` makes re-imports idempotent."""

    __tablename__ = "problems"
    __table_args__ = (
        CheckConstraint("answer IS NOT NULL OR tests IS NOT NULL", name="has_reference"),
        Index(None, "split", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uid: Mapped[str] = mapped_column(String(300), unique=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    prompt: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    tests: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # [{input, output}]
    split: Mapped[str] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(300))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)  # every other key of the row
    created_at: Mapped[datetime] = mapped_column(DateTime)


class PolicyVersion(Base):
    """Checkpoint of the student; version 0 is the base model, published at run creation."""

    __tablename__ = "policy_versions"
    __table_args__ = (
        UniqueConstraint("run_id", "version"),
        CheckConstraint("version >= 0", name="version_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)  # HF-layout directory (or hub id for version 0)
    step: Mapped[int] = mapped_column(Integer)  # learner step that produced it (0 for base)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Trajectory(Base):
    """One student sample with everything the learner needs to rebuild its batch.

    Slot key (run, problem, epoch, sample_index, attempt) is unique: a redelivered
    rollout task finds its slots filled and cannot add a second trajectory for them.
    policy_version is deliberately not part of the key (a task redelivered after a new
    version was published must not sample the same slot again).
    """

    __tablename__ = "trajectories"
    __table_args__ = (
        UniqueConstraint("run_id", "problem_id", "epoch", "sample_index", "attempt"),
        CheckConstraint(states_check("state", TRAJECTORY_STATES), name="state"),
        CheckConstraint(states_check("entropy_source", ENTROPY_SOURCES), name="entropy_source"),
        CheckConstraint("(state = 'dropped') = (drop_reason IS NOT NULL)", name="drop_reason"),
        CheckConstraint("(state = 'consumed') = (consumed_step IS NOT NULL)", name="consumed_step"),
        CheckConstraint("state = 'ready' OR claimed_by IS NULL", name="claim_only_ready"),
        CheckConstraint(
            "n_completion_tokens >= 0 AND n_prompt_tokens >= 0 AND policy_version >= 0 "
            "AND epoch >= 0 AND sample_index >= 0 AND attempt >= 0",
            name="counts_nonneg",
        ),
        Index(None, "run_id", "state", "claimed_by", "id"),  # claims (unclaimed, oldest first), counts
        Index(None, "run_id", "state", "updated_at"),  # maintenance: stuck audits
        Index(None, "claimed_by"),  # release/renew by learner
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    problem_id: Mapped[int] = mapped_column(ForeignKey("problems.id"))
    policy_version: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    sample_index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    # int32 / float32 little-endian (db/arrays.py); the three completion arrays share one length
    prompt_token_ids: Mapped[bytes] = mapped_column(LargeBinary)
    completion_token_ids: Mapped[bytes] = mapped_column(LargeBinary)
    logprobs: Mapped[bytes] = mapped_column(LargeBinary)
    entropies: Mapped[bytes] = mapped_column(LargeBinary)
    n_prompt_tokens: Mapped[int] = mapped_column(Integer)
    n_completion_tokens: Mapped[int] = mapped_column(Integer)
    prompt_text: Mapped[str] = mapped_column(Text)  # rendered prompt (chat template applied)
    completion_text: Mapped[str] = mapped_column(Text)
    finish_reason: Mapped[str] = mapped_column(String(32))
    truncated: Mapped[bool] = mapped_column(Boolean)
    entropy_source: Mapped[str] = mapped_column(String(8))
    reward: Mapped[float | None] = mapped_column(Float)  # rule-based reward (grpo); None when not graded
    drop_reason: Mapped[str | None] = mapped_column(String(64))  # short code, grouped in status
    drop_detail: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    claim_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    consumed_step: Mapped[int | None] = mapped_column(Integer)
    audit_requeues: Mapped[int] = mapped_column(Integer)  # times maintenance re-sent its audit
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)  # seeds, worker, timings: free-form
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)  # last progress (sample, chunk, state)
    ready_at: Mapped[datetime | None] = mapped_column(DateTime)
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime)

    chunks: Mapped[list[Chunk]] = relationship(
        back_populates="trajectory", order_by="Chunk.idx", cascade="all, delete-orphan"
    )


class Chunk(Base):
    """An audited window [start, end) of the completion's tokens (Eq. 7).

    The teacher prefix is prompt_text + prefix, where prefix = `prefix_text` when set,
    else completion_text[:char_start] (the decoded completion tokens before `start`).
    """

    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("trajectory_id", "idx"),
        CheckConstraint(states_check("state", CHUNK_STATES), name="state"),
        CheckConstraint("start >= 0 AND \"end\" > start AND char_start >= 0", name="span"),
        CheckConstraint("n_target >= 1", name="n_target_pos"),
        CheckConstraint(
            "(state = 'audited') = (k_sem IS NOT NULL) AND (k_sem IS NULL OR (k_sem >= 0 AND k_sem <= n_target))",
            name="k_sem",
        ),
        Index(None, "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    trajectory_id: Mapped[int] = mapped_column(ForeignKey("trajectories.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)  # 0.. in ascending position
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    char_start: Mapped[int] = mapped_column(Integer)
    prefix_text: Mapped[str | None] = mapped_column(Text)
    student_text: Mapped[str] = mapped_column(Text)
    anchor_entropy: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))
    n_target: Mapped[int] = mapped_column(Integer)  # N teacher continuations wanted
    k_sem: Mapped[float | None] = mapped_column(Float)  # Eq. 3: sum_i phi(student, teacher_i)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    trajectory: Mapped[Trajectory] = relationship(back_populates="chunks")


class TeacherSample(Base):
    """One teacher continuation of a chunk's prefix; (chunk_id, i) is unique, so a retried
    audit fetches only the missing i and can never store a sample twice."""

    __tablename__ = "teacher_samples"
    __table_args__ = (
        UniqueConstraint("chunk_id", "i"),
        CheckConstraint("i >= 0", name="i_nonneg"),
        CheckConstraint("phi >= 0 AND phi <= 1", name="phi_unit"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"))
    i: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)  # as returned by the teacher
    cut_text: Mapped[str] = mapped_column(Text)  # cut to the student chunk's length
    phi: Mapped[float] = mapped_column(Float)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("teacher_calls.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class LearnerStep(Base):
    """One optimizer step; its bundles point back with trajectories.consumed_step."""

    __tablename__ = "learner_steps"
    __table_args__ = (UniqueConstraint("run_id", "step"), CheckConstraint("step >= 1", name="step_pos"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    learner_id: Mapped[str] = mapped_column(String(200))
    policy_version: Mapped[int] = mapped_column(Integer)  # weights the step started from
    loss: Mapped[float | None] = mapped_column(Float)
    n_bundles: Mapped[int] = mapped_column(Integer)
    n_tokens: Mapped[int] = mapped_column(Integer)
    wall_s: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)  # loss parts, KL, proxy stats, ...
    created_at: Mapped[datetime] = mapped_column(DateTime)
