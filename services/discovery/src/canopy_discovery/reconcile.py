"""Reconciling the schedule with the integration service's list of integrations.

Discovery learns of integrations from the tree log, but a log can be missed: if discovery was
away longer than the log keeps events, the trigger consumer skips the gap, and an integration
created or deleted in it is never scheduled or never unscheduled. So at start, after such a gap,
and every `schedule_reconcile_interval`, discovery lists every integration (ListIntegrations
without a scope, as a system caller) and
- schedules, and syncs at once, each integration the schedule lacks;
- takes off the schedule each one the integration service no longer has (asked once more by
  id first, so that one created after the list was taken is kept);
- syncs at once each SUSPENDED one whose plan allows it again, and makes due at once each one
  whose plan no longer allows it, for its worker to suspend under the lease (`plans`);
- follows the event queue of each integration that has one, with its discovery role, and no
  other (asked once more by id first, as the list may be older than the tree log's news);
- leaves every other entry, and its timing, alone.

The tree-log consumer schedules a new integration within moments of its creation; one missing
from the schedule counts only if it is still missing a moment later, so a pass racing a creation
does not start a second sync of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from canopy.integration.v1 import integration_pb2 as ipb
from canopy_core.db import Database
from canopy_core.directory import Directory
from canopy_core.errors import CanopyError, NotFound, Unavailable
from canopy_core.event_queues import sync_interval_seconds
from canopy_core.eventlog import EventLog
from canopy_discovery import store
from canopy_discovery.integration_client import IntegrationClient
from canopy_discovery.model import FollowedQueue, Trigger
from canopy_discovery.plans import Suspension, plan_suspension
from canopy_discovery.runs import WORK_CHANNEL, cancel_integration, request_sync

log = logging.getLogger(__name__)

# How long a missing integration is given to be scheduled by the tree-log consumer.
SETTLE_SECONDS = 1.0
# After a failed pass, the next one comes this soon (or at the interval, if shorter).
RETRY_SECONDS = 5.0


@dataclass
class Reconciled:
    """What one pass changed."""

    scheduled: list[str] = field(default_factory=list)
    unscheduled: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)  # suspended, and allowed again
    to_suspend: list[str] = field(default_factory=list)  # made due, their plan forbids them
    queues: list[str] = field(default_factory=list)  # whose event queue is followed anew, or not


class Reconciler:
    """Brings the schedule in line with the integrations that exist, on start and periodically."""

    def __init__(
        self,
        db: Database,
        event_log: EventLog,
        integrations: IntegrationClient,
        directory: Directory,
        interval: timedelta,
        *,
        settle: float = SETTLE_SECONDS,
    ) -> None:
        self.db = db
        self.log = event_log
        self.integrations = integrations
        self.directory = directory
        self.interval = interval.total_seconds()
        self.settle = settle
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Reconcile now (e.g. after the tree-log consumer skipped a compacted gap)."""
        self._wake.set()

    async def run(self) -> None:
        """Reconcile at once, then on every interval or wake-up, until cancelled."""
        while True:
            self._wake.clear()
            wait = self.interval
            try:
                done = await self.reconcile()
                if any(vars(done).values()):
                    log.info(
                        "schedule reconciled with the integration service",
                        extra={
                            "scheduled": done.scheduled,
                            "unscheduled": done.unscheduled,
                            "resumed": done.resumed,
                            "to_suspend": done.to_suspend,
                            "event_queues": done.queues,
                        },
                    )
            except asyncio.CancelledError:
                raise
            except Unavailable as exc:
                # Expected while the integration service starts or restarts: quietly, again soon.
                log.info("schedule reconciliation postponed: %s", exc.message)
                wait = min(wait, RETRY_SECONDS)
            except Exception:
                log.exception("schedule reconciliation failed")
                wait = min(wait, RETRY_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def reconcile(self) -> Reconciled:
        """One pass: schedule what is missing, unschedule what is gone, act on plan changes."""
        listed = {i.id: i for i in await self.integrations.every_integration()}
        async with self.db.connection() as conn:
            scheduled = await store.scheduled_integration_ids(conn)
        done = Reconciled()
        missing = sorted(set(listed) - scheduled)
        if missing:
            await asyncio.sleep(self.settle)
            async with self.db.connection() as conn:
                scheduled = await store.scheduled_integration_ids(conn)
        for integration_id in missing:
            if integration_id in scheduled:
                continue
            integration = listed[integration_id]
            async with self.db.transaction() as conn:
                if await store.get_schedule(conn, integration_id) is not None:
                    continue  # the tree-log consumer came first
                await request_sync(
                    conn,
                    self.log,
                    integration_id,
                    integration.tenant_id,
                    integration.scope.org_id or None,
                    sync_interval_seconds(integration),
                    Trigger.RECONCILED,
                )
            done.scheduled.append(integration_id)
        for integration_id in sorted(scheduled - set(listed)):
            try:
                await self.integrations.get_integration(integration_id)
                continue  # created after the list was taken
            except NotFound:
                pass
            async with self.db.transaction() as conn:
                await cancel_integration(conn, self.log, integration_id)
            done.unscheduled.append(integration_id)
        known = [listed[i] for i in sorted(scheduled & set(listed))]
        await self._plan_changes(known, done)
        await self._event_queues(listed, done)
        return done

    async def _event_queues(self, listed: dict[str, ipb.Integration], done: Reconciled) -> None:
        """Follow exactly the event queues the integrations have, with their roles."""
        async with self.db.connection() as conn:
            followed = await store.event_queues(conn)
        for integration_id in sorted(set(listed) | set(followed)):
            if _queue_of(listed.get(integration_id)) == _followed(followed.get(integration_id)):
                continue
            try:
                # The list may predate a change the tree-log consumer has already applied.
                integration: ipb.Integration | None = await self.integrations.get_integration(
                    integration_id
                )
            except NotFound:
                integration = None
            async with self.db.transaction() as conn:
                url, role, external_id = _queue_of(integration)
                await store.set_event_queue(conn, integration_id, url, role, external_id)
            done.queues.append(integration_id)

    async def _plan_changes(self, integrations: list[ipb.Integration], done: Reconciled) -> None:
        """Integrations whose plan changed since their worker last checked it."""
        verdicts: dict[tuple[str, str | None], Suspension | CanopyError | None] = {}
        for integration in integrations:
            scope = (integration.tenant_id, integration.scope.org_id or None)
            if scope not in verdicts:
                try:
                    verdicts[scope] = await plan_suspension(self.directory, *scope)
                except CanopyError as exc:
                    verdicts[scope] = exc  # unknown: leave its integrations as they are
            verdict = verdicts[scope]
            if isinstance(verdict, CanopyError):
                continue
            suspended = integration.state == ipb.INTEGRATION_STATE_SUSPENDED
            if suspended and verdict is None:
                async with self.db.transaction() as conn:
                    await request_sync(
                        conn,
                        self.log,
                        integration.id,
                        integration.tenant_id,
                        integration.scope.org_id or None,
                        sync_interval_seconds(integration),
                        Trigger.RECONCILED,
                    )
                done.resumed.append(integration.id)
            elif not suspended and verdict is not None:
                # No run: the worker checks the plan under the lease and suspends it.
                async with self.db.transaction() as conn:
                    await store.set_schedule(conn, integration.id, due_now=True)
                    await conn.execute("SELECT pg_notify($1, $2)", WORK_CHANNEL, integration.id)
                done.to_suspend.append(integration.id)


def _queue_of(integration: ipb.Integration | None) -> tuple[str, str, str]:
    """An integration's queue and the role that reads it; empty without a queue."""
    if integration is None or not integration.discovery_access.event_queue:
        return ("", "", "")
    access = integration.discovery_access
    return (access.event_queue, access.role_arn, access.external_id)


def _followed(queue: FollowedQueue | None) -> tuple[str, str, str]:
    if queue is None:
        return ("", "", "")
    return (queue.queue_url, queue.role_arn, queue.external_id)
