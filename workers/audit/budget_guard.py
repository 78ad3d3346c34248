"""The store-backed `BudgetGuard`: every HTTP attempt of a teacher call is reserved against
the SQL budgets and written to the ledger before it is sent, and settled after.

    reserve(estimate, R)  one transaction: hold R against the provider's cap and the run's
                          cap (spent + reserved + R <= cap for both, or nothing happens)
                          and open the attempt's ledger row (`db.repo_ledger.open_call`)
    settle(attempt, cost) one transaction: the ledger row gets status, usage, cost; the
                          reservation is settled at the cost (ok: reported usage at our
                          prices, failed: 0, unknown: R, whatever happened)

So there is exactly one ledger row per HTTP attempt, and an attempt whose worker dies
between the two keeps its reservation until the maintenance sweep expires it, charged at
R (outcome unknown). A store outage is not a death: both transactions wait for the store
and run again (db/outage.py), so a paid attempt is settled at its cost once the store is
back; a re-run reservation finds its own ledger row if its first commit happened. An attempt charged above its R (the provider billed beyond the limits
sent) is logged as an alarm, and the store refuses the provider's later reservations
(`budgets.alarm`): `reserve` raises FatalProviderError, which stops the teacher's audits.

A refusal is one of two things. *Exhausted*: even with nothing else in flight the attempt
would not fit (spent + R > cap): raise `BudgetExhausted` with the message the run reports
("teacher budget exhausted for provider X: spent $a of cap $b"). *Contended*: it would fit
once attempts of other workers settle (spent + R <= cap < spent + reserved + R): wait
for them — at most `wait_s`, since an attempt settles when its HTTP request ends — and
try again, so reservations held for a moment by other processes do not skip chunks the
budget can still pay for.

The database work runs in a thread of `executor` (sized to the store's connection pool,
so attempts queue for a thread instead of timing out waiting for a connection): the
teacher client's event loop is shared by every audit of the process and must not block.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from db.models import RUN_SCOPE
from db.outage import rerun_on_disconnect
from db.repo_budget import BudgetAlarm, BudgetView, budgets
from db.repo_ledger import OpenCall, TokenUsage, close_call, find_open_call, open_call
from omniopd.money import micros_to_usd
from omniopd.teachers.types import Attempt, AttemptEstimate, BudgetExhausted, FatalProviderError

log = logging.getLogger("omniopd.audit")

LEDGER_STATUS = {"ok": "ok", "failed": "error", "unknown": "unknown"}
"""Attempt billing status (omniopd.teachers.types) -> ledger row status (db.models.spend)."""


@dataclass(frozen=True)
class Refusal:
    """Why a reservation did not fit; `exhausted` when it could not fit even with nothing in flight."""

    exhausted: bool
    message: str


def refusal(views: list[BudgetView], provider: str, amount: int) -> Refusal:
    """Classify a refused reservation of `amount` micro-USD from the budget rows it checked."""
    exhausted, contended = [], []
    for view in views:
        if view.cap is None or view.provider not in (provider, RUN_SCOPE):
            continue
        label = "the run (audit.budget_usd)" if view.provider == RUN_SCOPE else f"provider {view.provider}"
        line = (
            f"teacher budget exhausted for {label}: spent ${micros_to_usd(view.spent):.4f} of cap "
            f"${micros_to_usd(view.cap):.4f} (the next attempt needs up to ${micros_to_usd(amount):.4f})"
        )
        if view.spent + amount > view.cap:
            exhausted.append(line)
        elif view.spent + view.reserved + amount > view.cap:
            contended.append(f"{line}; ${micros_to_usd(view.reserved):.4f} held by attempts in flight")
    if exhausted:
        return Refusal(True, "; ".join(exhausted))
    return Refusal(False, "; ".join(contended) or f"reservation of {amount} micro-USD refused for provider {provider}")


@dataclass
class LedgerAttempt:
    """An attempt as the guard settled it (for the chunk's telemetry)."""

    attempt: Attempt
    call_id: int
    charged_micros: int


@dataclass
class StoreBudgetGuard:
    """BudgetGuard for the attempts of one teacher call (one chunk) of one run."""

    sessions: sessionmaker[Session]
    run_id: int
    provider: str  # the teacher's name in the config: the budget and ledger key
    chunk_id: int | None
    wait_s: float  # longest wait for contended budget before giving up
    executor: Executor | None = None  # None: the event loop's default executor
    settled: list[LedgerAttempt] = field(default_factory=list)
    _open: dict[str, OpenCall] = field(default_factory=dict)

    async def reserve(self, estimate: AttemptEstimate, amount_micros: int) -> None:
        deadline = time.monotonic() + self.wait_s
        delay = 0.05
        while True:
            outcome = await self._in_thread(self._open_call, estimate, amount_micros)
            if isinstance(outcome, OpenCall):
                self._open[estimate.key] = outcome
                return
            if isinstance(outcome, str):  # the provider billed above a reservation before
                raise FatalProviderError(outcome)
            if outcome.exhausted or time.monotonic() + delay > deadline:
                raise BudgetExhausted(outcome.message)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _open_call(self, estimate: AttemptEstimate, amount: int) -> OpenCall | Refusal | str:
        """Reserve and open the ledger row, in one transaction; re-run if the store went away
        (a re-run first looks for the row of the attempt's key: its commit may have happened)."""
        runs = 0

        def unit() -> OpenCall | Refusal | str:
            nonlocal runs
            runs += 1
            with self.sessions.begin() as session:
                if runs > 1:
                    found = find_open_call(session, run_id=self.run_id, idempotency_key=estimate.key)
                    if found is not None:
                        return found
                try:
                    call = open_call(
                        session, run_id=self.run_id, provider=self.provider, model=estimate.model,
                        reserve_micros=amount, idempotency_key=estimate.key, chunk_id=self.chunk_id,
                        n_requested=estimate.n,
                    )
                except BudgetAlarm as alarm:
                    return str(alarm)
                if call is not None:
                    return call
                return refusal(budgets(session, run_id=self.run_id), self.provider, amount)

        return rerun_on_disconnect(unit, what=f"the reservation of teacher attempt {estimate.key}", logger=log)

    async def settle(self, attempt: Attempt, cost_micros: int | None) -> None:
        call = self._open.pop(attempt.key)
        charged = await self._in_thread(self._close_call, call, attempt, cost_micros)
        self.settled.append(LedgerAttempt(attempt, call.id, charged))
        if charged > call.reserved:
            log.error("ALARM: teacher %s billed $%.6f for attempt %s, above the $%.6f reserved as its worst case; "
                      "its audits stop (budgets.alarm; omniopd spend and status show it)", self.provider,
                      micros_to_usd(charged), attempt.key, micros_to_usd(call.reserved))

    def _close_call(self, call: OpenCall, attempt: Attempt, cost_micros: int | None) -> int:
        """Settle the attempt (ledger row + reservation) in one transaction. The HTTP request
        is paid for: if the store goes away this waits for it and settles then (re-running is
        safe: settling again at the same amount is a no-op), instead of leaving the
        reservation to the maintenance sweep, which would charge it at R. A reservation the
        sweep expired meanwhile (the wait outlasted audit.reservation_ttl_s) is corrected to
        the known cost, as any late settle is (db.repo_budget.settle)."""
        usage = attempt.usage

        def unit() -> int:
            with self.sessions.begin() as session:
                return close_call(
                    session,
                    call_id=call.id,
                    status=LEDGER_STATUS[attempt.status],
                    # the ledger's output_tokens include reasoning (db/models/spend.py)
                    usage=TokenUsage(usage.input, usage.cached_input, usage.cache_write, usage.output + usage.reasoning,
                                     usage.reasoning),
                    cost_micros=cost_micros,
                    http_status=attempt.http_status,
                    latency_ms=round(attempt.latency_s * 1000.0, 3),
                    n_returned=attempt.n_texts,
                    error_class=attempt.error_class,
                    error_detail=attempt.error,
                )

        return rerun_on_disconnect(unit, what=f"the settlement of paid teacher attempt {attempt.key}", logger=log)
