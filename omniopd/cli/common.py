"""Options and helpers shared by every CLI command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console, ConsoleDimensions

from omniopd.config import ConfigError, OmniConfig, load_config

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

OFF_TERMINAL_WIDTH = 1000
"""Width of output that goes to a file, a pipe or a CI log: wide enough that no table is cut."""


class ReportConsole(Console):
    """A rich console that, off a terminal, prints at full width instead of 80 columns.

    Rich sizes output that does not go to a terminal at $COLUMNS or 80 columns, and shrinks
    tables to fit, cutting cells to "ca…" and "em…"; `omniopd status > status.txt` or a CI log
    would be unreadable. Off a terminal (and without $COLUMNS) this console is
    OFF_TERMINAL_WIDTH wide: tables keep their natural width (they do not expand), lines
    are not wrapped, and rules, which fill the width, stay 80 columns long.
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and "COLUMNS" not in self._environ:
            return ConsoleDimensions(OFF_TERMINAL_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def rule(self, *args, **kwargs) -> None:
        if self.width == OFF_TERMINAL_WIDTH and not self.is_terminal:
            from rich.rule import Rule

            self.print(Rule(*args, **kwargs), width=80)
            return
        super().rule(*args, **kwargs)


console = ReportConsole()
err_console = ReportConsole(stderr=True)

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


@contextmanager
def read_store(cfg: OmniConfig, config: Path) -> Iterator[Session]:
    """A read-only session on the run's store, engine disposed afterwards. A store that is
    behind the code, unreachable, or a run name it does not know exits with the message
    that says what to fix (no traceback)."""
    from db.migrate import SchemaNotCurrent
    from db.repo_runs import RunNotFound
    from db.store import open_store

    try:
        store = open_store(cfg, config, read_only=True, pool_size=1)
    except (SchemaNotCurrent, ValueError) as exc:
        fail(str(exc))
    try:
        with store.sessions.begin() as session:
            yield session
    except RunNotFound as exc:
        fail(str(exc))
    finally:
        store.dispose()
