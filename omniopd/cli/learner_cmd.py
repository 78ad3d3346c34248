"""`omniopd learner`: the training process of a run (and the owner of its embedded broker)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from omniopd.cli.common import ConfigOpt, SetOpt, console, fail, load

DriverOpt = Annotated[
    str | None,
    typer.Option(
        "--driver",
        help="The rollout driver as MODULE:CALLABLE, called with app=, sessions=, config=, run_id= and "
        "ticked once per learner iteration. The default paces real rollout workers, or with "
        "data.teacher_solutions replays the teacher's solutions (workers.learner.replay:ReplayDriver); "
        "another value plugs in a driver of your own.",
        show_default=False,
    ),
]
ProgressOpt = Annotated[
    bool | None,
    typer.Option("--progress/--no-progress", help="Show a progress bar (default: when stdout is a terminal).",
                 show_default=False),
]
LogLevelOpt = Annotated[str, typer.Option("--loglevel", help="DEBUG, INFO, WARNING or ERROR.")]


def learner(
    config: ConfigOpt,
    set_: SetOpt = None,
    driver: DriverOpt = None,
    progress: ProgressOpt = None,
    loglevel: LogLevelOpt = "INFO",
) -> None:
    """Train the student: claim audit bundles, step, record, checkpoint, publish policy versions.

    Resumes from the newest checkpoint under <run.output_dir>/checkpoints (steps recorded after
    it are trained again, so every bundle counts exactly once). SIGTERM or Ctrl-C finish the
    current step, checkpoint and exit 0; a second signal aborts. Stops at learner.max_steps,
    when every problem is sampled and trained, or when the teacher budget is spent, and prints
    a summary (steps, bundles, spend, reason). Start it before the workers in embedded mode:
    it owns the run's private broker.
    """
    cfg = load(config, set_)
    import logging

    from db.learner_lock import LearnerAlreadyRunning
    from db.migrate import SchemaNotCurrent
    from omniopd.models.loading import ModelLoadError
    from workers.learner.loop import LearnerError
    from workers.learner.run import load_driver_factory, run_learner

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        factory = load_driver_factory(driver) if driver else None
    except (ImportError, AttributeError, ValueError) as exc:
        fail(f"cannot load the driver {driver!r}: {exc}")
    try:
        summary = run_learner(
            cfg, config_path=config, driver_factory=factory,
            progress=sys.stdout.isatty() if progress is None else progress,
        )
    except (SchemaNotCurrent, LearnerError, ModelLoadError, LearnerAlreadyRunning) as exc:
        fail(str(exc), code=1)
    if summary is not None:  # None: a non-zero rank of a torchrun launch (rank 0 reports)
        console.print(summary.text(), highlight=False, soft_wrap=True)
