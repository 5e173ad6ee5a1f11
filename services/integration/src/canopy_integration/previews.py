"""Previews (`validate_only`) of the changes that reach workspaces: the tree half.

A previewed use case runs its real code against a rolled-back transaction with its tree events
captured (canopy_core.preview). Those events are the tree half of the impact; the permissions
service previews what they would do to every workspace (`ChangeImpactService`), starting from
the tree log revision the preview read, so the two halves describe one change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from canopy.discovery.v1.discovery_pb2 import SYNC_RUN_STATE_FAILED
from canopy.discovery.v1.discovery_service_pb2 import SyncIntegrationRequest
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.type.v1 import impact_pb2
from canopy_core.auth import Principal
from canopy_core.errors import Unavailable
from canopy_core.eventlog import NewEvent
from canopy_core.preview import PreviewLog, preview_database
from canopy_integration import apply, integrations
from canopy_integration.apply import Failure, Suspension
from canopy_integration.impact_client import ChangeImpacts
from canopy_integration.integrations import Context
from canopy_integration.model import EventQueueReport, Integration, Snapshot

T = TypeVar("T")

MAX_TREE_ITEMS = 1000  # folders and connections listed in one impact (the totals count them all)


def _item(
    change: impact_pb2.TreeChangeKind.ValueType,
    item: tree_pb.Folder | tree_pb.Connection,
    before: tree_pb.Folder | tree_pb.Connection | None = None,
    changed: Sequence[str] = (),
    reason: str = "",
) -> impact_pb2.TreeItemImpact:
    """One folder or connection change; `before` is the item before an update."""

    def place(found: tree_pb.Folder | tree_pb.Connection) -> str:
        return found.parent_folder_id if isinstance(found, tree_pb.Folder) else found.folder_id

    folder = isinstance(item, tree_pb.Folder)
    found = impact_pb2.TreeItemImpact(
        change=change,
        item_type=impact_pb2.TREE_ITEM_TYPE_FOLDER
        if folder
        else impact_pb2.TREE_ITEM_TYPE_CONNECTION,
        id=item.id,
        handle=item.handle,
        parent_folder_id=place(item),
        changed_fields=changed,
        external_id=item.aws_id if isinstance(item, tree_pb.Folder) else item.account_id,
        deletion_reason=reason,
    )
    if before is not None:
        if before.handle != item.handle:
            found.old_handle = before.handle
        if place(before) != place(item):
            found.old_parent_folder_id = place(before)
    return found


def _reason(value: tree_pb.DeletionReason.ValueType) -> str:
    return tree_pb.DeletionReason.Name(value).removeprefix("DELETION_REASON_")


def tree_item(event: tree_pb.TreeEvent) -> impact_pb2.TreeItemImpact | None:
    """The folder or connection change of one tree event (None for integration events)."""
    created, updated, deleted = (
        impact_pb2.TREE_CHANGE_KIND_CREATED,
        impact_pb2.TREE_CHANGE_KIND_UPDATED,
        impact_pb2.TREE_CHANGE_KIND_DELETED,
    )
    kind = event.WhichOneof("event")
    if kind == "folder_created":
        return _item(created, event.folder_created.folder)
    if kind == "folder_updated":
        found = event.folder_updated
        return _item(updated, found.after, found.before, found.changed_fields)
    if kind == "folder_deleted":
        gone = event.folder_deleted
        return _item(deleted, gone.folder, reason=_reason(gone.reason))
    if kind == "connection_created":
        return _item(created, event.connection_created.connection)
    if kind == "connection_updated":
        changed = event.connection_updated
        return _item(updated, changed.after, changed.before, changed.changed_fields)
    if kind == "connection_deleted":
        removed = event.connection_deleted
        return _item(deleted, removed.connection, reason=_reason(removed.reason))
    return None


def tree_impact(
    events: Sequence[tree_pb.TreeEvent], *, max_items: int = MAX_TREE_ITEMS
) -> impact_pb2.ChangeImpact:
    """The tree half of an impact: every folder and connection change, counted and listed."""
    impact = impact_pb2.ChangeImpact()
    totals = impact.totals
    for event in events:
        item = tree_item(event)
        if item is None:
            continue
        folder = item.item_type == impact_pb2.TREE_ITEM_TYPE_FOLDER
        noun = "folders" if folder else "connections"
        if item.change == impact_pb2.TREE_CHANGE_KIND_CREATED:
            setattr(totals, f"{noun}_created", getattr(totals, f"{noun}_created") + 1)
        elif item.change == impact_pb2.TREE_CHANGE_KIND_DELETED:
            setattr(totals, f"{noun}_deleted", getattr(totals, f"{noun}_deleted") + 1)
        else:
            if item.old_handle:
                setattr(totals, f"{noun}_renamed", getattr(totals, f"{noun}_renamed") + 1)
            if item.old_parent_folder_id:
                setattr(totals, f"{noun}_moved", getattr(totals, f"{noun}_moved") + 1)
            if not folder and "effective_config" in item.changed_fields:
                totals.connections_reconfigured += 1
        if len(impact.tree_items) < max_items:
            impact.tree_items.append(item)
        else:
            impact.truncated = True
    return impact


def merged(tree: impact_pb2.ChangeImpact, workspaces: impact_pb2.ChangeImpact) -> None:
    """Fold the workspace half into the tree half, in place."""
    totals = tree.totals
    for name in (
        "workspaces_affected",
        "schemas_added",
        "schemas_renamed",
        "schemas_removed",
        "schemas_config_changed",
    ):
        setattr(totals, name, getattr(workspaces.totals, name))
    tree.workspaces.extend(workspaces.workspaces)
    tree.truncated |= workspaces.truncated


async def preview(
    ctx: Context, change: Callable[[Context], Awaitable[T]]
) -> tuple[T, impact_pb2.ChangeImpact]:
    """Run `change` as a preview: its result as it would be, and what it would do."""
    result, log = await _captured(ctx, change)
    # The permissions service is asked after the rollback: no lock is held across the call.
    return result, await impact_of(ctx.impacts, log)


async def _captured(
    ctx: Context, change: Callable[[Context], Awaitable[T]]
) -> tuple[T, PreviewLog]:
    """Run `change` in a rolled-back transaction: its result, and the events it appended."""
    async with preview_database(ctx.db) as db:
        log = PreviewLog(db)
        result = await change(dataclasses.replace(ctx, db=db, log=log))
    return result, log


async def impact_of(impacts: ChangeImpacts, log: PreviewLog) -> impact_pb2.ChangeImpact:
    """The whole impact of the tree events a preview captured."""
    events = [
        tree_pb.TreeEvent.FromString(e.payload) for e in log.captured if isinstance(e, NewEvent)
    ]
    impact = tree_impact(events)
    if events:
        if log.base_revision is None:
            raise Unavailable("a preview captured events without reading the log's head")
        merged(impact, await impacts.preview(events, log.base_revision))
    blank_new_ids(impact, created_ids(events))
    return impact


def created_ids(events: Sequence[tree_pb.TreeEvent]) -> set[str]:
    """The ids of the folders and connections the events create."""
    found = set()
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "folder_created":
            found.add(event.folder_created.folder.id)
        elif kind == "connection_created":
            found.add(event.connection_created.connection.id)
    return found


def blank_new_ids(impact: impact_pb2.ChangeImpact, created: set[str]) -> None:
    """Items a preview would create have no id yet (the one made for the preview is dropped
    with it): leave their ids empty wherever they appear, in place."""
    if not created:
        return
    for item in impact.tree_items:
        for name in ("id", "parent_folder_id", "old_parent_folder_id"):
            if getattr(item, name) in created:
                setattr(item, name, "")
    for workspace in impact.workspaces:
        for schema in workspace.schemas:
            if schema.connection_id in created:
                schema.connection_id = ""


# An update of these needs a crawl to show its effect: they decide what discovery sees.
CRAWLED_FIELDS = frozenset({"discovery_access", "filters", "exclude_management_account"})


def _crawled_change(log: PreviewLog) -> bool:
    for entry in log.captured:
        if isinstance(entry, NewEvent) and entry.kind == "IntegrationUpdated":
            updated = tree_pb.TreeEvent.FromString(entry.payload).integration_updated
            return bool(CRAWLED_FIELDS & set(updated.changed_fields))
    return False


async def preview_update_integration(
    ctx: Context,
    principal: Principal,
    request: rpc.UpdateIntegrationRequest,
    given: Integration,
    paths: Sequence[str],
) -> tuple[Integration, impact_pb2.ChangeImpact]:
    """UpdateIntegration `validate_only`. An update of what discovery sees (its role, the
    filters) is previewed with a dry-run crawl under the new settings, update and crawl as one
    change; the crawl's failure is reported on the impact."""

    async def change(pctx: Context) -> Integration:
        return await integrations.update_integration(
            pctx, principal, request.integration.id, given, paths, request.integration.etag
        )

    updated, log = await _captured(ctx, change)
    if not _crawled_change(log):
        return updated, await impact_of(ctx.impacts, log)
    run = await ctx.discovery.dry_run(
        SyncIntegrationRequest(
            integration_id=request.integration.id, validate_only=True, preview_update=request
        )
    )
    if run.state == SYNC_RUN_STATE_FAILED:
        impact = await impact_of(ctx.impacts, log)
        impact.crawl_failure_reason = run.failure_reason
        impact.crawl_failure_message = run.failure_message
        return updated, impact
    return updated, run.impact


async def preview_apply(
    ctx: Context,
    principal: Principal,
    request: tree_rpc.ApplyDiscoverySnapshotRequest,
    outcome: Snapshot | Failure | Suspension | EventQueueReport | None,
    update: tuple[Integration, Sequence[str]] | None,
) -> tree_rpc.ApplyDiscoverySnapshotResponse:
    """ApplyDiscoverySnapshot `validate_only`, after `update` (the parsed `preview_update`: the
    integration's new values and the mask's paths) if given: what applying would do; with
    NEEDS_CONFIRMATION, what confirming would do, and the guard's verdict."""
    principal.require_system()
    dry = tree_rpc.ApplyDiscoverySnapshotRequest()
    dry.CopyFrom(request)
    dry.ClearField("request_id")  # a preview neither replays nor records a result
    pending = request.preview_update.integration

    async def change(pctx: Context, confirm: bool) -> apply.ApplyResult:
        if update is not None:
            given, paths = update
            await integrations.update_integration(
                pctx, principal, pending.id, given, paths, pending.etag
            )
        found = await apply.apply_outcome(
            pctx,
            principal,
            request.integration_id,
            request.expected_generation,
            outcome,
            confirm,
            dry,
        )
        assert isinstance(found, apply.ApplyResult)  # no request id: nothing is replayed
        return found

    result, impact = await preview(ctx, lambda pctx: change(pctx, request.confirm_deletions))
    if result.outcome is apply.ApplyOutcome.NEEDS_CONFIRMATION:
        _, impact = await preview(ctx, lambda pctx: change(pctx, True))
        impact.deletion_guard.would_stop = True
    impact.deletion_guard.connections_to_delete = result.plan.connections_to_delete
    impact.deletion_guard.connections_total = result.plan.connections_total
    response = apply.apply_response(result)
    response.impact.CopyFrom(impact)
    return response
