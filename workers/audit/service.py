"""The audit of one trajectory (docs/audit.md): its chunks, in ascending
position, each continued N times by the teacher and scored against the student.

Per chunk:

    budget: reserve R of every attempt against the provider's and the run's cap, open its
            ledger row (workers/audit/budget_guard.py) -> rate limiter -> HTTP -> settle
    cut:    each continuation cut to the student chunk's length (words or characters)
    phi:    similarity of each cut continuation with the student chunk (Eq. 3)
    store:  samples (chunk, i), then k_sem = sum_i phi_i (Eq. 3) and the chunk `audited`

Ascending order: the chunks' prefixes nest (prompt + student text before the chunk), so
each request extends the previous one and the provider's prompt cache hits.

Idempotent and resumable: the store says which sample indices i a chunk still misses,
and only those are asked for (a retry never pays twice for a stored sample); a
redelivered task for an audited trajectory returns at once.

Outcomes of a chunk's teacher call (the client retried what is retryable already):
- all N texts: `audited`;
- `BudgetExhausted`: this chunk and every later pending chunk of the trajectory become
  `skipped_budget`, with the cap's message (the run winds down: see docs/audit.md);
- `RetriesExhausted` (429s, 5xx, timeouts, empty texts beyond the client's retries): the
  texts obtained are stored, the chunk stays pending, later chunks wait (cache order),
  and the task is delivered again after `audit.retry_delay_s`; on the last of
  `audit.retries` redeliveries the chunk becomes `failed`;
- a 400 for this request (a prefix beyond the context window): the chunk `failed`;
- any other fatal provider error (bad key, unknown model, per-day quota, a sampling or
  thinking setting the model refuses, a refusal the adapter does not recognise) is the
  run's configuration, not the chunk's: `TeacherSetupError`, the chunk stays pending, and
  every later audit of the process stops before sending (`AuditContext.stopped`), so a
  refusal is paid for at most once per attempt in flight; `omniopd status` shows the
  provider's message (scrubbed of the key) from the ledger.

When every chunk is terminal the trajectory becomes `ready`, or `dropped` (reason
`unaudited`) if not one chunk was audited (db.repo_audit.finish_audit).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Problem, Trajectory
from db.outage import rerun_on_disconnect
from db.repo_audit import (
    AuditWork,
    ChunkWork,
    TeacherSampleIn,
    add_teacher_samples,
    begin_audit,
    chunk_samples,
    complete_chunk,
    fail_chunk,
    finish_audit,
    record_chunk_telemetry,
)
from db.repo_budget import budgets
from omniopd.algo import estimator
from omniopd.algo.similarity import cut_continuation, phi_batch
from omniopd.config import OmniConfig, TeacherConfig
from omniopd.money import micros_to_usd
from omniopd.teachers import Price, build_teacher, teacher_price
from omniopd.teachers.types import BudgetExhausted, FatalProviderError, TeacherError
from workers.audit.budget_guard import StoreBudgetGuard
from workers.audit.teacher_loop import TeacherLoop

log = logging.getLogger("omniopd.audit")


class TeacherSetupError(RuntimeError):
    """The teacher refuses every request (bad key, unknown model, quota): fix the config
    and restart the audit workers; the maintenance sweep re-sends the waiting audits."""


@dataclass
class AuditContext:
    """What auditing needs in one worker process (shared by its threads)."""

    config: OmniConfig
    sessions: sessionmaker[Session]
    teacher_name: str
    teacher: TeacherConfig
    price: Price
    loop: TeacherLoop
    slots: threading.BoundedSemaphore  # teacher.concurrency chunk calls in flight per process
    db_threads: ThreadPoolExecutor  # budget and ledger transactions of the attempts (store.pool_size)
    budget_reported: bool = False  # the cap refusal is logged as a warning once per process
    # Set when the teacher refused a request in a way retrying cannot fix (bad key, unknown
    # model, a setting the model refuses, a refusal the adapter does not recognise): every
    # later audit of this process stops before sending, so refusals stay bounded by the
    # attempts in flight at that moment.
    stopped: str | None = None
    checked_runs: set[int] = field(default_factory=set)  # runs known to have this teacher's budget row

    def close(self) -> None:
        self.loop.close()
        self.db_threads.shutdown(wait=False)


def make_audit_context(
    config: OmniConfig,
    sessions: sessionmaker[Session],
    *,
    teacher_name: str | None = None,
    redis_url: str | None = None,
    key_prefix: str = "",
) -> AuditContext:
    """The audit context of a process: the teacher client (rate limits shared through
    Redis, per provider account, when `redis_url` is given), its price, and the in-flight cap."""
    name = teacher_name or config.audit.teacher
    if not name or name not in config.teachers:
        known = ", ".join(sorted(config.teachers)) or "none"
        raise ValueError(f"no audit teacher {name!r}: set audit.teacher to one of the configured teachers ({known})")
    teacher = config.teachers[name]
    price = teacher_price(teacher, config.audit.prices_file)
    loop = TeacherLoop(lambda: build_teacher(teacher, redis_url=redis_url, key_prefix=key_prefix))
    return AuditContext(
        config, sessions, name, teacher, price, loop, threading.BoundedSemaphore(teacher.concurrency),
        ThreadPoolExecutor(config.store.pool_size, thread_name_prefix="omniopd-ledger"),
    )


@dataclass(frozen=True)
class AuditOutcome:
    """What one delivery of an audit did. `retry`: a chunk is still pending after
    transient provider errors, deliver the task again later."""

    trajectory_id: int
    state: str  # the trajectory's state afterwards
    audited: int = 0  # chunks this delivery moved to each terminal state
    skipped_budget: int = 0
    failed: int = 0
    retry: bool = False
    message: str | None = None  # the budget refusal or provider error that stopped it
    attempts: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _ChunkResult:
    state: str  # audited | skipped_budget | failed | pending
    message: str | None = None
    attempts: int = 0
    charged_micros: int = 0


def audit_trajectory(ctx: AuditContext, trajectory_id: int, *, last_delivery: bool = False) -> AuditOutcome:
    """Audit what is left of one trajectory; safe to call again for the same id."""
    if ctx.stopped is not None:  # the teacher refused before: no more attempts until restarted
        raise TeacherSetupError(ctx.stopped)
    t0 = time.monotonic()

    def begin() -> AuditWork:
        with ctx.sessions.begin() as session:
            return begin_audit(session, trajectory_id=trajectory_id)

    work = _rerun(f"the start of the audit of trajectory {trajectory_id}", begin)
    if work.done:
        return AuditOutcome(trajectory_id, work.state)
    _require_budget(ctx, work.run_id)
    prompt = teacher_prompt(ctx, work)
    results: list[_ChunkResult] = []
    stop: str | None = None
    for chunk in work.chunks:
        if chunk.terminal:
            continue
        if _dropped(ctx, trajectory_id):  # e.g. stale policy: no more money on it
            break
        if stop is not None:  # a cap was reached: the rest of the trajectory is not audited
            _fail(ctx, work, chunk, "skipped_budget", stop, {})
            results.append(_ChunkResult("skipped_budget", stop))
            continue
        result = audit_chunk(ctx, work, chunk, prompt, last_delivery=last_delivery)
        results.append(result)
        if result.state == "skipped_budget":
            stop = result.message
            level = logging.INFO if ctx.budget_reported else logging.WARNING
            ctx.budget_reported = True
            log.log(level, "%s; chunk %d and the rest of trajectory %d are skipped (the run winds down: attempts "
                    "that do not fit the cap are never sent)", stop, chunk.idx, trajectory_id)
        elif result.state == "pending":
            break  # provider trouble: keep cache order, deliver again later
    def finish() -> str:
        with ctx.sessions.begin() as session:
            return finish_audit(session, trajectory_id=trajectory_id)

    state = _rerun(f"the end of the audit of trajectory {trajectory_id}", finish)
    outcome = AuditOutcome(
        trajectory_id,
        state,
        audited=sum(r.state == "audited" for r in results),
        skipped_budget=sum(r.state == "skipped_budget" for r in results),
        failed=sum(r.state == "failed" for r in results),
        retry=any(r.state == "pending" for r in results),
        message=next((r.message for r in results if r.message), None),
        attempts=sum(r.attempts for r in results),
        cost_usd=micros_to_usd(sum(r.charged_micros for r in results)),
        seconds=round(time.monotonic() - t0, 3),
    )
    log.info(
        "audit of trajectory %d: %s; chunks audited %d, skipped for budget %d, failed %d%s; %d attempts, $%.6f, %.2fs",
        trajectory_id, state, outcome.audited, outcome.skipped_budget, outcome.failed,
        ", retry later" if outcome.retry else "", outcome.attempts, outcome.cost_usd, outcome.seconds,
    )
    return outcome


def _require_budget(ctx: AuditContext, run_id: int) -> None:
    """The run must have a budget row for this teacher (opened with a config that lists it)."""
    if run_id in ctx.checked_runs:
        return
    def read() -> set[str]:
        with ctx.sessions.begin() as session:
            return {b.provider for b in budgets(session, run_id=run_id)}

    providers = _rerun(f"reading the budgets of run {run_id}", read)
    if ctx.teacher_name not in providers:
        raise TeacherSetupError(
            f"run {run_id} has no budget for teacher {ctx.teacher_name!r} (it has: {', '.join(sorted(providers))}): "
            "the run was opened with a config without this teacher; start the learner with this config first"
        )
    ctx.checked_runs.add(run_id)


def _rerun(what: str, unit):
    """Run a store transaction of the audit; if the store goes away, wait for it and run it
    again (db/outage.py). Each unit here is safe to re-run: reads, inserts that skip stored
    samples, state moves guarded by the current state; none of them calls the teacher."""
    return rerun_on_disconnect(unit, what=what, logger=log)


def _dropped(ctx: AuditContext, trajectory_id: int) -> bool:
    def read() -> bool:
        with ctx.sessions.begin() as session:
            return session.scalar(select(Trajectory.state).where(Trajectory.id == trajectory_id)) == "dropped"

    return _rerun(f"reading the state of trajectory {trajectory_id}", read)


def teacher_prompt(ctx: AuditContext, work: AuditWork) -> str:
    """The task as the teacher sees it: the user message, without the student's chat markup.

    The rollout worker records it as `meta["teacher_prompt"]` (the Table 7 prompt it
    rendered); for trajectories without it the problem is rendered again with
    `data.prompt_template`. In raw mode the teacher client applies the teacher's own chat
    template around it.
    """
    recorded = (work.meta or {}).get("teacher_prompt")
    if isinstance(recorded, str) and recorded:
        return recorded
    def read() -> str | None:
        with ctx.sessions.begin() as session:
            problem = session.get(Problem, work.problem_id)
            return None if problem is None else problem.prompt

    question = _rerun(f"reading problem {work.problem_id}", read)
    if question is None:
        raise LookupError(f"trajectory {work.trajectory_id}: problem {work.problem_id} is not in the store")
    template = ctx.config.data.prompt_template
    if template == "none":
        return question
    try:
        from omniopd.rollout.prompts import user_message
    except ImportError as exc:
        raise TeacherSetupError(
            f"trajectory {work.trajectory_id} has no meta['teacher_prompt'] and the {template!r} template "
            "renderer (omniopd.rollout.prompts) is not installed; record the teacher prompt at rollout"
        ) from exc
    return user_message(question, template)


def audit_chunk(ctx: AuditContext, work: AuditWork, chunk: ChunkWork, prompt: str, *, last_delivery: bool) -> _ChunkResult:
    """Fetch the chunk's missing continuations and make it terminal if it can be."""
    missing = chunk.missing
    guard = StoreBudgetGuard(
        ctx.sessions, work.run_id, ctx.teacher_name, chunk.id, wait_s=ctx.teacher.timeout_s, executor=ctx.db_threads
    )
    t0 = time.monotonic()
    texts: list[str] = []
    error: TeacherError | None = None
    mode = None
    if missing:
        max_new = math.ceil((chunk.end - chunk.start) * ctx.teacher.max_new_tokens_factor)
        call = ctx.loop.client.continue_prefix(
            prompt, chunk.prefix, len(missing), max_new, guard=guard, price=ctx.price,
            call_key=f"t{work.trajectory_id}-c{chunk.id}-{uuid.uuid4().hex[:10]}",
        )
        with ctx.slots:
            try:
                result = ctx.loop.run(call)
                texts, mode = result.texts, result.mode
            except TeacherError as exc:
                error = exc
                texts = list(exc.partial.texts) if exc.partial is not None else []
    telemetry = _telemetry(guard, mode, time.monotonic() - t0)
    attempts, charged = len(guard.settled), sum(a.charged_micros for a in guard.settled)
    samples = _score(ctx, chunk, missing, texts, guard)
    if len(texts) == len(missing):
        _complete(ctx, work, chunk, samples, telemetry)
        return _ChunkResult("audited", None, attempts, charged)
    assert error is not None  # continue_prefix returns all n texts or raises
    message = str(error)
    if isinstance(error, BudgetExhausted):
        _fail(ctx, work, chunk, "skipped_budget", message, telemetry, samples)
        return _ChunkResult("skipped_budget", message, attempts, charged)
    if isinstance(error, FatalProviderError):
        failed = [a for a in (error.partial.attempts if error.partial else []) if a.status == "failed"]
        if failed and failed[-1].error_class == "bad_request":
            _fail(ctx, work, chunk, "failed", message, telemetry, samples)
            return _ChunkResult("failed", message, attempts, charged)
        _store(ctx, chunk, samples)
        log.error("teacher %s refuses requests: %s; its audits in this process stop until the config is fixed "
                  "and the workers restart", ctx.teacher_name, message)
        ctx.stopped = f"teacher {ctx.teacher_name}: {message}"
        raise TeacherSetupError(ctx.stopped) from None
    if last_delivery:
        _fail(ctx, work, chunk, "failed", message, telemetry, samples)
        return _ChunkResult("failed", message, attempts, charged)
    _store(ctx, chunk, samples)
    log.warning("chunk %d of trajectory %d: %s; %d of %d samples stored, will retry", chunk.id, work.trajectory_id,
                message, len(chunk.stored) + len(samples), chunk.n_target)
    return _ChunkResult("pending", message, attempts, charged)


def _score(ctx: AuditContext, chunk: ChunkWork, missing: list[int], texts: list[str], guard: StoreBudgetGuard) -> list[TeacherSampleIn]:
    """Cut each new continuation to the student chunk's length and score it (phi)."""
    if not texts:
        return []
    cut = [cut_continuation(t, chunk.student_text, ctx.config.estimator.cut) for t in texts]
    phis = phi_batch(ctx.config.estimator.phi, chunk.student_text, cut)  # in [0, 1], or PhiRangeError
    # A text is attributed to its ledger row only when one attempt produced them all (the
    # client does not say which concurrent request returned which text).
    producers = [a for a in guard.settled if a.attempt.n_texts > 0]
    call_id = producers[0].call_id if len(producers) == 1 else None
    return [
        TeacherSampleIn(i, text, c, phi, call_id)
        for i, text, c, phi in zip(missing[: len(texts)], texts, cut, phis, strict=True)  # a partial fills the first
    ]


def _store(ctx: AuditContext, chunk: ChunkWork, samples: list[TeacherSampleIn]) -> None:
    def unit() -> None:
        with ctx.sessions.begin() as session:
            add_teacher_samples(session, chunk_id=chunk.id, samples=samples)

    if samples:  # paid for: kept even across a store outage
        _rerun(f"storing the samples of chunk {chunk.id}", unit)


def _complete(ctx: AuditContext, work: AuditWork, chunk: ChunkWork, samples: list[TeacherSampleIn], telemetry: dict) -> None:
    """Store the new samples, then k_sem over all N (Eq. 3) and the chunk `audited`, atomically."""

    def unit() -> None:
        with ctx.sessions.begin() as session:
            add_teacher_samples(session, chunk_id=chunk.id, samples=samples)
            stored = chunk_samples(session, chunk_id=chunk.id)
            scores = torch.tensor([s.phi for s in stored], dtype=torch.float64)  # [N]
            k = float(estimator.k_sem(scores, phi=ctx.config.estimator.phi))
            if complete_chunk(session, chunk_id=chunk.id, k_sem=k):
                n = len(stored)
                telemetry.update(
                    state="audited", k_sem=round(k, 6), n=n,
                    phi_interior=sum(0.0 < s.phi < 1.0 for s in stored) / n,
                    distinct=len({s.cut_text for s in stored}) / n,
                )
                record_chunk_telemetry(session, trajectory_id=work.trajectory_id, chunk_idx=chunk.idx,
                                       telemetry=telemetry)

    _rerun(f"completing chunk {chunk.id}", unit)


def _fail(ctx: AuditContext, work: AuditWork, chunk: ChunkWork, state: str, message: str, telemetry: dict,
          samples: Sequence[TeacherSampleIn] = ()) -> None:
    """Keep what was paid for, then make the chunk terminal without an audit."""

    def unit() -> None:
        with ctx.sessions.begin() as session:
            if samples:
                add_teacher_samples(session, chunk_id=chunk.id, samples=samples)
            if fail_chunk(session, chunk_id=chunk.id, state=state, error=message):
                record_chunk_telemetry(
                    session, trajectory_id=work.trajectory_id, chunk_idx=chunk.idx,
                    telemetry={**telemetry, "state": state},
                )

    _rerun(f"closing chunk {chunk.id} as {state}", unit)


def _telemetry(guard: StoreBudgetGuard, mode: str | None, seconds: float) -> dict:
    """Per-chunk numbers of this delivery's attempts (JSON-ready)."""
    attempts = [a.attempt for a in guard.settled]
    ok = [a for a in attempts if a.status == "ok"]
    asked = sum(a.n_requested for a in ok)
    total_input = sum(a.usage.total_input for a in ok)
    cached = sum(a.usage.cached_input for a in ok)
    return {
        "attempts": len(attempts),
        "failed_attempts": sum(a.status == "failed" for a in attempts),
        "unknown_attempts": sum(a.status == "unknown" for a in attempts),
        "empty_rate": round(sum(a.n_requested - a.n_texts for a in ok) / asked, 6) if asked else None,
        "cache_hit_rate": round(cached / total_input, 6) if total_input else None,
        "input_tokens": total_input,
        "output_tokens": sum(a.usage.total_output for a in ok),
        "cost_usd": micros_to_usd(sum(a.charged_micros for a in guard.settled)),
        "mode": mode,
        "seconds": round(seconds, 3),
    }
