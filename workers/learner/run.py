"""The learner process around the loop: store, run row, checkpoint resume, trainer,
broker, driver, signals, and the ranks of a multi-process learner.

    run_learner(config)  ->  store + run + checkpoint resume + Trainer + broker + driver
                             -> Learner(...).run() (workers/learner/loop.py) -> LearnerSummary

Stopping: SIGTERM or Ctrl-C finish the current step, record it, checkpoint, publish and
exit 0; a second signal aborts at once (the store stays consistent, the step is redone).

Store outages (db/outage.py): once the store is checked at start-up, the learner waits for
an unreachable store instead of dying ("store unreachable, waiting for it: <url>"), runs
the interrupted transaction again, and re-takes its learner lock on a new connection
(db/learner_lock.py); if another learner took the run meanwhile, it stops with
`LearnerDisplaced` and writes nothing more.

Several processes (torchrun --nproc-per-node N -m omniopd learner ...): rank 0 alone runs
everything above, with a lockstep `Leader` in place of its Trainer; the other ranks only
`follow` (omniopd/train/lockstep.py) and never open the store.
"""

from __future__ import annotations

import importlib
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from omniopd.config import OmniConfig
from omniopd.train.lockstep import Leader, Start
from workers.learner.loop import (
    DEFAULT_DRIVER,
    REPLAY_DRIVER,
    Driver,
    Learner,
    LearnerDisplaced,
    LearnerSummary,
)
from workers.learner.output import MetricsSink

log = logging.getLogger("omniopd.learner")



def load_driver_factory(spec: str) -> Callable[..., Driver]:
    """`module:attribute` -> the driver class or factory, called as
    factory(app=, sessions=, config=, run_id=)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"--driver {spec!r}: expected MODULE:CALLABLE, e.g. {DEFAULT_DRIVER}")
    return getattr(importlib.import_module(module), attr)


def install_stop_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM / SIGINT set `stop` (finish the step, checkpoint, exit); a second one aborts.
    Returns a function that restores the previous handlers."""
    return _two_stage_signals(stop, "finishing the current step, then checkpointing (send it again to abort)",
                              "aborting without a checkpoint")


def install_follower_signals() -> Callable[[], None]:
    """A non-zero rank ignores the first SIGTERM / SIGINT (torchrun and Ctrl-C signal every
    rank; rank 0 decides when to stop, and the final checkpoint needs every rank); a
    second one aborts."""
    return _two_stage_signals(threading.Event(), "this rank waits for rank 0 to finish the step and checkpoint",
                              "aborting")


def _two_stage_signals(first: threading.Event, first_message: str, abort_message: str) -> Callable[[], None]:
    """SIGTERM / SIGINT: the first sets `first` and logs `first_message`; the next raises
    KeyboardInterrupt. Returns a function that restores the previous handlers."""

    def handler(signum, _frame) -> None:
        if first.is_set():
            raise KeyboardInterrupt(f"signal {signum} again: {abort_message}")
        first.set()
        log.warning("signal %d: %s", signum, first_message)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _follow_rank_zero(config: OmniConfig) -> None:
    """A non-zero rank of a multi-process learner: build the same Trainer from the checkpoint
    rank 0 chose, then run rank 0's steps and saves until it stops. No store, no broker."""
    from omniopd.train import build_trainer
    from omniopd.train.lockstep import follow, wait_for_start

    restore = install_follower_signals() if threading.current_thread() is threading.main_thread() else (lambda: None)
    try:
        started, resumed = wait_for_start()
        if not started:  # rank 0 failed before training began; its own error says why
            return
        steps = follow(build_trainer(config, resume=resumed))
        log.info("rank 0 stopped the learner after %d steps", steps)
    finally:
        restore()


def _sinks(config: OmniConfig, *, progress: bool, start_step: int) -> list[MetricsSink]:
    from workers.learner.output import LogSink, RichProgress, TensorBoardSink

    sinks: list[MetricsSink] = []
    if config.learner.tensorboard:
        sinks.append(TensorBoardSink(Path(config.run.output_dir) / "tb"))
    # A live bar and log lines on the same terminal garble each other: one or the other.
    sinks.append(RichProgress(config.learner.max_steps, start_step) if progress else LogSink())
    return sinks


def run_learner(
    config: OmniConfig,
    *,
    config_path: str | Path | None = None,
    driver_factory: Callable[..., Driver] | None = None,
    progress: bool = False,
    stop: threading.Event | None = None,
) -> LearnerSummary | None:
    """Run the learner of `config` until it stops (module docstring); owns the embedded broker.

    `driver_factory` defaults to workers.learner.driver.Driver, or with data.teacher_solutions to
    workers.learner.replay.ReplayDriver (imported here, lazily). Launched by
    torchrun as N processes: rank 0 does all of this and returns the summary; the other
    ranks follow it (`_follow_rank_zero`) and return None."""
    from omniopd.models.loading import resolve_device
    from omniopd.train.distributed import close_process_group, init_process_group

    world = init_process_group(resolve_device(config.student.device))
    if not world.is_main:
        try:
            _follow_rank_zero(config)
            return None
        finally:
            close_process_group()
    start = Start(world.distributed)
    try:
        return _lead(config, config_path=config_path, driver_factory=driver_factory, progress=progress,
                     stop=stop, start=start)
    finally:
        start.cancel()  # rank 0 failed before a Leader took the followers over: release them
        close_process_group()


def _lead(
    config: OmniConfig,
    *,
    config_path: str | Path | None,
    driver_factory: Callable[..., Driver] | None,
    progress: bool,
    stop: threading.Event | None,
    start: Start,
) -> LearnerSummary:
    """The learner proper: one process, or rank 0 of several (its followers are told to
    start, with the checkpoint to resume, once the store is set up; and to stop at the end)."""
    from db.learner_lock import learner_lock
    from db.outage import rerun_on_disconnect, wait_for_store
    from db.repo_runs import set_run_status
    from db.store import open_store
    from omniopd.train import build_trainer, checkpoint_root, clean_partial
    from workers.app import make_celery
    from workers.broker import broker_for
    from workers.outbox import OutboxRelay
    from workers.store import ensure_run

    stop = stop or threading.Event()
    leader: Leader | None = None
    restore = install_stop_signals(stop) if threading.current_thread() is threading.main_thread() else (lambda: None)
    store = open_store(config, config_path)
    sessions = store.sessions
    sinks: list[MetricsSink] = []
    lock_context = learner_lock(store.engine, config.run.name)
    try:
        lock = lock_context.__enter__()  # LearnerAlreadyRunning: a second learner on the run refuses, changing nothing
    except BaseException:
        store.dispose()
        restore()
        raise
    # The store was checked at start-up (a wrong URL or a down server failed fast above); from
    # now on an outage is waited for, said so, and the loop's transactions run again (db/outage.py)
    wait_for_store(store.engine)
    try:
        with sessions.begin() as s:
            run_id = ensure_run(s, config).id
            set_run_status(s, run_id=run_id, status="running")
        root = checkpoint_root(config.run.output_dir)
        for path in clean_partial(root):
            log.warning("removed an incomplete checkpoint %s (a save was interrupted)", path)
        resumed = _resume_point(root, sessions, run_id)
        start.send(resumed)  # several processes: every rank now builds the same trainer
        trainer = start.lead(build_trainer(config, resume=resumed))
        leader = trainer if isinstance(trainer, Leader) else None
        if driver_factory is None:
            # the teacher's given solutions replace rollouts (SFT on them); otherwise rollout workers sample
            driver_factory = load_driver_factory(REPLAY_DRIVER if config.data.teacher_solutions else DEFAULT_DRIVER)
        with broker_for(config) as endpoint:
            app = make_celery(config, broker_url=endpoint.url, config_path=config_path)
            driver = driver_factory(app=app, sessions=sessions, config=config, run_id=run_id)
            sinks = _sinks(config, progress=progress, start_step=trainer.steps_done)
            # the outbox relay: a message whose send failed after its commit is re-sent
            # once the broker answers (workers/outbox.py); the learner runs in every mode
            relay = OutboxRelay(app, sessions, run_name=config.run.name, interval_s=config.maintenance.outbox_interval_s)
            with relay:
                summary = Learner(
                    config=config, sessions=sessions, run_id=run_id, trainer=trainer, driver=driver,
                    checkpoint_dir=root, resumed=resumed, stop=stop, sinks=sinks, lock=lock,
                ).run()
        def final_status() -> None:  # idempotent: safe to run again after a store outage
            with sessions.begin() as s:
                set_run_status(s, run_id=run_id,
                               status="finished" if summary.reason in ("max_steps", "exhausted") else "stopped")

        rerun_on_disconnect(final_status, what="recording the run's status", logger=log)
        return summary
    except LearnerDisplaced:
        raise  # another learner runs the run now: its status is that learner's to write
    except BaseException:
        _mark_failed(sessions, config)
        raise
    finally:
        if leader is not None:
            leader.close()
        for sink in sinks:
            sink.close()
        lock_context.__exit__(None, None, None)
        store.dispose()
        restore()


def _resume_point(root: Path, sessions: sessionmaker[Session], run_id: int):
    """The newest intact checkpoint; damaged newer ones are set aside and said so, their
    steps rewound and their policy versions withdrawn (omniopd/train/checkpoint.py)."""
    from db.repo_bundles import rewind_to_step, withdraw_policy_versions
    from omniopd.train.checkpoint import resume_point

    resumed, damaged = resume_point(root)
    if not damaged:
        return resumed
    with sessions.begin() as s:
        rewound = rewind_to_step(s, run_id=run_id, step=resumed.step if resumed else 0)
        versions, dropped = withdraw_policy_versions(s, run_id=run_id, paths=[str(d.path) for d in damaged])
    for d in damaged:
        log.warning("checkpoint %s is damaged (%s); set aside as %s", d.path, d.reason, d.moved_to.name)
    log.warning("resuming from %s: %d bundles of the lost steps will be trained again; policy versions %s withdrawn, "
                "%d trajectories they sampled dropped and re-sampled", resumed.path if resumed else "the base model",
                rewound, versions or "none", dropped)
    return resumed


def _mark_failed(sessions: sessionmaker[Session], config: OmniConfig) -> None:
    """Best effort: the run's status says the learner died (the real error is re-raised)."""
    from db.repo_runs import get_run, set_run_status

    try:
        with sessions.begin() as s:
            set_run_status(s, run_id=get_run(s, name=config.run.name).id, status="failed")
    except Exception:
        log.debug("could not mark the run failed", exc_info=True)
