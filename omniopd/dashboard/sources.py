"""Which runs the dashboard shows: the configs it was given and the run directories of work
directories (`omniopd demo` writes each variant's resolved config to
<workdir>/<variant>-s<seed>/config.yaml, next to its own SQLite store).

Work directories are scanned again on every request, so a variant that starts while the
dashboard runs appears by itself. Each source's store is opened once, read-only, and kept
(`Stores`); a store that could not be opened (no file yet, no schema yet, server down) is
tried again on the next request, so the page recovers by itself when the run gets there.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from db.migrate import SchemaNotCurrent
from db.session import refuse_writes
from db.store import Store, open_store
from omniopd.config import ConfigError, OmniConfig, load_config

CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class Source:
    """One config: a label for the page, the config, and the file it came from."""

    label: str
    config_path: Path
    config: OmniConfig | None
    error: str | None = None  # the config could not be read (the page says why)


@dataclass(frozen=True)
class RunSpec:
    """Where the dashboard looks for runs: config files and work directories."""

    configs: tuple[Path, ...] = ()
    workdirs: tuple[Path, ...] = ()

    def sources(self) -> list[Source]:
        """Every config, in the order given; a work directory's runs sorted by directory."""
        found = [_source(path, str(path)) for path in self.configs]
        for workdir in self.workdirs:
            for path in sorted(Path(workdir).glob(f"*/{CONFIG_FILE}")):
                found.append(_source(path, path.parent.name))
        return found


def _source(path: Path, label: str) -> Source:
    try:
        return Source(label, path, load_config(path))
    except ConfigError as exc:
        return Source(label, path, None, str(exc))


class StoreUnavailable(RuntimeError):
    """The source's store cannot be read now; the message says why and what to do."""


class Stores:
    """Read-only stores by URL, opened on first use and kept (thread-safe).

    A SQLite file that was replaced (`omniopd demo` without --resume starts a variant's
    directory anew) is opened again: the kept connections would go on reading the deleted
    file. To tell, the file is held open by a descriptor of our own: once it is unlinked
    its link count is 0, and its inode cannot be reused by the new file while we hold it.
    """

    def __init__(self) -> None:
        self._open: dict[str, tuple[Store, int | None]] = {}
        self._lock = threading.Lock()

    def get(self, source: Source) -> Store:
        config = source.config
        if config is None:
            raise StoreUnavailable(f"{source.config_path}: {source.error}")
        url = config.store_url
        path = _sqlite_path(url, source.config_path)
        with self._lock:
            kept = self._open.get(url)
            if kept is not None and (path is None or _same_file(kept[1], path)):
                return kept[0]
            self._drop(url)
        # Opened outside the lock: a database server that takes its connect timeout to
        # answer must not hold up the other sources' requests.
        held = None if path is None else os.open(path, os.O_RDONLY)
        try:
            store = open_store(config, source.config_path, read_only=True, pool_size=2)
        except (SchemaNotCurrent, ValueError) as exc:
            if held is not None:
                os.close(held)
            raise StoreUnavailable(str(exc)) from None
        refuse_writes(store.engine)
        with self._lock:
            self._drop(url)  # another request may have opened it meanwhile: keep the newest
            self._open[url] = (store, held)
        return store

    def _drop(self, url: str) -> None:
        kept = self._open.pop(url, None)
        if kept is not None:
            kept[0].dispose()
            if kept[1] is not None:
                os.close(kept[1])

    def close(self) -> None:
        with self._lock:
            for url in list(self._open):
                self._drop(url)


def _same_file(held: int | None, path: Path) -> bool:
    if held is None:
        return False
    mine = os.fstat(held)
    try:
        return mine.st_nlink > 0 and os.stat(path).st_ino == mine.st_ino
    except OSError:
        return False


def _sqlite_path(url: str, config_path: Path) -> Path | None:
    """The file of a SQLite store (None for a server). A file that does not exist yet is
    reported, not created (connecting would create an empty one: a write the dashboard never
    makes)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    path = Path(parsed.database or "")
    if not path.is_file():
        raise StoreUnavailable(
            f"no store yet at {parsed.database}: the run has not started (it is created by "
            f"`omniopd db upgrade --config {config_path}`)"
        )
    return path
