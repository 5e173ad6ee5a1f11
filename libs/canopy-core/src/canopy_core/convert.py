"""Small protobuf conversions every service's api layer uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch (a naive time counts as UTC, as protobuf's)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MICROSECOND


def timestamp(value: datetime | None) -> Timestamp | None:
    """A Timestamp for a stored time (None stays unset). Integer arithmetic: protobuf's own
    FromDatetime goes through a time tuple, which costs more than the rest of a small read."""
    if value is None:
        return None
    seconds, micros = divmod(epoch_micros(value), 1_000_000)
    return Timestamp(seconds=seconds, nanos=micros * 1000)
