"""The `omniopd` command line: the front door to every role.

Each command group lives in its own module (`omniopd/cli/<group>_cmd.py`) and imports
the heavy machinery (torch, workers/, db/, eval/) inside its commands, so `--help` and
`config validate` stay fast. This package is the only place that imports workers/, db/
and eval/ from omniopd.
"""

from __future__ import annotations

import typer

from omniopd import __version__
from omniopd.cli import (
    chaos_cmd,
    config_cmd,
    dashboard_cmd,
    data_cmd,
    db_cmd,
    demo_cmd,
    eval_cmd,
    learner_cmd,
    models_cmd,
    pipeline_cmd,
    plan_cmd,
    plot_cmd,
    rehearse_cmd,
    sandbox_cmd,
    spend_cmd,
    status_cmd,
    study_cmd,
    sweep_cmd,
    teacher_cmd,
    worker_cmd,
)

app = typer.Typer(
    name="omniopd",
    help=(
        "OmniOPD: on-policy distillation of a small student from black-box teachers "
        "(text-only APIs or open models behind vLLM). Every command reads one YAML "
        "config (--config) and accepts --set KEY=VALUE overrides."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(models_cmd.app, name="models")
app.add_typer(sandbox_cmd.app, name="sandbox")
app.add_typer(teacher_cmd.app, name="teacher")
app.add_typer(db_cmd.app, name="db")
app.add_typer(data_cmd.app, name="data")
app.add_typer(worker_cmd.app, name="worker")
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(study_cmd.app, name="study")
app.command("status")(status_cmd.status)
app.command("plan")(plan_cmd.plan)
app.command("pipeline")(pipeline_cmd.pipeline)
app.command("spend")(spend_cmd.spend)
app.command("learner")(learner_cmd.learner)
app.command("plot")(plot_cmd.plot)
app.command("demo")(demo_cmd.demo)
app.command("chaos")(chaos_cmd.chaos)
app.command("sweep")(sweep_cmd.sweep)
app.command("rehearse")(rehearse_cmd.rehearse)
app.command("dashboard")(dashboard_cmd.dashboard)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"omniopd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


def main() -> None:
    app()
