"""What each workspace uses: attaching and detaching folders and connections, listing a
workspace's schemas with the revision they reflect, watching its schema stream, and the end of
a deleted workspace's stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from canopy.permissions.v1 import workspace_schema_pb2 as pb
from canopy.permissions.v1 import workspace_schema_service_pb2 as rpc
from canopy_core import requests, wire
from canopy_core.auth import Principal
from canopy_core.db import Database
from canopy_core.errors import AlreadyExists, NotFound, PermissionDenied
from canopy_core.eventlog import EventLog, NewEvent, revision_compacted
from canopy_core.ids import new_id
from canopy_core.pagination import PagePosition, PageTokens, page_size
from canopy_core.validation import Violations
from canopy_permissions import schemas, store
from canopy_permissions.convert import attachment_to_proto
from canopy_permissions.grants import check_item, workspace_member
from canopy_permissions.sharing import RemovedReason, Schema, SchemaChange, granted_items, sees


@dataclass(frozen=True)
class SchemaPage:
    """One page of a workspace's schemas, the revision to watch after (the listing's first
    page's) and the revision the page was read at."""

    schemas: list[Schema]
    revision: int
    page_revision: int
    next_page_token: str


async def attach(
    db: Database,
    log: EventLog,
    principal: Principal,
    workspace_id: str,
    field: str | None,
    item_id: str,
    request: rpc.AttachSchemaRequest,
) -> dict[str, object]:
    """Attach a folder or connection the workspace holds a grant on."""
    with Violations() as v:
        v.resource_id("workspace_id", workspace_id, "w")
    check_item(field, item_id)
    async with db.transaction() as conn:
        if request.request_id:
            earlier = await requests.replay(
                conn,
                "AttachSchema",
                request.request_id,
                principal.subject,
                request,
                rpc.AttachSchemaResponse,
            )
            if earlier is not None:
                a = earlier.attachment
                return {
                    "id": a.id,
                    "workspace_id": a.workspace_id,
                    "item_kind": "folder" if a.HasField("folder_id") else "connection",
                    "item_id": a.folder_id or a.connection_id,
                    "etag": a.etag,
                    "created_at": a.create_time.ToDatetime(),
                }
        member = await workspace_member(conn, principal, workspace_id)
        integration_id = await store.item_integration(conn, item_id)
        if integration_id:
            await store.lock_sharing(conn, [integration_id])
        tree = await store.load_tree(conn, integration_id) if integration_id else None
        granted = (
            granted_items(member, await store.grants_of(conn, tree.integration_id))
            if tree
            else set()
        )
        if tree is None or not sees(tree, item_id, granted):
            raise PermissionDenied(
                f"workspace {workspace_id} holds no grant on {item_id}",
                reason="NO_GRANT",
                metadata={"field": field or "item", "workspace_id": workspace_id},
            )
        row = await store.insert_attachment(
            conn,
            new_id("a"),
            workspace_id,
            tree.integration_id,
            "folder" if field == "folder_id" else "connection",
            item_id,
        )
        if row is None:
            raise AlreadyExists(
                f"{item_id} is already attached to workspace {workspace_id}",
                reason="ALREADY_ATTACHED",
                metadata={"field": field or "item", "workspace_id": workspace_id},
            )
        await schemas.refresh(conn, log, tree.integration_id, [workspace_id])
        attachment = dict(row.items())
        if request.request_id:
            await requests.remember(
                conn,
                "AttachSchema",
                request.request_id,
                principal.subject,
                request,
                rpc.AttachSchemaResponse(attachment=attachment_to_proto(attachment)),
            )
        return attachment


async def detach(
    db: Database,
    log: EventLog,
    principal: Principal,
    workspace_id: str,
    field: str | None,
    item_id: str,
    request: rpc.DetachSchemaRequest,
) -> None:
    """Detach an item where it was attached; connections still covered otherwise stay."""
    with Violations() as v:
        v.resource_id("workspace_id", workspace_id, "w")
    check_item(field, item_id)
    async with db.transaction() as conn:
        if request.request_id:
            earlier = await requests.replay(
                conn,
                "DetachSchema",
                request.request_id,
                principal.subject,
                request,
                rpc.DetachSchemaResponse,
            )
            if earlier is not None:
                return
        await workspace_member(conn, principal, workspace_id)
        known = await store.item_integration(conn, item_id)
        if known:
            await store.lock_sharing(conn, [known])
        integration_id = await store.delete_attachment(conn, workspace_id, item_id)
        if integration_id is None:
            raise NotFound("attachment", f"{workspace_id}/{item_id}", reason="NOT_ATTACHED")
        await schemas.refresh(conn, log, integration_id, [workspace_id])
        if request.request_id:
            await requests.remember(
                conn,
                "DetachSchema",
                request.request_id,
                principal.subject,
                request,
                rpc.DetachSchemaResponse(),
            )


# Listing revision, last connection id. Pages are cut by connection id, which nothing that
# happens to a workspace changes; tokens of the name-ordered listing this replaced are refused
# (another listing name), not misread.
SCHEMAS_PAGE = PagePosition("workspace_schemas_by_connection", (int, str))


async def list_schemas(
    db: Database,
    page_tokens: PageTokens,
    principal: Principal,
    workspace_id: str,
    requested_size: int,
    page_token: str,
) -> SchemaPage:
    """A page of a workspace's schemas in connection id order, read now, and the revision of
    the listing's first page, which a client watches after (see ListWorkspaceSchemasResponse).

    Later pages are read at their own time rather than at the first page's snapshot: the
    service keeps no snapshot between calls, and the log cannot rebuild one (a removal does
    not carry the settings it removed). Cut by connection id, the pages still cover every
    schema, and the watch from the first page's revision brings each page up to date.
    """
    with Violations() as v:
        v.resource_id("workspace_id", workspace_id, "w")
    size = page_size(requested_size)
    arguments = {"workspace_id": workspace_id}
    position = page_tokens.open(page_token, SCHEMAS_PAGE, arguments)
    async with (
        db.connection() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        await workspace_member(conn, principal, workspace_id)
        page_revision: int = await conn.fetchval("SELECT revision FROM event_log_head")
        if position is None:
            revision, after_connection_id = page_revision, ""
        else:
            revision, after_connection_id = position
            compacted_through: int = await conn.fetchval(
                "SELECT compacted_through FROM event_log_compaction"
            )
            if revision < compacted_through:
                # The watch after `revision` would fail too: start again now, not at the end.
                raise revision_compacted(revision, compacted_through)
        rows = await store.workspace_schema_page(conn, workspace_id, after_connection_id, size + 1)
    page, more = rows[:size], len(rows) > size
    next_token = (
        page_tokens.seal(SCHEMAS_PAGE, [revision, page[-1].connection_id], arguments)
        if more
        else ""
    )
    return SchemaPage(page, revision, page_revision, next_token)


async def watch(
    db: Database, log: EventLog, principal: Principal, workspace_id: str, after_revision: int
) -> AsyncIterator[rpc.WatchWorkspaceSchemasResponse]:
    """The workspace's events after a revision, with progress messages; ends after
    `workspace_deleted`."""
    with Violations() as v:
        v.resource_id("workspace_id", workspace_id, "w")
    key = f"workspace:{workspace_id}"
    async with db.connection() as conn:
        try:
            await workspace_member(conn, principal, workspace_id)
        except NotFound:
            # Deleted while a watcher was away: while the log keeps the stream's last event,
            # a watcher that may know of the workspace resumes and gets the rest of it.
            last = await log.last(key)
            if last is None or last.kind != "workspace_deleted" or last.revision <= after_revision:
                raise
    async for batch in log.watch(after_revision, [key]):
        # Built on the wire: a prefix change sends 100,000s of events (see canopy_core.wire).
        yield rpc.WatchWorkspaceSchemasResponse.FromString(
            wire.repeated(1, [wire.stamped(e) for e in batch.events])  # events = 1
            + wire.int_field(2, batch.latest_revision)  # latest_revision = 2
        )
        if any(e.kind == "workspace_deleted" for e in batch.events):
            return


async def end_workspace(conn: asyncpg.Connection, log: EventLog, workspace_id: str) -> None:
    """A workspace is being deleted: remove each schema (WORKSPACE_DELETED), then the last event
    of its stream; drop its attachments and grants."""
    used = await conn.fetch(
        "SELECT integration_id FROM attachments WHERE workspace_id = $1 "
        "UNION SELECT integration_id FROM workspace_schemas WHERE workspace_id = $1",
        workspace_id,
    )
    await store.lock_sharing(conn, [r[0] for r in used])
    current = await store.workspace_schemas(conn, workspace_id)
    await schemas.publish(
        conn,
        log,
        [
            (workspace_id, SchemaChange("removed", s, reason=RemovedReason.WORKSPACE_DELETED))
            for s in sorted(current, key=lambda s: s.connection_id)
        ],
    )
    ended = pb.SchemaEvent(workspace_id=workspace_id, workspace_deleted=pb.WorkspaceDeleted())
    await log.append(
        conn,
        [NewEvent("workspace_deleted", (f"workspace:{workspace_id}",), ended.SerializeToString())],
    )
    await store.forget_workspace(conn, workspace_id)
