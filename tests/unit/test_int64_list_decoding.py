"""feature_repo.encoding.decode_int64_lists: the vectorized reader of serialized int64-list Values."""

from __future__ import annotations

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import Int64List, Value

from feature_repo.encoding import decode_int64_lists, int64_list

EDGES = [0, 1, 127, 128, 16_383, 16_384, 2**62, 2**63 - 1, -1, -(2**63), 1_733_000_000_000]


def _serialized(values: list[int]) -> bytes:
    return Value(int64_list_val=Int64List(val=values)).SerializeToString()


def test_decodes_what_protobuf_writes_for_every_width_and_sign():
    rng = np.random.default_rng(7)
    arrays = [
        [],
        EDGES,
        rng.integers(-(2**63), 2**63 - 1, size=1_000).tolist(),
        *(rng.integers(0, 2**41, size=n).tolist() for n in (1, 2, 30, 300)),
    ]
    decoded = decode_int64_lists([_serialized(values) for values in arrays])
    assert [array.tolist() for array in decoded] == arrays
    assert all(array.dtype == np.int64 for array in decoded)


def test_round_trips_the_vectorized_encoder():
    values = np.array(EDGES * 3, dtype=np.int64)
    [decoded] = decode_int64_lists([int64_list(values)])
    np.testing.assert_array_equal(decoded, values)


def test_an_empty_value_and_an_empty_list_read_empty():
    empty_list = _serialized([])
    assert empty_list != b""  # the int64_list_val field is set, with no values
    assert [a.tolist() for a in decode_int64_lists([b"", empty_list, _serialized([5])])] == [[], [], [5]]
    assert decode_int64_lists([]) == []


def test_other_valid_layouts_read_as_the_proto_class_reads_them():
    # Unpacked values (field 1 as varints, one tag each) and a packed list split in two fields
    # are valid encodings another writer may produce.
    unpacked_inner = bytes([0x08, 0x05, 0x08, 0x96, 0x01])  # val: 5, 150
    unpacked = bytes([14 << 3 | 2, len(unpacked_inner)]) + unpacked_inner
    split_inner = bytes([0x0A, 0x01, 0x07, 0x0A, 0x02, 0x96, 0x01])  # packed [7] then packed [150]
    split = bytes([14 << 3 | 2, len(split_inner)]) + split_inner
    scalar = Value(int64_val=3).SerializeToString()  # not a list: reads as an empty list
    blobs = [unpacked, _serialized([1, 2]), split, scalar]
    expected = [list(Value.FromString(blob).int64_list_val.val) for blob in blobs]
    assert expected == [[5, 150], [1, 2], [7, 150], []]
    assert [array.tolist() for array in decode_int64_lists(blobs)] == expected


def test_bytes_that_are_not_varints_are_refused():
    body = bytes([0x96])  # a varint whose last byte says more follow
    cut = bytes([14 << 3 | 2, len(body) + 2, 0x0A, len(body)]) + body
    with pytest.raises(ValueError, match="ends inside a varint"):
        decode_int64_lists([_serialized([1]), cut])
    long_body = bytes([0xFF] * 10 + [0x01])  # 11 bytes: past a 64-bit varint
    too_long = bytes([14 << 3 | 2, len(long_body) + 2, 0x0A, len(long_body)]) + long_body
    with pytest.raises(ValueError, match="longer than 10 bytes"):
        decode_int64_lists([too_long])


@pytest.mark.parametrize(
    "values",
    [
        [1_733_000_000_000 + i for i in range(50)],  # every value 6 bytes: the encoder's matrix path
        [3] * 7,  # every value 1 byte
        [-1, -(2**63)],  # every value 10 bytes
        [0, 1_733_000_000_000, 5],  # mixed sizes
    ],
)
def test_the_vectorized_encoder_writes_what_protobuf_writes(values):
    assert int64_list(np.array(values, dtype=np.int64)) == _serialized(values)
    [decoded] = decode_int64_lists([int64_list(np.array(values, dtype=np.int64))])
    assert decoded.tolist() == values
