"""`omniopd worker ...`: start the worker processes of a run (one command per role)."""

from __future__ import annotations

from typing import Annotated

import typer

from omniopd.cli.common import ConfigOpt, SetOpt, console, fail, load

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
        from workers.maintenance import sweep

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
