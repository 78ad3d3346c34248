"""Opening the store from a run's config: the one way every process and command does it.

    with open_store(config, config_path) as store:             # workers, learner, eval, import
        with store.sessions.begin() as session: ...
    with open_store(config, config_path, read_only=True) as store:   # status, spend, plot
    open_store(config, check_schema=False)                     # `omniopd db upgrade` only

`config` is anything with the run config's shape (`omniopd.config.OmniConfig` is the one
used): a `store_url` and a `store` section with `pool_size` and `sqlite_busy_timeout_ms`.
This package imports nothing of OmniOPD's, so the shape is a Protocol, not the class.

Unless `check_schema=False`, a store behind (or ahead of) the code raises SchemaNotCurrent
naming the command that fixes it, and an unreachable server raises StoreUnreachable; the
engine is disposed before either propagates. Read-only stores give sessions that never
take SQLite's write lock (db/session.py), so a report never delays the run it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import StoreUnreachable, require_current_schema
from db.session import make_engine, make_session_factory, sqlite_path


class StoreSection(Protocol):
    pool_size: int
    sqlite_busy_timeout_ms: int


class StoreSettings(Protocol):
    """What `open_store` reads of a run config."""

    @property
    def store_url(self) -> str: ...

    @property
    def store(self) -> StoreSection: ...


@dataclass
class Store:
    """An open store: its engine and a session factory (read-only or read-write)."""

    engine: Engine
    sessions: sessionmaker[Session]

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()


def open_store(
    config: StoreSettings,
    config_path: str | Path | None = None,
    *,
    read_only: bool = False,
    check_schema: bool = True,
    pool_size: int | None = None,
) -> Store:
    """The run's store. `config_path` only names the file in the fix a schema error prints;
    `pool_size` overrides the config's (one connection is enough for a command). A reader
    never creates a SQLite file or its directory (a mistyped path would leave them behind)."""
    path = sqlite_path(config.store_url)
    if read_only and path is not None and not path.is_file():
        raise StoreUnreachable(
            f"no store at {path}: the run has not started with this config, or store.url / run.output_dir "
            "point elsewhere (`omniopd db upgrade` creates a store)"
        )
    engine = make_engine(
        config.store_url,
        pool_size=pool_size or config.store.pool_size,
        sqlite_busy_timeout_ms=config.store.sqlite_busy_timeout_ms,
    )
    if check_schema:
        try:
            require_current_schema(engine, config_path)
        except BaseException:
            engine.dispose()
            raise
    return Store(engine, make_session_factory(engine, read_only=read_only))
