"""Without bubblewrap the sandbox refuses, unless the weaker mode is explicitly chosen."""

from __future__ import annotations

import pytest

import eval.sandbox.box as box_module
from eval.code import grade_code
from eval.sandbox import Limits, Sandbox, SandboxUnavailable, run_program

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def no_bwrap(monkeypatch):
    monkeypatch.setattr(box_module, "find_bwrap", lambda: None)


def test_missing_bubblewrap_is_refused_with_the_install_command(no_bwrap):
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        run_program("print(1)\n")
    with pytest.raises(SandboxUnavailable, match="allow_unsandboxed"):
        grade_code("```python\nprint(1)\n```", [{"input": "", "output": "1"}])


def run_unsandboxed(source: str, slot, stdin: bytes = b"", **limits):
    with Sandbox(source, limits=Limits(**limits), slot=slot, allow_unsandboxed=True) as box:
        assert box.compiled.ok and not box.sandboxed
        return box.run(stdin)


def test_unsandboxed_mode_needs_opt_in_and_warns_loudly(no_bwrap, held_slot):
    with pytest.warns(RuntimeWarning, match="UNSANDBOXED"):
        result = run_unsandboxed("import os\nprint(input()[::-1], os.getuid())\n", held_slot, b"abc\n", time_s=2)
    assert result.status == "ok"
    word, uid = result.stdout.split()
    assert word == b"cba"
    if held_slot.uid is not None:  # as root the weaker mode still drops to the slot's uid
        assert int(uid) == held_slot.uid


def test_unsandboxed_mode_still_enforces_limits_and_cleans_up(no_bwrap, held_slot):
    with pytest.warns(RuntimeWarning):
        loop = run_unsandboxed("while True:\n    pass\n", held_slot, time_s=0.5)
        hog = run_unsandboxed("x = bytearray(10**9)\n", held_slot, memory_mb=128)
    assert loop.status == "time_limit" and hog.status == "memory_limit"
    if held_slot.uid is not None:  # as root a daemon is swept by uid; as a user it would escape
        with pytest.warns(RuntimeWarning):
            daemon = run_unsandboxed("import subprocess\nsubprocess.Popen(['sleep', '3600'], start_new_session=True)\n", held_slot)
        assert daemon.status == "ok"  # held_slot's teardown checks the daemon did not survive


def test_host_deadline_kills_a_runner_that_stops_answering(no_bwrap, held_slot):
    # Only possible in the weaker mode: in the sandbox the runner is pid 1 and cannot be stopped.
    if held_slot.uid is None:
        pytest.skip("not root: a stopped runner would share our uid")
    with pytest.warns(RuntimeWarning):
        result = run_unsandboxed(
            "import os, signal, time\nos.kill(os.getppid(), signal.SIGSTOP)\ntime.sleep(3600)\n",
            held_slot, time_s=0.5, host_grace_s=1.0,
        )  # fmt: skip
    assert result.status == "time_limit" and "host deadline" in result.note
