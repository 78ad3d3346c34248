import numpy as np
import pytest

from db.arrays import pack_f32, pack_i32, unpack_f32, unpack_i32


def test_token_ids_round_trip_as_four_bytes_each():
    ids = [0, 1, 151_643, 2**31 - 1]
    blob = pack_i32(ids)
    assert len(blob) == 4 * len(ids)
    assert unpack_i32(blob).tolist() == ids


def test_floats_round_trip_at_float32_precision_including_minus_infinity():
    values = [-0.1234567, 3.5, -np.inf, 0.0]
    out = unpack_f32(pack_f32(values))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.asarray(values, dtype=np.float32))


def test_encoding_is_little_endian_whatever_the_host():
    assert pack_i32([1]) == b"\x01\x00\x00\x00"


def test_out_of_range_ids_and_nan_are_refused_not_wrapped():
    with pytest.raises(ValueError, match="int32"):
        pack_i32([2**31])
    with pytest.raises(ValueError, match="NaN"):
        pack_f32([0.0, float("nan")])
    with pytest.raises(ValueError, match="whole number"):
        unpack_f32(b"\x00\x00\x00")


def test_empty_arrays_are_valid():
    assert unpack_i32(pack_i32([])).tolist() == []
