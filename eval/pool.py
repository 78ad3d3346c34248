"""A process pool whose per-job wall-clock timeout is enforced from outside the job.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot stop one stuck job. A
math-verify comparison can run for minutes inside sympy (e.g. `99999999!`), and its own
timeout uses `signal.alarm`, which only works in a main thread and cannot interrupt
long C-level big-integer work. Here every worker runs one job at a time; the parent
waits on all workers' pipes with a deadline, and a worker that passes its deadline is
SIGKILLed and replaced. Its job is reported as `JobOutcome(status="timeout")`.

Workers start from a forkserver that preloads the job function's module (so a
replacement starts in milliseconds instead of re-importing sympy), ignore SIGINT (the
parent owns shutdown), and exit when the parent's end of their pipe closes or, if the
main process dies mid-job, within about a second. As with any non-fork start method,
a script that creates a pool needs an `if __name__ == "__main__":` guard (the
forkserver re-imports the main module).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

# A worker that dies before finishing this many jobs in a row means the job function
# itself cannot run (import error, crash on start), not one bad input: stop retrying.
_MAX_CONSECUTIVE_DEATHS = 3


@dataclass(frozen=True)
class JobOutcome:
    """Result of one job: `value` when status is "ok"; `error` text otherwise."""

    status: Literal["ok", "timeout", "error"]
    value: Any
    error: str | None
    seconds: float


class PoolBroken(RuntimeError):
    """The pool's workers keep dying before finishing a job."""


def _die_with_owner(owner_pid: int) -> None:
    """Make this worker exit when the main process dies, even mid-job in C code.

    Our parent is the forkserver, which exits once no process holds the write end of
    its "alive" pipe — but every forkserver child inherits one. We close ours, so the
    forkserver exits with the main process, and ask the kernel (PR_SET_PDEATHSIG) to
    SIGKILL us when it does: a signal, unlike a Python thread, also stops a worker
    stuck in one long big-integer operation. A thread polling the main process is the
    fallback where prctl is unavailable or another child keeps the forkserver up.
    """
    from multiprocessing import forkserver

    server = forkserver._forkserver  # the child's copy of the forkserver client state
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    if sys.platform.startswith("linux"):
        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(0)  # the forkserver died before prctl took effect

    def poll() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(owner_pid, 0)
            except ProcessLookupError:
                os._exit(0)

    threading.Thread(target=poll, daemon=True).start()


def _worker_main(conn: Connection, fn: Callable[[Any], Any], owner_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_owner(owner_pid)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # parent closed its end: shut down
        if msg is None:
            return
        index, job = msg
        start = time.perf_counter()
        try:
            conn.send((index, "ok", fn(job), None, time.perf_counter() - start))
        except Exception as exc:  # report any failure of the job; the worker stays up
            conn.send((index, "error", None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start))


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[[Any], Any]) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, fn, os.getpid()), daemon=True)
        self.proc.start()
        child.close()
        self.job: int | None = None
        self.deadline = 0.0
        self.started = 0.0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class TimeoutPool:
    """Run `fn(job)` for many jobs in `workers` processes, each job limited to `timeout_s`.

    `fn` must be a module-level function (it is sent to the workers by reference);
    `preload` names modules whose import warms a worker up (imported once, before forks).
    Use as a context manager, or call `close()`; `map` may be called many times.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        workers: int = 0,
        timeout_s: float = 10.0,
        start_method: str = "forkserver",
        preload: Sequence[str] = (),
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.fn = fn
        self.timeout_s = timeout_s
        self.n_workers = workers or os.cpu_count() or 1
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # Modules the forkserver imports once, so forked workers start with them
            # loaded. Only effective if this process has not started its forkserver yet.
            self._ctx.set_forkserver_preload([fn.__module__, *preload])
        importlib.import_module(fn.__module__)  # fail here, not in every worker
        self._workers: list[_Worker] = []
        self.timeouts = 0
        self.restarts = 0
        self.killed_pids: list[int] = []  # workers killed for a timeout or death (diagnostics)

    def __enter__(self) -> TimeoutPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.fn)

    def map(self, jobs: Sequence[Any]) -> list[JobOutcome]:
        """Run every job; return outcomes in job order. Never raises for a job's failure."""
        if not jobs:
            return []
        try:
            return self._map(jobs)
        except BaseException:
            # Interrupted (Ctrl-C, PoolBroken): a busy worker would later answer a job of
            # this call as if it belonged to the next one, so replace every busy worker.
            for i, w in enumerate(self._workers):
                if w.job is not None:
                    self._replace(i)
            raise

    def _map(self, jobs: Sequence[Any]) -> list[JobOutcome]:
        while len(self._workers) < min(self.n_workers, len(jobs)):
            self._workers.append(self._spawn())
        pending = deque(range(len(jobs)))
        results: list[JobOutcome | None] = [None] * len(jobs)
        deaths = 0
        remaining = len(jobs)
        while remaining:
            for i, w in enumerate(self._workers):
                if w.job is None and pending:
                    job = pending.popleft()
                    try:
                        w.conn.send((job, jobs[job]))
                    except OSError:  # the idle worker died (e.g. killed from outside)
                        pending.appendleft(job)
                        self._replace(i)
                        continue
                    w.job = job
                    w.started = time.perf_counter()
                    w.deadline = w.started + self.timeout_s
            busy = [w for w in self._workers if w.job is not None]
            if not busy:
                continue
            now = time.perf_counter()
            ready = wait([w.conn for w in busy], timeout=max(0.0, min(w.deadline for w in busy) - now))
            ready_set = set(ready)
            for i, w in enumerate(self._workers):
                if w.job is None:
                    continue
                if w.conn in ready_set:
                    try:
                        index, status, value, error, seconds = w.conn.recv()
                    except (EOFError, OSError):
                        deaths += 1
                        if deaths >= _MAX_CONSECUTIVE_DEATHS:
                            self.close()
                            raise PoolBroken(
                                f"grading workers for {self.fn.__module__}.{self.fn.__name__} died "
                                f"{deaths} times in a row; run the function in-process to see why"
                            ) from None
                        results[w.job] = JobOutcome("error", None, "worker died", time.perf_counter() - w.started)
                        self._replace(i)
                        remaining -= 1
                        continue
                    deaths = 0
                    results[index] = JobOutcome(status, value, error, seconds)
                    w.job = None
                    remaining -= 1
                elif time.perf_counter() >= w.deadline:
                    results[w.job] = JobOutcome("timeout", None, f"exceeded {self.timeout_s:g} s", self.timeout_s)
                    self.timeouts += 1
                    self._replace(i)
                    remaining -= 1
        return [r for r in results if r is not None]

    def _replace(self, i: int) -> None:
        self.killed_pids.append(self._workers[i].proc.pid)
        self._workers[i].kill()
        self._workers[i] = self._spawn()
        self.restarts += 1

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        for w in self._workers:
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(None)
        for w in self._workers:
            w.proc.join(timeout=2)
            w.kill()
        self._workers = []
