"""Host side of the runner protocol: frames over bubblewrap's stdin/stdout, never blocking.

The runner may be stopped, killed or flooding; every read and write here is non-blocking
under one deadline, stdout frames are size-checked before they are buffered whole, and
stderr (bubblewrap's own messages) is kept up to 64 KiB for error reports.
"""

from __future__ import annotations

import os
import select
import selectors
import subprocess
import time
from dataclasses import dataclass, field


@dataclass
class Channel:
    """Non-blocking frame exchange with the runner over bwrap's stdin/stdout; stderr kept."""

    proc: subprocess.Popen
    max_frame: int
    stderr: bytearray = field(default_factory=bytearray)
    _buf: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.sel.register(self.proc.stderr, selectors.EVENT_READ)

    def exchange(self, payload: bytes | None, deadline: float) -> bytes:
        """Send one frame (if any) and return the next one; raise TimeoutError or EOFError."""
        pending = memoryview(len(payload).to_bytes(4, "big") + payload) if payload is not None else None
        if pending is not None:
            self.sel.register(self.proc.stdin, selectors.EVENT_WRITE)
        try:
            while True:
                frame = self._take_frame()
                if frame is not None:
                    return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                for key, _ in self.sel.select(remaining):
                    if key.fileobj is self.proc.stdin:
                        try:
                            pending = pending[os.write(key.fd, pending) :]
                        except BrokenPipeError as exc:
                            raise EOFError from exc
                        if not pending:
                            self.sel.unregister(self.proc.stdin)
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
        finally:
            if _registered(self.sel, self.proc.stdin):
                self.sel.unregister(self.proc.stdin)

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
    except KeyError:
        return False
    return True
