"""While the learner trains, the demo watches the teacher's server: a server that dies stops
the demo at once with its name (URL and model) and the end of its log, instead of a learner
waiting for audits that never come."""

from __future__ import annotations

import sys
import time

import pytest

from workers.demo.run import _wait_for_learner
from workers.demo.supervise import ChildFailed, Children


def test_a_dead_teacher_server_stops_the_wait_naming_it(tmp_path):
    children = Children({})
    try:
        learner = children.start("learner", [sys.executable, "-c", "import time; time.sleep(60)"])
        server = children.start(
            "the teacher's vLLM server (model 'demo-teacher' at http://127.0.0.1:8123/v1)",
            [sys.executable, "-c", "import sys, time; time.sleep(0.5); print('engine core died'); sys.exit(3)"],
            tmp_path / "server.log",
        )
        started = time.monotonic()
        with pytest.raises(ChildFailed) as err:
            _wait_for_learner(learner, [server], poll_s=0.1)
        assert time.monotonic() - started < 10
        message = str(err.value)
        assert "'demo-teacher' at http://127.0.0.1:8123/v1" in message and "exited with code 3" in message
        assert "engine core died" in message
        assert learner.process.poll() is None  # the caller stops the rest (Children.stop)
    finally:
        children.stop()


def test_the_learner_s_exit_code_is_returned_while_the_server_lives():
    children = Children({})
    try:
        learner = children.start("learner", [sys.executable, "-c", "import sys; sys.exit(0)"])
        server = children.start("server", [sys.executable, "-c", "import time; time.sleep(60)"])
        assert _wait_for_learner(learner, [server], poll_s=0.1) == 0
    finally:
        children.stop()
