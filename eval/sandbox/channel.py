"""Host side of the runner protocol: frames over bubblewrap's stdin/stdout, never blocking.

The runner may be stopped, killed or flooding; every read and write here is non-blocking
under one deadline, stdout frames are size-checked before they are buffered whole, and
stderr (bubblewrap's own messages) is kept up to 64 KiB for error reports.
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import subprocess
import time
from dataclasses import dataclass, field


@dataclass
class Channel:
    """Frames to and from the runner over bwrap's stdin/stdout; stderr kept for messages.

    `send` only queues; queued bytes are written while `receive` waits, so the host can
    keep the runner one request ahead without ever blocking on a full pipe.
    """

    proc: subprocess.Popen
    max_frame: int
    stderr: bytearray = field(default_factory=bytearray)
    _buf: bytearray = field(default_factory=bytearray)
    _out: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.sel.register(self.proc.stderr, selectors.EVENT_READ)
        self._input_open = True

    def send(self, payload: bytes) -> None:
        """Queue one frame; it is written as the pipe accepts it."""
        if not self._input_open:
            return  # the runner is gone; its end of stream will tell the receiver
        self._out += len(payload).to_bytes(4, "big") + payload
        if not _registered(self.sel, self.proc.stdin):
            self.sel.register(self.proc.stdin, selectors.EVENT_WRITE)

    def receive(self, deadline: float) -> bytes:
        """The next frame from the runner; TimeoutError at the deadline, EOFError if it is gone."""
        while True:
            frame = self._take_frame()
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            for key, _ in self.sel.select(remaining):
                if key.fileobj is self.proc.stdin:
                    self._write_some()
                    continue
                chunk = os.read(key.fd, 1 << 20)
                if key.fileobj is self.proc.stderr:
                    if not chunk:
                        self.sel.unregister(self.proc.stderr)
                    self.stderr += chunk[: max(0, 65536 - len(self.stderr))]
                elif not chunk:
                    raise EOFError
                else:
                    self._buf += chunk

    def _write_some(self) -> None:
        try:
            del self._out[: os.write(self.proc.stdin.fileno(), self._out)]
        except BrokenPipeError:  # the runner exited (e.g. after a compile error)
            self._out.clear()
            self._input_open = False
        if not self._out:
            self.sel.unregister(self.proc.stdin)

    def close_input(self) -> None:
        """End of requests: the runner exits when it reads end of stream."""
        if _registered(self.sel, self.proc.stdin):
            self.sel.unregister(self.proc.stdin)
        self._out.clear()
        self._input_open = False
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    def _take_frame(self) -> bytes | None:
        if len(self._buf) < 4:
            return None
        size = int.from_bytes(self._buf[:4], "big")
        if size > self.max_frame:
            raise EOFError(f"runner sent a {size}-byte frame (limit {self.max_frame})")
        if len(self._buf) < 4 + size:
            return None
        frame = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        return frame

    def drain_stderr(self, timeout_s: float = 1.0) -> None:
        """After the process is gone: keep what is left of its stderr (bubblewrap's errors)."""
        if not _registered(self.sel, self.proc.stderr):
            return
        fd, deadline = self.proc.stderr.fileno(), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self.sel.unregister(self.proc.stderr)
                return
            self.stderr += chunk[: max(0, 65536 - len(self.stderr))]

    def close(self) -> None:
        self.sel.close()


def _registered(sel: selectors.BaseSelector, obj) -> bool:
    try:
        sel.get_key(obj)
    except (KeyError, ValueError):
        return False
    return True
