"""Spend caps around every HTTP attempt: the one `BudgetGuard` protocol the teacher client
calls, and an in-memory guard for single-process use (the SQL store's guard, atomic across
processes, is workers/audit/budget_guard.py).

The protocol (docs/store.md, "Budget semantics"), driven by `TeacherClient` for every
attempt, amounts in integer micro-USD:

    R = reservation_micros(estimate, price)          worst case, rounded up
    await guard.reserve(estimate, R)                 atomic against every cap; raises
                                                     BudgetExhausted if spent + reserved + R > cap
    ... HTTP ...
    await guard.settle(attempt, attempt_cost_micros(attempt, price))
                                                     ok: reported usage, failed: 0,
                                                     unknown: None = stays charged at R

`settle` runs exactly once for every attempt whose reservation succeeded, also when the
call is cancelled. Hence spend never exceeds a cap, under any concurrency, as long as
`reserve` is atomic across the processes sharing the caps (the store's job) and R really
is the worst case. A provider that bills above R breaks the second condition: a guard
raises an alarm at that settle and refuses the provider's later reservations with
`FatalProviderError`, which stops its audits.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from omniopd.money import micros_to_usd
from omniopd.teachers.types import Attempt, AttemptEstimate, BudgetExhausted, FatalProviderError


class BudgetGuard(Protocol):
    """Reserve-then-settle spend accounting of the attempts of teacher calls (micro-USD)."""

    async def reserve(self, estimate: AttemptEstimate, amount_micros: int) -> None:
        """Hold `amount_micros` (R) for attempt `estimate.key` against every applicable cap,
        atomically against every other user of the same caps; raise `BudgetExhausted`
        (saying which cap) when it does not fit. Nothing is held after a refusal."""
        ...

    async def settle(self, attempt: Attempt, cost_micros: int | None) -> None:
        """Release the reservation of `attempt.key` and charge `cost_micros`; None means the
        outcome is unknown and the attempt stays charged at its reservation."""
        ...


@dataclass(frozen=True)
class Settlement:
    """An attempt as a guard settled it: the worst case it held and what it was charged."""

    attempt: Attempt
    reserved_micros: int
    charged_micros: int


class InMemoryBudgetGuard:
    """A BudgetGuard for one process (tests, `teacher check`), with the store's rules. Its
    state is behind a thread lock, so calls on several event loops (threads) may share it.
    `spent` counts settled costs plus unknown outcomes at their reservation; `settled` lists
    every settled attempt in order."""

    def __init__(self, cap_micros: int | None, name: str = "budget"):
        self.cap_micros = cap_micros
        self.name = name
        self.spent = 0
        self.reserved = 0
        self.settled: list[Settlement] = []
        self.alarm: str | None = None  # set by a settle above its reservation
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    async def reserve(self, estimate: AttemptEstimate, amount_micros: int) -> None:
        with self._lock:
            if estimate.key in self._open:
                raise ValueError(f"attempt {estimate.key} is already reserved")
            if self.alarm is not None:
                raise FatalProviderError(self.alarm)
            if self.cap_micros is not None and self.spent + self.reserved + amount_micros > self.cap_micros:
                raise BudgetExhausted(
                    f"{self.name} of ${micros_to_usd(self.cap_micros):.4f} reached: spent ${micros_to_usd(self.spent):.4f}, "
                    f"reserved ${micros_to_usd(self.reserved):.4f}, next attempt needs up to ${micros_to_usd(amount_micros):.4f}"
                )
            self._open[estimate.key] = amount_micros
            self.reserved += amount_micros

    async def settle(self, attempt: Attempt, cost_micros: int | None) -> None:
        with self._lock:
            amount = self._open.pop(attempt.key)
            charged = amount if cost_micros is None else cost_micros
            self.reserved -= amount
            self.spent += charged
            self.settled.append(Settlement(attempt, amount, charged))
            if charged > amount and self.alarm is None:
                self.alarm = (f"{attempt.provider} {attempt.model} billed ${micros_to_usd(charged):.6f} for attempt "
                              f"{attempt.key}, above the ${micros_to_usd(amount):.6f} reserved as its worst case; "
                              "no more attempts are sent")
