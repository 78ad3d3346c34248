"""Teacher-call ledger, budgets and reservations (docs/store.md, "Budget semantics").

Every HTTP attempt to a teacher is one `teacher_calls` row. Before the attempt its
worst-case cost R is reserved against every applicable budget (the run's and the
provider's) in one transaction that refuses when spent + reserved + R > cap; after the
attempt the reservation is settled at the actual cost; an attempt whose outcome is
unknown (timeout, crashed worker) stays charged at R (`expired`). Hence spend never
exceeds a cap, under any concurrency, as long as R really is the worst case.

No column holds an API key or a request header: the ledger API does not accept them,
and error details are scrubbed of secrets before they are stored (db/repo_ledger.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
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

CALL_STATUSES = ("reserved", "ok", "error", "unknown")
RESERVATION_STATES = ("reserved", "settled", "expired")
RUN_SCOPE = "*"
"""`budgets.provider` of the run-wide budget (a real value, so the unique key works)."""


class TeacherCall(Base):
    """One HTTP attempt. status: reserved (in flight) -> ok | error | unknown."""

    __tablename__ = "teacher_calls"
    __table_args__ = (
        CheckConstraint(states_check("status", CALL_STATUSES), name="status"),
        CheckConstraint(
            "input_tokens >= 0 AND cached_input_tokens >= 0 AND cache_write_tokens >= 0 "
            "AND output_tokens >= 0 AND reasoning_tokens >= 0",
            name="tokens_nonneg",
        ),
        CheckConstraint("reserved_micros >= 0 AND (cost_micros IS NULL OR cost_micros >= 0)", name="money_nonneg"),
        Index(None, "run_id", "provider", "created_at"),
        Index(None, "chunk_id"),
        Index(None, "idempotency_key"),
        Index(None, "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    chunk_id: Mapped[int | None] = mapped_column(ForeignKey("chunks.id", ondelete="SET NULL"))
    reservation_id: Mapped[int | None] = mapped_column(ForeignKey("reservations.id"))
    provider: Mapped[str] = mapped_column(String(100))  # teacher name in the config
    model: Mapped[str] = mapped_column(String(200))
    # Same across retries of one logical request (sent to providers that support one).
    idempotency_key: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    n_requested: Mapped[int] = mapped_column(Integer)
    n_returned: Mapped[int] = mapped_column(Integer)
    input_tokens: Mapped[int] = mapped_column(Integer)  # uncached part
    cached_input_tokens: Mapped[int] = mapped_column(Integer)
    cache_write_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)  # reasoning included
    reasoning_tokens: Mapped[int] = mapped_column(Integer)
    reserved_micros: Mapped[int] = mapped_column(BigInteger)
    cost_micros: Mapped[int | None] = mapped_column(BigInteger)  # what it was charged
    latency_ms: Mapped[float | None] = mapped_column(Float)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_class: Mapped[str | None] = mapped_column(String(200))
    error_detail: Mapped[str | None] = mapped_column(Text)  # scrubbed, <= 500 chars
    created_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class Budget(Base):
    """Spend of one run with one provider, or of the whole run (provider = RUN_SCOPE).

    cap NULL = no cap (spend is still tracked). `spent + reserved <= cap` is enforced by
    `reserve`, not by a CHECK: a settle must record the truth even if a provider billed
    more than the reserved worst case (then `reservations.actual > amount` shows it).
    Such a settle also adds the excess to the provider's `overbilled_micros` and sets its
    `alarm`; `reserve` refuses every later attempt of a provider with an alarm, so its
    audits stop before the cap can be crossed again.
    """

    __tablename__ = "budgets"
    __table_args__ = (
        UniqueConstraint("run_id", "provider"),
        CheckConstraint("cap_micros IS NULL OR cap_micros >= 0", name="cap_nonneg"),
        CheckConstraint("spent_micros >= 0", name="spent_nonneg"),
        CheckConstraint("reserved_micros >= 0", name="reserved_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(100))
    cap_micros: Mapped[int | None] = mapped_column(BigInteger)
    spent_micros: Mapped[int] = mapped_column(BigInteger)
    reserved_micros: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    overbilled_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # charged above R
    alarm: Mapped[str | None] = mapped_column(Text)  # the first settle above its reservation, said plainly


class Reservation(Base):
    """A worst-case amount held against the run's and the provider's budget.

    reserved -> settled (actual = reported cost) | expired (actual = amount: outcome
    unknown, charged in full). An expired reservation may still be settled late, which
    refunds amount - actual.
    """

    __tablename__ = "reservations"
    __table_args__ = (
        CheckConstraint(states_check("state", RESERVATION_STATES), name="state"),
        CheckConstraint("amount_micros >= 0", name="amount_nonneg"),  # 0: a teacher that costs nothing (self-hosted)
        CheckConstraint("actual_micros IS NULL OR actual_micros >= 0", name="actual_nonneg"),
        CheckConstraint("(state = 'reserved') = (actual_micros IS NULL)", name="actual_when_closed"),
        Index(None, "state", "created_at"),
        Index(None, "run_id", "provider", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(100))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    actual_micros: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)



