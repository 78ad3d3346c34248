"""The learner loop: claim audit bundles, train on them, record, checkpoint, publish.

`run_learner` (workers/learner/run.py) sets up the store, the run, the trainer, the broker
and the driver, then runs `Learner(...).run() -> LearnerSummary`.

One loop iteration (Learner.run):

1. stop? (SIGTERM/Ctrl-C, max steps, teacher budget spent);
2. `driver.tick(trained_version=v)` keeps rollouts `pipeline_depth` batches ahead and drops
   stale trajectories (workers/learner/driver.py; any object with that method will do);
3. claim up to B ready bundles sampled by a policy >= v - max_policy_lag (claims are
   leases; bundles are accumulated across polls until B are held);
4. train one step on them while a thread renews the leases, then record the step and
   mark its bundles consumed in ONE transaction (`record_step_and_consume`);
5. every K steps: checkpoint (atomic, HF layout, untied) and publish policy version v + 1.

Exactly once over the run. A step's weights exist only in memory until the next checkpoint,
so on start-up the learner resumes from its latest checkpoint at step S and calls
`rewind_to_step(S)`: steps recorded after S are deleted and their bundles become ready
again, to be trained on by the resumed weights; `release_claims` returns the bundles it held
when it died (a step in flight was never recorded, so they are still ready). Every bundle
thus contributes to the final weights exactly once: it is consumed by a step whose update
reached a checkpoint, or it is claimable again. The order inside a step (update in memory,
then record+consume, then checkpoint) means a crash at any point leaves the store ahead of
or equal to the checkpoint, never behind it.

Stopping: SIGTERM or Ctrl-C finish the current step, record it, checkpoint, publish and
exit 0 (a second signal aborts at once; the store stays consistent, the step is redone).
The run also stops at learner.max_steps, when the driver reports the problems exhausted and
nothing is left in flight, or when the teacher budget is spent (ready bundles then stay in
the store: a run resumed with a higher cap trains on them first).

Store outages (db/outage.py, docs/store.md): every store transaction of the loop goes
through `Learner._tx`, which waits for an unreachable store and runs it again; the step
record detects a COMMIT that went through before its connection dropped
(`step_already_recorded`). The run's learner lock dies with its PostgreSQL connection: it is
checked before every write and each iteration and taken again ("learner lock re-acquired");
if another learner took the run meanwhile, `LearnerDisplaced` stops this one before it
writes anything more. An outage longer than learner.claim_lease_s may cost the held
bundles their leases: `ClaimLost`, exit 1, and a restart resumes from the last checkpoint.

Several processes (torchrun --nproc-per-node N -m omniopd learner ...): rank 0 alone runs
everything above — store, driver, broker, checkpoint directory — with a lockstep `Leader`
in place of its Trainer, which broadcasts each claimed batch and each checkpoint save to
the other ranks; they only `follow` (omniopd/train/lockstep.py) and never open the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from sqlalchemy.orm import Session, sessionmaker

from db.learner_lock import LearnerLock, LearnerLockLost
from db.models import utcnow
from db.outage import first_line, is_disconnect, rerun_on_disconnect
from db.repo_bundles import (
    Bundle,
    ClaimLost,
    claim_ready_bundles,
    claim_ready_groups,
    count_claimable,
    latest_step,
    record_step_and_consume,
    release_claims,
    renew_claims,
    rewind_to_step,
    step_already_recorded,
)
from db.repo_learner import BudgetState, budget_state, consumed_bundles, unfinished_trajectories
from db.repo_runs import latest_policy_version, publish_policy_version
from omniopd.config import OmniConfig
from omniopd.money import micros_to_usd
from omniopd.objectives.examples import RewardGroup
from omniopd.train import AuditedChunk, CheckpointInfo, StepMetrics, Trainer, TrainExample
from omniopd.train.checkpoint import prune_checkpoints
from omniopd.train.lockstep import Leader
from workers.learner.output import MetricsSink, ProgressView
from workers.learner.telemetry import audit_telemetry

log = logging.getLogger("omniopd.learner")

StopReason = Literal["max_steps", "exhausted", "budget", "signal"]
DEFAULT_DRIVER = "workers.learner.driver:Driver"
REPLAY_DRIVER = "workers.learner.replay:ReplayDriver"  # data.teacher_solutions: SFT on the teacher's solutions
WAIT_WARNING_S = 120.0  # say why the learner idles, every this many seconds of waiting


class TickReport(Protocol):
    """What the driver says after each tick (satisfied by workers.learner.driver.DriverReport)."""

    enqueued_batches: int
    in_flight_batches: int
    dropped_stale: int
    exhausted: bool  # no problems left to sample and none in flight


class Driver(Protocol):
    """Paces rollouts by policy lag and drops stale trajectories; called once per iteration."""

    def tick(self, *, trained_version: int) -> TickReport: ...


def budget_reason(state: BudgetState) -> str:
    """Why the teacher budget stops the run, in USD (the store keeps micro-USD)."""
    reached = state.cap_reached
    if reached is not None:
        return (f"the {reached.label} budget cap is reached (${micros_to_usd(reached.used):,.4f} of "
                f"${micros_to_usd(reached.cap):,.4f} spent or reserved)")
    return "an audit was refused for budget (a chunk ended skipped_budget)"


class LearnerError(RuntimeError):
    """The learner cannot continue; the message says what to do."""


class LearnerDisplaced(LearnerError):
    """Another learner took the run while this one's lock was gone (a store outage): this
    one stops and writes nothing more to the store, not even the run's status."""


def examples_from_bundles(bundles: Sequence[Bundle]) -> list[TrainExample]:
    """A step's bundles as training examples. A bundle with a reward also gets its group's
    rewards (every member of its group in this step, itself included: `RewardGroup`) and
    the sampling policy's log-probabilities (GRPO's pi_theta_old)."""
    members: dict[tuple[int, int, int], list[int]] = {}  # group -> positions in `bundles`
    for k, b in enumerate(bundles):
        if b.reward is not None:
            members.setdefault(b.group, []).append(k)
    out = []
    for k, b in enumerate(bundles):
        example = example_from_bundle(b)
        if b.reward is not None:
            group = members[b.group]
            rewards = RewardGroup(tuple(float(bundles[m].reward) for m in group), group.index(k))
            example = replace(example, sampled_logprobs=b.logprobs.tolist(), group=rewards)
        out.append(example)
    return out


def example_from_bundle(bundle: Bundle) -> TrainExample:
    """A store bundle as a training example. Only `audited` chunks are kept: chunks that ended
    skipped_budget or failed have no k_sem, so their tokens are un-audited (U of Eq. 8)."""
    chunks = tuple(
        AuditedChunk(
            start=c.start, end=c.end, k_sem=float(c.k_sem), n=c.n_target,
            teacher_texts=tuple(s.text for s in c.samples) if c.samples else (),
        )
        for c in bundle.chunks
        if c.state == "audited"
    )
    return TrainExample(
        key=bundle.trajectory_id,
        prompt_ids=bundle.prompt_token_ids.tolist(),
        completion_ids=bundle.completion_token_ids.tolist(),
        chunks=chunks,
    )


@dataclass(frozen=True)
class LearnerSummary:
    """How a learner session ended. steps/bundles count this session; `last_step` is the run's."""

    reason: StopReason
    detail: str
    steps: int
    last_step: int
    max_steps: int
    resumed_from_step: int
    bundles: int
    bundles_consumed_total: int
    bundles_ready_left: int
    spend_usd: float
    cap_usd: float | None
    policy_version: int
    checkpoint: str | None
    wall_s: float
    wait_s: float

    def text(self) -> str:
        cap = f" of ${self.cap_usd:,.2f} cap" if self.cap_usd is not None else " (no run cap)"
        resumed = f", resumed from checkpoint step {self.resumed_from_step}" if self.resumed_from_step else ""
        waiting = f"{100 * self.wait_s / self.wall_s:.1f}%" if self.wall_s > 0 else "-"
        return "\n".join([
            f"learner stopped: {self.detail}",
            f"  steps:      {self.steps} this session, run at step {self.last_step} of {self.max_steps}{resumed}",
            f"  bundles:    {self.bundles} trained this session, {self.bundles_consumed_total} consumed in the run, "
            f"{self.bundles_ready_left} ready and untrained",
            f"  spend:      ${self.spend_usd:,.4f}{cap}",
            f"  checkpoint: {self.checkpoint or 'none'} (policy version {self.policy_version})",
            f"  wall time:  {self.wall_s:,.1f}s, {waiting} of it waiting for bundles",
        ])


class LeaseKeeper:
    """Renews this learner's claims every lease/3 while a step runs (a step longer than the
    lease would otherwise let another learner take its bundles); a no-op for short steps."""

    def __init__(self, sessions: sessionmaker[Session], *, run_id: int, learner_id: str, lease_s: float) -> None:
        self.sessions, self.run_id, self.learner_id, self.lease_s = sessions, run_id, learner_id, lease_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)

    def _loop(self) -> None:
        while not self._done.wait(self.lease_s / 3):
            try:
                with self.sessions.begin() as s:
                    renew_claims(s, run_id=self.run_id, learner_id=self.learner_id, lease_s=self.lease_s)
            except Exception as exc:  # the step goes on; a lost lease surfaces as ClaimLost at record time
                if is_disconnect(exc):  # the store went away: renewed again at the next tick, once it is back
                    log.warning("could not renew bundle leases: the store is unreachable (%s); trying again in "
                                "%.0f s", first_line(exc), self.lease_s / 3)
                else:
                    log.exception("could not renew bundle leases")

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


class Learner:
    """The loop of one learner process (module docstring). `trainer` is already resumed from
    `resumed` (or fresh when None); `stop` is set by signal handlers to end after the step."""

    def __init__(
        self,
        *,
        config: OmniConfig,
        sessions: sessionmaker[Session],
        run_id: int,
        trainer: Trainer | Leader,
        driver: Driver,
        checkpoint_dir: Path,
        resumed: CheckpointInfo | None = None,
        stop: threading.Event | None = None,
        sinks: Sequence[MetricsSink] = (),
        lock: LearnerLock | None = None,
    ) -> None:
        self.config, self.sessions, self.run_id = config, sessions, run_id
        self.lock = lock  # the run's learner lock (db/learner_lock.py), checked before every write
        self.trainer, self.driver, self.checkpoint_dir = trainer, driver, Path(checkpoint_dir)
        self.resumed = resumed
        self.stop = stop or threading.Event()
        self.sinks = list(sinks)
        self.cfg = config.learner
        self.learner_id = config.learner.learner_id
        self.providers = [config.audit.teacher] if config.audit.teacher else []
        self.version = 0
        self.checkpointed_step = trainer.steps_done
        self.last_checkpoint: CheckpointInfo | None = resumed
        self.pending: list[Bundle] = []
        self.steps = self.bundles = 0
        self.wait_s = 0.0
        self.started: datetime = utcnow()  # reset in _start; audits refused after it stop the run
        self.budget: BudgetState | None = None
        self.last_report: TickReport | None = None

    # ---------------------------------------------------------------- start-up

    def _start(self) -> None:
        self.started = utcnow()
        step = self.trainer.steps_done
        with self.sessions.begin() as s:
            recorded = latest_step(s, run_id=self.run_id)
            if recorded < step:
                raise LearnerError(
                    f"the latest checkpoint is at step {step} but the store has steps only up to {recorded}: "
                    f"the checkpoints in {self.checkpoint_dir} belong to another store or run; point "
                    "run.output_dir or store.url at the matching pair"
                )
            rewound = rewind_to_step(s, run_id=self.run_id, step=step)
            released = release_claims(s, run_id=self.run_id, learner_id=self.learner_id)
            if self.resumed is not None:
                publish_policy_version(s, run_id=self.run_id, version=self.resumed.policy_version,
                                       path=str(self.resumed.path), step=self.resumed.step)
            self.version = latest_policy_version(s, run_id=self.run_id).version
        expected = self.resumed.policy_version if self.resumed is not None else 0
        if self.version != expected:
            raise LearnerError(
                f"the store has policy version {self.version} but the latest checkpoint is version {expected}; "
                f"its checkpoint directory is missing from {self.checkpoint_dir}"
            )
        if rewound or released or step:
            log.info("resumed at step %d (policy v%d): %d bundles of unsaved steps trained again, %d claims released",
                     step, self.version, rewound, released)

    # ---------------------------------------------------------------- the store

    def _tx(self, what: str, unit: Callable[[], Any]) -> Any:
        """Run one store transaction of the loop; if the store goes away, wait for it and run
        it again (db/outage.py). Every unit passed here is safe to re-run: reads, claims and
        lease renewals (re-read and redone; a re-run gives back what a lost commit claimed),
        the driver's tick (its progress is re-read from the store), publishing a version
        (idempotent for its path), and the step record, which detects its own earlier
        commit (`_record`)."""
        return rerun_on_disconnect(unit, what=what, logger=log)

    def _ensure_lock(self) -> None:
        """Before a write: still the run's learner? (Its PostgreSQL lock dies with its
        connection in an outage; it is taken again here, or this learner stops.)"""
        if self.lock is None:
            return
        try:
            self.lock.ensure()
        except LearnerLockLost as exc:
            raise LearnerDisplaced(
                f"{exc}. This learner stops without recording anything more (its unsaved steps are the other "
                "learner's to redo from the last checkpoint); if that was not meant to happen, stop the other "
                "learner and restart this one"
            ) from exc

    # ---------------------------------------------------------------- the loop

    def run(self) -> LearnerSummary:
        t0 = time.perf_counter()
        self._start()
        reason, detail = self._loop()
        self._finish()
        return self._summary(reason, detail, time.perf_counter() - t0)

    def _loop(self) -> tuple[StopReason, str]:
        self._waiting_since, warned = time.perf_counter(), 0
        try:
            while True:
                stop = self._stop_reason()
                if stop is not None:
                    return stop
                # safe to re-run: its progress lives in the store (rollout_slots) and is re-read
                # when a tick fails; a committed tick's messages wait in the outbox
                self.last_report = self._tx("the driver's tick", lambda: self.driver.tick(trained_version=self.version))
                batch, exhausted = self._gather()
                if batch:
                    waited = time.perf_counter() - self._waiting_since
                    self.wait_s += waited
                    self._waiting_since = float("inf")  # training is not waiting
                    self._train(batch, wait_s=waited)
                    self._waiting_since, warned = time.perf_counter(), 0
                    continue
                if exhausted:
                    return "exhausted", "every problem is sampled and every bundle trained"
                self._show("waiting for bundles")
                waiting = time.perf_counter() - self._waiting_since
                if waiting > WAIT_WARNING_S * (1 + warned):
                    warned += 1
                    log.warning("no full batch for %.0fs: %d bundles held, waiting for ready bundles sampled "
                                "by policy >= v%d (older ones are stale; the driver drops them)",
                                waiting, len(self.pending), self._min_version())
                self.stop.wait(self.cfg.poll_s)
        finally:  # the wait since the last step counts too: a run stopped while it waited
            self.wait_s += max(0.0, time.perf_counter() - self._waiting_since)

    def _stop_reason(self) -> tuple[StopReason, str] | None:
        if self.stop.is_set():
            return "signal", "stop requested (SIGTERM / Ctrl-C)"
        if self.trainer.steps_done >= self.cfg.max_steps:
            return "max_steps", f"reached learner.max_steps = {self.cfg.max_steps}"

        def read() -> BudgetState:
            self._ensure_lock()  # once per iteration: a lock lost in an outage is noticed here
            with self.sessions.begin() as s:
                return budget_state(s, run_id=self.run_id, providers=self.providers, since=self.started)

        self.budget = self._tx("reading the budget", read)
        if self.budget.exhausted:
            return "budget", f"teacher budget spent: {budget_reason(self.budget)}"
        return None

    def _min_version(self) -> int:
        return max(0, self.version - self.cfg.max_policy_lag)

    def _gather(self) -> tuple[list[Bundle], bool]:
        """(bundles to train on now, or [] to wait; whether nothing more will ever come).

        Objectives that train groups (needs.groups) claim whole groups, batch_size /
        samples_per_prompt of them per step; the others claim batch_size bundles."""
        held = list(self.pending)
        runs = 0

        def claim() -> tuple[list[Bundle], bool, bool]:
            nonlocal runs
            runs += 1
            self._ensure_lock()
            pending = list(held)
            with self.sessions.begin() as s:
                if runs > 1:  # the first try's commit may have happened: give back what it claimed
                    release_claims(s, run_id=self.run_id, learner_id=self.learner_id,
                                   keep=[b.trajectory_id for b in held])
                if self.trainer.needs_groups:
                    want = self.cfg.batch_size // self.config.rollout.samples_per_prompt
                    need = want - len({b.group for b in pending})
                    if need > 0:
                        pending += claim_ready_groups(
                            s, run_id=self.run_id, groups=need, min_policy_version=self._min_version(),
                            learner_id=self.learner_id, lease_s=self.cfg.claim_lease_s,
                        )
                    full = len({b.group for b in pending}) >= want
                else:
                    need = self.cfg.batch_size - len(pending)
                    if need > 0:
                        pending += claim_ready_bundles(
                            s, run_id=self.run_id, limit=need, min_policy_version=self._min_version(),
                            learner_id=self.learner_id, lease_s=self.cfg.claim_lease_s,
                            with_samples=self.trainer.needs_teacher_text,
                        )
                    full = len(pending) >= self.cfg.batch_size
                if full:
                    return pending, True, False
                if pending:  # keep partial claims alive while waiting for the rest
                    renew_claims(s, run_id=self.run_id, learner_id=self.learner_id, lease_s=self.cfg.claim_lease_s)
                more_coming = not (self.last_report is not None and self.last_report.exhausted) or (
                    count_claimable(s, run_id=self.run_id, min_policy_version=self._min_version())
                    + unfinished_trajectories(s, run_id=self.run_id)
                ) > 0
            return pending, False, more_coming

        self.pending, full, more_coming = self._tx("claiming bundles", claim)
        if full:
            return self._take(), False
        if more_coming:
            return [], False
        return self._take(), not self.pending  # the last, partial batch; then exhausted

    def _take(self) -> list[Bundle]:
        batch, self.pending = self.pending, []
        return batch

    # ---------------------------------------------------------------- one step

    def _train(self, bundles: list[Bundle], *, wait_s: float) -> None:
        examples = examples_from_bundles(bundles)
        self._show("training")
        with LeaseKeeper(self.sessions, run_id=self.run_id, learner_id=self.learner_id, lease_s=self.cfg.claim_lease_s):
            metrics = self.trainer.step(examples)
        record = self._record(metrics, bundles, wait_s)
        self.steps += 1
        self.bundles += len(bundles)
        for sink in self.sinks:
            sink.step(metrics.step, record)
        self._show("trained", metrics)
        if metrics.step % self.cfg.checkpoint_every == 0:
            self._checkpoint()

    def _record(self, metrics: StepMetrics, bundles: list[Bundle], wait_s: float) -> dict[str, Any]:
        report = self.last_report
        record = {
            **metrics.as_dict(),
            "wait_s": wait_s,
            "resumed_from_step": self.resumed.step if self.resumed else 0,
            "sampled_versions": sorted({b.policy_version for b in bundles}),
            "spend_usd": micros_to_usd(self.budget.spent) if self.budget else 0.0,
            "driver_enqueued_batches": getattr(report, "enqueued_batches", None),
            "driver_in_flight_batches": getattr(report, "in_flight_batches", None),
            "driver_dropped_stale": getattr(report, "dropped_stale", None),
            **audit_telemetry(bundles),
        }
        ids = [b.trajectory_id for b in bundles]
        runs = 0

        def unit() -> None:
            nonlocal runs
            runs += 1
            self._ensure_lock()
            with self.sessions.begin() as s:
                # A re-run after a connection lost during the COMMIT: did that commit happen?
                if runs > 1 and step_already_recorded(s, run_id=self.run_id, step=metrics.step,
                                                      learner_id=self.learner_id, trajectory_ids=ids):
                    log.info("step %d was recorded before the store connection dropped; not recording it again",
                             metrics.step)
                    return
                record_step_and_consume(
                    s, run_id=self.run_id, step=metrics.step, learner_id=self.learner_id,
                    trajectory_ids=ids, policy_version=self.version,
                    metrics=record, loss=metrics.loss, n_tokens=metrics.loss_tokens, wall_s=metrics.timings.total_s,
                )

        try:
            self._tx(f"recording step {metrics.step}", unit)
        except ClaimLost as exc:
            raise LearnerError(
                f"{exc}. The step's update is in memory only: restart the learner; it resumes from its "
                f"last checkpoint (step {self.checkpointed_step}) and trains those steps again, so nothing is "
                "lost. This happens when the bundles' leases expired and were released (a step, or a store "
                "outage, longer than learner.claim_lease_s). If this repeats, raise learner.claim_lease_s or "
                "give each learner its own learner.learner_id"
            ) from exc
        return record

    def _checkpoint(self) -> None:
        """Save the weights after `steps_done` updates and publish them as the next version."""
        step = self.trainer.steps_done
        if step == self.checkpointed_step:
            return
        self._show("checkpointing")
        info = self.trainer.save(self.checkpoint_dir, policy_version=self.version + 1)

        def publish() -> None:
            self._ensure_lock()
            with self.sessions.begin() as s:
                publish_policy_version(s, run_id=self.run_id, version=info.policy_version, path=str(info.path),
                                       step=info.step, meta={"learner_id": self.learner_id})

        self._tx(f"publishing policy version {info.policy_version}", publish)
        self.version, self.checkpointed_step, self.last_checkpoint = info.policy_version, step, info
        for path in prune_checkpoints(self.checkpoint_dir, self.cfg.keep_checkpoints):
            log.info("deleted old checkpoint %s", path)
        log.info("checkpoint %s published as policy version %d", info.path, info.policy_version)

    # ---------------------------------------------------------------- the end

    def _finish(self) -> None:
        if self.pending:
            def release() -> None:
                self._ensure_lock()
                with self.sessions.begin() as s:
                    release_claims(s, run_id=self.run_id, learner_id=self.learner_id)

            self._tx("releasing claims", release)
            self.pending = []
        self._checkpoint()

    def _show(self, state: str, metrics: StepMetrics | None = None) -> None:
        budget = self.budget

        def read() -> int:
            with self.sessions.begin() as s:
                return count_claimable(s, run_id=self.run_id, min_policy_version=self._min_version())

        waiting = self._tx("counting bundles", read)
        view = ProgressView(
            step=self.trainer.steps_done, max_steps=self.cfg.max_steps,
            loss=metrics.loss if metrics else None, kl=metrics.kl if metrics else None,
            bundles_waiting=waiting, spend_usd=micros_to_usd(budget.spent) if budget else 0.0,
            cap_usd=micros_to_usd(budget.cap) if budget and budget.cap is not None else None, state=state,
        )
        for sink in self.sinks:
            sink.progress(view)

    def _summary(self, reason: StopReason, detail: str, wall_s: float) -> LearnerSummary:
        def read() -> tuple[BudgetState, int, int, int]:
            with self.sessions.begin() as s:
                return (budget_state(s, run_id=self.run_id, providers=self.providers, since=self.started),
                        consumed_bundles(s, run_id=self.run_id), count_claimable(s, run_id=self.run_id),
                        latest_step(s, run_id=self.run_id))

        budget, consumed, ready, last = self._tx("summing up the session", read)
        ckpt = self.last_checkpoint
        return LearnerSummary(
            reason=reason, detail=detail, steps=self.steps, last_step=last, max_steps=self.cfg.max_steps,
            resumed_from_step=self.resumed.step if self.resumed else 0, bundles=self.bundles,
            bundles_consumed_total=consumed, bundles_ready_left=ready, spend_usd=micros_to_usd(budget.spent),
            cap_usd=None if budget.cap is None else micros_to_usd(budget.cap), policy_version=self.version,
            checkpoint=str(ckpt.path) if ckpt else None, wall_s=wall_s, wait_s=self.wait_s,
        )
