"""ApplyDiscoverySnapshot: turn one discovery outcome into the tree, atomically.

A complete snapshot is diffed against the stored tree (`tree_diff.plan_snapshot`) and every
change and its event are written in one transaction; an unchanged snapshot writes nothing; a
failure changes nothing but the integration's state (ERROR), nor does a suspension (SUSPENDED:
discovery stopped syncing, e.g. the plan no longer allows the integration), nor a report on the
event queue (its `event_queue_status`). Two applies of one integration cannot interleave: each
names the tree generation it was computed against (a suspension or a queue report, computed
against no tree, names none).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace

import asyncpg

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as rpc
from canopy_core import requests
from canopy_core.auth import Principal
from canopy_core.discovery_filters import validate_filters
from canopy_core.errors import InvalidArgument
from canopy_core.ids import new_id
from canopy_core.validation import Violations
from canopy_integration import event_queue, store
from canopy_integration.convert import integration_to_proto
from canopy_integration.errors import GenerationMismatch
from canopy_integration.events import TreeEvents
from canopy_integration.integrations import Context, check_id, missing
from canopy_integration.model import EventQueueReport, Integration, IntegrationState, Snapshot
from canopy_integration.tree_diff import (
    TreePlan,
    plan_snapshot,
    unchanged_accounts,
    validate_snapshot,
)
from canopy_integration.tree_paths import folder_paths

FAILURE_REASON = re.compile(r"^[A-Z][A-Z0-9_]{0,63}\Z")


class ApplyOutcome(enum.Enum):
    """What an apply did."""

    APPLIED = "APPLIED"
    UNCHANGED = "UNCHANGED"
    NEEDS_CONFIRMATION = "NEEDS_CONFIRMATION"
    FAILURE_RECORDED = "FAILURE_RECORDED"
    SUSPENSION_RECORDED = "SUSPENSION_RECORDED"
    EVENT_QUEUE_STATUS_RECORDED = "EVENT_QUEUE_STATUS_RECORDED"


@dataclass(frozen=True)
class ApplyResult:
    """The outcome, its counts, and the integration afterwards."""

    outcome: ApplyOutcome
    plan: TreePlan
    rows_written: int
    events_emitted: int
    integration: Integration


@dataclass(frozen=True)
class Failure:
    """Why a crawl produced no snapshot."""

    reason: str
    message: str


@dataclass(frozen=True)
class Suspension:
    """Why discovery stopped syncing the integration for now (it did not crawl)."""

    reason: str
    message: str


async def apply_outcome(
    ctx: Context,
    principal: Principal,
    integration_id: str,
    expected_generation: int,
    outcome: Snapshot | Failure | Suspension | EventQueueReport | None,
    confirm_deletions: bool,
    request: rpc.ApplyDiscoverySnapshotRequest,
) -> ApplyResult | rpc.ApplyDiscoverySnapshotResponse:
    """Apply a snapshot, or record a failure, a suspension or a report on the event queue
    (system callers only)."""
    principal.require_system()
    check_id("integration_id", integration_id, "i")
    if outcome is None:
        raise InvalidArgument.field(
            "outcome", "send a snapshot, a failure, a suspension or an event_queue_status"
        )
    if isinstance(outcome, Failure):
        if not FAILURE_REASON.match(outcome.reason):
            raise InvalidArgument.field("failure.reason", "must be an UPPER_SNAKE code")
    elif isinstance(outcome, Suspension):
        if not FAILURE_REASON.match(outcome.reason):
            raise InvalidArgument.field("suspension.reason", "must be an UPPER_SNAKE code")
    elif isinstance(outcome, EventQueueReport):
        event_queue.check_report(outcome)
    else:
        validate_snapshot(outcome)
        if outcome.unmatched_filters is not None:
            with Violations() as v:
                validate_filters(outcome.unmatched_filters, "unmatched_filters", v)
    if expected_generation < 0:
        raise InvalidArgument.field("expected_generation", "must be zero or positive")

    async with ctx.db.transaction() as conn:
        if request.request_id:
            earlier = await requests.replay(
                conn,
                "ApplyDiscoverySnapshot",
                request.request_id,
                principal.subject,
                request,
                rpc.ApplyDiscoverySnapshotResponse,
            )
            if earlier is not None:
                return earlier
        integration = await store.get_integration(conn, integration_id, for_update=True)
        if integration is None:
            raise await missing(conn, principal, "integration", integration_id)
        if (
            not isinstance(outcome, Suspension | EventQueueReport)
            and expected_generation != integration.tree_generation
        ):
            raise GenerationMismatch(
                integration_id, expected_generation, integration.tree_generation
            )

        if isinstance(outcome, Failure):
            result = await _record_failure(ctx, conn, integration, outcome)
        elif isinstance(outcome, EventQueueReport):
            result = await _record_report(ctx, conn, integration, outcome)
        elif isinstance(outcome, Suspension):
            result = await _record_state(
                ctx,
                conn,
                integration,
                IntegrationState.SUSPENDED,
                outcome,
                ApplyOutcome.SUSPENSION_RECORDED,
            )
        else:
            result = await _apply_snapshot(ctx, conn, integration, outcome, confirm_deletions)
        if request.request_id:
            await requests.remember(
                conn,
                "ApplyDiscoverySnapshot",
                request.request_id,
                principal.subject,
                request,
                apply_response(result),
            )
        return result


async def _record_report(
    ctx: Context, conn: asyncpg.Connection, integration: Integration, report: EventQueueReport
) -> ApplyResult:
    """The report as the integration's event queue status; ignored without a queue."""
    after = await event_queue.record_report(ctx.log, conn, integration, report)
    if after is None:
        return ApplyResult(ApplyOutcome.UNCHANGED, TreePlan(), 0, 0, integration)
    recorded = ApplyOutcome.EVENT_QUEUE_STATUS_RECORDED
    if after is integration:  # already the status
        return ApplyResult(recorded, TreePlan(), 0, 0, integration)
    return ApplyResult(recorded, TreePlan(), 2, 1, after)


async def _record_failure(
    ctx: Context, conn: asyncpg.Connection, integration: Integration, failure: Failure
) -> ApplyResult:
    return await _record_state(
        ctx, conn, integration, IntegrationState.ERROR, failure, ApplyOutcome.FAILURE_RECORDED
    )


async def _record_state(
    ctx: Context,
    conn: asyncpg.Connection,
    integration: Integration,
    state: IntegrationState,
    why: Failure | Suspension,
    outcome: ApplyOutcome,
) -> ApplyResult:
    """A new state with its reason, and nothing else: the tree stays as it is."""
    after = replace(
        integration, state=state, state_reason=why.reason, state_message=why.message[:2000]
    )
    if (after.state, after.state_reason, after.state_message) == (
        integration.state,
        integration.state_reason,
        integration.state_message,
    ):
        return ApplyResult(outcome, TreePlan(), 0, 0, integration)
    saved = await store.save_integration(conn, after)
    events = TreeEvents(saved)
    events.integration_updated(integration, saved, ("state",))
    await ctx.log.append(conn, events.events)
    return ApplyResult(outcome, TreePlan(), 2, 1, saved)


async def _apply_snapshot(
    ctx: Context,
    conn: asyncpg.Connection,
    integration: Integration,
    snapshot: Snapshot,
    confirm_deletions: bool,
) -> ApplyResult:
    db_conn = conn
    await store.lock_tenant_handles(db_conn, integration.scope.tenant_id)
    # Accounts whose stored fingerprint matches the snapshot cannot change: leave them unread.
    stored = await store.load_fingerprints(db_conn, integration.id)
    same_organization = integration.organization_id in ("", snapshot.organization_id)
    skipped = (
        unchanged_accounts(snapshot, {a: fingerprint for a, (fingerprint, _) in stored.items()})
        if same_organization
        else set()
    )
    folders = await store.load_folders(db_conn, integration.id)
    connections = await store.load_connections_of(
        db_conn, integration.id, sorted(set(stored) - skipped)
    )
    skipped_handles = {stored[a][1] for a in skipped}
    taken = await store.handles_elsewhere(db_conn, integration.scope.tenant_id, integration.id)
    plan = plan_snapshot(
        integration,
        folders,
        connections,
        snapshot,
        taken | skipped_handles,
        new_id=new_id,
        confirm_deletions=confirm_deletions,
        unchanged=skipped,
    )
    if plan.needs_confirmation:
        return ApplyResult(ApplyOutcome.NEEDS_CONFIRMATION, plan, 0, 0, integration)

    after = replace(
        integration,
        state=IntegrationState.ENABLED,
        state_reason="",
        state_message="",
        organization_id=snapshot.organization_id,
        management_account_id=snapshot.management_account_id,
        tree_generation=integration.tree_generation + (0 if plan.empty else 1),
        unmatched_filters=(
            integration.unmatched_filters
            if snapshot.unmatched_filters is None
            else snapshot.unmatched_filters
        ),
    )
    integration_changed = [
        name
        for name in (
            "state",
            "organization_id",
            "management_account_id",
            "tree_generation",
            "unmatched_filters",
        )
        if getattr(after, name) != getattr(integration, name)
    ]
    rows = await store.refresh_fingerprints(db_conn, plan.fingerprint_refreshes)
    if plan.empty and not integration_changed:
        return ApplyResult(ApplyOutcome.UNCHANGED, plan, rows, 0, integration)

    saved = await store.save_integration(db_conn, after)
    rows += 1
    final_folders = {f.id: f for f in folders}
    before_paths = folder_paths(folders)
    for update in plan.folder_updates:
        final_folders[update.after.id] = update.after
    for folder in plan.folder_creates:
        final_folders[folder.id] = folder
    after_paths = folder_paths(final_folders.values())
    events = TreeEvents(saved, after_paths)
    shown_fields = [n for n in integration_changed if n != "tree_generation"]
    if shown_fields:
        events.integration_updated(integration, saved, shown_fields)

    # Folders first (parents before children), then connections, then deletions.
    rows += await store.insert_folders(db_conn, plan.folder_creates)
    rows += await store.update_folders(db_conn, [u.after for u in plan.folder_updates])
    for folder in plan.folder_creates:
        events.folder_created(folder)
    for update in plan.folder_updates:
        events.folder_updated(
            update.before,
            update.after,
            update.changed_fields,
            before_paths.get(update.before.id, ()),
        )
    # Deletions before creations, so that a handle freed by a deleted connection and taken by
    # a new one reaches workspaces as a removal followed by an addition.
    rows += await store.delete_connections(db_conn, [d.item.id for d in plan.connection_deletes])
    rows += await store.update_connections(db_conn, [u.after for u in plan.connection_updates])
    rows += await store.insert_connections(db_conn, plan.connection_creates)
    for deletion in plan.connection_deletes:
        events.connection_deleted(deletion.item, deletion.reason)
    for changed in plan.connection_updates:
        events.connection_updated(changed.before, changed.after, changed.changed_fields)
    for connection in plan.connection_creates:
        events.connection_created(connection)
    rows += await store.delete_folders(db_conn, [d.item.id for d in plan.folder_deletes])
    rows += await store.add_tombstones(
        db_conn,
        [*(d.item.id for d in plan.connection_deletes), *(d.item.id for d in plan.folder_deletes)],
        integration.scope,
    )
    for removed in plan.folder_deletes:
        events.folder_deleted(removed.item, removed.reason, before_paths.get(removed.item.id, ()))
    if events.events:
        await ctx.log.append(db_conn, events.events)
    rows += len(events.events)
    return ApplyResult(
        ApplyOutcome.UNCHANGED if plan.empty else ApplyOutcome.APPLIED,
        plan,
        rows,
        len(events.events),
        saved,
    )


def summary(result: ApplyResult) -> tree_pb.ApplySummary:
    """The counts of an apply, as the API reports them."""
    plan = result.plan
    return tree_pb.ApplySummary(
        folders_created=len(plan.folder_creates),
        folders_updated=sum(
            1 for u in plan.folder_updates if set(u.changed_fields) - {"parent_id"}
        ),
        folders_moved=sum(1 for u in plan.folder_updates if "parent_id" in u.changed_fields),
        folders_deleted=len(plan.folder_deletes),
        connections_created=len(plan.connection_creates),
        connections_updated=sum(
            1 for u in plan.connection_updates if set(u.changed_fields) - {"handle", "folder_id"}
        ),
        connections_renamed=sum(1 for u in plan.connection_updates if "handle" in u.changed_fields),
        connections_moved=sum(
            1 for u in plan.connection_updates if "folder_id" in u.changed_fields
        ),
        connections_deleted=0 if plan.needs_confirmation else len(plan.connection_deletes),
        accounts_skipped_inactive=plan.accounts_skipped_inactive,
        rows_written=result.rows_written,
        events_emitted=result.events_emitted,
        connections_to_delete=plan.connections_to_delete,
        connections_total=plan.connections_total,
    )


def apply_response(result: ApplyResult) -> rpc.ApplyDiscoverySnapshotResponse:
    """The API answer of an apply."""
    return rpc.ApplyDiscoverySnapshotResponse(
        outcome=tree_pb.ApplyOutcome.Value(f"APPLY_OUTCOME_{result.outcome.value}"),
        summary=summary(result),
        generation=result.integration.tree_generation,
        integration=integration_to_proto(result.integration),
    )
