"""The sync interval both services derive from an integration: the one set, else 15 minutes,
or a day with an event queue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

from canopy.integration.v1 import integration_pb2 as pb
from canopy_core.event_queues import effective_sync_interval, sync_interval_seconds

QUEUE = "https://sqs.us-east-1.amazonaws.com/111111111111/canopy-org-events"


@pytest.mark.parametrize(
    ("configured", "queued", "expected"),
    [
        (None, False, timedelta(minutes=15)),
        (None, True, timedelta(hours=24)),
        (timedelta(hours=1), True, timedelta(hours=1)),
        (timedelta(minutes=15), True, timedelta(minutes=15)),
    ],
)
def test_the_default_interval_is_a_day_with_a_queue_and_a_set_one_wins(
    configured: timedelta | None, queued: bool, expected: timedelta
) -> None:
    assert effective_sync_interval(configured, queued) == expected


def test_discovery_reads_the_interval_of_an_integration_message() -> None:
    queued = pb.Integration(discovery_access=pb.AwsDiscoveryAccess(event_queue=QUEUE))
    assert sync_interval_seconds(queued) == 86_400
    assert sync_interval_seconds(pb.Integration()) == 900
    assert sync_interval_seconds(pb.Integration(sync_interval=Duration(seconds=0))) == 900
    queued.sync_interval.seconds = 3600
    assert sync_interval_seconds(queued) == 3600
