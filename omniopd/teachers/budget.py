"""Spend caps around every HTTP attempt: the `BudgetGuard` protocol the SQL store
implements, the hooks that drive it, and an in-memory guard for single-process use.

The protocol (DESIGN.md §6): before an attempt, reserve its worst-case cost R against
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

from omniopd.teachers.pricing import Price, cost_usd, reservation_usd
from omniopd.teachers.types import Attempt, AttemptEstimate, BudgetExhausted


class BudgetGuard(Protocol):
    """Reserve-then-settle spend accounting. Methods may be sync or async.

    `reserve` must be atomic against every other process using the same caps and raise
    `BudgetExhausted` (saying which cap) when the reservation does not fit. `settle`
    releases the reservation of `attempt.key` and charges `cost_usd`; `cost_usd=None`
    means the outcome is unknown and the attempt stays charged at its reservation."""

    def reserve(self, estimate: AttemptEstimate, amount_usd: float) -> Any: ...

    def settle(self, attempt: Attempt, cost_usd: float | None) -> Any: ...


def attempt_cost(attempt: Attempt, price: Price) -> float | None:
    """What an attempt is billed: usage cost if ok, 0 if failed, None (keep R) if unknown."""
    if attempt.status == "ok":
        return cost_usd(attempt.usage, price)
    if attempt.status == "failed":
        return 0.0
    return None


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@dataclass
class BudgetHooks:
    """AttemptHooks that reserve R before each attempt and settle after, through a guard.
    `on_settled(attempt, reserved_usd, cost_usd)` (optional, sync or async) is where a
    caller writes its ledger row."""

    guard: BudgetGuard
    price: Price
    on_settled: Callable[[Attempt, float, float | None], Any] | None = None

    def __post_init__(self) -> None:
        self._reserved: dict[str, float] = {}

    async def on_attempt_start(self, estimate: AttemptEstimate) -> bool:
        amount = reservation_usd(estimate, self.price)
        await _maybe_await(self.guard.reserve(estimate, amount))
        self._reserved[estimate.key] = amount
        return True

    async def on_attempt_end(self, attempt: Attempt) -> None:
        cost = attempt_cost(attempt, self.price)
        await _maybe_await(self.guard.settle(attempt, cost))
        reserved = self._reserved.pop(attempt.key, 0.0)
        if self.on_settled is not None:
            await _maybe_await(self.on_settled(attempt, reserved, cost))


class InMemoryBudgetGuard:
    """A BudgetGuard for one process (tests, `teacher check`): thread-safe, same rules as
    the store's. `spent` counts settled costs plus unknown outcomes at their reservation."""

    def __init__(self, cap_usd: float | None, name: str = "budget"):
        self.cap_usd = cap_usd
        self.name = name
        self.spent = 0.0
        self.reserved = 0.0
        self._open: dict[str, float] = {}
        self._lock = threading.Lock()

    def reserve(self, estimate: AttemptEstimate, amount_usd: float) -> None:
        with self._lock:
            if estimate.key in self._open:
                raise ValueError(f"attempt {estimate.key} is already reserved")
            if self.cap_usd is not None and self.spent + self.reserved + amount_usd > self.cap_usd:
                raise BudgetExhausted(
                    f"{self.name} of ${self.cap_usd:.4f} reached: spent ${self.spent:.4f}, "
                    f"reserved ${self.reserved:.4f}, next attempt needs up to ${amount_usd:.4f}"
                )
            self._open[estimate.key] = amount_usd
            self.reserved += amount_usd

    def settle(self, attempt: Attempt, cost_usd: float | None) -> None:
        with self._lock:
            amount = self._open.pop(attempt.key)
            self.reserved -= amount
            self.spent += amount if cost_usd is None else cost_usd
