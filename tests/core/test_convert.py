"""Durations and times from requests: converted as protobuf does within protobuf's ranges, and
refused with the field named past them (where Python's timedelta and datetime overflow)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from canopy_core.convert import (
    MAX_DURATION_SECONDS,
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    to_datetime,
    to_timedelta,
)
from canopy_core.errors import InvalidArgument


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (0, 0),
        (900, 0),
        (1, -1500),
        (-1, 1500),
        (MAX_DURATION_SECONDS, 999_999_999),
        (-MAX_DURATION_SECONDS, -999_999_999),
    ],
)
def test_a_duration_within_protobufs_range_converts_as_protobuf_does(
    seconds: int, nanos: int
) -> None:
    duration = Duration(seconds=seconds, nanos=nanos)
    assert to_timedelta(duration, "sync_interval") == duration.ToTimedelta()


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(2**63 - 1, 0), (-(2**63), 0), (MAX_DURATION_SECONDS + 1, 0), (0, 1_000_000_000)],
)
def test_a_duration_past_protobufs_range_is_invalid_naming_the_field(
    seconds: int, nanos: int
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        to_timedelta(Duration(seconds=seconds, nanos=nanos), "integration.sync_interval")
    assert [v.field for v in caught.value.violations] == ["integration.sync_interval"]


def test_times_from_year_1_to_year_9999_convert_exactly() -> None:
    assert to_datetime(Timestamp(seconds=MIN_TIMESTAMP_SECONDS), "t") == datetime(
        1, 1, 1, tzinfo=UTC
    )
    last = Timestamp(seconds=MAX_TIMESTAMP_SECONDS, nanos=999_999_999)
    assert to_datetime(last, "t") == datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    stamp = Timestamp(seconds=1_700_000_000, nanos=123_456_000)
    assert to_datetime(stamp, "t") == stamp.ToDatetime(tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (2**63 - 1, 0),
        (-(2**63), 0),
        (MAX_TIMESTAMP_SECONDS + 1, 0),
        (MIN_TIMESTAMP_SECONDS - 1, 0),
        (0, -1),
        (0, 1_000_000_000),
    ],
)
def test_a_time_past_protobufs_range_is_invalid_naming_the_field(seconds: int, nanos: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        to_datetime(Timestamp(seconds=seconds, nanos=nanos), "snapshot.accounts[0].joined_time")
    assert [v.field for v in caught.value.violations] == ["snapshot.accounts[0].joined_time"]
