"""The scheduler: workers that lease due integrations, crawl them and apply the result.

Leases live in the `schedules` table (`FOR UPDATE SKIP LOCKED` with an expiry), so any number
of discovery replicas share the work and never crawl one integration at once. A worker renews
its lease while it crawls; if it dies, the lease expires and another worker takes the run over.
Triggers (creation, settings changes, `SyncIntegration`) make an integration due at once and
wake the workers with NOTIFY; otherwise each integration comes due on its interval, jittered.
Before a run starts, the worker checks that the integration's plan still allows it (`plans`):
if not, nothing is crawled, the integration is reported SUSPENDED, and it comes due again on its
interval to be checked anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as ipb
from canopy_core.db import Database, is_connection_error
from canopy_core.directory import Directory
from canopy_core.discovery_filters import DiscoveryFilters, filters_to_proto
from canopy_core.errors import CanopyError, NotFound
from canopy_core.event_queues import sync_interval_seconds
from canopy_core.eventlog import EventLog
from canopy_core.ids import new_id
from canopy_core.tasks import cancel_and_wait
from canopy_discovery import store
from canopy_discovery.aws import AwsSettings, DiscoveryFailure
from canopy_discovery.crawler import CrawlLimits, CrawlProgress, crawl
from canopy_discovery.filters import Scope, filter_snapshot, unmatched_filters
from canopy_discovery.integration_client import IntegrationClient
from canopy_discovery.model import (
    MAX_REFUSED_UNITS,
    AppliedSnapshot,
    Progress,
    RunState,
    Schedule,
    SyncRun,
    Trigger,
)
from canopy_discovery.plans import Suspension, plan_suspension
from canopy_discovery.runs import WORK_CHANNEL, cancel_active_runs, cancel_integration, record

log = logging.getLogger(__name__)

OUTCOME_STATES = {
    tree_pb.APPLY_OUTCOME_APPLIED: RunState.SUCCEEDED,
    tree_pb.APPLY_OUTCOME_UNCHANGED: RunState.SUCCEEDED,
    tree_pb.APPLY_OUTCOME_NEEDS_CONFIRMATION: RunState.NEEDS_CONFIRMATION,
    tree_pb.APPLY_OUTCOME_FAILURE_RECORDED: RunState.FAILED,
}

# Outcomes after which the tree is the snapshot that was sent.
KEPT_OUTCOMES = frozenset({tree_pb.APPLY_OUTCOME_APPLIED, tree_pb.APPLY_OUTCOME_UNCHANGED})


@dataclass(frozen=True)
class SchedulerConfig:
    """How the workers of one replica behave."""

    workers: int = 4
    lease_ttl: timedelta = timedelta(seconds=30)
    poll_interval: float = 5.0
    jitter: float = 0.1
    default_limits: CrawlLimits = field(default_factory=CrawlLimits)


def crawl_limits(defaults: CrawlLimits, integration: ipb.Integration) -> CrawlLimits:
    """The service's limits with the integration's own on top."""
    given = integration.crawl_limits
    limits = defaults
    if given.HasField("max_concurrency"):
        limits = replace(limits, max_concurrency=given.max_concurrency)
    if given.HasField("max_requests_per_second"):
        limits = replace(limits, max_requests_per_second=given.max_requests_per_second)
    if given.HasField("crawl_timeout"):
        limits = replace(limits, crawl_timeout=given.crawl_timeout.ToTimedelta().total_seconds())
    return limits


def next_run_after(interval_seconds: int, jitter: float, rng: random.Random) -> datetime:
    """The next due time: the interval, spread by ±jitter so replicas don't sync in waves."""
    spread = interval_seconds * jitter
    return datetime.now(UTC) + timedelta(seconds=interval_seconds + rng.uniform(-spread, spread))


class Scheduler:
    """The workers of one discovery replica."""

    def __init__(
        self,
        db: Database,
        log_: EventLog,
        integrations: IntegrationClient,
        directory: Directory,
        aws: AwsSettings,
        config: SchedulerConfig,
    ) -> None:
        self.db = db
        self.log = log_
        self.integrations = integrations
        self.directory = directory
        self.aws = aws
        self.config = config
        self.owner = new_id("w")  # this replica, in lease_owner
        self._wake = asyncio.Event()
        self._rng = random.Random()

    async def run(self) -> None:
        """Run the workers and the wake-up listener until cancelled."""
        listener = asyncio.create_task(self._listen(), name="discovery-listen")
        workers = [
            asyncio.create_task(self._work(i), name=f"discovery-worker-{i}")
            for i in range(self.config.workers)
        ]
        try:
            await asyncio.gather(listener, *workers)
        finally:
            await cancel_and_wait(listener, *workers)

    def wake(self) -> None:
        """Look for due work now."""
        self._wake.set()

    async def _listen(self) -> None:
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.db.dsn, timeout=5)
            except Exception:
                await asyncio.sleep(1)
                continue
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(WORK_CHANNEL, lambda *_a: self._wake.set())
                self._wake.set()
                await lost.wait()
            except Exception as exc:
                if not is_connection_error(exc):
                    log.exception("discovery listener failed")
            finally:
                with contextlib.suppress(Exception):
                    conn.terminate()
            await asyncio.sleep(1)

    async def _work(self, index: int) -> None:
        while True:
            try:
                claimed = await self.claim()
            except Exception as exc:
                if not is_connection_error(exc):
                    log.exception("claiming work failed")
                claimed = None
            if claimed is not None:
                try:
                    await self.execute(claimed)
                except Exception:
                    log.exception(
                        "sync failed unexpectedly", extra={"integration_id": claimed.integration_id}
                    )
                continue
            wait = self.config.poll_interval
            with contextlib.suppress(Exception):
                async with self.db.connection() as conn:
                    due = await store.next_due_in(conn)
                if due is not None:
                    wait = min(wait, max(due, 0.05))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

    async def claim(self) -> Schedule | None:
        """Lease one due integration; None when nothing is due."""
        async with self.db.transaction() as conn:
            return await store.claim_due(conn, self.owner, self.config.lease_ttl)

    async def start_run(self, schedule: Schedule) -> SyncRun | None:
        """Mark the leased integration's run RUNNING (its queued run, or a new SCHEDULE one);
        None if the lease was lost meanwhile."""
        async with self.db.transaction() as conn:
            held = await store.renew_lease(
                conn, schedule.integration_id, self.owner, self.config.lease_ttl
            )
            if not held:
                return None
            schedule = await store.get_schedule(conn, schedule.integration_id) or schedule
            run = (
                await store.get_run(conn, schedule.active_run_id, for_update=True)
                if schedule.active_run_id
                else None
            )
            if run is None or not run.state.active:
                run = await store.insert_run(
                    conn,
                    SyncRun(
                        id=new_id("r"),
                        integration_id=schedule.integration_id,
                        tenant_id=schedule.tenant_id,
                        org_id=schedule.org_id,
                        state=RunState.QUEUED,
                        trigger=Trigger.SCHEDULE,
                    ),
                )
                await store.set_schedule(conn, schedule.integration_id, active_run_id=run.id)
            # A RUNNING run here lost its worker (its lease expired): this worker takes it over.
            run = await record(
                conn,
                self.log,
                replace(
                    run,
                    state=RunState.RUNNING,
                    attempt=run.attempt + 1,
                    start_time=datetime.now(UTC),
                    progress=Progress(),
                ),
            )
            return run

    async def execute(self, schedule: Schedule) -> None:
        """Check the plan, crawl, apply, record the outcome and give the integration back to
        the schedule."""
        try:
            integration = await self.integrations.get_integration(schedule.integration_id)
        except NotFound:
            async with self.db.transaction() as conn:
                await cancel_integration(conn, self.log, schedule.integration_id)
            return
        suspension = await self._plan_suspension(integration)
        if suspension is not None:
            await self._suspend(schedule, integration, suspension)
            return
        run = await self.start_run(schedule)
        if run is None:
            return  # the lease expired and another worker has the integration
        progress = CrawlProgress()
        scope = Scope.of(integration)
        unmatched: list[DiscoveryFilters] = []

        async def check_filters(call: Any, snapshot: tree_pb.OrganizationSnapshot) -> None:
            try:
                unmatched.append(await unmatched_filters(call, snapshot, scope.filters))
            except DiscoveryFailure as failure:
                # Only a report: the crawl stands, and the last report is kept.
                log.warning(
                    "filter ids not checked",
                    extra={"integration_id": integration.id, "error": failure.message},
                )

        crawl_task = asyncio.create_task(
            crawl(
                self.aws,
                integration.discovery_access.role_arn,
                integration.discovery_access.external_id,
                crawl_limits(self.config.default_limits, integration),
                on_progress=lambda p: copy_progress(p, progress),
                scope=scope,
                then=check_filters,
            )
        )
        keeper = asyncio.create_task(self._keep_lease(schedule, run, progress, crawl_task))
        outcome: tree_pb.OrganizationSnapshot | DiscoveryFailure
        try:
            outcome = await crawl_task
        except DiscoveryFailure as failure:
            outcome = failure
        except asyncio.CancelledError:
            if keeper.done() and not keeper.cancelled():
                return  # the lease was lost or the run cancelled: someone else owns it now
            raise
        finally:
            await cancel_and_wait(keeper)
        await self._finish(
            schedule, run, integration, outcome, progress, unmatched[0] if unmatched else None
        )

    async def _plan_suspension(self, integration: ipb.Integration) -> Suspension | None:
        """Why the integration must not be synced now; while the directory cannot say, it
        stays as it is (suspended or not)."""
        try:
            return await plan_suspension(
                self.directory, integration.tenant_id, integration.scope.org_id or None
            )
        except CanopyError as exc:
            log.warning(
                "plan not checked: the directory did not answer",
                extra={"integration_id": integration.id, "error": exc.message},
            )
            if integration.state == ipb.INTEGRATION_STATE_SUSPENDED:
                return Suspension(integration.state_reason, integration.state_message)
            return None

    async def _suspend(
        self, schedule: Schedule, integration: ipb.Integration, suspension: Suspension
    ) -> None:
        """No crawl: report the integration SUSPENDED (once), cancel a run someone asked for,
        and check again when it is next due."""
        already = (
            integration.state == ipb.INTEGRATION_STATE_SUSPENDED
            and integration.state_reason == suspension.reason
            and integration.state_message == suspension.message
        )
        if not already:
            try:
                await self.integrations.apply(
                    tree_rpc.ApplyDiscoverySnapshotRequest(
                        integration_id=integration.id,
                        suspension=tree_pb.DiscoverySuspension(
                            reason=suspension.reason, message=suspension.message
                        ),
                    )
                )
            except NotFound:
                async with self.db.transaction() as conn:
                    await cancel_integration(conn, self.log, integration.id)
                return
        log.info(
            "integration not synced: %s",
            suspension.reason,
            extra={"integration_id": integration.id, "reason": suspension.reason},
        )
        interval = sync_interval_seconds(integration)
        async with self.db.transaction() as conn:
            await cancel_active_runs(
                conn, self.log, integration.id, suspension.reason, suspension.message
            )
            await store.release(
                conn,
                integration.id,
                self.owner,
                next_run_after(interval, self.config.jitter, self._rng),
            )

    async def _keep_lease(
        self,
        schedule: Schedule,
        run: SyncRun,
        progress: CrawlProgress,
        crawl_task: asyncio.Task[tree_pb.OrganizationSnapshot],
    ) -> None:
        """Renew the lease and publish progress until the crawl ends; cancel it if the lease is
        lost or the run cancelled."""
        period = self.config.lease_ttl.total_seconds() / 3
        published = Progress()
        while not crawl_task.done():
            await asyncio.sleep(min(period, 0.5))
            try:
                async with self.db.transaction() as conn:
                    held = await store.renew_lease(
                        conn, schedule.integration_id, self.owner, self.config.lease_ttl
                    )
                    current = await store.get_run(conn, run.id, for_update=True)
                    if not held or current is None or current.state is not RunState.RUNNING:
                        crawl_task.cancel()
                        return
                    now = run_progress(progress)
                    if now != published:
                        await record(conn, self.log, replace(current, progress=now))
                        published = now
            except Exception as exc:
                if not is_connection_error(exc):
                    log.exception("renewing the lease failed")

    async def _finish(
        self,
        schedule: Schedule,
        run: SyncRun,
        integration: ipb.Integration,
        outcome: tree_pb.OrganizationSnapshot | DiscoveryFailure,
        progress: CrawlProgress,
        unmatched: DiscoveryFilters | None = None,
    ) -> None:
        async with self.db.connection() as conn:
            current = await store.get_run(conn, run.id)
        if current is None or current.state is not RunState.RUNNING:
            return  # cancelled while crawling
        request = tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=integration.id,
            expected_generation=integration.tree_generation,
            sync_run_id=run.id,
            confirm_deletions=current.confirm_deletions,
        )
        if isinstance(outcome, DiscoveryFailure):
            request.failure.CopyFrom(
                tree_pb.DiscoveryFailure(reason=outcome.reason, message=outcome.message)
            )
        else:
            # The part the integration mirrors; the snapshot as crawled is kept for refreshes.
            request.snapshot.CopyFrom(filter_snapshot(outcome, Scope.of(integration)))
            if unmatched is not None:
                request.unmatched_filters.CopyFrom(filters_to_proto(unmatched))
        reply = None
        failure: tuple[str, str] | None = None
        try:
            reply = await self.integrations.apply_to_latest(request)
        except NotFound:
            async with self.db.transaction() as conn:
                await cancel_integration(conn, self.log, integration.id)
            return
        except Exception as exc:
            failure = ("APPLY_FAILED", str(exc))
        ended = datetime.now(UTC)
        final = replace(current, progress=run_progress(progress), end_time=ended)
        if reply is not None:
            final = replace(
                final,
                state=OUTCOME_STATES.get(reply.outcome, RunState.FAILED),
                apply_outcome=tree_pb.ApplyOutcome.Name(reply.outcome).removeprefix(
                    "APPLY_OUTCOME_"
                ),
                summary=reply.summary.SerializeToString(),
                organization_id=reply.integration.organization_id,
            )
            if isinstance(outcome, DiscoveryFailure):
                final = replace(
                    final, failure_reason=outcome.reason, failure_message=outcome.message
                )
        else:
            reason, message = failure or ("APPLY_FAILED", "the snapshot could not be applied")
            final = replace(
                final, state=RunState.FAILED, failure_reason=reason, failure_message=message
            )
        interval = sync_interval_seconds(integration)
        async with self.db.transaction() as conn:
            # Schedule row, then run: the order every transaction takes them in.
            await store.get_schedule(conn, integration.id, for_update=True)
            latest = await store.get_run(conn, run.id, for_update=True)
            if latest is None or latest.state is not RunState.RUNNING:
                return
            await record(conn, self.log, replace(final, confirm_deletions=latest.confirm_deletions))
            if reply is not None and reply.outcome in KEPT_OUTCOMES:
                # What targeted refreshes patch (canopy_discovery.events), with the generation
                # it left the tree at; stored before the run ends, so no refresh misses it.
                assert isinstance(outcome, tree_pb.OrganizationSnapshot)
                applied = AppliedSnapshot(
                    integration.id, reply.generation, run.id, outcome.SerializeToString()
                )
                await store.save_applied_snapshot(conn, applied)
            await store.release(
                conn,
                integration.id,
                self.owner,
                next_run_after(interval, self.config.jitter, self._rng),
            )


def copy_progress(source: CrawlProgress, target: CrawlProgress) -> None:
    """Copy a crawl's counters (reported as it goes) into `target`."""
    target.organizational_units_found = source.organizational_units_found
    target.accounts_found = source.accounts_found
    target.api_calls = source.api_calls
    target.throttled_calls = source.throttled_calls
    target.elapsed = source.elapsed
    target.refused_organizational_units = source.refused_organizational_units


def run_progress(progress: CrawlProgress) -> Progress:
    """A crawl's counters as a run records them."""
    return Progress(
        organizational_units_found=progress.organizational_units_found,
        accounts_found=progress.accounts_found,
        api_calls=progress.api_calls,
        throttled_calls=progress.throttled_calls,
        elapsed_seconds=round(progress.elapsed, 3),
        organizational_units_refused=len(progress.refused_organizational_units),
        refused_organizational_unit_ids=progress.refused_organizational_units[:MAX_REFUSED_UNITS],
    )
