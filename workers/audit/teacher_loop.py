"""One teacher client per worker process, on one asyncio event loop in a daemon thread.

The audit worker runs tasks in Celery threads (`pool=threads`), each auditing one
trajectory at a time. They all call the teacher through this loop, so the process has
one aiohttp connection pool (`teachers.<name>.max_connections`), one rate limiter
handle and one prompt-prefix memory, however many threads it runs; a thread submits a
coroutine and blocks on its result (`TeacherLoop.run`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from omniopd.teachers.client import TeacherClient

T = TypeVar("T")


class TeacherLoop:
    """A running event loop and the teacher client that lives on it."""

    def __init__(self, make_client: Callable[[], TeacherClient]):
        self.client = make_client()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="omniopd-teacher-loop", daemon=True)
        self._thread.start()
        self._closed = False
        atexit.register(self.close)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for its result (exceptions propagate)."""
        if self._closed:
            coro.close()
            raise RuntimeError("the teacher loop is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Close the client's connections and stop the loop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):  # closing on exit: the process is going away anyway
            asyncio.run_coroutine_threadsafe(self.client.aclose(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
