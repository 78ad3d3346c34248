"""The per-test wait budget (tests/conftest.py): a test's waits together fit inside its timeout."""

from __future__ import annotations

import time

import pytest

from tests.conftest import WAIT_MARGIN_S, wait_left
from tests.workers.conftest import wait_for


@pytest.mark.timeout(WAIT_MARGIN_S + 3)
def test_waits_are_capped_by_what_is_left_of_the_tests_timeout() -> None:
    assert wait_left(1000) <= 3
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after .* waiting for nothing"):
        wait_for(lambda: False, 1000, "nothing", interval=0.05)  # fails by itself, before pytest-timeout would
    assert time.monotonic() - start < WAIT_MARGIN_S
    assert wait_left(5) >= 1  # never below 1 s


def test_a_short_wait_is_left_as_it_is() -> None:
    assert wait_left(2.5) == 2.5  # the global timeout (600 s) leaves plenty
