"""Following the integration service's tree log: what puts an integration on the schedule,
syncs it at once, or takes it off, and which event queues discovery follows. The cursor is
stored with the schedule changes it causes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence

import asyncpg

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import integration_pb2 as ipb
from canopy_core.consumer import Cursor, consume
from canopy_core.db import Database
from canopy_core.errors import OutOfRange
from canopy_core.event_queues import sync_interval_seconds
from canopy_core.eventlog import EventLog
from canopy_discovery import store
from canopy_discovery.integration_client import IntegrationClient
from canopy_discovery.model import Trigger
from canopy_discovery.runs import cancel_integration, request_sync

log = logging.getLogger(__name__)

CURSOR = Cursor("integration-tree-events")
# Changes after which the organization must be crawled again at once. `discovery_access` names
# a change of the discovery role or its external id; a change of the event queue alone is
# `discovery_access.event_queue` (and `sync_interval` when it changes the default interval):
# the organization has not changed, so it is not crawled again for it. A change of the filters
# (or of `exclude_management_account`) is crawled at once: the crawl honours the new filters and
# the snapshot it applies prunes what they now leave out.
RESYNC_FIELDS = frozenset(
    {
        "discovery_access",
        "member_access",
        "connection_config",
        "filters",
        "exclude_management_account",
    }
)

# Changes after which the integration's event queue is followed anew (or no longer).
QUEUE_FIELDS = frozenset({"discovery_access", "discovery_access.event_queue"})


async def follow_queue(conn: asyncpg.Connection, integration: ipb.Integration) -> None:
    """Follow the integration's event queue with its discovery role, or stop if it has none."""
    access = integration.discovery_access
    await store.set_event_queue(
        conn, integration.id, access.event_queue, access.role_arn, access.external_id
    )


def _interval(integration: ipb.Integration) -> int:
    return sync_interval_seconds(integration)


async def handle_events(
    conn: asyncpg.Connection, event_log: EventLog, events: Sequence[tree_pb.TreeEvent]
) -> None:
    """Apply one batch of tree events to the schedule, in the consumer's transaction."""
    for event in events:
        kind = event.WhichOneof("event")
        org_id = event.scope.org_id or None
        if kind == "integration_created":
            integration = event.integration_created.integration
            await store.upsert_schedule(
                conn, integration.id, event.tenant_id, org_id, _interval(integration)
            )
            await request_sync(
                conn,
                event_log,
                integration.id,
                event.tenant_id,
                org_id,
                _interval(integration),
                Trigger.CREATED,
            )
            await follow_queue(conn, integration)
        elif kind == "integration_updated":
            update = event.integration_updated
            changed = set(update.changed_fields)
            if "sync_interval" in changed:
                await store.set_schedule(
                    conn, event.integration_id, interval_seconds=_interval(update.after)
                )
            if changed & RESYNC_FIELDS:
                await request_sync(
                    conn,
                    event_log,
                    event.integration_id,
                    event.tenant_id,
                    org_id,
                    _interval(update.after),
                    Trigger.SETTINGS_CHANGED,
                )
            if changed & QUEUE_FIELDS:
                await follow_queue(conn, update.after)
        elif kind == "integration_deleted":
            await cancel_integration(conn, event_log, event.integration_id)


async def follow_tree_events(
    db: Database,
    event_log: EventLog,
    integrations: IntegrationClient,
    on_gap: Callable[[], None] = lambda: None,
) -> None:
    """Forever: consume the tree log from the stored cursor (exactly-once effect); `on_gap` is
    called when events were compacted before they were read (the schedule needs reconciling)."""

    async def subscribe(after: int) -> AsyncIterator[Sequence[tree_pb.TreeEvent]]:
        async for batch in integrations.watch(after):
            if batch:
                yield batch

    async def handle(conn: asyncpg.Connection, events: Sequence[tree_pb.TreeEvent]) -> None:
        await handle_events(conn, event_log, events)

    while True:
        try:
            await consume(db, CURSOR, subscribe, lambda e: e.revision, handle)
        except OutOfRange as exc:
            # Discovery was away longer than the tree log keeps events. Integrations already
            # scheduled keep their place and their interval; carry on after the gap, and have
            # the reconciler find what the gap created or deleted.
            resume = int(
                exc.metadata.get("compacted_through") or exc.metadata.get("latest_revision") or 0
            )
            log.error(
                "tree events were compacted before discovery read them; resuming after the gap",
                extra={"resume_after": resume},
            )
            async with db.transaction() as conn:
                await CURSOR.reset(conn, resume)
            on_gap()
