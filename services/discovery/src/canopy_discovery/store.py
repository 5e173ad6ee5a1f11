"""SQL of the discovery service: the schedule with its leases, sync runs, the event queues
followed (with leases of their own) and the last snapshot applied per integration."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from canopy_core.ids import new_etag
from canopy_discovery.model import (
    AppliedSnapshot,
    CoveredEvent,
    FollowedQueue,
    Progress,
    RunState,
    Schedule,
    SyncRun,
    Trigger,
)

_RUN = """id, integration_id, tenant_id, org_id, state, trigger, confirm_deletions, attempt,
    progress, summary, apply_outcome, failure_reason, failure_message, organization_id, etag,
    created_at, started_at, ended_at, updated_at, events, event_count, full_crawl_reason,
    organizational_units_refused, refused_organizational_unit_ids"""
_QUEUE = "integration_id, queue_url, role_arn, external_id, version"
_SCHEDULE = """integration_id, tenant_id, org_id, interval_seconds, next_run_at, active_run_id,
    lease_owner, lease_expires_at"""


def _run(row: asyncpg.Record) -> SyncRun:
    return SyncRun(
        id=row["id"],
        integration_id=row["integration_id"],
        tenant_id=row["tenant_id"],
        org_id=row["org_id"],
        state=RunState(row["state"]),
        trigger=Trigger(row["trigger"]),
        confirm_deletions=row["confirm_deletions"],
        attempt=row["attempt"],
        progress=_progress(row),
        summary=bytes(row["summary"]) if row["summary"] is not None else None,
        apply_outcome=row["apply_outcome"],
        failure_reason=row["failure_reason"],
        failure_message=row["failure_message"],
        organization_id=row["organization_id"],
        etag=row["etag"],
        create_time=row["created_at"],
        start_time=row["started_at"],
        end_time=row["ended_at"],
        update_time=row["updated_at"],
        events=tuple(_covered(event) for event in row["events"]),
        event_count=row["event_count"],
        full_crawl_reason=row["full_crawl_reason"],
    )


# The keys of `sync_runs.progress`: the previous release reads that object strictly, so it keeps
# these keys and nothing more; later figures get columns of their own (migration 0004).
_PROGRESS_KEYS = (
    "organizational_units_found",
    "accounts_found",
    "api_calls",
    "throttled_calls",
    "elapsed_seconds",
)


def _progress(row: asyncpg.Record) -> Progress:
    # Keys this release does not know (a later release's) are ignored. Refused OUs saved in
    # `progress` before they had columns are still read from there.
    saved: dict[str, Any] = row["progress"]
    refused = row["refused_organizational_unit_ids"] or saved.get(
        "refused_organizational_unit_ids", ()
    )
    return Progress(
        **{key: saved[key] for key in _PROGRESS_KEYS if key in saved},
        organizational_units_refused=(
            row["organizational_units_refused"] or saved.get("organizational_units_refused", 0)
        ),
        refused_organizational_unit_ids=tuple(refused),
    )


def _covered(event: dict[str, str]) -> CoveredEvent:
    return CoveredEvent(
        event_id=event["id"],
        event_name=event["name"],
        entity_id=event["entity"],
        event_time=datetime.fromisoformat(event["time"]),
    )


def _events_json(events: tuple[CoveredEvent, ...]) -> list[dict[str, str]]:
    return [
        {
            "id": event.event_id,
            "name": event.event_name,
            "entity": event.entity_id,
            "time": event.event_time.isoformat(),
        }
        for event in events
    ]


def _schedule(row: asyncpg.Record) -> Schedule:
    return Schedule(**dict(row.items()))


# -- schedule ----------------------------------------------------------------------------------


async def upsert_schedule(
    conn: asyncpg.Connection,
    integration_id: str,
    tenant_id: str,
    org_id: str | None,
    interval_seconds: int,
) -> Schedule:
    """Add an integration to the schedule (due now), or update its interval."""
    row = await conn.fetchrow(
        f"""INSERT INTO schedules (integration_id, tenant_id, org_id, interval_seconds,
                next_run_at)
            VALUES ($1, $2, $3, $4, now())
            ON CONFLICT (integration_id) DO UPDATE SET interval_seconds = EXCLUDED.interval_seconds,
                updated_at = now()
            RETURNING {_SCHEDULE}""",
        integration_id,
        tenant_id,
        org_id,
        interval_seconds,
    )
    return _schedule(row)


async def get_schedule(
    conn: asyncpg.Connection, integration_id: str, *, for_update: bool = False
) -> Schedule | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_SCHEDULE} FROM schedules WHERE integration_id = $1{lock}", integration_id
    )
    return _schedule(row) if row else None


async def set_schedule(
    conn: asyncpg.Connection,
    integration_id: str,
    *,
    next_run_at: datetime | None = None,
    due_now: bool = False,
    active_run_id: str | object | None = ...,
    interval_seconds: int | None = None,
) -> None:
    """Change some fields of a schedule row. A new interval also brings the next run forward
    to at most one interval from now (a shorter interval applies at once)."""
    sets: list[str] = []
    args: list[object] = [integration_id]
    if due_now:
        sets.append("next_run_at = now()")
    elif next_run_at is not None:
        args.append(next_run_at)
        sets.append(f"next_run_at = ${len(args)}")
    if active_run_id is not ...:
        args.append(active_run_id)
        sets.append(f"active_run_id = ${len(args)}")
    if interval_seconds is not None:
        args.append(interval_seconds)
        sets.append(f"interval_seconds = ${len(args)}")
        if not due_now and next_run_at is None:
            soonest = f"now() + ${len(args)}::integer * interval '1 second'"
            sets.append(f"next_run_at = LEAST(next_run_at, {soonest})")
    if sets:
        await conn.execute(
            f"UPDATE schedules SET {', '.join(sets)}, updated_at = now() WHERE integration_id = $1",
            *args,
        )


async def scheduled_integration_ids(conn: asyncpg.Connection) -> set[str]:
    """The integrations on the schedule."""
    return {
        row["integration_id"] for row in await conn.fetch("SELECT integration_id FROM schedules")
    }


async def delete_schedule(conn: asyncpg.Connection, integration_id: str) -> Schedule | None:
    row = await conn.fetchrow(
        f"DELETE FROM schedules WHERE integration_id = $1 RETURNING {_SCHEDULE}", integration_id
    )
    return _schedule(row) if row else None


async def claim_due(conn: asyncpg.Connection, owner: str, lease_ttl: timedelta) -> Schedule | None:
    """Lease the most overdue integration no live worker holds (replicas skip each other's)."""
    row = await conn.fetchrow(
        f"""UPDATE schedules SET lease_owner = $1, lease_expires_at = now() + $2::interval,
                updated_at = now()
            WHERE integration_id = (
                SELECT integration_id FROM schedules
                WHERE next_run_at <= now()
                  AND (lease_expires_at IS NULL OR lease_expires_at < now())
                ORDER BY next_run_at
                LIMIT 1
                FOR UPDATE SKIP LOCKED)
            RETURNING {_SCHEDULE}""",
        owner,
        lease_ttl,
    )
    return _schedule(row) if row else None


async def renew_lease(
    conn: asyncpg.Connection, integration_id: str, owner: str, lease_ttl: timedelta
) -> bool:
    """Extend a lease this worker still holds; False if it was lost (expired and taken, or the
    integration left the schedule)."""
    status = await conn.execute(
        "UPDATE schedules SET lease_expires_at = now() + $3::interval "
        "WHERE integration_id = $1 AND lease_owner = $2",
        integration_id,
        owner,
        lease_ttl,
    )
    return bool(status.endswith(" 1"))


async def release(
    conn: asyncpg.Connection, integration_id: str, owner: str, next_run_at: datetime
) -> bool:
    """Give the integration back to the schedule, due again at `next_run_at`."""
    status = await conn.execute(
        "UPDATE schedules SET lease_owner = NULL, lease_expires_at = NULL, active_run_id = NULL, "
        "next_run_at = $3, updated_at = now() WHERE integration_id = $1 AND lease_owner = $2",
        integration_id,
        owner,
        next_run_at,
    )
    return bool(status.endswith(" 1"))


async def next_due_in(conn: asyncpg.Connection) -> float | None:
    """Seconds until the next integration is due (negative if overdue); None if none."""
    value = await conn.fetchval(
        "SELECT extract(epoch FROM min(next_run_at) - now()) FROM schedules "
        "WHERE lease_expires_at IS NULL OR lease_expires_at < now()"
    )
    return float(value) if value is not None else None


# -- runs ----------------------------------------------------------------------------------------


async def insert_run(conn: asyncpg.Connection, run: SyncRun) -> SyncRun:
    row = await conn.fetchrow(
        f"""INSERT INTO sync_runs (id, integration_id, tenant_id, org_id, state, trigger,
                confirm_deletions, etag, events, event_count, full_crawl_reason)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {_RUN}""",
        run.id,
        run.integration_id,
        run.tenant_id,
        run.org_id,
        run.state.value,
        run.trigger.value,
        run.confirm_deletions,
        new_etag(),
        _events_json(run.events),
        run.event_count,
        run.full_crawl_reason,
    )
    return _run(row)


async def get_run(
    conn: asyncpg.Connection, run_id: str, *, for_update: bool = False
) -> SyncRun | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_RUN} FROM sync_runs WHERE id = $1{lock}", run_id)
    return _run(row) if row else None


async def save_run(conn: asyncpg.Connection, run: SyncRun) -> SyncRun:
    """Write every mutable field of a run; a new etag and update time."""
    p = run.progress
    row = await conn.fetchrow(
        f"""UPDATE sync_runs SET state = $2, confirm_deletions = $3, attempt = $4,
                progress = $5, summary = $6, apply_outcome = $7, failure_reason = $8,
                failure_message = $9, organization_id = $10, started_at = $11, ended_at = $12,
                etag = $13, organizational_units_refused = $14,
                refused_organizational_unit_ids = $15, updated_at = now()
            WHERE id = $1 RETURNING {_RUN}""",
        run.id,
        run.state.value,
        run.confirm_deletions,
        run.attempt,
        {key: getattr(p, key) for key in _PROGRESS_KEYS},
        run.summary,
        run.apply_outcome,
        run.failure_reason,
        run.failure_message,
        run.organization_id,
        run.start_time,
        run.end_time,
        new_etag(),
        p.organizational_units_refused,
        list(p.refused_organizational_unit_ids),
    )
    return _run(row)


async def list_runs(
    conn: asyncpg.Connection, integration_id: str, before_id: str | None, limit: int
) -> list[SyncRun]:
    """An integration's runs, newest first (ids sort by creation time)."""
    rows = await conn.fetch(
        f"SELECT {_RUN} FROM sync_runs WHERE integration_id = $1 "
        "AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        integration_id,
        before_id,
        limit,
    )
    return [_run(r) for r in rows]


async def active_runs(conn: asyncpg.Connection, integration_id: str) -> list[SyncRun]:
    rows = await conn.fetch(
        f"SELECT {_RUN} FROM sync_runs WHERE integration_id = $1 "
        "AND state IN ('QUEUED', 'RUNNING') FOR UPDATE",
        integration_id,
    )
    return [_run(r) for r in rows]


# -- event queues --------------------------------------------------------------------------------


def _queue(row: asyncpg.Record) -> FollowedQueue:
    return FollowedQueue(**dict(row.items()))


async def set_event_queue(
    conn: asyncpg.Connection,
    integration_id: str,
    queue_url: str,
    role_arn: str,
    external_id: str,
) -> None:
    """Follow the integration's queue with its role (`queue_url` "" stops following it). A new
    queue or role bumps the version: whoever follows it starts again with the new one."""
    if not queue_url:
        await delete_event_queue(conn, integration_id)
        return
    await conn.execute(
        """INSERT INTO event_queues (integration_id, queue_url, role_arn, external_id)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (integration_id) DO UPDATE SET queue_url = EXCLUDED.queue_url,
                role_arn = EXCLUDED.role_arn, external_id = EXCLUDED.external_id,
                version = event_queues.version + 1, updated_at = now()
            WHERE (event_queues.queue_url, event_queues.role_arn, event_queues.external_id)
                IS DISTINCT FROM (EXCLUDED.queue_url, EXCLUDED.role_arn, EXCLUDED.external_id)""",
        integration_id,
        queue_url,
        role_arn,
        external_id,
    )


async def delete_event_queue(conn: asyncpg.Connection, integration_id: str) -> None:
    await conn.execute("DELETE FROM event_queues WHERE integration_id = $1", integration_id)


async def event_queues(conn: asyncpg.Connection) -> dict[str, FollowedQueue]:
    """Every queue followed, by integration."""
    rows = await conn.fetch(f"SELECT {_QUEUE} FROM event_queues")
    return {row["integration_id"]: _queue(row) for row in rows}


async def claim_event_queue(
    conn: asyncpg.Connection, owner: str, lease_ttl: timedelta
) -> FollowedQueue | None:
    """Lease one queue no live replica follows (replicas skip each other's)."""
    row = await conn.fetchrow(
        f"""UPDATE event_queues SET lease_owner = $1, lease_expires_at = now() + $2::interval
            WHERE integration_id = (
                SELECT integration_id FROM event_queues
                WHERE lease_expires_at IS NULL OR lease_expires_at < now()
                ORDER BY updated_at
                LIMIT 1
                FOR UPDATE SKIP LOCKED)
            RETURNING {_QUEUE}""",
        owner,
        lease_ttl,
    )
    return _queue(row) if row else None


async def renew_event_queues(
    conn: asyncpg.Connection, owner: str, integration_ids: list[str], lease_ttl: timedelta
) -> dict[str, FollowedQueue]:
    """Extend the leases this replica still holds; the queues (as they are now) it still has."""
    rows = await conn.fetch(
        f"""UPDATE event_queues SET lease_expires_at = now() + $3::interval
            WHERE lease_owner = $1 AND integration_id = ANY($2::text[])
            RETURNING {_QUEUE}""",
        owner,
        integration_ids,
        lease_ttl,
    )
    return {row["integration_id"]: _queue(row) for row in rows}


async def release_event_queues(
    conn: asyncpg.Connection, owner: str, integration_ids: list[str]
) -> None:
    """Let other replicas take these queues at once (this one stops following them)."""
    await conn.execute(
        "UPDATE event_queues SET lease_owner = NULL, lease_expires_at = NULL "
        "WHERE lease_owner = $1 AND integration_id = ANY($2::text[])",
        owner,
        integration_ids,
    )


# -- applied snapshots ---------------------------------------------------------------------------


async def save_applied_snapshot(conn: asyncpg.Connection, applied: AppliedSnapshot) -> None:
    """Keep the snapshot an apply left the tree at; an older generation never replaces a newer
    one (a crawl and a refresh may finish in either order)."""
    await conn.execute(
        """INSERT INTO applied_snapshots (integration_id, generation, run_id, snapshot)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (integration_id) DO UPDATE SET generation = EXCLUDED.generation,
                run_id = EXCLUDED.run_id, snapshot = EXCLUDED.snapshot, updated_at = now()
            WHERE applied_snapshots.generation <= EXCLUDED.generation""",
        applied.integration_id,
        applied.generation,
        applied.run_id,
        applied.snapshot,
    )


async def get_applied_snapshot(
    conn: asyncpg.Connection, integration_id: str
) -> AppliedSnapshot | None:
    row = await conn.fetchrow(
        "SELECT integration_id, generation, run_id, snapshot FROM applied_snapshots "
        "WHERE integration_id = $1",
        integration_id,
    )
    if row is None:
        return None
    return AppliedSnapshot(
        row["integration_id"], row["generation"], row["run_id"], bytes(row["snapshot"])
    )


async def delete_applied_snapshot(conn: asyncpg.Connection, integration_id: str) -> None:
    await conn.execute("DELETE FROM applied_snapshots WHERE integration_id = $1", integration_id)
