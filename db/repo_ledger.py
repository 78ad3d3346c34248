"""The teacher-call ledger: one row per HTTP attempt, opened with its budget reservation.

Per attempt the audit worker does, in two short transactions around the network call:

    with Session.begin() as s:                      # 1. reserve + ledger row
        call = open_call(s, run_id=..., provider="claude", model=..., reserve=R,
                         idempotency_key=..., chunk_id=...)
    if call is None: -> chunk skipped_budget        #    a cap refused R
    ... HTTP ...
    with Session.begin() as s:                      # 2. outcome + settle
        close_call(s, call_id=call.id, status="ok", usage=..., cost=C, ...)

A worker that dies between 1 and 2 leaves the row `reserved`; `expire_stale` later marks
it `unknown` and charges R. Nothing here accepts headers or keys, and free-text error
details pass through `scrub` (secrets from the environment and bearer/API-key patterns
are masked) before they are stored.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import TeacherCall, utcnow
from db.repo_budget import reserve, settle

SECRET_ENV_PATTERN = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
SECRET_TEXT_PATTERNS = (
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer ***"),
    (
        re.compile(r"(?i)\b(x-api-key|x-goog-api-key|api[_-]?key|authorization)([\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"),
        r"\1\2***",
    ),
    (re.compile(r"(?i)([?&]key=)[^&\s\"']+"), r"\1***"),  # Gemini's ?key= in URLs
    (re.compile(r"\b(?:sk-ant-|sk-|AIza)[-_A-Za-z0-9]{16,}"), "***"),
)
MAX_DETAIL = 500


def scrub(text: str | None) -> str | None:
    """Mask secrets in a free-text error detail and cap its length."""
    if text is None:
        return None
    for name, value in os.environ.items():
        if len(value) >= 8 and SECRET_ENV_PATTERN.search(name) and value in text:
            text = text.replace(value, "***")
    for pattern, replacement in SECRET_TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text[:MAX_DETAIL]


@dataclass(frozen=True)
class TokenUsage:
    """Usage as the provider reported it, normalised (docs/teachers.md)."""

    input: int = 0  # uncached input tokens
    cached_input: int = 0  # input tokens read from the provider's cache
    cache_write: int = 0  # input tokens written to the cache
    output: int = 0  # reasoning included
    reasoning: int = 0


@dataclass(frozen=True)
class OpenCall:
    """An attempt that may proceed: its ledger row and the reservation holding its worst case."""

    id: int
    reservation_id: int
    reserved: int  # micro-USD


CallStatus = Literal["ok", "error", "unknown"]


def open_call(
    session: Session,
    *,
    run_id: int,
    provider: str,
    model: str,
    reserve_micros: int,
    idempotency_key: str,
    chunk_id: int | None = None,
    n_requested: int = 1,
    now: datetime | None = None,
) -> OpenCall | None:
    """Reserve the attempt's worst-case cost and write its ledger row (status 'reserved').

    None when a budget cap refuses the reservation (nothing is written then).
    """
    now = now or utcnow()
    held = reserve(session, run_id=run_id, provider=provider, amount=reserve_micros, now=now)
    if held is None:
        return None
    row = TeacherCall(
        run_id=run_id,
        chunk_id=chunk_id,
        reservation_id=held.id,
        provider=provider,
        model=model,
        idempotency_key=idempotency_key,
        status="reserved",
        n_requested=n_requested,
        n_returned=0,
        input_tokens=0,
        cached_input_tokens=0,
        cache_write_tokens=0,
        output_tokens=0,
        reasoning_tokens=0,
        reserved_micros=reserve_micros,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return OpenCall(row.id, held.id, reserve_micros)


def find_open_call(session: Session, *, run_id: int, idempotency_key: str) -> OpenCall | None:
    """The ledger row `open_call` wrote for `idempotency_key`, if its commit happened.

    How a reservation whose COMMIT outcome is unknown (the connection dropped during it,
    db/outage.py) is settled on re-run: found -> use it (no second reservation is held);
    None -> nothing was written, reserve again."""
    row = session.execute(
        select(TeacherCall.id, TeacherCall.reservation_id, TeacherCall.reserved_micros)
        .where(TeacherCall.run_id == run_id, TeacherCall.idempotency_key == idempotency_key)
        .order_by(TeacherCall.id).limit(1)
    ).one_or_none()
    return None if row is None else OpenCall(row.id, row.reservation_id, row.reserved_micros)


def close_call(
    session: Session,
    *,
    call_id: int,
    status: CallStatus,
    usage: TokenUsage,
    cost_micros: int | None,
    http_status: int | None,
    latency_ms: float | None,
    n_returned: int = 0,
    error_class: str | None = None,
    error_detail: str | None = None,
    now: datetime | None = None,
) -> int:
    """Record the attempt's outcome and settle its reservation; returns the charge.

    ok / error: charged `cost_micros` from the reported usage (None -> 0 for an error the
    provider did not bill). unknown (timeout, connection lost mid-response): charged the
    full reservation, whatever `cost_micros` says.
    """
    if status not in ("ok", "error", "unknown"):
        raise ValueError(f"call status {status!r}: expected ok, error or unknown")
    now = now or utcnow()
    row = session.get(TeacherCall, call_id, populate_existing=True)
    if row is None:
        raise LookupError(f"no teacher call {call_id}")
    if status == "unknown":
        charge = row.reserved_micros
    elif cost_micros is None:
        if status == "ok":
            raise ValueError("a successful call needs its cost (cost_micros)")
        charge = 0
    else:
        charge = cost_micros
    row.status = status
    row.input_tokens, row.cached_input_tokens = usage.input, usage.cached_input
    row.cache_write_tokens, row.output_tokens, row.reasoning_tokens = usage.cache_write, usage.output, usage.reasoning
    row.cost_micros = charge
    row.http_status, row.latency_ms, row.n_returned = http_status, latency_ms, n_returned
    row.error_class = scrub(error_class)
    row.error_detail = scrub(error_detail)
    row.finished_at = now
    if row.reservation_id is not None:
        settle(session, reservation_id=row.reservation_id, actual=charge, now=now)
    session.flush()
    return charge


@dataclass(frozen=True)
class LedgerTotal:
    """Aggregate of ledger rows sharing one `key` (provider, model, day or status)."""

    key: str
    calls: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_micros: int  # charged so far (in-flight calls count 0 here; see budgets.reserved)


def ledger_totals(
    session: Session, *, run_id: int, by: Literal["provider", "model", "day", "status"] = "provider"
) -> list[LedgerTotal]:
    """Calls, tokens and cost of the run's ledger grouped `by`, sorted by key."""
    keys = {
        "provider": TeacherCall.provider,
        "model": TeacherCall.model,
        "status": TeacherCall.status,
        "day": func.date(TeacherCall.created_at),
    }
    if by not in keys:
        raise ValueError(f"group by {by!r}: expected one of {', '.join(keys)}")
    key = keys[by]
    stmt = (
        select(
            key,
            func.count(),
            *(func.coalesce(func.sum(c), 0) for c in (
                TeacherCall.input_tokens,
                TeacherCall.cached_input_tokens,
                TeacherCall.cache_write_tokens,
                TeacherCall.output_tokens,
                TeacherCall.reasoning_tokens,
                TeacherCall.cost_micros,
            )),
        )
        .where(TeacherCall.run_id == run_id)
        .group_by(key)
        .order_by(key)
    )
    return [LedgerTotal(str(row[0]), *(int(v) for v in row[1:])) for row in session.execute(stmt)]
