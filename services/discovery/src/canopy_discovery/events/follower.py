"""Following one integration's event queue: long polling, bursts, targeted refreshes, the runs
that record them, and the queue's status as the integration shows it.

The follower long-polls the queue (SQS ReceiveMessage, up to 10 messages, WaitTimeSeconds up to
20) with the discovery role's credentials, and gathers a burst: the messages of `coalesce_window`
seconds from the first one. It then
- drops (deletes, counts by reason) the messages that name nothing to refresh: not an event, of
  another source, organization or account, a failed call, an unknown event name…;
- waits while a full crawl of the integration is queued or running (its messages kept hidden),
  so that a crawl that began before the events cannot overwrite their refresh;
- reads what the events name from the Organizations API, patches the last snapshot applied, and
  applies it with `expected_generation` exactly as a crawl would; or, when that cannot be made
  consistent, queues one full crawl (`full_crawl_reason`);
- records the refresh as a sync run (trigger ORGANIZATION_EVENTS, the events it covered) with the
  snapshot it applied, in one transaction, and only then deletes the messages.

A burst whose refresh fails (AWS keeps throttling, the integration service is away…) is not
deleted: its messages come back after a short delay, and after the queue's maxReceiveCount
receives its redrive policy moves them to the dead-letter queue. A queue that cannot be read is
reported FAILING (once per change of reason) and tried again with backoff; scheduled crawls go
on regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as ipb
from canopy_core.db import Database
from canopy_core.errors import Aborted, CanopyError, NotFound
from canopy_core.event_queues import EVENTS_REGION, parse_event_queue, sync_interval_seconds
from canopy_core.eventlog import EventLog
from canopy_core.ids import new_id
from canopy_core.tasks import cancel_and_wait
from canopy_discovery import store
from canopy_discovery.aws import (
    AwsSettings,
    DiscoveryFailure,
    assumed_session,
    create_client,
    is_transient,
    organizations_client,
)
from canopy_discovery.crawler import CrawlLimits, CrawlProgress, api_caller
from canopy_discovery.events.batching import Burst, Received, Touched, covered, gather, receive_wait
from canopy_discovery.events.metrics import (
    EVENT_AGE,
    EVENTS_APPLIED,
    EVENTS_IGNORED,
    EVENTS_RECEIVED,
    QUEUE_FAILURES,
    REFRESH_API_CALLS,
    REFRESH_FAILURES,
    REFRESH_FALLBACKS,
)
from canopy_discovery.events.parsing import ChangeEvent, Dropped, parse_message
from canopy_discovery.events.patching import (
    CONFLICT,
    Fallback,
    Refreshed,
    check_share,
    check_stored,
    patch_snapshot,
)
from canopy_discovery.events.refresh import read_entities
from canopy_discovery.filters import Scope, filter_snapshot
from canopy_discovery.integration_client import IntegrationClient
from canopy_discovery.model import (
    AppliedSnapshot,
    FollowedQueue,
    Progress,
    RunState,
    SyncRun,
    Trigger,
)
from canopy_discovery.queue_access import (
    EVENT_QUEUE_ERROR,
    EVENT_QUEUE_NOT_CHECKED,
    queue_failure,
)
from canopy_discovery.runs import record, request_sync
from canopy_discovery.scheduler import KEPT_OUTCOMES, OUTCOME_STATES, crawl_limits

log = logging.getLogger(__name__)

INTEGRATION_SUSPENDED = "INTEGRATION_SUSPENDED"
FOLLOWING = ipb.EVENT_QUEUE_STATE_FOLLOWING
FAILING = ipb.EVENT_QUEUE_STATE_FAILING
# A queue that fails transiently (throttled, unreachable) is reported FAILING only after this
# many attempts in a row; any other failure at once.
REPORT_AFTER = 3
MAX_STATUS_MESSAGE = 2000
SQS_BATCH = 10  # SQS's largest batch of receives, deletes and visibility changes
CONFLICT_FALLBACK = Fallback(CONFLICT, "another apply changed the tree under the refresh twice")


@dataclass(frozen=True)
class FollowerConfig:
    """How one replica follows a queue."""

    coalesce_window: float = 2.0
    wait_seconds: int = 20  # SQS long polling, at most 20
    visibility_timeout: int = 60
    retry_max: float = 60.0  # longest backoff between attempts at a failing queue
    retry_visibility: int = 10  # a failed burst's messages come back after this many seconds
    max_messages: int = 100  # a burst closes early with this many
    max_share: float = 0.2
    min_entities: int = 20
    run_poll: float = 0.5  # how often a burst waiting for a crawl looks again
    default_limits: CrawlLimits = field(default_factory=CrawlLimits)


class QueueUnreadable(Exception):
    """The queue could not be read: a reason for `event_queue_status`, and whether it may pass."""

    def __init__(self, reason: str, message: str, *, transient: bool) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.transient = transient


class Follower:
    """The one task of one replica that follows one integration's queue."""

    def __init__(
        self,
        queue: FollowedQueue,
        db: Database,
        event_log: EventLog,
        integrations: IntegrationClient,
        aws: AwsSettings,
        config: FollowerConfig,
    ) -> None:
        self.queue = queue
        self.db = db
        self.log = event_log
        self.integrations = integrations
        self.aws = aws
        self.config = config
        self._failures = 0
        self._status: tuple[int, str, str] | None = None  # as the integration shows it
        self._queue_account = ""

    @property
    def integration_id(self) -> str:
        return self.queue.integration_id

    async def run(self) -> None:
        """Follow the queue until cancelled, trying again with backoff when it fails."""
        while True:
            try:
                await self._follow()
            except QueueUnreadable as problem:
                await self._unread(problem)
            except NotFound:
                self._failures += 1  # deleted: the tree log takes the queue away soon
            except CanopyError as exc:
                self._failures += 1
                log.info(
                    "event queue not followed for now: %s",
                    exc.message,
                    extra={"integration_id": self.integration_id},
                )
            except Exception:
                self._failures += 1
                log.exception(
                    "following the event queue failed",
                    extra={"integration_id": self.integration_id},
                )
            await self._back_off()

    async def _unread(self, problem: QueueUnreadable) -> None:
        """Count a failed read; report it, unless it is transient and not yet repeated."""
        self._failures += 1
        QUEUE_FAILURES.labels(problem.reason).inc()
        log.warning(
            "cannot read the event queue: %s",
            problem,
            extra={"integration_id": self.integration_id, "reason": problem.reason},
        )
        if not problem.transient or self._failures >= REPORT_AFTER:
            await self._report(FAILING, problem.reason, problem.message)

    async def _back_off(self) -> None:
        delay = min(self.config.retry_max, 2 ** min(self._failures - 1, 16))
        await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _follow(self) -> None:
        integration = await self.integrations.get_integration(self.integration_id)
        shown = integration.event_queue_status
        self._status = (shown.state, shown.reason, shown.message)
        try:
            queue = parse_event_queue(self.queue.queue_url, self.aws.partition)
        except ValueError as error:
            raise QueueUnreadable(EVENT_QUEUE_ERROR, str(error), transient=False) from None
        self._queue_account = queue.account_id
        try:
            session = await assumed_session(self.aws, self.queue.role_arn, self.queue.external_id)
        except DiscoveryFailure as failure:
            raise QueueUnreadable(
                EVENT_QUEUE_NOT_CHECKED,
                f"the discovery role could not be assumed to read the queue: {failure.message}",
                transient=is_transient(failure.__cause__ or failure),
            ) from failure
        limits = crawl_limits(self.config.default_limits, integration)
        async with (
            create_client(
                session,
                "sqs",
                replace(self.aws, region=EVENTS_REGION),
                call_timeout=self.config.wait_seconds + 10.0,
            ) as sqs,
            organizations_client(
                session,
                self.aws,
                concurrency=limits.max_concurrency,
                call_timeout=limits.call_timeout,
            ) as organizations,
        ):
            burst = self._burst()
            while True:
                if burst.due(time.monotonic()):
                    await self._settle(sqs, organizations, limits, burst.messages)
                    burst = self._burst()
                    continue
                wait = receive_wait(burst.remaining(time.monotonic()), self.config.wait_seconds)
                try:
                    burst.add(await self._receive(sqs, wait))
                except QueueUnreadable as problem:
                    if not problem.transient:
                        raise
                    # Throttled, or the endpoint is away for a moment: the same clients, and
                    # the burst so far, try again.
                    await self._unread(problem)
                    await self._back_off()

    def _burst(self) -> Burst:
        return Burst(self.config.coalesce_window, self.config.max_messages)

    # -- the queue -------------------------------------------------------------------------------

    async def _receive(self, sqs: Any, wait: int) -> list[Received]:
        try:
            answer = await sqs.receive_message(
                QueueUrl=self.queue.queue_url,
                MaxNumberOfMessages=SQS_BATCH,
                WaitTimeSeconds=wait,
                VisibilityTimeout=self.config.visibility_timeout,
            )
        except Exception as error:
            raise self._unreadable(error) from error
        self._failures = 0
        await self._report(FOLLOWING)
        now = time.monotonic()
        messages = answer.get("Messages") or []
        EVENTS_RECEIVED.inc(len(messages))
        return [
            Received(m["MessageId"], m["ReceiptHandle"], m.get("Body") or "", now) for m in messages
        ]

    def _unreadable(self, error: BaseException) -> QueueUnreadable:
        queue = parse_event_queue(self.queue.queue_url, self.aws.partition)
        reason, message = queue_failure(error, queue)
        return QueueUnreadable(reason, message, transient=is_transient(error))

    async def _delete(self, sqs: Any, messages: Sequence[Received]) -> None:
        """Delete messages whose effect is stored (one that fails comes back: harmless)."""
        for start in range(0, len(messages), SQS_BATCH):
            chunk = messages[start : start + SQS_BATCH]
            try:
                answer = await sqs.delete_message_batch(
                    QueueUrl=self.queue.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m.receipt_handle}
                        for i, m in enumerate(chunk)
                    ],
                )
                failed = answer.get("Failed") or []
            except Exception as error:
                failed = [{"Message": str(error)}]
            if failed:
                log.warning(
                    "messages not deleted; they will be received and applied again",
                    extra={"integration_id": self.integration_id, "failed": failed[:3]},
                )

    async def _set_visibility(self, sqs: Any, messages: Sequence[Received], seconds: int) -> None:
        for start in range(0, len(messages), SQS_BATCH):
            chunk = messages[start : start + SQS_BATCH]
            with contextlib.suppress(Exception):
                await sqs.change_message_visibility_batch(
                    QueueUrl=self.queue.queue_url,
                    Entries=[
                        {
                            "Id": str(i),
                            "ReceiptHandle": m.receipt_handle,
                            "VisibilityTimeout": seconds,
                        }
                        for i, m in enumerate(chunk)
                    ],
                )

    async def _keep_hidden(self, sqs: Any, messages: Sequence[Received]) -> None:
        """Keep a burst's messages from other receivers while its refresh waits or runs."""
        timeout = self.config.visibility_timeout
        while True:
            await asyncio.sleep(timeout / 3)
            await self._set_visibility(sqs, messages, timeout)

    async def _report(
        self, state: ipb.EventQueueState.ValueType, reason: str = "", message: str = ""
    ) -> None:
        """Tell the integration service where the queue stands, when that changed."""
        wanted = (state, reason, message[:MAX_STATUS_MESSAGE])
        if wanted == self._status:
            return
        request = tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=self.integration_id,
            event_queue_status=ipb.EventQueueStatus(state=state, reason=reason, message=wanted[2]),
        )
        try:
            await self.integrations.apply(request)
        except CanopyError as exc:
            log.info(
                "event queue status not reported: %s",
                exc.message,
                extra={"integration_id": self.integration_id},
            )
            return
        self._status = wanted

    # -- a burst ---------------------------------------------------------------------------------

    async def _settle(
        self, sqs: Any, organizations: Any, limits: CrawlLimits, messages: Sequence[Received]
    ) -> None:
        """Bring in one burst; its messages are deleted once its effect is stored."""
        try:
            integration = await self.integrations.get_integration(self.integration_id)
        except CanopyError as exc:
            await self._failed(sqs, messages, "INTEGRATION_UNAVAILABLE", exc.message)
            return
        parsed = [
            parse_message(m.body, self._queue_account, integration.organization_id)
            for m in messages
        ]
        for item in parsed:
            if isinstance(item, Dropped):
                EVENTS_IGNORED.labels(item.reason).inc()
                log.info(
                    "event dropped: %s (%s)",
                    item.reason,
                    item.detail,
                    extra={"integration_id": self.integration_id, "event_name": item.event_name},
                )
        pairs = list(zip(messages, parsed, strict=True))
        hints = [m for m, item in pairs if isinstance(item, ChangeEvent)]
        await self._delete(sqs, [m for m, item in pairs if isinstance(item, Dropped)])
        touched = gather(parsed)
        if not touched.events:
            return
        keeper = asyncio.create_task(self._keep_hidden(sqs, hints))
        try:
            await self._bring_in(organizations, limits, touched)
        except DiscoveryFailure as failure:
            await self._failed(sqs, hints, failure.reason, failure.message)
            return
        except CanopyError as exc:
            await self._failed(sqs, hints, exc.reason or "INTEGRATION_UNAVAILABLE", exc.message)
            return
        except Exception as error:
            log.exception("refresh failed", extra={"integration_id": self.integration_id})
            await self._failed(sqs, hints, "OTHER", str(error))
            return
        finally:
            await cancel_and_wait(keeper)
        await self._delete(sqs, hints)

    async def _failed(
        self, sqs: Any, messages: Sequence[Received], reason: str, message: str
    ) -> None:
        """The burst's messages come back soon; the queue's redrive policy counts them."""
        REFRESH_FAILURES.labels(reason).inc()
        log.warning(
            "refresh failed, its events will be received again: %s",
            message,
            extra={"integration_id": self.integration_id, "reason": reason},
        )
        delay = min(self.config.retry_visibility, self.config.visibility_timeout)
        await self._set_visibility(sqs, messages, delay)

    async def _bring_in(self, organizations: Any, limits: CrawlLimits, touched: Touched) -> None:
        """Refresh what the burst names and apply it, or queue a full crawl instead."""
        started_at = datetime.now(UTC)
        started = time.monotonic()
        progress = CrawlProgress()
        call = api_caller(organizations, limits, progress)
        refreshed: Refreshed | None = None
        aborted = 0
        while True:
            await self._no_live_run()
            try:
                integration = await self.integrations.get_integration(self.integration_id)
            except NotFound:
                return  # deleted meanwhile: nothing left to refresh
            if integration.state == ipb.INTEGRATION_STATE_SUSPENDED:
                # Its plan does not allow syncing: the crawl that resumes it reads everything.
                EVENTS_IGNORED.labels(INTEGRATION_SUSPENDED).inc(len(touched.events))
                return
            async with self.db.connection() as conn:
                stored = await store.get_applied_snapshot(conn, self.integration_id)
            fallback = check_stored(stored, integration.tree_generation)
            if fallback is not None:
                await self._fall_back(integration, touched, fallback)
                return
            assert stored is not None
            snapshot = tree_pb.OrganizationSnapshot.FromString(stored.snapshot)
            fallback = check_share(
                touched.size, snapshot, self.config.max_share, self.config.min_entities
            )
            if fallback is None:
                if refreshed is None:  # read once: a second try only patches a newer snapshot
                    read = await read_entities(
                        call, snapshot, sorted(touched.account_ids), sorted(touched.unit_ids)
                    )
                    if isinstance(read, Fallback):
                        await self._fall_back(integration, touched, read)
                        return
                    refreshed = read
                patched = patch_snapshot(snapshot, refreshed)
                fallback = patched if isinstance(patched, Fallback) else None
            if fallback is not None:
                await self._fall_back(integration, touched, fallback)
                return
            assert isinstance(patched, tree_pb.OrganizationSnapshot)
            run_id = new_id("r")
            try:
                reply = await self.integrations.apply(
                    tree_rpc.ApplyDiscoverySnapshotRequest(
                        integration_id=self.integration_id,
                        expected_generation=stored.generation,
                        sync_run_id=run_id,
                        # The part the integration mirrors (canopy_discovery.filters): an
                        # account moved into an excluded OU leaves, one moved out comes in.
                        snapshot=filter_snapshot(patched, Scope.of(integration)),
                    )
                )
            except Aborted:
                # Another apply came first: look again once it is stored, then give up.
                aborted += 1
                if aborted < 2:
                    continue
                await self._fall_back(integration, touched, CONFLICT_FALLBACK)
                return
            except NotFound:
                return
            progress.organizational_units_found = len(refreshed.units) if refreshed else 0
            progress.accounts_found = len(refreshed.accounts) if refreshed else 0
            progress.elapsed = time.monotonic() - started
            await self._record(integration, run_id, touched, reply, patched, progress, started_at)
            return

    async def _no_live_run(self) -> None:
        """Wait while a full crawl of the integration is queued or running."""
        while True:
            async with self.db.connection() as conn:
                schedule = await store.get_schedule(conn, self.integration_id)
                run = (
                    await store.get_run(conn, schedule.active_run_id)
                    if schedule is not None and schedule.active_run_id
                    else None
                )
            if run is None or not run.state.active:
                return
            await asyncio.sleep(self.config.run_poll)

    async def _record(
        self,
        integration: ipb.Integration,
        run_id: str,
        touched: Touched,
        reply: tree_rpc.ApplyDiscoverySnapshotResponse,
        patched: tree_pb.OrganizationSnapshot,
        progress: CrawlProgress,
        started_at: datetime,
    ) -> None:
        """The refresh as a finished run, with the snapshot it left the tree at."""
        events, count = covered(touched.events)
        async with self.db.transaction() as conn:
            # The schedule row first: the order every transaction takes it and runs in.
            await store.get_schedule(conn, self.integration_id, for_update=True)
            run = await store.insert_run(
                conn,
                SyncRun(
                    id=run_id,
                    integration_id=self.integration_id,
                    tenant_id=integration.tenant_id,
                    org_id=integration.scope.org_id or None,
                    state=RunState.RUNNING,
                    trigger=Trigger.ORGANIZATION_EVENTS,
                    events=events,
                    event_count=count,
                ),
            )
            await record(
                conn,
                self.log,
                replace(
                    run,
                    state=OUTCOME_STATES.get(reply.outcome, RunState.FAILED),
                    attempt=1,
                    progress=Progress(
                        organizational_units_found=progress.organizational_units_found,
                        accounts_found=progress.accounts_found,
                        api_calls=progress.api_calls,
                        throttled_calls=progress.throttled_calls,
                        elapsed_seconds=round(progress.elapsed, 3),
                    ),
                    summary=reply.summary.SerializeToString(),
                    apply_outcome=tree_pb.ApplyOutcome.Name(reply.outcome).removeprefix(
                        "APPLY_OUTCOME_"
                    ),
                    organization_id=reply.integration.organization_id,
                    start_time=started_at,
                    end_time=datetime.now(UTC),
                ),
            )
            if reply.outcome in KEPT_OUTCOMES:
                applied = AppliedSnapshot(
                    self.integration_id, reply.generation, run_id, patched.SerializeToString()
                )
                await store.save_applied_snapshot(conn, applied)
        stored_at = datetime.now(UTC)
        EVENTS_APPLIED.labels("refresh").inc(len(touched.events))
        REFRESH_API_CALLS.observe(progress.api_calls)
        for event in touched.events:
            EVENT_AGE.observe(max(0.0, (stored_at - event.event_time).total_seconds()))
        log.info(
            "events refreshed: %d events, %d accounts, %d OUs, %d API calls, %s",
            count,
            progress.accounts_found,
            progress.organizational_units_found,
            progress.api_calls,
            tree_pb.ApplyOutcome.Name(reply.outcome),
            extra={"integration_id": self.integration_id, "run_id": run_id},
        )

    async def _fall_back(
        self, integration: ipb.Integration, touched: Touched, fallback: Fallback
    ) -> None:
        """Queue one full crawl, covering the burst's events, saying why."""
        events, count = covered(touched.events)
        async with self.db.transaction() as conn:
            run = await request_sync(
                conn,
                self.log,
                self.integration_id,
                integration.tenant_id,
                integration.scope.org_id or None,
                sync_interval_seconds(integration),
                Trigger.ORGANIZATION_EVENTS,
                events=events,
                event_count=count,
                full_crawl_reason=fallback.reason,
            )
        REFRESH_FALLBACKS.labels(fallback.reason).inc()
        EVENTS_APPLIED.labels("full_crawl").inc(len(touched.events))
        log.info(
            "events lead to a full crawl: %s (%s)",
            fallback.reason,
            fallback.message,
            extra={"integration_id": self.integration_id, "run_id": run.id},
        )
