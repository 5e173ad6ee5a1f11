"""Small protobuf conversions every service's api layer uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from canopy_core.errors import InvalidArgument

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# The ranges protobuf defines for Duration (±10,000 years) and Timestamp (years 1 to 9999):
# past them Python's timedelta and datetime overflow, and no client can mean such a value.
MAX_DURATION_SECONDS = 315_576_000_000
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_NANOS = 999_999_999


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


def to_timedelta(value: Duration, field: str) -> timedelta:
    """A request's Duration; INVALID_ARGUMENT naming `field` outside protobuf's range."""
    if abs(value.seconds) > MAX_DURATION_SECONDS or abs(value.nanos) > MAX_NANOS:
        raise InvalidArgument.field(field, "must be a duration of at most 10,000 years")
    # Nanoseconds toward zero, as protobuf's own ToTimedelta.
    return timedelta(seconds=value.seconds, microseconds=int(value.nanos / 1000))


def to_datetime(value: Timestamp, field: str) -> datetime:
    """A request's Timestamp (UTC); INVALID_ARGUMENT naming `field` outside protobuf's range."""
    if (
        not MIN_TIMESTAMP_SECONDS <= value.seconds <= MAX_TIMESTAMP_SECONDS
        or not 0 <= value.nanos <= MAX_NANOS
    ):
        raise InvalidArgument.field(field, "must be a time from year 1 to year 9999")
    return _EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)
