"""The outage log of a service (omniopd/unreachable.py): one warning when it goes away,
naming its URL with the password hidden; reminders at most every `remind_s`; one line when
it is back; nothing while it answers."""

from __future__ import annotations

import logging

from omniopd.unreachable import Unreachable


def test_one_warning_a_reminder_per_interval_and_one_recovery_line(caplog):
    now = [0.0]
    state = Unreachable("broker", logging.getLogger("test.unreachable"), remind_s=30, clock=lambda: now[0])
    url = "amqp://guest:s3cret@127.0.0.1:5672/vh"
    with caplog.at_level(logging.WARNING, logger="test.unreachable"):
        assert not state.succeeded(url, "sent")  # no outage: nothing to say
        for t in (0, 1, 2, 29, 31, 40, 62):
            now[0] = t
            state.failed(url, ConnectionRefusedError(111, "Connection refused"), "3 message(s) wait in the outbox")
        now[0] = 70
        assert state.succeeded(url, "the relay re-sent 3 message(s)")
        assert not state.succeeded(url, "sent")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert lines[0].startswith("broker unreachable at amqp://guest:***@127.0.0.1:5672/vh (ConnectionRefusedError")
    assert "3 message(s) wait in the outbox" in lines[0]
    assert lines[1].startswith("broker still unreachable at amqp://guest:***@127.0.0.1:5672/vh after 31 s (5 failed")
    assert lines[2].startswith("broker still unreachable at") and "after 62 s" in lines[2]
    assert lines[3] == "broker reachable again at amqp://guest:***@127.0.0.1:5672/vh after 70 s: the relay re-sent 3 message(s)"
    assert all("s3cret" not in line for line in lines)
