"""The evaluator process: Pass@1 of each due checkpoint while the learner trains.

It shares nothing with the learner but the store. A watcher thread polls the store every
`eval.curve_poll_s` for published policy versions, and hard-links each due one into the
evaluator's directory the moment it appears (snapshots.py: the learner may prune it a
few steps later); the main thread evaluates the snapshots oldest first, each an ordinary
resumable evaluation (eval.runner) linked to the run and step, then logs Pass@1 and its
95% bootstrap interval to TensorBoard (`eval/<benchmark>/pass_at_1`, `ci_low`, `ci_high`
beside the learner's scalars) and drops the snapshot. The learner never waits for it: it
reads the store, and its writes are short transactions of graded samples.

Stopping: SIGTERM / Ctrl-C stops between batches (what was graded is stored; a restart
resumes from the snapshots). `until_finished` ends the process once the run has ended
and its last version is evaluated (what `omniopd demo` waits for); `once` evaluates what
is due now and returns.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from workers.evaluator.service import (
    RUN_ENDED,
    DueVersion,
    curve_benchmarks,
    curve_plan,
    curve_prefix,
    due_versions,
    evaluate_version,
    evaluated_steps,
)
from workers.evaluator.snapshots import SnapshotError, drop_snapshot, is_complete, take_snapshot

if TYPE_CHECKING:
    from eval.evaluate import EvaluationReport
    from omniopd.config import OmniConfig

log = logging.getLogger("omniopd.evaluator")


@dataclass
class EvaluatorSummary:
    """What one evaluator session did: steps evaluated, steps lost (pruned before the
    evaluator saw them, e.g. while it was not running), and steps whose evaluation failed
    (logged with the error; a restart tries them again)."""

    evaluated: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


@dataclass
class _Pending:
    due: DueVersion
    model_path: str
    snapshot: Path | None


class Evaluator:
    """Evaluates the due checkpoints of `config`'s run (module docstring)."""

    def __init__(self, config: OmniConfig, config_path: str | Path | None) -> None:
        if config.eval.every_steps is None:
            raise ValueError("eval.every_steps is not set: nothing to evaluate during training "
                             "(set it, e.g. --set eval.every_steps=10)")
        self.config, self.config_path = config, config_path
        self.every_steps = config.eval.every_steps
        self.plan = curve_plan(config)
        self.benchmarks = curve_benchmarks(config)
        for bench in self.benchmarks:  # a missing or bad data file fails now, not after the first checkpoint
            bench.load(self.plan.data_dir, max_items=self.plan.max_items)
        self.prefix = curve_prefix(config.run.name, self.plan, self.benchmarks)
        root = (config.eval.output_dir or Path(config.run.output_dir) / "eval") / "curve"
        self.results_dir = root
        # Beside the checkpoints (one filesystem, so hard links work), not under eval.output_dir.
        self.snapshot_dir = Path(config.run.output_dir) / "eval-snapshots"
        self.summary = EvaluatorSummary()
        self._lock = threading.Lock()  # the state below, shared with the watcher thread
        self._poll_lock = threading.Lock()  # one poll at a time (the watcher's, or the main loop's last one)
        self._pending: dict[int, _Pending] = {}
        self._done: set[int] = set()
        self._run_ended = False
        self._watch_error: BaseException | None = None
        self._store = None
        self._writer = None

    # ------------------------------------------------------------------ the store side (watcher)

    def poll(self) -> None:
        """Look for due versions; snapshot the new ones."""
        with self._poll_lock:
            self._poll()

    def _poll(self) -> None:
        from db.repo_eval import policy_versions
        from db.repo_runs import RunNotFound, get_run

        with self._sessions().begin() as s:
            try:
                run = get_run(s, name=self.config.run.name)
            except RunNotFound:
                return  # the learner has not created it yet
            versions = policy_versions(s, run_id=run.id)
            done = evaluated_steps(s, run_id=run.id, prefix=self.prefix, benchmarks=self.benchmarks)
        ended = run.status in RUN_ENDED
        due = due_versions(versions, self.every_steps, run_ended=ended)
        new: dict[int, _Pending] = {}
        known = self._known()
        for d in due:
            if d.step in done and d.step not in known:  # evaluated by an earlier session
                drop_snapshot(self._snapshot_path(d.step))
            if d.step in done or d.step in known:
                continue
            try:
                new[d.step] = self._prepare(d)
            except SnapshotError as exc:
                log.warning("step %d is not on the curve: %s", d.step, exc)
                with self._lock:
                    self.summary.skipped.append(d.step)
        with self._lock:
            self._done |= done
            self._pending.update(new)
            self._run_ended = ended

    def _known(self) -> set[int]:
        with self._lock:
            return set(self._pending) | self._done | set(self.summary.skipped) | set(self.summary.failed)

    def _snapshot_path(self, step: int) -> Path:
        return self.snapshot_dir / f"step-{step:08d}"

    def _prepare(self, due: DueVersion) -> _Pending:
        path = Path(due.path)
        snapshot = self._snapshot_path(due.step)
        if is_complete(snapshot):  # taken by an earlier session
            return _Pending(due, str(snapshot), snapshot)
        if not path.is_dir():
            if due.version == 0:  # the base model: a hub id or a path the learner never prunes
                return _Pending(due, due.path, None)
            raise SnapshotError(f"checkpoint {path} of policy version {due.version} no longer exists")
        take_snapshot(path, snapshot)
        return _Pending(due, str(snapshot), snapshot)

    def _sessions(self):
        if self._store is None:
            from db.store import open_store

            self._store = open_store(self.config, self.config_path, read_only=True, pool_size=2)
        return self._store.sessions

    def _watch(self, stop: threading.Event) -> None:
        try:
            while not stop.wait(self.config.eval.curve_poll_s):
                self.poll()
        except BaseException as exc:  # reported by the main loop, which stops
            self._watch_error = exc

    # ------------------------------------------------------------------ the evaluation side (main thread)

    def run(self, stop: threading.Event, *, until_finished: bool = False, once: bool = False) -> EvaluatorSummary:
        """Evaluate due checkpoints until `stop` is set (or, see the module docstring, until done)."""
        self.poll()
        watcher = None
        if not once:
            watcher = threading.Thread(target=self._watch, args=(stop,), name="omniopd-evaluator-watch", daemon=True)
            watcher.start()
        try:
            while not stop.is_set():
                if self._watch_error is not None:
                    raise RuntimeError(f"the evaluator's store watcher failed: {self._watch_error}") from self._watch_error
                item = self._next()
                if item is not None:
                    self._evaluate(item)
                    continue
                if once:
                    break
                with self._lock:
                    finished = self._run_ended and not self._pending
                if until_finished and finished:
                    self.poll()  # the last version may have been published just before the run ended
                    if self._next() is None:
                        break
                    continue
                stop.wait(self.config.eval.curve_poll_s)
        finally:
            stop.set()
            if watcher is not None:
                watcher.join(timeout=30)
            self.close()
        return self.summary

    def _next(self) -> _Pending | None:
        with self._lock:
            return self._pending[min(self._pending)] if self._pending else None

    def _evaluate(self, item: _Pending) -> None:
        step = item.due.step
        log.info("evaluating step %d (policy version %d, %s)", step, item.due.version, item.model_path)
        try:
            report = evaluate_version(self.config, self.config_path, item.due, item.model_path, prefix=self.prefix,
                                      out_dir=self.results_dir / f"step-{step}")
        except Exception:  # one bad checkpoint must not end the curve; the snapshot stays for a retry
            log.exception("the evaluation of step %d failed; a restart of the evaluator tries it again", step)
            with self._lock:
                self._pending.pop(step, None)
                self.summary.failed.append(step)
            return
        self._log(step, report)
        with self._lock:
            self._pending.pop(step, None)
            self._done.add(step)
            self.summary.evaluated.append(step)
        if item.snapshot is not None:
            drop_snapshot(item.snapshot)

    def _log(self, step: int, report: EvaluationReport) -> None:
        for outcome in report.outcomes:
            s = outcome.score
            log.info("step %d: %s Pass@1 %.1f%% [%.1f, %.1f] (%d items x %d samples)", step, outcome.benchmark,
                     100 * s.pass_at_1, 100 * s.ci_low, 100 * s.ci_high, s.n_items, s.samples_per_item)
            writer = self._tensorboard()
            if writer is not None:
                for name, value in (("pass_at_1", s.pass_at_1), ("ci_low", s.ci_low), ("ci_high", s.ci_high)):
                    writer.add_scalar(f"eval/{outcome.benchmark}/{name}", value, step)
                writer.flush()

    def _tensorboard(self):
        if self._writer is None and self.config.learner.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(Path(self.config.run.output_dir) / "tb"))
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._store is not None:
            self._store.dispose()
            self._store = None
