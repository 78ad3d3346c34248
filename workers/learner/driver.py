"""The driver: issues rollout batches ahead of the learner, paced by the policy lag.

The learner calls `Driver.tick(trained_version=v)` once per iteration. Each tick is one
short transaction (a handful of indexed queries) and sends its messages after the commit:

1. **Stale drops.** A trajectory sampled by version u may be trained by versions
   u .. u + L (L = learner.max_policy_lag). Once the learner trains version v, anything
   unconsumed with u < v - L is dropped with reason `stale_policy` (`drop_stale`) and
   counted (DriverReport.dropped_stale, `omniopd status`).
2. **Re-samples.** Each dropped-stale slot (problem, epoch, sample, attempt) is issued
   again as attempt + 1, before any new problem, so no problem is silently lost.
3. **Lost messages.** A batch still unrecorded `rollout.reissue_after_s` after its last
   send is sent again (its message was lost: broker restart, or the learner died between
   commit and send). A worker killed mid-batch needs no help: acks_late +
   reject_on_worker_lost redeliver it. A duplicate is harmless: slots are recorded once.
4. **Pacing.** New batches target the newest published version V (published at learner
   step S_V) and are issued while both hold:
   - fewer than `learner.pipeline_depth` batches are in flight (issued, not yet recorded);
   - the work ahead of the learner fits the lag window: trajectories sampled now (by V or
     newer) stay trainable until version V + L + 1 is published, about step
     S_V + (L + 1) * K (K = learner.checkpoint_every), so the learner can still take
     `room = (S_V + (L + 1) * K - step) * B` of them (B = learner.batch_size). The work
     already ahead — slots in flight plus trajectories generated, auditing or ready —
     counts against it. To stay live, at least B trajectories are always allowed ahead
     (a learner that publishes less often than every K steps is never starved).
   A batch holds up to `rollout.batch_problems` problems (all their
   `rollout.samples_per_prompt` samples), fewer when the room is smaller.
   Sampling itself never runs ahead of training: workers only load published versions.

Data order: the problems of split `train` (import order, first `data.max_problems`),
shuffled per epoch by a seed derived from run.seed and the epoch; epochs follow each other.
Progress lives in the store (`rollout_slots`: every slot ever issued), so a restarted
learner's driver continues where it stopped and never re-issues a slot; problems
imported after the driver started are picked up at its next start.

`exhausted` is true when every slot of every epoch was issued, no re-sample is pending,
no batch is in flight and no trajectory waits for audit or training: the learner has
everything it will ever get.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from db.models import utcnow
from db.repo_bundles import latest_step
from db.repo_problems import problem_ids
from db.repo_rollouts import (
    PipelineLoad,
    issue_batch,
    issued_slots,
    mark_resent,
    open_batches,
    pending_resamples,
    pipeline_load,
)
from db.repo_runs import PolicyVersionRecord, latest_policy_version
from db.repo_trajectories import SlotKey, drop_stale
from omniopd.config import OmniConfig
from workers.app import ROLLOUT_TASK, audit_teacher, enqueue_after_commit

log = logging.getLogger(__name__)

TRAIN_SPLIT = "train"
"""Problems of this split are trained on (`omniopd data import` puts rows without a split here)."""


@dataclass(frozen=True)
class DriverReport:
    """One tick. `enqueued_batches` counts new and re-sent batches; `in_flight_batches`
    those issued and not yet recorded after the tick; `dropped_stale` the trajectories
    this tick dropped for exceeding the policy lag."""

    enqueued_batches: int
    in_flight_batches: int
    dropped_stale: int
    exhausted: bool  # no problems left to sample (all epochs issued) and none in flight
    resent_batches: int = 0  # of enqueued_batches: lost messages sent again
    resampled_slots: int = 0  # slots issued again (attempt + 1) after a stale drop


def epoch_order(ids: Sequence[int], seed: int, epoch: int) -> list[int]:
    """The problems of one epoch in their training order (stable across processes)."""
    digest = hashlib.blake2b(f"omniopd-data-order:{seed}:{epoch}".encode(), digest_size=8).digest()
    order = list(ids)
    random.Random(int.from_bytes(digest, "little")).shuffle(order)
    return order


class Driver:
    """Keeps rollout batches in flight for the learner (module docstring has the rules)."""

    def __init__(
        self,
        *,
        app: Celery,
        sessions: sessionmaker[Session],
        config: OmniConfig,
        run_id: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        audit_teacher(config)  # fail at start, not in every rollout task, if audits have no teacher
        self.app, self.sessions, self.config, self.run_id, self.clock = app, sessions, config, run_id, clock
        with sessions.begin() as session:
            self.problems = problem_ids(session, split=TRAIN_SPLIT, limit=config.data.max_problems)
        if not self.problems:
            raise ValueError(
                f"no problems of split {TRAIN_SPLIT!r} in the store: import them first with "
                "`omniopd data import --config <config>` (file: data.train)"
            )
        self._load_progress()

    def _load_progress(self) -> None:
        """(Re)build the cursor over (epoch, problem) pairs from the slots in the store."""
        with self.sessions.begin() as session:
            self._issued = {(s.problem_id, s.epoch) for s in issued_slots(session, run_id=self.run_id, attempt=0)}
        self._epoch, self._position = 0, 0
        self._order = epoch_order(self.problems, self.config.run.seed, 0)

    def _fresh(self) -> Iterator[tuple[int, int]]:
        """Unissued (problem, epoch) pairs in training order, from the cursor on."""
        while self._epoch < self.config.data.epochs:
            while self._position < len(self._order):
                pair = (self._order[self._position], self._epoch)
                if pair not in self._issued:
                    yield pair
                self._position += 1
            self._epoch += 1
            self._position = 0
            self._order = epoch_order(self.problems, self.config.run.seed, self._epoch)

    def _has_fresh(self) -> bool:
        for _ in self._fresh():
            return True  # the generator stopped *at* the pair, before advancing past it
        return False

    def room(self, latest: PolicyVersionRecord, step: int, load: PipelineLoad) -> int:
        """Trajectories that may still be issued under the lag window (module docstring, 4)."""
        learner = self.config.learner
        steps_left = max(0, latest.step + (learner.max_policy_lag + 1) * learner.checkpoint_every - step)
        return max(steps_left * learner.batch_size, learner.batch_size) - load.in_flight_slots - load.waiting_trajectories

    def tick(self, *, trained_version: int) -> DriverReport:
        try:
            return self._tick(trained_version)
        except Exception:
            self._load_progress()  # the transaction rolled back: forget what it would have issued
            raise

    def _tick(self, trained_version: int) -> DriverReport:
        cfg, now = self.config, self.clock()
        depth, samples = cfg.learner.pipeline_depth, cfg.rollout.samples_per_prompt
        with self.sessions.begin() as session:
            min_version = trained_version - cfg.learner.max_policy_lag
            dropped = drop_stale(session, run_id=self.run_id, min_policy_version=min_version, now=now) if min_version > 0 else 0
            latest = latest_policy_version(session, run_id=self.run_id)
            load = pipeline_load(session, run_id=self.run_id)
            room = self.room(latest, latest_step(session, run_id=self.run_id), load)
            # Lost messages: unrecorded long after their last send.
            deadline = now - timedelta(seconds=cfg.rollout.reissue_after_s)
            lost = [b.id for b in open_batches(session, run_id=self.run_id) if b.sent_at <= deadline]
            mark_resent(session, batch_ids=lost, now=now)
            for batch_id in lost:
                enqueue_after_commit(session, self.app.signature(ROLLOUT_TASK, args=(batch_id,)))
            resamples = _groups(pending_resamples(session, run_id=self.run_id))
            in_flight, issued, resampled, fresh = load.in_flight_batches, 0, 0, self._fresh()
            while in_flight < depth and room > 0:
                batch: list[SlotKey] = []
                while len(batch) < cfg.rollout.batch_problems * samples and len(batch) < room:
                    if resamples:
                        group = resamples.pop(0)
                        resampled += len(group)
                    else:
                        pair = next(fresh, None)
                        if pair is None:
                            break
                        self._issued.add(pair)
                        group = [SlotKey(pair[0], pair[1], s, 0) for s in range(samples)]
                    batch += group
                if not batch:
                    break
                batch_id = issue_batch(session, run_id=self.run_id, target_version=latest.version, slots=batch, now=now)
                enqueue_after_commit(session, self.app.signature(ROLLOUT_TASK, args=(batch_id,)))
                in_flight, issued, room = in_flight + 1, issued + 1, room - len(batch)
        if dropped or lost or issued:
            log.info("driver: trained v%d, target v%d: %d batches issued, %d re-sent, %d stale dropped, %d in flight",
                     trained_version, latest.version, issued, len(lost), dropped, in_flight)
        exhausted = (not self._has_fresh() and not resamples and in_flight == 0 and load.waiting_trajectories == 0
                     and dropped == 0)
        return DriverReport(issued + len(lost), in_flight, dropped, exhausted, len(lost), resampled)


def _groups(slots: Sequence[SlotKey]) -> list[list[SlotKey]]:
    """Slots grouped by prompt (problem, epoch, attempt): one rendered prompt each."""
    groups: dict[tuple[int, int, int], list[SlotKey]] = defaultdict(list)
    for slot in slots:
        groups[(slot.problem_id, slot.epoch, slot.attempt)].append(slot)
    return list(groups.values())
