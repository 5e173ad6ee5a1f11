"""Events stamped on the wire decode exactly as if built field by field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import example, given
from hypothesis import strategies as st

from canopy.permissions.v1 import workspace_schema_pb2 as pb
from canopy.permissions.v1 import workspace_schema_service_pb2 as rpc
from canopy_core.convert import timestamp
from canopy_core.eventlog import StoredEvent
from canopy_core.wire import repeated, stamped, timestamp_bytes, varint

moments = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
@example(0)
@example(-1)
@example((1 << 63) - 1)
@example(-(1 << 63))
def test_varint_matches_protobuf(value: int) -> None:
    encoded = pb.SchemaEvent(revision=value).SerializeToString()
    assert encoded == (b"\x08" + varint(value) if value else b"")


@pytest.mark.parametrize("value", [(1 << n) + d for n in (7, 14, 21, 28, 35) for d in (-1, 0)])
def test_varint_at_each_width(value: int) -> None:
    assert pb.SchemaEvent(revision=value).SerializeToString() == b"\x08" + varint(value)


@given(moments)
def test_timestamp_bytes_match_protobuf(moment: datetime) -> None:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    assert Timestamp.FromString(timestamp_bytes(moment)) == stamp


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-7, minutes=-30))]),
    )
)
def test_timestamp_matches_protobuf_for_aware_and_naive_times(moment: datetime) -> None:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    assert timestamp(moment) == stamp


def test_no_time_is_no_timestamp() -> None:
    assert timestamp(None) is None


@given(
    st.integers(min_value=1, max_value=(1 << 62)),
    moments,
    st.text(max_size=40),
    st.text(max_size=40),
)
def test_a_stamped_event_decodes_with_its_revision_and_time(
    revision: int, moment: datetime, old: str, new: str
) -> None:
    payload = pb.SchemaEvent(
        workspace_id="w_1",
        schema_renamed=pb.SchemaRenamed(connection_id="c_1", old_name=old, new_name=new),
    ).SerializeToString()
    event = pb.SchemaEvent.FromString(
        stamped(StoredEvent(revision, "renamed", ("workspace:w_1",), payload, moment))
    )
    expected = pb.SchemaEvent.FromString(payload)
    expected.revision = revision
    expected.event_time.FromDatetime(moment)
    assert event == expected


@pytest.mark.parametrize("count", [0, 1, 3])
def test_repeated_builds_a_response(count: int) -> None:
    events = [
        pb.SchemaEvent(revision=i + 1, workspace_id=f"w_{i}", event_time=Timestamp(seconds=i))
        for i in range(count)
    ]
    wire = repeated(1, [e.SerializeToString() for e in events]) + b"\x10" + varint(99)
    reply = rpc.WatchWorkspaceSchemasResponse.FromString(wire)
    assert list(reply.events) == events
    assert reply.latest_revision == 99
