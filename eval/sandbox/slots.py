"""Worker slots of the code sandbox: one unprivileged uid per slot, held with a file lock.

A slot's uid is what keeps concurrent samples apart beyond their namespaces: RLIMIT_NPROC
counts per uid, kill(2) fails across uids, and the final sweep after a sample may kill
every process of its uid. That is only safe if no two live sandboxes share a uid, so a
slot is taken with an exclusive flock (released by the kernel if the holder dies) and
`acquire_slot` skips slots other processes on this host hold.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from dataclasses import dataclass

LOCK_DIR = "/run/omniopd-sandbox"
DEFAULT_UID_BASE = 60000
DEFAULT_MAX_SLOTS = 256


@dataclass
class Slot:
    """A held worker slot. `uid` is None when we are not root (the sandbox keeps our uid)."""

    index: int
    uid: int | None
    lock_fd: int | None = None

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # drops the flock
            self.lock_fd = None


def acquire_slot(
    preferred: int | None = None,
    *,
    uid_base: int = DEFAULT_UID_BASE,
    max_slots: int = DEFAULT_MAX_SLOTS,
    wait_s: float = 60.0,
) -> Slot:
    """Take a free slot (`preferred` first), waiting up to `wait_s` for one to free up."""
    if os.geteuid() != 0:
        return Slot(preferred or 0, None)
    if not 0 < uid_base < 65534 - max_slots:
        raise ValueError(f"uid_base {uid_base} leaves no room for {max_slots} slot uids below 65534")
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    order = list(range(max_slots))
    if preferred is not None:
        order.remove(preferred % max_slots)
        order.insert(0, preferred % max_slots)
    deadline = time.monotonic() + wait_s
    while True:
        for index in order:
            fd = os.open(f"{LOCK_DIR}/slot-{uid_base + index}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return Slot(index, uid_base + index, fd)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"all {max_slots} sandbox slots (uids {uid_base}..{uid_base + max_slots - 1}) are busy; "
                "use fewer grading workers or raise max_slots"
            )
        time.sleep(0.05)


def uid_processes(uid: int) -> list[int]:
    """Pids of live (not zombie) processes whose real, effective or saved uid is `uid`."""
    pids, key = [], str(uid).encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"State:") and line.split()[1] in (b"Z", b"X"):
                        break  # reaped by its parent, holds nothing
                    if line.startswith(b"Uid:"):
                        if key in line.split()[1:4]:
                            pids.append(int(name))
                        break
        except OSError:  # exited meanwhile
            continue
    return pids


def kill_uid_processes(uid: int, timeout_s: float = 2.0) -> int:
    """SIGKILL every process of `uid` until none is left; returns how many were found."""
    found: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while (pids := uid_processes(uid)) and time.monotonic() < deadline:
        found.update(pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    return len(found)
