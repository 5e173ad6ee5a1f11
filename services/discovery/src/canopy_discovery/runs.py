"""Sync runs: starting one (once per trigger: a live run absorbs further triggers), reading
them, and following one as it progresses. Every change to a run is appended to the service's
event log, which `WatchSyncRun` follows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg

from canopy.discovery.v1 import discovery_pb2 as pb
from canopy.discovery.v1 import discovery_service_pb2 as rpc
from canopy_core import requests
from canopy_core.auth import Principal
from canopy_core.db import Database
from canopy_core.directory import Directory
from canopy_core.errors import CanopyError, NotFound, PermissionDenied
from canopy_core.event_queues import sync_interval_seconds
from canopy_core.eventlog import EventLog, NewEvent
from canopy_core.ids import new_id
from canopy_core.pagination import PagePosition, PageTokens, page_size
from canopy_core.validation import Violations
from canopy_discovery import store
from canopy_discovery.convert import run_to_proto
from canopy_discovery.errors import PlanNotEligible
from canopy_discovery.integration_client import IntegrationClient
from canopy_discovery.model import CoveredEvent, RunState, SyncRun, Trigger
from canopy_discovery.plans import plan_suspension

WORK_CHANNEL = "canopy_discovery_work"
TERMINAL = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.NEEDS_CONFIRMATION, RunState.CANCELLED}
)
TERMINAL_PROTO = frozenset(pb.SyncRunState.Value(f"SYNC_RUN_STATE_{s.value}") for s in TERMINAL)


@dataclass(frozen=True)
class RunPage:
    """One page of runs, newest first."""

    runs: list[SyncRun]
    next_page_token: str


async def record(conn: asyncpg.Connection, log: EventLog, run: SyncRun) -> SyncRun:
    """Save a run and append its new state for watchers, in the caller's transaction."""
    saved = await store.save_run(conn, run)
    await append_run_event(conn, log, saved)
    return saved


async def append_run_event(conn: asyncpg.Connection, log: EventLog, run: SyncRun) -> None:
    """The run's state as an event keyed by run and integration."""
    await log.append(
        conn,
        [
            NewEvent(
                kind="SyncRun",
                keys=(f"run:{run.id}", f"integration:{run.integration_id}"),
                payload=run_to_proto(run).SerializeToString(),
            )
        ],
    )


async def request_sync(
    conn: asyncpg.Connection,
    log: EventLog,
    integration_id: str,
    tenant_id: str,
    org_id: str | None,
    interval_seconds: int,
    trigger: Trigger,
    *,
    confirm_deletions: bool = False,
    events: tuple[CoveredEvent, ...] = (),
    event_count: int = 0,
    full_crawl_reason: str = "",
) -> SyncRun:
    """The integration's live run, or a new QUEUED one (covering `events`, for `full_crawl_reason`
    when a refresh fell back to it); workers are woken at commit."""
    schedule = await store.get_schedule(conn, integration_id, for_update=True)
    if schedule is None:
        schedule = await store.upsert_schedule(
            conn, integration_id, tenant_id, org_id, interval_seconds
        )
        schedule = await store.get_schedule(conn, integration_id, for_update=True)
        assert schedule is not None
    if schedule.active_run_id:
        active = await store.get_run(conn, schedule.active_run_id, for_update=True)
        if active is not None and active.state.active:
            if confirm_deletions and not active.confirm_deletions:
                # A confirmation reaches the live run: it is read when the run applies.
                active = await record(conn, log, replace(active, confirm_deletions=True))
            return active
    run = await store.insert_run(
        conn,
        SyncRun(
            id=new_id("r"),
            integration_id=integration_id,
            tenant_id=tenant_id,
            org_id=org_id,
            state=RunState.QUEUED,
            trigger=trigger,
            confirm_deletions=confirm_deletions,
            events=events,
            event_count=event_count,
            full_crawl_reason=full_crawl_reason,
        ),
    )
    await append_run_event(conn, log, run)
    await store.set_schedule(conn, integration_id, due_now=True, active_run_id=run.id)
    await conn.execute("SELECT pg_notify($1, $2)", WORK_CHANNEL, integration_id)
    return run


async def cancel_active_runs(
    conn: asyncpg.Connection, log: EventLog, integration_id: str, reason: str, message: str
) -> None:
    """Cancel the integration's queued or running run, saying why."""
    # The schedule row first, as a claiming worker locks it before the run: the other order
    # deadlocks with a claim of the same integration.
    await store.get_schedule(conn, integration_id, for_update=True)
    for run in await store.active_runs(conn, integration_id):
        cancelled = replace(
            run,
            state=RunState.CANCELLED,
            end_time=datetime.now(UTC),
            failure_reason=reason,
            failure_message=message,
        )
        await record(conn, log, cancelled)


async def cancel_integration(conn: asyncpg.Connection, log: EventLog, integration_id: str) -> None:
    """The integration is gone: cancel its live runs, take it off the schedule and stop
    following its event queue."""
    await cancel_active_runs(
        conn, log, integration_id, "INTEGRATION_DELETED", "the integration was deleted"
    )
    await store.delete_schedule(conn, integration_id)
    await store.delete_event_queue(conn, integration_id)
    await store.delete_applied_snapshot(conn, integration_id)


# -- the RPCs' use cases -------------------------------------------------------------------------


def _denied(principal: Principal, what: str) -> PermissionDenied:
    return PermissionDenied(
        f"{principal.subject!r} may not read {what}",
        metadata={"subject": principal.subject, "resource": what},
    )


async def scope_of(
    integrations: IntegrationClient, principal: Principal, integration_id: str
) -> tuple[str, str | None, int]:
    """An integration's tenant, org and sync interval; hidden from outsiders. A deleted one is
    NOT_FOUND for its scope's members (while the integration service keeps its tombstone), as
    the integration service answers them."""
    with Violations() as v:
        v.resource_id("integration_id", integration_id, "i")
    try:
        integration = await integrations.get_integration(integration_id)
    except NotFound as gone:
        if principal.system:
            raise
        deleted_from = gone.metadata.get("tenant_id")
        if deleted_from and principal.is_member(deleted_from, gone.metadata.get("org_id") or None):
            raise NotFound("integration", integration_id) from None
        raise _denied(principal, f"integration {integration_id}") from None
    tenant_id = integration.tenant_id
    org_id = integration.scope.org_id or None
    if not principal.is_member(tenant_id, org_id):
        raise _denied(principal, f"integration {integration_id}")
    return tenant_id, org_id, sync_interval_seconds(integration)


async def sync_integration(
    db: Database,
    log: EventLog,
    integrations: IntegrationClient,
    directory: Directory,
    principal: Principal,
    request: rpc.SyncIntegrationRequest,
) -> SyncRun:
    """Start a sync now (owners of the integration's scope), if its plan allows it."""
    tenant_id, org_id, interval = await scope_of(integrations, principal, request.integration_id)
    principal.require_owner(tenant_id, org_id, resource=f"integration {request.integration_id}")
    try:
        suspension = await plan_suspension(directory, tenant_id, org_id)
    except CanopyError:
        suspension = None  # the worker checks again before it crawls
    if suspension is not None:
        raise PlanNotEligible(request.integration_id, suspension.message)
    async with db.transaction() as conn:
        if request.request_id:
            earlier = await requests.replay(
                conn,
                "SyncIntegration",
                request.request_id,
                principal.subject,
                request,
                rpc.SyncIntegrationResponse,
            )
            if earlier is not None:
                found = await store.get_run(conn, earlier.run.id)
                if found is None:
                    raise NotFound("run", earlier.run.id)
                return found
        run = await request_sync(
            conn,
            log,
            request.integration_id,
            tenant_id,
            org_id,
            interval,
            Trigger.MANUAL,
            confirm_deletions=request.confirm_deletions,
        )
        if request.request_id:
            await requests.remember(
                conn,
                "SyncIntegration",
                request.request_id,
                principal.subject,
                request,
                rpc.SyncIntegrationResponse(run=run_to_proto(run)),
            )
        return run


async def get_run(db: Database, principal: Principal, run_id: str) -> SyncRun:
    """One run, for members of its integration's scope."""
    with Violations() as v:
        v.resource_id("id", run_id, "r")
    async with db.connection() as conn:
        run = await store.get_run(conn, run_id)
    if run is None:
        if principal.system:
            raise NotFound("run", run_id)
        raise _denied(principal, f"run {run_id}")
    if not principal.is_member(*run.chain):
        raise _denied(principal, f"run {run_id}")
    return run


RUNS_PAGE = PagePosition("sync_runs", (str,))


async def list_runs(
    db: Database,
    page_tokens: PageTokens,
    integrations: IntegrationClient,
    principal: Principal,
    integration_id: str,
    requested_size: int,
    page_token: str,
) -> RunPage:
    """An integration's runs, newest first."""
    with Violations() as v:
        v.resource_id("integration_id", integration_id, "i")
    size = page_size(requested_size)
    arguments = {"integration_id": integration_id}
    position = page_tokens.open(page_token, RUNS_PAGE, arguments)
    # Asked every time: a deleted integration's runs are kept, but it is gone (NOT_FOUND).
    await scope_of(integrations, principal, integration_id)
    async with db.connection() as conn:
        after = position[0] if position else None
        rows = await store.list_runs(conn, integration_id, after, size + 1)
    more = len(rows) > size
    rows = rows[:size]
    return RunPage(rows, page_tokens.seal(RUNS_PAGE, [rows[-1].id], arguments) if more else "")


async def watch_run(
    db: Database, log: EventLog, principal: Principal, run_id: str
) -> AsyncIterator[pb.SyncRun]:
    """The run now, then each new state of it, until it ends."""
    await get_run(db, principal, run_id)
    async with (
        db.connection() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        current = await store.get_run(conn, run_id)
        head: int = await conn.fetchval("SELECT revision FROM event_log_head")
    assert current is not None
    yield run_to_proto(current)
    if current.state in TERMINAL:
        return
    async for batch in log.watch(head, [f"run:{run_id}"]):
        for event in batch.events:
            message = pb.SyncRun.FromString(event.payload)
            yield message
            if message.state in TERMINAL_PROTO:
                return
