"""Options and helpers shared by every CLI command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from omniopd.config import ConfigError, OmniConfig, load_config

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", help="YAML config file of the run (see configs/).", show_default=False),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override one config value, KEY=VALUE with a dotted key (repeatable), e.g. --set chunking.m=5.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error that says what to fix and exit (no traceback)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load(config: Path, overrides: list[str] | None) -> OmniConfig:
    """Load and validate a config for a command, exiting with a readable error if it is bad."""
    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        fail(str(exc))
