"""Which replica follows which event queue: leases in PostgreSQL, as for syncs.

Every integration with a queue has a row in `event_queues` (kept by the tree-log consumer and
the reconciler). A replica claims rows no live replica holds (`FOR UPDATE SKIP LOCKED`, an
expiry), up to `max_followers`, and runs one follower per queue for as long as it holds the
lease, renewing all its leases together every third of the lease's life. The lease is separate
from the sync lease: a follower holds it continuously, while syncs come and go. A lease that
could not be renewed stops its follower; a new queue or role (the row's version) starts it
again; a replica that stops lets its queues go at once, and one that dies loses them when their
leases expire, to whichever replica claims them next. Messages a follower had received but not
deleted come back after their visibility timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from canopy_core.db import Database, is_connection_error
from canopy_core.eventlog import EventLog
from canopy_core.ids import new_id
from canopy_core.tasks import cancel_and_wait
from canopy_discovery import store
from canopy_discovery.aws import AwsSettings
from canopy_discovery.events.follower import Follower, FollowerConfig
from canopy_discovery.integration_client import IntegrationClient
from canopy_discovery.model import FollowedQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerConfig:
    """How many queues one replica follows, and its leases."""

    max_followers: int = 32
    lease_ttl: timedelta = timedelta(seconds=30)
    poll_interval: float = 5.0  # how often unclaimed queues are looked for
    follower: FollowerConfig = field(default_factory=FollowerConfig)


@dataclass
class _Held:
    queue: FollowedQueue
    task: asyncio.Task[None]


class EventConsumer:
    """The followers of one discovery replica."""

    def __init__(
        self,
        db: Database,
        event_log: EventLog,
        integrations: IntegrationClient,
        aws: AwsSettings,
        config: ConsumerConfig,
    ) -> None:
        self.db = db
        self.log = event_log
        self.integrations = integrations
        self.aws = aws
        self.config = config
        self.owner = new_id("w")  # this replica, in lease_owner
        self.held: dict[str, _Held] = {}

    async def run(self) -> None:
        """Claim, renew and follow until cancelled; then let the queues go."""
        if self.config.max_followers <= 0:
            return
        period = min(self.config.poll_interval, self.config.lease_ttl.total_seconds() / 3)
        try:
            while True:
                try:
                    await self.renew()
                    await self.claim()
                except Exception as exc:
                    if not is_connection_error(exc):
                        log.exception("event queue leases failed")
                await asyncio.sleep(period)
        finally:
            await self._stop_all()

    async def renew(self) -> None:
        """Extend the leases held; stop the followers whose lease is lost, restart those whose
        queue or role changed (or that ended)."""
        if not self.held:
            return
        async with self.db.transaction() as conn:
            still = await store.renew_event_queues(
                conn, self.owner, list(self.held), self.config.lease_ttl
            )
        for integration_id, held in list(self.held.items()):
            now = still.get(integration_id)
            if now is None:
                log.info("event queue lease lost", extra={"integration_id": integration_id})
                await self._stop(integration_id)
            elif now.version != held.queue.version or held.task.done():
                await self._stop(integration_id)
                self._start(now)

    async def claim(self) -> None:
        """Lease unfollowed queues while this replica has room."""
        while len(self.held) < self.config.max_followers:
            async with self.db.transaction() as conn:
                queue = await store.claim_event_queue(conn, self.owner, self.config.lease_ttl)
            if queue is None:
                return
            if queue.integration_id in self.held:  # its lease had expired: follow it anew
                await self._stop(queue.integration_id)
            self._start(queue)

    def _start(self, queue: FollowedQueue) -> None:
        follower = Follower(
            queue, self.db, self.log, self.integrations, self.aws, self.config.follower
        )
        task = asyncio.create_task(follower.run(), name=f"event-queue-{queue.integration_id}")
        self.held[queue.integration_id] = _Held(queue, task)
        log.info("following an event queue", extra={"integration_id": queue.integration_id})

    async def _stop(self, integration_id: str) -> None:
        held = self.held.pop(integration_id, None)
        if held is None:
            return
        await cancel_and_wait(held.task)

    async def _stop_all(self) -> None:
        ids = list(self.held)
        for integration_id in ids:
            await self._stop(integration_id)
        if ids:
            with contextlib.suppress(Exception):
                async with self.db.transaction() as conn:
                    await store.release_event_queues(conn, self.owner, ids)
