"""Protobuf of discovery records (no grpc here: run events use it too)."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf.duration_pb2 import Duration

from canopy.discovery.v1 import discovery_pb2 as pb
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy_core.convert import timestamp
from canopy_discovery.model import SyncRun


def run_to_proto(run: SyncRun) -> pb.SyncRun:
    """The API view of a run."""
    elapsed = Duration()
    elapsed.FromTimedelta(timedelta(seconds=run.progress.elapsed_seconds))
    message = pb.SyncRun(
        id=run.id,
        integration_id=run.integration_id,
        state=pb.SyncRunState.Value(f"SYNC_RUN_STATE_{run.state.value}"),
        trigger=pb.SyncTrigger.Value(f"SYNC_TRIGGER_{run.trigger.value}"),
        confirm_deletions=run.confirm_deletions,
        attempt=run.attempt,
        progress=pb.SyncProgress(
            organizational_units_found=run.progress.organizational_units_found,
            accounts_found=run.progress.accounts_found,
            api_calls=run.progress.api_calls,
            throttled_calls=run.progress.throttled_calls,
            elapsed=elapsed,
            organizational_units_refused=run.progress.organizational_units_refused,
            refused_organizational_unit_ids=run.progress.refused_organizational_unit_ids,
        ),
        failure_reason=run.failure_reason,
        failure_message=run.failure_message,
        organization_id=run.organization_id,
        create_time=timestamp(run.create_time),
        start_time=timestamp(run.start_time),
        end_time=timestamp(run.end_time),
        update_time=timestamp(run.update_time),
        etag=run.etag,
        event_count=run.event_count,
        full_crawl_reason=run.full_crawl_reason,
    )
    for event in run.events:
        message.events.add(
            event_id=event.event_id,
            event_name=event.event_name,
            entity_id=event.entity_id,
            event_time=timestamp(event.event_time),
        )
    if run.summary is not None:
        message.summary.ParseFromString(run.summary)
    if run.apply_outcome:
        message.apply_outcome = tree_pb.ApplyOutcome.Value(f"APPLY_OUTCOME_{run.apply_outcome}")
    return message
