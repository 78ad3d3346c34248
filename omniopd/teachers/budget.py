"""Spend caps around every HTTP attempt: the `BudgetGuard` protocol the SQL store
implements, the hooks that drive it, and an in-memory guard for single-process use.

The protocol (docs/store.md, "Budget semantics"): before an attempt, reserve its worst-case cost R against
every applicable cap in one atomic step that refuses when `spent + reserved + R > cap`;
after it, settle to the actual cost. An attempt whose outcome is unknown stays charged
at R. Hence spend never exceeds a cap, under any concurrency, as long as `reserve` is
atomic across processes (the store's job).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from omniopd.money import micros_to_usd
from omniopd.teachers.pricing import Price, attempt_cost_micros, reservation_micros
from omniopd.teachers.types import Attempt, AttemptEstimate, BudgetExhausted


class BudgetGuard(Protocol):
    """Reserve-then-settle spend accounting. Methods may be sync or async.

    `reserve` must be atomic against every other process using the same caps and raise
    `BudgetExhausted` (saying which cap) when the reservation does not fit. `settle`
    releases the reservation of `attempt.key` and charges `cost_micros`; `cost_micros=None`
    means the outcome is unknown and the attempt stays charged at its reservation.
    Amounts are integer micro-USD."""

    def reserve(self, estimate: AttemptEstimate, amount_micros: int) -> Any: ...

    def settle(self, attempt: Attempt, cost_micros: int | None) -> Any: ...


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@dataclass
class BudgetHooks:
    """AttemptHooks that reserve R before each attempt and settle after, through a guard.
    `on_settled(attempt, reserved_micros, cost_micros)` (optional, sync or async) is where a
    caller writes its ledger row."""

    guard: BudgetGuard
    price: Price
    on_settled: Callable[[Attempt, int, int | None], Any] | None = None

    def __post_init__(self) -> None:
        self._reserved: dict[str, int] = {}

    async def on_attempt_start(self, estimate: AttemptEstimate) -> bool:
        amount = reservation_micros(estimate, self.price)
        await _maybe_await(self.guard.reserve(estimate, amount))
        self._reserved[estimate.key] = amount
        return True

    async def on_attempt_end(self, attempt: Attempt) -> None:
        cost = attempt_cost_micros(attempt, self.price)
        await _maybe_await(self.guard.settle(attempt, cost))
        reserved = self._reserved.pop(attempt.key, 0)
        if self.on_settled is not None:
            await _maybe_await(self.on_settled(attempt, reserved, cost))


class InMemoryBudgetGuard:
    """A BudgetGuard for one process (tests, `teacher check`): thread-safe, same rules as
    the store's. Amounts in micro-USD; `spent` counts settled costs plus unknown outcomes
    at their reservation."""

    def __init__(self, cap_micros: int | None, name: str = "budget"):
        self.cap_micros = cap_micros
        self.name = name
        self.spent = 0
        self.reserved = 0
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserve(self, estimate: AttemptEstimate, amount_micros: int) -> None:
        with self._lock:
            if estimate.key in self._open:
                raise ValueError(f"attempt {estimate.key} is already reserved")
            if self.cap_micros is not None and self.spent + self.reserved + amount_micros > self.cap_micros:
                raise BudgetExhausted(
                    f"{self.name} of ${micros_to_usd(self.cap_micros):.4f} reached: spent ${micros_to_usd(self.spent):.4f}, "
                    f"reserved ${micros_to_usd(self.reserved):.4f}, next attempt needs up to ${micros_to_usd(amount_micros):.4f}"
                )
            self._open[estimate.key] = amount_micros
            self.reserved += amount_micros

    def settle(self, attempt: Attempt, cost_micros: int | None) -> None:
        with self._lock:
            amount = self._open.pop(attempt.key)
            self.reserved -= amount
            self.spent += amount if cost_micros is None else cost_micros
