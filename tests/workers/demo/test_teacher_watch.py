"""While the learner trains, the demo supervises the teacher's server like every other
child: one that dies is started again, and one that keeps dying stops the demo with its
name (URL and model) and the end of its log, instead of a learner waiting for audits that
never come."""

from __future__ import annotations

import sys

import pytest

from workers.demo.supervise import ChildFailed, Children, wait_supervised

NAME = "the teacher's vLLM server (model 'demo-teacher' at http://127.0.0.1:8123/v1)"


def test_a_teacher_server_that_keeps_dying_stops_the_demo_naming_it(tmp_path):
    said: list[str] = []
    children = Children({})
    try:
        learner = children.start("learner", [sys.executable, "-c", "import time; time.sleep(120)"])
        server = children.start(NAME, [sys.executable, "-c", "print('engine core died'); raise SystemExit(3)"],
                                tmp_path / "server.log")
        with pytest.raises(ChildFailed) as err:
            wait_supervised(learner, [children], said.append, max_restarts=2, poll_s=0.1)
        message = str(err.value)
        assert "'demo-teacher' at http://127.0.0.1:8123/v1" in message and "exited with code 3" in message
        assert "engine core died" in message
        assert server.restarts == 2 and sum("starting it again" in line for line in said) == 2
        assert learner.process.poll() is None  # the caller stops the rest (Children.stop)
    finally:
        children.stop()
