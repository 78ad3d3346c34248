"""Child processes of a supervising command (`omniopd demo`): start, watch, stop, never orphan.

Every child is started with PR_SET_PDEATHSIG, so the kernel sends it SIGTERM if the
supervisor dies, even by SIGKILL. Children share the supervisor's process group, so a
Ctrl-C in the terminal reaches them all at once (each shuts down its own way: workers
finish or requeue their task, the learner finishes its step and checkpoints);
`Children.stop` then waits for them and kills what is left.

While the main child (the learner) runs, `wait_supervised` watches the others: one that
dies (a crash, the OOM killer, a SIGKILL) is started again with the same command, and
after `max_restarts` deaths of the same child the supervisor stops with a message naming
it and its log, instead of waiting for work that no process will do.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: Children.stop still ends them
        return
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


def omniopd_command(*args: str) -> list[str]:
    """`python -m omniopd ARGS` with this interpreter (works from a checkout or an install)."""
    return [sys.executable, "-m", "omniopd", *args]


@dataclass
class Child:
    """One started process, its name for messages and its log file (None: inherits stdout)."""

    name: str
    process: subprocess.Popen
    log: Path | None
    command: list[str] = field(default_factory=list)
    restarts: int = 0

    def tail(self, lines: int = 15) -> str:
        if self.log is None or not self.log.is_file():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Children:
    """The supervisor's children; stop() is idempotent and safe on every exit path."""

    env: dict[str, str]
    items: list[Child] = field(default_factory=list)

    def start(self, name: str, command: Sequence[str], log: Path | None = None) -> Child:
        child = Child(name, self._spawn(command, log), log, list(command))
        self.items.append(child)
        return child

    def restart(self, child: Child) -> None:
        """Start `child`'s command again in its place (the same object, so references to
        it see the new process)."""
        child.process = self._spawn(child.command, child.log)
        child.restarts += 1

    def _spawn(self, command: Sequence[str], log: Path | None) -> subprocess.Popen:
        parent = os.getpid()
        out = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = log.open("ab")
        try:
            process = subprocess.Popen(
                list(command), env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None,
                stdin=subprocess.DEVNULL, preexec_fn=lambda: _die_with_parent(parent),
            )
        finally:
            if out is not None:
                out.close()
        return process

    def check_alive(self) -> None:
        """Raise if a long-running child has exited (with the end of its log)."""
        for child in self.items:
            code = child.process.poll()
            if code is not None:
                raise ChildFailed(child, code)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every live child (newest first), wait up to `timeout_s`, then SIGKILL."""
        live = [c for c in reversed(self.items) if c.process.poll() is None]
        for child in live:
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in live:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self.items.clear()


class ChildFailed(RuntimeError):
    """A child process exited while it was needed."""

    def __init__(self, child: Child, code: int):
        tail = child.tail()
        where = f" (log: {child.log})" if child.log else ""
        super().__init__(f"{child.name} exited with code {code}{where}" + (f":\n{tail}" if tail else ""))
        self.child, self.code = child, code


def wait_supervised(main: Child, groups: Sequence[Children], say: Callable[[str], None], *, max_restarts: int = 3,
                    poll_s: float = 1.0, also: Callable[[], None] | None = None) -> int:
    """Wait for `main` to exit and return its exit code; meanwhile restart every other
    child of `groups` that dies (exits with a non-zero code or a signal), at most `max_restarts` times each, then raise ChildFailed
    naming it. `also` runs on every poll (e.g. restarting the embedded broker)."""
    while True:
        code = main.process.poll()
        if code is not None:
            return code
        for group in groups:
            for child in group.items:
                if child is main or (code := child.process.poll()) in (None, 0):
                    continue  # running, or finished its work (the evaluator, once the run is done)
                where = f" (log: {child.log})" if child.log else ""
                if child.restarts >= max_restarts:
                    say(f"{child.name} died {child.restarts + 1} times; stopping the demo{where}")
                    raise ChildFailed(child, code)
                say(f"{child.name} exited with code {code}{where}; starting it again "
                    f"(restart {child.restarts + 1} of at most {max_restarts})")
                group.restart(child)
        if also is not None:
            also()
        time.sleep(poll_s)


def run_command(command: Sequence[str], env: dict[str, str], *, what: str, capture: bool = True) -> str:
    """Run a short command to completion; raise with its output if it fails."""
    parent = os.getpid()
    result = subprocess.run(
        list(command), env=env, stdin=subprocess.DEVNULL, capture_output=capture, text=True,
        preexec_fn=lambda: _die_with_parent(parent),
    )
    if result.returncode == 130:
        raise KeyboardInterrupt
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip() if capture else ""
        raise RuntimeError(f"{what} failed (exit {result.returncode})" + (f":\n{detail}" if detail else ""))
    return result.stdout if capture else ""


def wait_for_port(port: int, child: Child, timeout_s: float = 60.0) -> None:
    """Block until 127.0.0.1:port accepts connections (or the child dies)."""
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise ChildFailed(child, child.process.returncode)
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{child.name} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
