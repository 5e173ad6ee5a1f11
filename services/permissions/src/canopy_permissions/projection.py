"""Following the integration service's tree log into this service's projection of the tree,
and from there into every affected workspace's schemas. The cursor is stored in the same
transaction as the projection and the schema events: exactly-once effect across crashes.

A service that was away longer than the tree log keeps events cannot replay what it missed: it
rebuilds its projection from every integration's current tree instead (`resync`), publishes the
differences to the workspaces as ordinary schema events, and follows the log again from there."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import asyncpg
import grpc

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as ipb
from canopy.integration.v1 import integration_service_pb2 as irpc
from canopy.integration.v1 import integration_service_pb2_grpc as igrpc
from canopy.type.v1 import types_pb2
from canopy_core.consumer import Cursor, consume
from canopy_core.db import Database
from canopy_core.errors import OutOfRange, Unavailable
from canopy_core.eventlog import EventLog
from canopy_core.remote import error_info
from canopy_permissions import schemas, store
from canopy_permissions.sharing import RemovedReason, TreeConnection

log = logging.getLogger(__name__)

CURSOR = Cursor("integration-tree-events")


def _connection(message: tree_pb.Connection) -> TreeConnection:
    return TreeConnection(
        id=message.id,
        integration_id=message.integration_id,
        folder_id=message.folder_id,
        handle=message.handle,
        account_id=message.account_id,
        account_name=message.account_name,
        config=message.effective_config.SerializeToString(),
    )


def initial_grants(
    integration: ipb.Integration, permissions: ipb.RootFolderPermissions
) -> list[tuple[str, str]]:
    """The grants a new integration's root folder starts with, as (kind, id)."""
    mode = permissions.mode
    org_id = integration.scope.org_id or None
    if mode == ipb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES:
        # Org scope only; the tenant grant is for events of tenant-scoped integrations created
        # before the integration service refused that combination.
        return [("org", org_id)] if org_id else [("tenant", integration.tenant_id)]
    if mode == ipb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_ORGS:
        return [("tenant", integration.tenant_id)]
    found = []
    for grantee in permissions.grantees:
        kind = grantee.WhichOneof("grantee")
        if kind:
            found.append((kind.removesuffix("_id"), getattr(grantee, kind)))
    return found


async def _project_integration(conn: asyncpg.Connection, integration: ipb.Integration) -> None:
    await store.project_integration(
        conn,
        integration.id,
        integration.tenant_id,
        integration.scope.org_id or None,
        integration.handle,
    )


async def apply_tree_events(
    conn: asyncpg.Connection, event_log: EventLog, events: Sequence[tree_pb.TreeEvent]
) -> None:
    """Project one batch of tree events and update the workspaces they affect."""
    await store.lock_sharing(conn, [e.integration_id for e in events])
    structural: set[str] = set()  # integrations whose workspaces are recomputed
    # connection → (integration, handle, config, whether the config changed), in place
    renamed: dict[str, tuple[str, str, bytes, bool]] = {}
    deleted: dict[str, RemovedReason] = {}
    upserts: dict[str, TreeConnection] = {}
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "integration_created":
            integration = event.integration_created.integration
            await _project_integration(conn, integration)
            grantees = initial_grants(integration, event.integration_created.initial_permissions)
            if grantees:
                await store.replace_grants(
                    conn, integration.root_folder_id, integration.id, grantees
                )
                await store.bump_grant_version(conn, integration.root_folder_id)
        elif kind == "integration_updated":
            await _project_integration(conn, event.integration_updated.after)
        elif kind == "integration_deleted":
            await _flush(conn, upserts)
            await schemas.refresh(conn, event_log, event.integration_id, deleted_reasons=deleted)
            await store.forget_integration(conn, event.integration_id)
            structural.discard(event.integration_id)
        elif kind == "folder_created":
            folder = event.folder_created.folder
            await store.project_folder(
                conn, folder.id, folder.integration_id, folder.parent_folder_id or None
            )
        elif kind == "folder_updated":
            before, after_folder = event.folder_updated.before, event.folder_updated.after
            if before.parent_folder_id != after_folder.parent_folder_id:
                await store.project_folder(
                    conn,
                    after_folder.id,
                    after_folder.integration_id,
                    after_folder.parent_folder_id or None,
                )
                structural.add(event.integration_id)
        elif kind == "folder_deleted":
            await store.forget_item(conn, event.folder_deleted.folder.id, "tree_folders")
            structural.add(event.integration_id)
        elif kind == "connection_created":
            connection = _connection(event.connection_created.connection)
            upserts[connection.id] = connection
            structural.add(event.integration_id)
        elif kind == "connection_updated":
            before_c, after_c = event.connection_updated.before, event.connection_updated.after
            connection = _connection(after_c)
            upserts[connection.id] = connection
            if before_c.folder_id != after_c.folder_id:
                structural.add(event.integration_id)
            else:
                earlier = renamed.get(connection.id)
                renamed[connection.id] = (
                    event.integration_id,
                    connection.handle,
                    connection.config,
                    before_c.effective_config != after_c.effective_config
                    or (earlier is not None and earlier[3]),
                )
        elif kind == "connection_deleted":
            removed = event.connection_deleted
            upserts.pop(removed.connection.id, None)
            renamed.pop(removed.connection.id, None)
            await store.forget_item(conn, removed.connection.id, "tree_connections")
            deleted[removed.connection.id] = (
                RemovedReason.INTEGRATION_DELETED
                if removed.reason == tree_pb.DELETION_REASON_INTEGRATION_DELETED
                else RemovedReason.CONNECTION_DELETED
            )
            structural.add(event.integration_id)
    await _flush(conn, upserts)
    for integration_id in sorted(structural):
        await schemas.refresh(conn, event_log, integration_id, deleted_reasons=deleted)
    # In-place renames of integrations not recomputed above (a recompute catches them too).
    in_place = {
        connection_id: (handle, config, config_changed)
        for connection_id, (integration_id, handle, config, config_changed) in renamed.items()
        if integration_id not in structural
    }
    if in_place:
        await schemas.follow_renames(conn, event_log, in_place)


async def _flush(conn: asyncpg.Connection, upserts: dict[str, TreeConnection]) -> None:
    await store.project_connections(conn, list(upserts.values()))
    upserts.clear()


def _flatten(
    node: tree_pb.FolderNode,
) -> tuple[list[tree_pb.Folder], list[tree_pb.Connection]]:
    """Every folder and connection of a tree, parents before children."""
    folders: list[tree_pb.Folder] = []
    connections: list[tree_pb.Connection] = []
    pending = [node]
    while pending:
        current = pending.pop(0)
        folders.append(current.folder)
        connections.extend(current.connections)
        pending.extend(current.folders)
    return folders, connections


async def current_trees(
    db: Database, channel: grpc.aio.Channel
) -> dict[str, tuple[ipb.Integration, tree_pb.ConnectionTree]]:
    """Every integration of every tenant with its tree, as the integration service has them."""
    integrations = igrpc.IntegrationServiceStub(channel)
    trees = tree_grpc.ConnectionTreeServiceStub(channel)
    async with db.connection() as conn:
        tenants = await store.tenant_ids(conn)
    found: dict[str, tuple[ipb.Integration, tree_pb.ConnectionTree]] = {}
    for tenant_id in tenants:
        token = ""
        while True:
            page = await integrations.ListIntegrations(
                irpc.ListIntegrationsRequest(
                    scope=types_pb2.Scope(tenant_id=tenant_id),
                    include_org_integrations=True,
                    page_size=100,
                    page_token=token,
                )
            )
            for integration in page.integrations:
                try:
                    reply = await trees.GetConnectionTree(
                        tree_rpc.GetConnectionTreeRequest(integration_id=integration.id)
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.NOT_FOUND:
                        continue  # deleted since the listing: as if it were never listed
                    raise
                found[integration.id] = (integration, reply.tree)
            token = page.next_page_token
            if not token:
                break
    return found


async def resync(
    db: Database, event_log: EventLog, channel: grpc.aio.Channel, resume_after: int
) -> dict[str, int]:
    """Rebuild the projection from the integrations' current trees and publish the differences
    to the workspaces; move the cursor to `resume_after` (the tree log keeps every event after
    it). Returns, per integration listed, the revision its tree reflects: its events up to that
    revision are already in the projection and must not be applied again.

    An integration created while this service was away starts with no grants (its initial
    permissions were in the compacted event): its owners share it again.
    """
    trees = await current_trees(db, channel)
    async with db.transaction() as conn:
        projected = await store.projected_integrations(conn)
        await store.lock_sharing(conn, [*projected, *trees])
        for integration_id in projected:
            if integration_id in trees:
                continue
            _, orphaned = await store.projected_items(conn, integration_id)
            await store.forget_integration(conn, integration_id)
            await schemas.refresh(
                conn,
                event_log,
                integration_id,
                deleted_reasons=dict.fromkeys(orphaned, RemovedReason.INTEGRATION_DELETED),
            )
        for integration, tree in trees.values():
            await _project_integration(conn, integration)
            folders, connections = _flatten(tree.root)
            known_folders, known_connections = await store.projected_items(conn, integration.id)
            for folder in folders:
                await store.project_folder(
                    conn, folder.id, integration.id, folder.parent_folder_id or None
                )
            for gone in known_folders - {f.id for f in folders}:
                await store.forget_item(conn, gone, "tree_folders")
            deleted: dict[str, RemovedReason] = {}
            for gone in known_connections - {c.id for c in connections}:
                await store.forget_item(conn, gone, "tree_connections")
                deleted[gone] = RemovedReason.CONNECTION_DELETED
            await store.project_connections(conn, [_connection(c) for c in connections])
            await schemas.refresh(conn, event_log, integration.id, deleted_reasons=deleted)
        await CURSOR.reset(conn, resume_after)
    return {integration_id: tree.revision for integration_id, (_, tree) in trees.items()}


def not_yet_projected(
    events: Sequence[tree_pb.TreeEvent], reflected: dict[str, int]
) -> list[tree_pb.TreeEvent]:
    """The events a rebuilt projection does not have yet: those after the revision its
    integration's tree reflected (`reflected`: integration → revision; others all count).
    Replayed over a newer tree, an older event would move it back for a while, and the
    workspaces would see a schema renamed back and forth."""
    return [e for e in events if e.revision > reflected.get(e.integration_id, 0)]


async def follow_tree_events(
    db: Database, event_log: EventLog, channel: grpc.aio.Channel, *, retry_delay: float = 1.0
) -> None:
    """Forever: consume the tree log from the stored cursor; rebuild from the current trees when
    the log no longer has the events after the cursor."""
    stub = tree_grpc.ConnectionTreeServiceStub(channel)
    # After a resync: per integration, the revision its rebuilt projection already reflects.
    already: dict[str, int] = {}

    async def subscribe(after: int) -> AsyncIterator[Sequence[tree_pb.TreeEvent]]:
        stream = stub.WatchTreeEvents(tree_rpc.WatchTreeEventsRequest(after_revision=after))
        try:
            async for reply in stream:
                if reply.events:
                    yield list(reply.events)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.OUT_OF_RANGE:
                reason, metadata = error_info(error)
                raise OutOfRange(error.details() or "", reason=reason, metadata=metadata) from None
            raise Unavailable(f"tree events: {error.code().name}") from None
        finally:
            stream.cancel()

    async def handle(conn: asyncpg.Connection, events: Sequence[tree_pb.TreeEvent]) -> None:
        fresh = not_yet_projected(events, already)
        if fresh:
            await apply_tree_events(conn, event_log, fresh)

    while True:
        try:
            await consume(db, CURSOR, subscribe, lambda e: e.revision, handle)
        except OutOfRange as exc:
            # Away longer than the tree log keeps events: what happened in the gap is gone from
            # the log, so rebuild from the trees as they are now.
            resume = int(exc.metadata.get("compacted_through") or 0)
            log.warning(
                "tree events were compacted before they were projected; rebuilding the "
                "projection from the current trees",
                extra={"resume_after": resume},
            )
            try:
                rebuilt = await resync(db, event_log, channel, resume)
            except Exception as error:
                log.warning(
                    "rebuilding the projection failed (%r); retrying in %.1f s",
                    error,
                    retry_delay,
                    extra={"error": repr(error), "retry_in": retry_delay},
                )
                await asyncio.sleep(retry_delay)
                continue
            already.clear()
            already.update(rebuilt)
            log.info(
                "projection rebuilt from the current trees",
                extra={"integrations": len(rebuilt), "resume_after": resume},
            )
