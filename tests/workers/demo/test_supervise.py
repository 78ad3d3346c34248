"""The demo's supervisor with real processes: a child that dies while the learner runs is
started again; one that keeps dying stops the demo with its name and its log."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from tests.workers.conftest import pid_alive, wait_for
from workers.demo.supervise import ChildFailed, Children, wait_supervised


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_killed_child_is_started_again_while_the_main_child_runs(tmp_path):
    children = Children(dict(os.environ))
    said: list[str] = []
    try:
        worker = children.start("audit worker", python("import time; time.sleep(120)"), tmp_path / "audit.log")
        first = worker.process.pid
        main = children.start("learner", python("import time; time.sleep(6)"))
        os.kill(first, signal.SIGKILL)
        assert wait_supervised(main, [children], said.append, poll_s=0.1) == 0
        assert worker.restarts == 1 and worker.process.pid != first and pid_alive(worker.process.pid)
        assert said == [f"audit worker exited with code -9 (log: {tmp_path / 'audit.log'}); starting it again "
                        "(restart 1 of at most 3)"]
    finally:
        children.stop(timeout_s=5)


def test_a_child_that_keeps_dying_stops_the_supervisor_with_its_name_and_log(tmp_path):
    children = Children(dict(os.environ))
    said: list[str] = []
    log = tmp_path / "rollout.log"
    try:
        children.start("rollout worker", python("import sys; print('out of memory'); sys.exit(3)"), log)
        main = children.start("learner", python("import time; time.sleep(120)"))
        started = time.monotonic()
        with pytest.raises(ChildFailed, match=r"rollout worker exited with code 3 \(log: .*rollout.log\):\nout of memory"):
            wait_supervised(main, [children], said.append, max_restarts=2, poll_s=0.1)
        assert time.monotonic() - started < 30 and main.process.poll() is None
        assert len(said) == 3 and said[-1].startswith("rollout worker died 3 times; stopping the demo")
    finally:
        children.stop(timeout_s=5)
    wait_for(lambda: main.process.poll() is not None, 10, "the learner to be stopped")
