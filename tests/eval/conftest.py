"""Fixtures for sandbox tests: bubblewrap required (or skip), a held slot, leftover checks."""

from __future__ import annotations

import os

import pytest

from tests.conftest import unavailable


@pytest.fixture(scope="session")
def bwrap() -> str:
    """bubblewrap's path; skips (fails under OMNIOPD_REQUIRE_SANDBOX=1) when it is missing."""
    from eval.sandbox import find_bwrap, sandbox_python

    path = find_bwrap()
    if path is None:
        unavailable("bubblewrap", "bwrap is not on PATH (apt-get install bubblewrap)", "OMNIOPD_REQUIRE_SANDBOX")
    try:
        sandbox_python()
    except Exception as exc:
        unavailable("a system Python for the sandbox", exc, "OMNIOPD_REQUIRE_SANDBOX")
    return path


def _live_children(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is `pid`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in (b"Z", b"X"):
            found.append(int(name))
    return found


def _describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")[:120]
            with open(f"/proc/{pid}/status") as f:
                status = [line for line in f if line.startswith(("State", "PPid", "NSpid"))]
        except OSError:
            continue
        out.append(f"{pid} {cmd!r} {''.join(status)!r}")
    return out


@pytest.fixture
def slot(bwrap, held_slot):
    """A held slot (see held_slot) on a machine with bubblewrap."""
    return held_slot


@pytest.fixture
def held_slot():
    """A sandbox slot held by this test; afterwards nothing may run under its uid, and the
    test process may have no child left (bubblewrap, setpriv, anything they started)."""
    from eval.sandbox.slots import acquire_slot, uid_processes

    held = acquire_slot()
    before = set(_live_children(os.getpid()))
    try:
        yield held
    finally:
        # Sandbox.close() has returned: it promises an empty namespace and uid, no waiting.
        left = uid_processes(held.uid) if held.uid is not None else []
        children = set(_live_children(os.getpid())) - before
        held.release()
        assert not left, f"processes of sandbox uid {held.uid} survived: {_describe(left)}"
        assert not children, f"child processes of the test survived: {children}"


# ------------------------------------------------------------------ a scripted teacher server process


class ScriptedTeacher:
    """A running tests/eval/scripted_teacher.py: `url`, and the (item, seed) of every
    generation it served so far (`seeds()`)."""

    def __init__(self, proc, port: int, seeds_file) -> None:
        self.proc, self.port, self.seeds_file = proc, port, seeds_file

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seeds(self) -> list[tuple[str, int]]:
        import json

        if not self.seeds_file.exists():
            return []
        return [(r["item"], r["seed"]) for r in map(json.loads, self.seeds_file.read_text().splitlines())]


@pytest.fixture
def start_teacher(tmp_path_factory):
    """Start scripted teacher processes (`start_teacher(ttft_ms=..., faults=..., api_key=...)`);
    every one is terminated and reaped after the test, whatever happened."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).parents[2]
    procs = []

    def start(ttft_ms: float = 0.0, faults: str = "", api_key: str | None = None) -> ScriptedTeacher:
        folder = tmp_path_factory.mktemp("teacher")
        ready, seeds = folder / "port", folder / "seeds.jsonl"
        argv = [sys.executable, str(root / "tests/eval/scripted_teacher.py"), "--ready-file", str(ready),
                "--seeds-file", str(seeds), "--ttft-ms", str(ttft_ms), "--faults", faults]
        if api_key:
            argv += ["--api-key", api_key]
        proc = subprocess.Popen(argv, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the scripted teacher exited: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the scripted teacher did not start within 60 s")
            time.sleep(0.05)
        return ScriptedTeacher(proc, int(ready.read_text()), seeds)

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
