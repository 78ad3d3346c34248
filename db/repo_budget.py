"""Budgets: reserve the worst case before a teacher call, settle after (docs/store.md,
"Budget semantics").

Invariant: for every budget with a cap, spent + reserved <= cap after every `reserve`
(it refuses otherwise), and `settle`/`expire_stale` only move an amount from reserved to
spent (settle at actual <= amount can only lower the sum). So no interleaving of
concurrent processes can push spend past a cap, provided the reserved amount really is
the worst case of the call.

Atomicity: PostgreSQL locks the budget rows (`SELECT ... FOR UPDATE`, always in id order,
so two transactions cannot deadlock); SQLite transactions hold the database write lock
from BEGIN IMMEDIATE (db/session.py). Reservations are locked before budgets everywhere.

Money is an integer number of micro-dollars in every argument, row and result here; this
package never converts to or from USD (omniopd/money.py does, at the edges: config caps in,
printed amounts out), so sums and cap comparisons are exact on both backends.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from db.models import RUN_SCOPE, Budget, Reservation, TeacherCall, utcnow
from db.session import require_writable


class BudgetAlarm(RuntimeError):
    """reserve() for a provider that billed above a reservation before (`budgets.alarm`):
    its audits stop until someone looks (the message says what happened)."""


class BudgetNotConfigured(LookupError):
    """reserve() for a provider that has no budget row: open_run/set_budget_caps was not called with it."""


@dataclass(frozen=True)
class ReservationRecord:
    """A held reservation (amount in micro-USD); pass its id to settle()."""

    id: int
    run_id: int
    provider: str
    amount: int
    created_at: datetime



@dataclass(frozen=True)
class BudgetView:
    """One budget row; cap None = no cap. All amounts micro-USD."""

    provider: str  # RUN_SCOPE ('*') for the run-wide budget
    cap: int | None
    spent: int
    reserved: int
    overbilled: int = 0  # charged above reservations, in all
    alarm: str | None = None  # set by the first settle above its reservation

    @property
    def headroom(self) -> int | None:
        return None if self.cap is None else self.cap - self.spent - self.reserved


@dataclass(frozen=True)
class ExpiryReport:
    """Reservations expired by one `expire_stale` call, charged at their full amount."""

    reservation_ids: tuple[int, ...]
    charged: int  # micro-USD moved from reserved to spent

    @property
    def count(self) -> int:
        return len(self.reservation_ids)


def set_budget_caps(
    session: Session,
    *,
    run_id: int,
    provider_caps: Mapping[str, int | None],
    run_cap: int | None,
    now: datetime | None = None,
) -> None:
    """Create or update the run's budget rows (caps in micro-USD, None = no cap).

    Every provider the run may call must be listed (reserve refuses unknown providers);
    rows of providers no longer listed are kept, with their spend.
    """
    now = now or utcnow()
    if RUN_SCOPE in provider_caps:
        raise ValueError(f"{RUN_SCOPE!r} is reserved for the run-wide budget; pass it as run_cap")
    wanted = {**provider_caps, RUN_SCOPE: run_cap}
    for provider, cap in wanted.items():
        if cap is not None and cap < 0:
            raise ValueError(f"budget cap for {provider!r} is negative ({cap})")
    existing = {
        b.provider: b
        for b in session.scalars(select(Budget).where(Budget.run_id == run_id, Budget.provider.in_(wanted)))
    }
    for provider, cap in wanted.items():
        row = existing.get(provider)
        if row is None:
            session.add(
                Budget(run_id=run_id, provider=provider, cap_micros=cap, spent_micros=0, reserved_micros=0, updated_at=now)
            )
        elif row.cap_micros != cap:
            row.cap_micros = cap
            row.updated_at = now
    session.flush()


# Hot-path statements are built once (bind parameters, compiled once per dialect): building
# SQL expressions per call cost more CPU than the database work itself.
_BUDGETS = Budget.__table__
_RESERVATIONS = Reservation.__table__
_LOCK_BUDGETS = (
    select(_BUDGETS.c.id, _BUDGETS.c.provider, _BUDGETS.c.cap_micros, _BUDGETS.c.spent_micros, _BUDGETS.c.reserved_micros,
           _BUDGETS.c.alarm)
    .where(_BUDGETS.c.run_id == bindparam("run_id"), _BUDGETS.c.provider.in_(bindparam("providers", expanding=True)))
    .order_by(_BUDGETS.c.id)  # one lock order everywhere: no deadlocks between transactions
    .with_for_update()  # SQLite renders nothing: its transaction already holds the write lock
)
_ADD_TO_BUDGETS = (
    update(_BUDGETS)
    .where(_BUDGETS.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        spent_micros=_BUDGETS.c.spent_micros + bindparam("d_spent"),
        reserved_micros=_BUDGETS.c.reserved_micros + bindparam("d_reserved"),
        updated_at=bindparam("now"),
    )
)
_INSERT_RESERVATION = insert(_RESERVATIONS).returning(_RESERVATIONS.c.id)
_LOCK_RESERVATION = (
    select(_RESERVATIONS.c.run_id, _RESERVATIONS.c.provider, _RESERVATIONS.c.amount_micros,
           _RESERVATIONS.c.actual_micros, _RESERVATIONS.c.state)
    .where(_RESERVATIONS.c.id == bindparam("reservation_id"))
    .with_for_update()
)
_CLOSE_RESERVATION = (
    update(_RESERVATIONS)
    .where(_RESERVATIONS.c.id == bindparam("reservation_id"))
    .values(state=bindparam("new_state"), actual_micros=bindparam("actual"), closed_at=bindparam("now"))
)


def _lock_budgets(session: Session, run_id: int, providers: set[str]) -> list:
    """Budget rows (id, provider, cap, spent, reserved) of `providers`, locked, in id order."""
    return list(session.execute(_LOCK_BUDGETS, {"run_id": run_id, "providers": sorted(providers)}))


def reserve(
    session: Session, *, run_id: int, provider: str, amount: int, now: datetime | None = None
) -> ReservationRecord | None:
    """Hold `amount` micro-USD against the provider's and the run's budget.

    Returns None (and changes nothing) if spent + reserved + amount > cap for any of them;
    raises BudgetAlarm if the provider billed above a reservation before.
    """
    require_writable(session, "reserve()")
    if amount < 0:
        raise ValueError(f"reservation amount must be >= 0 micro-USD, got {amount}")
    now = now or utcnow()
    rows = _lock_budgets(session, run_id, {provider, RUN_SCOPE})
    found = {r.provider for r in rows}
    if found != {provider, RUN_SCOPE}:
        missing = ", ".join(sorted({provider, RUN_SCOPE} - found))
        raise BudgetNotConfigured(
            f"run {run_id} has no budget row for {missing}: open_run/set_budget_caps must list provider {provider!r}"
        )
    alarm = next((r.alarm for r in rows if r.provider == provider and r.alarm), None)
    if alarm is not None:
        raise BudgetAlarm(alarm)
    if any(r.cap_micros is not None and r.spent_micros + r.reserved_micros + amount > r.cap_micros for r in rows):
        return None
    session.execute(_ADD_TO_BUDGETS, {"ids": [r.id for r in rows], "d_spent": 0, "d_reserved": amount, "now": now})
    reservation_id = session.execute(
        _INSERT_RESERVATION,
        {"run_id": run_id, "provider": provider, "amount_micros": amount, "state": "reserved", "created_at": now},
    ).scalar_one()
    return ReservationRecord(reservation_id, run_id, provider, amount, now)


def _charge(session: Session, run_id: int, by_provider: Mapping[str, tuple[int, int]], now: datetime) -> None:
    """Apply (delta_spent, delta_reserved) per provider, and their sum to the run budget."""
    total_spent = sum(s for s, _ in by_provider.values())
    total_reserved = sum(r for _, r in by_provider.values())
    deltas = {**by_provider, RUN_SCOPE: (total_spent, total_reserved)}
    rows = _lock_budgets(session, run_id, set(deltas))
    by_delta: dict[tuple[int, int], list[int]] = defaultdict(list)
    for row in rows:  # a single reservation moves the same delta on both rows: one UPDATE
        by_delta[deltas[row.provider]].append(row.id)
    for (spent, reserved), ids in by_delta.items():
        session.execute(_ADD_TO_BUDGETS, {"ids": ids, "d_spent": spent, "d_reserved": reserved, "now": now})


def _raise_alarm(session: Session, row, reservation_id: int, actual: int, now: datetime) -> None:
    """The provider billed above the worst case reserved for the attempt: record the excess
    and, the first time, the alarm that stops its later reservations."""
    message = (
        f"provider {row.provider} billed ${actual / 1e6:.6f} for an attempt reserved at its worst case "
        f"${row.amount_micros / 1e6:.6f} (reservation {reservation_id}): it bills beyond the limits sent, so a cap "
        "can be crossed; its audits are stopped. Check the model's prices and output limits, then run "
        f"`omniopd teacher clear-alarm {row.provider}`"
    )
    session.execute(
        update(Budget)
        .where(Budget.run_id == row.run_id, Budget.provider == row.provider)
        .values(overbilled_micros=Budget.overbilled_micros + (actual - row.amount_micros),
                alarm=func.coalesce(Budget.alarm, message), updated_at=now)
        .execution_options(synchronize_session=False)
    )


def settle(session: Session, *, reservation_id: int, actual: int, now: datetime | None = None) -> None:
    """Charge the reservation at `actual` micro-USD (the provider's reported cost).

    Settling twice with the same amount is a no-op. A reservation that already expired
    (charged in full) is re-charged at `actual`, refunding amount - actual.
    """
    require_writable(session, "settle()")
    if actual < 0:
        raise ValueError(f"actual cost must be >= 0 micro-USD, got {actual}")
    now = now or utcnow()
    row = session.execute(_LOCK_RESERVATION, {"reservation_id": reservation_id}).one_or_none()
    if row is None:
        raise LookupError(f"no reservation {reservation_id}")
    if row.state == "settled":
        if row.actual_micros != actual:
            raise ValueError(
                f"reservation {reservation_id} was already settled at {row.actual_micros} micro-USD, not {actual}"
            )
        return
    if row.state == "reserved":
        delta = (actual, -row.amount_micros)
    else:  # expired: it was charged amount in full; correct to the known cost
        delta = (actual - row.amount_micros, 0)
    _charge(session, row.run_id, {row.provider: delta}, now)
    if actual > row.amount_micros:
        _raise_alarm(session, row, reservation_id, actual, now)
    session.execute(_CLOSE_RESERVATION, {"reservation_id": reservation_id, "new_state": "settled", "actual": actual, "now": now})


def expire_stale(
    session: Session, *, now: datetime | None = None, ttl_s: float, run_id: int | None = None
) -> ExpiryReport:
    """Expire reservations older than `ttl_s` that were never settled, charging each in full
    (outcome unknown = charged at R); their in-flight ledger rows become status 'unknown'."""
    require_writable(session, "expire_stale()")
    now = now or utcnow()
    stmt = (
        select(Reservation.id, Reservation.run_id, Reservation.provider, Reservation.amount_micros)
        .where(Reservation.state == "reserved", Reservation.created_at < now - timedelta(seconds=ttl_s))
        .order_by(Reservation.id)
    )
    if run_id is not None:
        stmt = stmt.where(Reservation.run_id == run_id)
    stmt = stmt.with_for_update(skip_locked=True)  # one being settled right now is left to its settle
    rows = list(session.execute(stmt))
    if not rows:
        return ExpiryReport((), 0)
    per_run: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in rows:
        acc = per_run[r.run_id][r.provider]
        acc[0] += r.amount_micros
        acc[1] -= r.amount_micros
    for rid, by_provider in sorted(per_run.items()):
        _charge(session, rid, {p: (s, v) for p, (s, v) in by_provider.items()}, now)
    ids = [r.id for r in rows]
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        session.execute(
            update(Reservation)
            .where(Reservation.id.in_(part))
            .values(state="expired", actual_micros=Reservation.amount_micros, closed_at=now)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(TeacherCall)
            .where(TeacherCall.reservation_id.in_(part), TeacherCall.status == "reserved")
            .values(status="unknown", cost_micros=TeacherCall.reserved_micros, finished_at=now)
            .execution_options(synchronize_session=False)
        )
    return ExpiryReport(tuple(ids), sum(r.amount_micros for r in rows))


def clear_alarm(session: Session, *, run_id: int, provider: str) -> str | None:
    """Let a provider with an alarm reserve again (someone checked its prices and limits);
    returns the alarm it had. Its `overbilled_micros` stays, as history."""
    require_writable(session, "clear_alarm()")
    row = session.scalars(select(Budget).where(Budget.run_id == run_id, Budget.provider == provider)).one_or_none()
    if row is None:
        raise BudgetNotConfigured(f"run {run_id} has no budget for {provider!r}")
    alarm, row.alarm = row.alarm, None
    return alarm


def budgets(session: Session, *, run_id: int) -> list[BudgetView]:
    """Every budget row of the run (providers sorted, the run-wide one last)."""
    rows = session.scalars(select(Budget).where(Budget.run_id == run_id)).all()
    views = [BudgetView(b.provider, b.cap_micros, b.spent_micros, b.reserved_micros, b.overbilled_micros, b.alarm)
             for b in rows]
    return sorted(views, key=lambda v: (v.provider == RUN_SCOPE, v.provider))
