"""What a process logs while a service it talks to (the broker, the rate-limit Redis) is away.

A broker outage makes every send fail; logging each failure would bury the log in
identical lines (the driver sends a few per tick, the outbox relay tries every couple of
seconds). An `Unreachable` turns the failures into three kinds of line, naming the
service's URL with its password hidden:

    WARNING  broker unreachable at redis://127.0.0.1:6380/0 (OperationalError: ...): <what waits>
    WARNING  broker still unreachable at redis://127.0.0.1:6380/0 after 30 s: <what waits>
    WARNING  broker reachable again at redis://127.0.0.1:6380/0 after 41 s: <what happened then>

one when the first send fails, a reminder at most every `remind_s`, and one when a send
succeeds again. Thread-safe: the learner's loop and its outbox relay share one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from omniopd.config import redact_url

REMIND_S = 30.0


class Unreachable:
    """The state of one service (`what`, e.g. "broker") as seen by this process."""

    def __init__(self, what: str, log: logging.Logger, *, remind_s: float = REMIND_S,
                 clock: Callable[[], float] = time.monotonic):
        self.what, self.log, self.remind_s, self.clock = what, log, remind_s, clock
        self._lock = threading.Lock()
        self._since: float | None = None  # when the first failure of this outage was seen
        self._reminded = 0.0
        self.failures = 0  # sends failed during the current outage

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, url: str, exc: BaseException, waiting: str) -> None:
        """A send to `url` failed with `exc`; `waiting` says what waits meanwhile and where."""
        with self._lock:
            now = self.clock()
            self.failures += 1
            if self._since is None:
                self._since = self._reminded = now
                self.log.warning("%s unreachable at %s (%s: %s): %s", self.what, redact_url(url), type(exc).__name__,
                                 _short(exc), waiting)
            elif now - self._reminded >= self.remind_s:
                self._reminded = now
                self.log.warning("%s still unreachable at %s after %.0f s (%d failed sends): %s", self.what,
                                 redact_url(url), now - self._since, self.failures, waiting)

    def succeeded(self, url: str, done: str) -> bool:
        """A send to `url` succeeded; logs the recovery (with `done`: what happened on it)
        if an outage was on. True if it was."""
        with self._lock:
            if self._since is None:
                return False
            self.log.warning("%s reachable again at %s after %.0f s: %s", self.what, redact_url(url),
                             self.clock() - self._since, done)
            self._since, self.failures = None, 0
            return True


def _short(exc: BaseException, limit: int = 200) -> str:
    """The exception's text on one line, cut (a kombu error can carry a traceback's worth)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
