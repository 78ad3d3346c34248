"""Worker-test helpers: a run config on disk, a prepared store, worker processes that are
always killed (whole process group) when the test ends, and polling."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from db.migrate import upgrade
from db.repo_audit import promote_if_complete
from db.repo_trajectories import record_trajectories
from db.session import make_engine, make_session_factory
from omniopd.config import load_config
from tests.conftest import wait_left
from tests.db.conftest import make_problems, trajectory
from workers.store import ensure_run

ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, **sections) -> Path:
    data = {
        "run": {"name": "wtest", "output_dir": str(path.parent / "out")},
        "teachers": {"emu": {"kind": "anthropic", "model": "m"}},
        "audit": {"teacher": "emu"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path.write_text(yaml.safe_dump(data))
    return path


class Store:
    """The run's store: created, migrated, with the run and helpers to add work."""

    def __init__(self, config_path: Path):
        self.config = load_config(config_path)
        self.engine = make_engine(self.config.store_url)
        upgrade(self.engine)
        self.sessions = make_session_factory(self.engine)
        with self.sessions.begin() as s:
            self.run_id = ensure_run(s, self.config).id

    def trajectories(self, count: int, *, chunks: int = 1, n: int = 3) -> list[int]:
        with self.sessions.begin() as s:
            pids = make_problems(s, count, split=f"s{time.monotonic_ns()}")
            return [r.id for r in record_trajectories(s, trajectories=[trajectory(self.run_id, p, chunks=chunks, n=n) for p in pids])]

    def states(self, ids: list[int]) -> list[str]:
        from sqlalchemy import select

        from db.models import Trajectory

        with self.sessions.begin() as s:
            found = dict(s.execute(select(Trajectory.id, Trajectory.state).where(Trajectory.id.in_(ids))).all())
        return [found[i] for i in ids]

    def promote(self, ids: list[int]) -> None:
        with self.sessions.begin() as s:
            for tid in ids:
                promote_if_complete(s, trajectory_id=tid)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    """Poll `predicate` until it is true, for at most `timeout` s (or the test's wait budget, if less)."""
    timeout = wait_left(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def probe_lines(config_path: Path, kind: str) -> list[list[str]]:
    log = Path(load_config(config_path).run.output_dir) / "probe.log"
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines() if line.startswith(kind + " ")]


def pid_alive(pid: int) -> bool:
    """True for a live process (a zombie awaiting its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.fixture
def processes():
    """Start processes in their own session; every one (and its group) is SIGKILLed at the end."""
    started: list[subprocess.Popen] = []

    def start(args: list[str], log: Path, env: dict[str, str] | None = None, python: bool = True) -> subprocess.Popen:
        with open(log, "ab") as handle:
            proc = subprocess.Popen(
                [sys.executable, *args] if python else args, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture
def emulators():
    """`emulators(provider, generator=None, **EmulatorConfig fields)` -> a running teacher emulator
    (an HTTP server on 127.0.0.1 in a thread of the test process), stopped at the end."""
    from omniopd.teachers.emulator import EmulatorConfig, EmulatorThread
    from tests.workers.audit_helpers import student_like

    with contextlib.ExitStack() as stack:
        yield lambda provider, generator=None, **cfg: stack.enter_context(
            EmulatorThread(EmulatorConfig(provider=provider, **cfg), generator or student_like())
        )
