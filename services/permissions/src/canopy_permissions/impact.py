"""Previews on the workspace end: what a change would do to every workspace's schemas.

A preview runs the change's real code in a rolled-back transaction with its schema events
captured (canopy_core.preview); this module turns what was captured into the workspace half of a
`ChangeImpact`: per workspace, complete counts and the first schemas in stream order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.permissions.v1 import workspace_schema_pb2 as pb
from canopy.type.v1 import impact_pb2
from canopy_core.db import Database
from canopy_core.errors import Unavailable
from canopy_core.eventlog import NewEvent
from canopy_core.preview import BulkEvents, PreviewLog, preview_database
from canopy_permissions.projection import CURSOR, apply_tree_events

T = TypeVar("T")

MAX_WORKSPACES = 1000  # workspaces listed in one impact (the totals count them all)
MAX_SCHEMAS = 100  # schemas listed per workspace

_KINDS = {
    "added": impact_pb2.SCHEMA_CHANGE_KIND_ADDED,
    "renamed": impact_pb2.SCHEMA_CHANGE_KIND_RENAMED,
    "removed": impact_pb2.SCHEMA_CHANGE_KIND_REMOVED,
    "config_changed": impact_pb2.SCHEMA_CHANGE_KIND_CONFIG_CHANGED,
}
_COUNTERS = {
    "added": "schemas_added",
    "renamed": "schemas_renamed",
    "removed": "schemas_removed",
    "config_changed": "schemas_config_changed",
}


def schema_impact(event: pb.SchemaEvent) -> impact_pb2.SchemaImpact:
    """One schema event as the impact reports it."""
    kind = event.WhichOneof("event")
    if kind == "schema_added":
        schema = event.schema_added.schema
        return impact_pb2.SchemaImpact(
            change=impact_pb2.SCHEMA_CHANGE_KIND_ADDED,
            connection_id=schema.connection_id,
            name=schema.name,
        )
    if kind == "schema_renamed":
        renamed = event.schema_renamed
        return impact_pb2.SchemaImpact(
            change=impact_pb2.SCHEMA_CHANGE_KIND_RENAMED,
            connection_id=renamed.connection_id,
            name=renamed.new_name,
            old_name=renamed.old_name,
        )
    if kind == "schema_removed":
        removed = event.schema_removed
        return impact_pb2.SchemaImpact(
            change=impact_pb2.SCHEMA_CHANGE_KIND_REMOVED,
            connection_id=removed.connection_id,
            name=removed.name,
            removed_reason=pb.SchemaRemovedReason.Name(removed.reason).removeprefix(
                "SCHEMA_REMOVED_REASON_"
            ),
        )
    schema = event.schema_config_changed.schema
    return impact_pb2.SchemaImpact(
        change=impact_pb2.SCHEMA_CHANGE_KIND_CONFIG_CHANGED,
        connection_id=schema.connection_id,
        name=schema.name,
    )


@dataclass
class _Workspace:
    counts: dict[str, int] = field(default_factory=dict)
    schemas: list[impact_pb2.SchemaImpact] = field(default_factory=list)


def _workspace_id(keys: Sequence[str]) -> str:
    return next(k for k in keys if k.startswith("workspace:")).removeprefix("workspace:")


def workspace_impact(
    captured: Sequence[NewEvent | BulkEvents],
    *,
    max_workspaces: int = MAX_WORKSPACES,
    max_schemas: int = MAX_SCHEMAS,
) -> impact_pb2.ChangeImpact:
    """The workspace half of an impact, from captured schema events (in log order)."""
    workspaces: dict[str, _Workspace] = {}

    def sample(event: NewEvent) -> None:
        found = workspaces.setdefault(_workspace_id(event.keys), _Workspace())
        if len(found.schemas) < max_schemas:
            found.schemas.append(schema_impact(pb.SchemaEvent.FromString(event.payload)))

    for entry in captured:
        if isinstance(entry, BulkEvents):
            for kind, keys, count in entry.counts:
                found = workspaces.setdefault(_workspace_id(keys), _Workspace())
                found.counts[kind] = found.counts.get(kind, 0) + count
            for event in entry.sample:
                sample(event)
        else:
            found = workspaces.setdefault(_workspace_id(entry.keys), _Workspace())
            found.counts[entry.kind] = found.counts.get(entry.kind, 0) + 1
            sample(entry)

    impact = impact_pb2.ChangeImpact()
    totals = impact.totals
    totals.workspaces_affected = len(workspaces)
    for position, workspace_id in enumerate(sorted(workspaces)):
        found = workspaces[workspace_id]
        counted = sum(found.counts.values())
        for kind, count in found.counts.items():
            name = _COUNTERS[kind]
            setattr(totals, name, getattr(totals, name) + count)
        if position >= max_workspaces:
            impact.truncated = True
            continue
        listed = impact.workspaces.add(workspace_id=workspace_id, schemas=found.schemas)
        for kind, count in found.counts.items():
            setattr(listed, _COUNTERS[kind], count)
        listed.truncated = counted > len(found.schemas)
        impact.truncated |= listed.truncated
    return impact


async def preview(
    db: Database, change: Callable[[Database, PreviewLog], Awaitable[T]]
) -> tuple[T, impact_pb2.ChangeImpact]:
    """Run `change(db, log)` as a preview; returns its result and the workspace impact."""
    async with preview_database(db) as preview_db:
        log = PreviewLog(preview_db, sample_per_key=MAX_SCHEMAS)
        result = await change(preview_db, log)
    return result, workspace_impact(log.captured)


async def wait_for_projection(db: Database, tree_revision: int, timeout: float = 10.0) -> None:
    """Wait until the projection has consumed the tree log through `tree_revision`."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        async with db.connection() as conn:
            if await CURSOR.get(conn) >= tree_revision:
                return
        if time.monotonic() >= deadline:
            raise Unavailable(
                "the permissions service has not yet caught up with the tree log; retry shortly",
                reason="PROJECTION_BEHIND",
                metadata={"tree_revision": str(tree_revision)},
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


async def preview_tree_change(
    db: Database, events: Sequence[tree_pb.TreeEvent], tree_revision: int
) -> impact_pb2.ChangeImpact:
    """What applying these tree events would do to every workspace (nothing is stored)."""
    await wait_for_projection(db, tree_revision)
    if not events:
        return impact_pb2.ChangeImpact()

    async def apply(preview_db: Database, log: PreviewLog) -> None:
        async with preview_db.transaction() as conn:
            await apply_tree_events(conn, log, events)

    _, impact = await preview(db, apply)
    return impact
