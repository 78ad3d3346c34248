"""`omniopd worker ...`: start the worker processes of a run (one command per role)."""

from __future__ import annotations

from typing import Annotated

import typer

from omniopd.cli.common import ConfigOpt, SetOpt, console, err_console, fail, load

app = typer.Typer(help="Start worker processes of a run (Celery workers reading one config).", no_args_is_help=True)

LogLevelOpt = Annotated[str, typer.Option("--loglevel", help="DEBUG, INFO, WARNING or ERROR.")]


@app.command("maintenance")
def maintenance(
    config: ConfigOpt,
    once: bool = typer.Option(False, "--once", help="Run one sweep now, print what it did, and exit."),
    loglevel: LogLevelOpt = "INFO",
    set_: SetOpt = None,
) -> None:
    """Run the maintenance worker (repairs what crashes leave behind).

    Every maintenance.interval_s it expires stale budget reservations (charging them in
    full), frees expired bundle claims, re-queues audits that were lost and reports
    orphans. Runs until SIGTERM / Ctrl-C; --once does a single sweep.
    """
    cfg = load(config, set_)
    from db.migrate import SchemaNotCurrent

    if once:
        from workers.app import make_celery
        from workers.broker import broker_for
        from workers.maintenance.sweep import sweep

        try:
            with broker_for(cfg) as endpoint:
                report = sweep(make_celery(cfg, broker_url=endpoint.url, config_path=config))
        except SchemaNotCurrent as exc:
            fail(str(exc))
        console.print(report.summary(), soft_wrap=True)
        return
    from workers.app import MAINTENANCE_QUEUE
    from workers.launch import run_worker

    try:
        code = run_worker(
            cfg, queues=[MAINTENANCE_QUEUE], pool="solo", concurrency=1, beat=True, role="maintenance",
            config_path=config, loglevel=loglevel.upper(),
        )
    except SchemaNotCurrent as exc:
        fail(str(exc))
    raise typer.Exit(code)


@app.command("audit")
def audit(
    config: ConfigOpt,
    teacher: str | None = typer.Option(
        None, "--teacher", "-t", help="Teacher (key of `teachers`) whose queue audits.<NAME> to serve; default audit.teacher.",
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-k", min=1,
        help="Trajectories audited at once by this process (threads); default workers.audit_threads. "
        "Teacher calls in flight are further capped by teachers.<NAME>.concurrency.",
    ),
    loglevel: LogLevelOpt = "INFO",
    set_: SetOpt = None,
    wait_for_run: WaitForRunOpt = 300.0,
) -> None:
    """Run an audit worker: teacher continuations for every chunk, with budgets and rate limits.

    Consumes queue audits.<teacher>, one trajectory per task, its chunks in ascending
    position (the provider's prompt cache hits). Before each HTTP attempt the worst-case
    cost is reserved against the provider's and the run's cap; when a cap is reached the
    remaining chunks are skipped (skipped_budget) and the run winds down. Start as many
    processes as the provider's rate limits allow; they share the limits through Redis.
    Runs until SIGTERM / Ctrl-C (running audits finish, or are redelivered if killed).
    An objective that declares no audits (loss.method's `needs.audits`) queues none: the
    worker then says so and idles.
    """
    cfg = load(config, set_)
    if not cfg.loss.needs.audits:
        err_console.print(
            f"[yellow]warning:[/] the objective of loss.method = {cfg.loss.method} declares no audits "
            "(omniopd/objectives): no trajectory of this run is queued for this worker, which will idle",
            highlight=False, soft_wrap=True,
        )
    name = teacher or cfg.audit.teacher
    if not name:
        fail("no teacher to audit with: set audit.teacher in the config or pass --teacher NAME")
    if name not in cfg.teachers:
        fail(f"--teacher {name!r} is not a key of `teachers` ({', '.join(sorted(cfg.teachers)) or 'none defined'})")
    cfg = cfg.model_copy(update={"audit": cfg.audit.model_copy(update={"teacher": name})})
    _check_teacher(cfg, name)
    from db.migrate import SchemaNotCurrent
    from db.repo_runs import RunNotFound
    from workers.app import audit_queue
    from workers.launch import run_worker

    try:
        code = run_worker(
            cfg, queues=[audit_queue(name)], pool="threads", concurrency=concurrency or cfg.workers.audit_threads,
            role=f"audit-{name}", config_path=config, loglevel=loglevel.upper(), wait_for_run_s=wait_for_run,
        )
    except (SchemaNotCurrent, RunNotFound) as exc:
        fail(str(exc))
    raise typer.Exit(code)


def _check_teacher(cfg, name: str) -> None:
    """Fail before starting when the teacher has no price or its API key is not set."""
    from omniopd.teachers import ApiKey, PricingError, TeacherError, teacher_price

    teacher = cfg.teachers[name]
    try:
        teacher_price(teacher, cfg.audit.prices_file)
        ApiKey.from_env(teacher.api_key_env, required=teacher.spec.api_key_required)
    except (PricingError, TeacherError) as exc:
        fail(f"teacher {name}: {exc}")


WaitForRunOpt = Annotated[float, typer.Option(
    "--wait-for-run", min=0,
    help="Seconds to wait for the config's run to appear in the store (its learner creates it) before refusing to start.",
)]


@app.command("rollout")
def rollout(
    config: ConfigOpt,
    concurrency: int = typer.Option(
        1, "--concurrency", min=1,
        help="Engines in this worker. 1: a solo worker (one process, one model; the usual setup, one worker per GPU). "
        "K > 1: K pool processes, process i pinned to the i-th GPU of CUDA_VISIBLE_DEVICES.",
    ),
    loglevel: LogLevelOpt = "INFO",
    set_: SetOpt = None,
    wait_for_run: WaitForRunOpt = 300.0,
) -> None:
    """Run a rollout worker: generates student trajectories for the run's driver.

    Consumes the `rollouts` queue. Before each batch it loads the newest published
    policy version (verifying the reload with a probe; a mismatch stops the worker with
    exit code 3), samples, computes exact per-token entropies, selects chunks (or, for an
    objective that learns from rewards, grades every sample with reward.grader) and stores
    the trajectories, then queues their audits. A grader that cannot start is refused here. Pin a GPU per worker with
    CUDA_VISIBLE_DEVICES (scripts/start_workers.sh does). Runs until SIGTERM / Ctrl-C
    (the batch in progress finishes, or is redelivered if the worker is killed).
    """
    cfg = load(config, set_)
    import os

    from db.migrate import SchemaNotCurrent
    from db.repo_runs import RunNotFound
    from workers.app import ROLLOUT_QUEUE, audit_teacher
    from workers.launch import run_worker
    from workers.rollout.engine import (
        EXIT_WEIGHT_SYNC,
        FATAL_FILE_ENV,
        GPUS_ENV,
        WARM_ENV,
        warm_engine,
    )

    # Opt-in (the rehearsal sets it): a vLLM engine built before Celery starts outlived its
    # worker in the model-teacher demo (its EngineCore was orphaned at a warm shutdown).
    warm = concurrency == 1 and cfg.rollout.backend == "vllm" and os.environ.get(WARM_ENV) == "1"

    try:
        audit_teacher(cfg)
    except ValueError as exc:
        fail(str(exc))
    if not cfg.student.path:
        fail("student.path is empty: set it to the student model directory (the base of policy version 0)")
    if cfg.loss.needs.rewards:  # a grader that cannot start would fail every batch: refuse now
        from eval.rewards import reward_grader_for

        try:
            reward_grader_for(cfg).close()
        except Exception as exc:
            fail(f"reward.grader = {cfg.reward.grader} cannot start in this worker: {exc}")
    if concurrency > 1:
        gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
        if gpus and len(gpus) < concurrency:
            fail(f"--concurrency {concurrency} needs as many GPUs, CUDA_VISIBLE_DEVICES has {len(gpus)}: {','.join(gpus)}")
        os.environ[GPUS_ENV] = ",".join(gpus[:concurrency])
        fatal = cfg.run.output_dir / "logs" / f"rollout-{os.getpid()}.fatal"
        fatal.parent.mkdir(parents=True, exist_ok=True)
        fatal.unlink(missing_ok=True)
        os.environ[FATAL_FILE_ENV] = str(fatal)
    try:
        code = run_worker(
            cfg, queues=[ROLLOUT_QUEUE], pool="solo" if concurrency == 1 else "prefork", concurrency=concurrency,
            role="rollout", config_path=config, loglevel=loglevel.upper(), wait_for_run_s=wait_for_run,
            # vLLM starts in minutes on a CPU: build it before taking a batch (a solo worker keeps it)
            before_consuming=(lambda: warm_engine(cfg, str(config))) if warm else None,
        )
    except (SchemaNotCurrent, RunNotFound) as exc:
        fail(str(exc))
    if concurrency > 1 and fatal.is_file():  # a pool process stopped the worker
        fail(f"rollout worker stopped: {fatal.read_text().strip()}", code=EXIT_WEIGHT_SYNC)
    raise typer.Exit(code)


@app.command("evaluator")
def evaluator(
    config: ConfigOpt,
    until_finished: bool = typer.Option(
        False, "--until-finished", help="Exit once the run has ended and its last checkpoint is evaluated."),
    once: bool = typer.Option(False, "--once", help="Evaluate the checkpoints due now, then exit."),
    loglevel: LogLevelOpt = "INFO",
    set_: SetOpt = None,
) -> None:
    """Run the evaluator: Pass@1 of the run's checkpoints while the learner trains (eval.every_steps).

    Polls the store for published policy versions; evaluates the base model, each checkpoint
    that crosses a multiple of eval.every_steps and the last one, on eval.curve_items held-out
    items x eval.curve_samples samples (the same items at every step). Results go to the
    store, linked to the run and step (`omniopd plot` draws them as a Pass@1 curve with 95%
    intervals), to <run.output_dir>/eval/curve/ and to TensorBoard. It snapshots (hard-links)
    each checkpoint when it is published, so the learner's pruning never loses one, and never
    blocks the learner. Runs until SIGTERM / Ctrl-C (the batch being graded is stored; a
    restart resumes), or see --until-finished and --once.
    """
    cfg = load(config, set_)
    import logging
    import signal
    import threading

    from db.migrate import SchemaNotCurrent
    from workers.evaluator.loop import Evaluator

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        worker = Evaluator(cfg, config)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(str(exc).strip('"'))
    import os

    logging.getLogger("omniopd.evaluator").info(
        "evaluator of run %s: every %d steps, %s items x %d samples per benchmark; CUDA_VISIBLE_DEVICES=%s",
        cfg.run.name, cfg.eval.every_steps, worker.plan.max_items or "all", worker.plan.samples,
        os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    )
    stop = threading.Event()

    def terminate(signum, frame):  # SIGTERM: stop like Ctrl-C (the batch being graded is stored)
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        summary = worker.run(stop, until_finished=until_finished, once=once)
    except SchemaNotCurrent as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        err_console.print("evaluator stopped; a restart resumes from its snapshots", highlight=False)
        raise typer.Exit(0) from None
    skipped = f"; not on the curve (pruned before they were seen): {summary.skipped}" if summary.skipped else ""
    console.print(f"evaluated steps {summary.evaluated or 'none'}{skipped}", highlight=False, soft_wrap=True)
    if summary.failed:
        fail(f"the evaluation of steps {summary.failed} failed (see the log above); a restart tries them again", code=1)
