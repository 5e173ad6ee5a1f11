"""Workspace schema sets: recomputing them when grants, attachments or the tree change, and
appending one event per change to the workspace schema log in the same transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import asyncpg

from canopy.integration.v1 import integration_pb2 as ipb
from canopy.permissions.v1 import workspace_schema_pb2 as pb
from canopy_core.eventlog import EventLog, NewEvent
from canopy_permissions import store
from canopy_permissions.sharing import (
    RemovedReason,
    Schema,
    SchemaChange,
    desired_schemas,
    diff_schemas,
    granted_items,
    removal_reasons,
)


def schema_to_proto(schema: Schema) -> pb.WorkspaceSchema:
    """The API view of a schema."""
    return pb.WorkspaceSchema(
        name=schema.name,
        connection_id=schema.connection_id,
        integration_id=schema.integration_id,
        account_id=schema.account_id,
        plugin="aws",
        attachment_kind=pb.AttachmentKind.Value(f"ATTACHMENT_KIND_{schema.attachment_kind}"),
        via_folder_id=schema.via_folder_id,
        config=ipb.EffectiveConnectionConfig.FromString(schema.config),
    )


def event_for(workspace_id: str, change: SchemaChange) -> NewEvent:
    """The log entry of one change (revision and time are filled in when read)."""
    event = pb.SchemaEvent(workspace_id=workspace_id)
    if change.kind == "added":
        event.schema_added.schema.CopyFrom(schema_to_proto(change.schema))
    elif change.kind == "renamed":
        event.schema_renamed.connection_id = change.schema.connection_id
        event.schema_renamed.old_name = change.old_name
        event.schema_renamed.new_name = change.schema.name
    elif change.kind == "removed":
        assert change.reason is not None
        event.schema_removed.connection_id = change.schema.connection_id
        event.schema_removed.name = change.schema.name
        event.schema_removed.reason = pb.SchemaRemovedReason.Value(
            f"SCHEMA_REMOVED_REASON_{change.reason.value}"
        )
    else:
        event.schema_config_changed.schema.CopyFrom(schema_to_proto(change.schema))
    return NewEvent(
        kind=change.kind, keys=(f"workspace:{workspace_id}",), payload=event.SerializeToString()
    )


async def publish(
    conn: asyncpg.Connection,
    log: EventLog,
    changes: Sequence[tuple[str, SchemaChange]],
    *,
    written: bool = False,
) -> int:
    """Write changes to the schema table (unless the caller has) and append their events;
    returns how many."""
    if not changes:
        return 0
    if not written:
        await store.write_schema_changes(conn, list(changes))
    events = [event_for(workspace_id, change) for workspace_id, change in changes]
    last = await log.append(conn, events)
    first = last - len(events) + 1
    heads: dict[str, int] = {}
    for offset, (workspace_id, _) in enumerate(changes):
        heads[workspace_id] = first + offset
    await store.set_workspace_heads(conn, heads)
    return len(changes)


async def refresh(
    conn: asyncpg.Connection,
    log: EventLog,
    integration_id: str,
    workspace_ids: Sequence[str] | None = None,
    *,
    deleted_reasons: dict[str, RemovedReason] | None = None,
) -> int:
    """Bring the schemas some workspaces (default: all that use the integration) have from one
    integration in line with its tree, grants and attachments."""
    targets = (
        list(workspace_ids)
        if workspace_ids is not None
        else await store.workspaces_using(conn, integration_id)
    )
    if not targets:
        return 0
    # Read only when a workspace needs it: a large first sync arrives in batches of events, and
    # reading the whole tree for each batch made following it quadratic in the tree's size.
    tree = await store.load_tree(conn, integration_id)
    grants = await store.grants_of(conn, integration_id)
    members = await store.members(conn, targets)
    attachments = await store.attachments_of(conn, integration_id, targets)
    current = await store.schemas_of(conn, integration_id, targets)
    changes: list[tuple[str, SchemaChange]] = []
    for workspace_id in sorted(targets):
        member = members.get(workspace_id)
        mine = current.get(workspace_id, {})
        if member is None or tree is None:
            desired: dict[str, Schema] = {}
            granted: set[str] = set()
            attached: set[str] = set()
        else:
            granted = granted_items(member, grants)
            attached = attachments.get(workspace_id, set())
            desired = desired_schemas(tree, granted, attached)
        reasons = removal_reasons(tree, mine, granted, attached)
        for connection_id, reason in (deleted_reasons or {}).items():
            if connection_id in reasons:
                reasons[connection_id] = reason
        for change in diff_schemas(mine, desired, reasons, RemovedReason.DETACHED):
            changes.append((workspace_id, change))
    return await publish(conn, log, changes)


def _renamed_payloads(
    workspace_ids: Iterable[str], renames: dict[str, tuple[str, str]]
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The encoded halves of rename events: per workspace its id, per connection its
    `SchemaRenamed`. A message's encoding followed by another's is the encoding of the two merged,
    so the database makes each event by joining two byte strings."""
    heads = {w: pb.SchemaEvent(workspace_id=w).SerializeToString() for w in workspace_ids}
    tails = {
        connection_id: pb.SchemaEvent(
            schema_renamed=pb.SchemaRenamed(
                connection_id=connection_id, old_name=old_name, new_name=new_name
            )
        ).SerializeToString()
        for connection_id, (old_name, new_name) in renames.items()
    }
    return heads, tails


async def follow_renames(
    conn: asyncpg.Connection, log: EventLog, connections: dict[str, tuple[str, bytes, bool]]
) -> int:
    """New handles or settings of connections that did not move: only the workspaces that use
    them change (connection → (handle, config, whether the config changed)).

    The hot path of a prefix change, which renames every connection in every workspace that uses
    it: names are stored once per connection, and the rename events (one per connection per
    workspace) are made inside the database, so the cost here does not grow with the number of
    workspaces, and (with compact events) one row is stored per workspace."""
    published = await store.published_names(conn, list(connections))
    renames = {
        connection_id: (name, connections[connection_id][0])
        for connection_id, name in published.items()
        if name != connections[connection_id][0]
    }
    total = 0
    counts = await store.holder_counts(conn, sorted(renames)) if renames else []
    if counts:
        heads, tails = _renamed_payloads((w for w, _ in counts), renames)
        count = sum(n for _, n in counts)
        last = await log.append_ranges(
            conn,
            count,
            store.RENAME_RANGES,
            list(tails),
            list(tails.values()),
            list(heads),
            list(heads.values()),
        )
        # Events are numbered by workspace, then connection: each workspace's last is known.
        position, workspace_heads = last - count, {}
        for workspace_id, n in counts:
            position += n
            workspace_heads[workspace_id] = position
        await store.set_workspace_heads(conn, workspace_heads)
        total += count
    reconfigured = [c for c, (_, _, changed) in connections.items() if changed and c in published]
    if reconfigured:
        changes = []
        for workspace_id, schema in await store.holders(conn, reconfigured):
            handle, config, _ = connections[schema.connection_id]
            after = replace(schema, name=handle, config=config)
            changes.append((workspace_id, SchemaChange("config_changed", after)))
        changes.sort(key=lambda c: (c[0], c[1].schema.connection_id))
        total += await publish(conn, log, changes, written=True)
    await store.rename_schemas(conn, {c: (h, cfg) for c, (h, cfg, _) in connections.items()})
    return total
