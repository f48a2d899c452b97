"""Scalar feature values are encoded for a whole column at once: the bytes and texts Feast writes."""

from __future__ import annotations

import pyarrow as pa
import pytest

CASES = {
    "int64_val": pa.array([0, 1, -1, 127, 128, 2**40, -(2**63), 2**63 - 1, None, 5], type=pa.int64()),
    "int32_val": pa.array([0, 1, -1, 300, -(2**31), 2**31 - 1, None], type=pa.int32()),
    "double_val": pa.array(
        [0.0, -0.0, 1.5, float("nan"), float("-inf"), 1e-300, None, 0.1], type=pa.float64()
    ),
    "float_val": pa.array([0.0, 0.1, -3.25, None, 1e30], type=pa.float32()),
    "string_val": pa.array(["", "brand é", None], type=pa.string()),
}


@pytest.mark.parametrize("field", sorted(CASES))
@pytest.mark.parametrize("offset", [0, 1])
def test_scalar_columns_encode_as_the_proto_class_and_feasts_text(field, offset):
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.protos.feast.types.Value_pb2 import Value

    from feature_repo.encoding import value_bytes, value_texts

    column = CASES[field].slice(offset)  # a sliced column keeps its own rows
    expected = [b"" if v is None else Value(**{field: v}).SerializeToString() for v in column.to_pylist()]
    encoded = value_bytes(column)
    assert [bytes(b) for b in encoded] == expected
    assert value_texts(column) == [extract_text_and_num(Value.FromString(b), False)[0] for b in expected]


def test_timestamps_encode_as_the_proto_class_from_the_datetime():
    from datetime import UTC, datetime, timedelta

    import numpy as np
    from google.protobuf.timestamp_pb2 import Timestamp

    from feature_repo.encoding import timestamps

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    stamps_us = np.array(
        [
            0,
            1,
            999_999,
            1_000_000,
            1_767_227_266_813_000,
            1_767_227_266_000_000,
            -1,
            -1_000_000,
            -86_400_123_456,
        ]
    )
    expected = []
    for us in stamps_us.tolist():
        stamp = Timestamp()
        stamp.FromDatetime(epoch + timedelta(microseconds=us))  # what Feast's Redis store writes
        expected.append(stamp.SerializeToString())
    assert timestamps(stamps_us) == expected
    assert timestamps(np.empty(0, dtype=np.int64)) == []
