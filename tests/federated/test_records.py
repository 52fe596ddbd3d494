"""fedicd.federated.records: the one-copy codec writes Flower's exact bytes and reads them back exactly."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedicd.federated.records import decode_array, encode_array, from_record, message_bytes, to_record

DTYPES = st.sampled_from(["<f4", ">f4", "<f8", "<f2", "<i8", ">i2", "|u1", "|b1", "<c8", "<U3", "|S2", "<M8[s]"])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape, memory order and bytes (NaN payloads included)."""
    return (a.dtype == b.dtype and a.shape == b.shape and a.flags.f_contiguous == b.flags.f_contiguous
            and a.tobytes("A") == b.tobytes("A"))


@settings(deadline=None, max_examples=60)
@given(DTYPES.flatmap(lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                                           max_side=5))),
       st.booleans(), st.booleans())
def test_encoding_is_flowers_bytes_and_decoding_is_flowers_array(arr, fortran, strided):
    if fortran:
        arr = np.asfortranarray(arr)
    if strided and arr.ndim:
        arr = arr[::2]
    ours = encode_array(arr)
    flowers = Array(np.ascontiguousarray(arr))
    assert (ours.data, ours.dtype, ours.shape, ours.stype) == (flowers.data, flowers.dtype, flowers.shape,
                                                               flowers.stype)
    for stored in (ours, Array(arr)):  # Array(arr) keeps a Fortran array's order in the .npy header
        expected = stored.numpy()
        got = decode_array(stored)
        assert _same(got, expected) and got.flags.writeable
        view = decode_array(stored, copy=False)
        assert _same(view, expected) and not view.flags.writeable


def test_a_model_round_trips_bit_for_bit_and_copies_are_independent():
    rng = np.random.default_rng(0)
    arrays = {"net.0.weight": rng.standard_normal((8, 5), dtype=np.float32), "net.0.bias": np.full(8, np.nan, "<f4"),
              "steps": np.array(3, dtype=np.int64)}
    record = to_record(arrays)
    assert list(record.keys()) == list(arrays)
    back = from_record(record)
    assert all(_same(back[k], arrays[k]) for k in ("net.0.weight", "net.0.bias"))
    assert _same(back["steps"], np.array([3], dtype=np.int64))  # np.ascontiguousarray: at least 1-D, as before
    back["net.0.weight"][0, 0] = 99.0  # a writable copy: the message is untouched
    assert from_record(record)["net.0.weight"][0, 0] == arrays["net.0.weight"][0, 0]
    with pytest.raises(ValueError, match="read-only"):
        from_record(record, copy=False)["net.0.weight"][0, 0] = 1.0
    assert message_bytes([]) == 0


def test_a_header_of_version_2_is_written_and_read_as_numpy_does():
    dt = np.dtype([(f"field_{i:05d}", "<f4") for i in range(3000)])  # > 65535 header bytes: .npy version 2.0
    arr = np.zeros(2, dtype=dt)
    ours, flowers = encode_array(arr), Array(arr)
    assert ours.data[6] == 2 and ours.data == flowers.data
    with pytest.raises(ValueError, match="max_header_size"):  # numpy refuses to parse it; so do we, with its error
        decode_array(ours)


def test_what_numpy_refuses_is_refused_with_flowers_errors():
    with pytest.raises(ValueError, match="allow_pickle"):
        encode_array(np.array([{"a": 1}], dtype=object))
    truncated = Array(dtype="float32", shape=(4,), stype="numpy.ndarray", data=encode_array(np.ones(4, "<f4")).data[:-4])
    with pytest.raises(ValueError):
        decode_array(truncated)
    other = Array(dtype="float32", shape=(1,), stype="torch.raw", data=b"\x00" * 4)
    with pytest.raises(TypeError, match="Unsupported serialization type"):
        decode_array(other)
    assert from_record(ArrayRecord()) == {}
