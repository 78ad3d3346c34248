"""The one pair of conversions between USD (config and output) and integer micro-dollars."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omniopd.money import MICROS_PER_USD, micros_to_usd, usd_to_micros


def test_usd_amounts_round_up_to_whole_micro_dollars():
    assert usd_to_micros("0.000001") == 1
    assert usd_to_micros(0.0000001) == 1  # never understated
    assert usd_to_micros("2.5") == 2_500_000
    assert usd_to_micros(0.1) == 100_000  # the float's decimal repr, not 0.1000000000000000055...
    assert usd_to_micros(0) == 0


@pytest.mark.parametrize("bad", [-1, -0.000001, float("nan"), float("inf")])
def test_negative_or_non_finite_amounts_are_refused(bad):
    with pytest.raises(ValueError, match="amount of money"):
        usd_to_micros(bad)


@given(st.integers(0, 10**15))
def test_whole_micro_dollars_survive_the_round_trip(micros):
    assert usd_to_micros(Decimal(micros) / MICROS_PER_USD) == micros
    assert micros_to_usd(micros) == pytest.approx(micros / 1e6)
