"""`omniopd config show|validate`: inspect a run's configuration."""

from __future__ import annotations

import typer

from omniopd.cli.common import ConfigOpt, SetOpt, console, fail, load
from omniopd.config import dump_config

app = typer.Typer(help="Inspect and check run configuration files.", no_args_is_help=True)


@app.command("show")
def show(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Print the resolved config (file + --set overrides + defaults) as YAML."""
    cfg = load(config, set_)
    console.print(dump_config(cfg, redact=True), highlight=False, markup=False, end="")


@app.command("validate")
def validate(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Check a config file; exit 0 if it is valid, 2 with every problem listed if not.

    An objective that learns from rewards also has its grader checked against data.train
    (when the file is there): every problem must carry what the grader grades against."""
    cfg = load(config, set_)
    from eval.rewards import data_misfit

    misfit = data_misfit(cfg)
    if misfit:
        fail(f"{config}: {misfit}", code=2)
    teacher = cfg.audit.teacher or "none"
    console.print(
        f"[green]ok[/] {config}: run {cfg.run.name!r}, teacher {teacher}, store {cfg.store_url}",
        soft_wrap=True,
    )
