"""The crawl: one complete snapshot of an AWS Organization's OUs and accounts, or a failure.

Breadth-first from the root, but without waiting for whole levels: each parent's OU listing and
account listing run concurrently, and a child OU is crawled as soon as a page names it, so the
crawl's critical path is depth x pages, not levels x the slowest parent. Every call goes through
one Organizations client and one concurrency bound; each operation's calls are paced by the rate
AWS's throttling has shown it allows (canopy_discovery.rate: unpaced until the first throttle),
and all calls by the configured ceiling, a token bucket shared by the whole crawl. A throttled
call is sent again as soon as its operation's rate allows; other transient errors are retried with
exponential backoff and full jitter. Each attempt has a timeout, the whole crawl a deadline.

What the credentials may not see. Discovery credentials can be narrower than the organization
(an IAM policy that denies `organizations:List*` on some OUs): as the guide says, what new
credentials cannot see is deleted from the tree. The rules:
- AccessDenied(Exception) is not transient, but IAM is eventually consistent: a refused call is
  sent `refusal_attempts` times in all (with backoff) before the refusal counts.
- An OU whose ListOrganizationalUnitsForParent or ListAccountsForParent is refused (on any page)
  is not visible: the OU itself and everything below it, including what its other listing or
  its child OUs already found, are left out of the snapshot, so the apply prunes their folders
  and connections as if they were gone, under the same mass-deletion guard. The crawl records
  the outermost refused OUs (`CrawlProgress.refused_organizational_units`) so a run tells
  "pruned because not visible" from "deleted in AWS".
- A refusal of the root's listings, of ListRoots, of DescribeOrganization or of AssumeRole still
  fails the whole crawl: seeing nothing is broken credentials, not credentials that see less.
- Any other failure (throttling beyond the retries, 5xx, timeouts, connection errors, an endpoint
  gone) anywhere cancels the rest and raises DiscoveryFailure: a crawl never returns part of an
  organization, and nothing is pruned.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy_discovery.aws import (
    CRAWL_DEADLINE_EXCEEDED,
    OTHER,
    AwsSettings,
    DiscoveryFailure,
    assumed_session,
    classify,
    is_access_denied,
    is_throttling,
    is_transient,
    not_management_account,
    organizations_client,
)
from canopy_discovery.filters import Scope
from canopy_discovery.rate import AdaptiveRates

# The largest page Organizations' list calls allow.
PAGE_SIZE = 20


@dataclass(frozen=True)
class CrawlLimits:
    """How hard one crawl may press on AWS, and how long it may take.

    A concurrency below 1 counts as 1. `max_requests_per_second` is the ceiling of the whole
    crawl's rate; None (or not above 0) means none: each operation then goes as fast as AWS lets
    it, learned from its throttling.
    """

    max_concurrency: int = 8
    max_requests_per_second: float | None = None
    call_timeout: float = 20.0  # seconds per attempt of one API call
    crawl_timeout: float = 600.0  # seconds for the whole crawl, assuming the role included
    max_attempts: int = 8  # per call, for throttling and other transient errors
    refusal_attempts: int = 3  # per call, for AccessDenied: then the refusal counts
    base_backoff: float = 0.1
    max_backoff: float = 5.0


@dataclass
class CrawlProgress:
    """Counters of a running crawl, reported after every call."""

    organizational_units_found: int = 0
    accounts_found: int = 0
    api_calls: int = 0  # every attempt sent, AssumeRole included
    throttled_calls: int = 0
    elapsed: float = 0.0  # seconds
    # OUs whose listings were refused, each hiding its subtree; at the end only the outermost.
    refused_organizational_units: tuple[str, ...] = ()


class TokenBucket:
    """A token bucket: `rate` tokens a second, at most `burst` saved up.

    A taker reserves its token at once (the balance may go negative) and sleeps until the
    reservation is due, so concurrent takers queue in order without a lock.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._updated = time.monotonic()

    async def take(self) -> None:
        """Wait until one more request may be sent."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= 1
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)


def account_state(account: dict[str, Any]) -> str:
    """An account's state: AWS is replacing `Status` with `State`; prefer the new field."""
    return str(account.get("State") or account.get("Status") or "")


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): full jitter."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


class _Crawl:
    """The state of one crawl: the shared client, limits, counters and what was found."""

    def __init__(
        self,
        client: Any,
        limits: CrawlLimits,
        progress: CrawlProgress,
        report: Callable[[], None],
        scope: Scope | None = None,
    ) -> None:
        self.client = client
        self.scope = scope or Scope()
        self.limits = limits
        self.progress = progress
        self.report = report
        self.slots = asyncio.Semaphore(max(1, limits.max_concurrency))
        rate = limits.max_requests_per_second
        ceiling = rate if rate is not None and rate > 0 else None
        self.bucket = TokenBucket(ceiling) if ceiling is not None else None
        self.rates = AdaptiveRates(ceiling)
        self.snapshot = tree_pb.OrganizationSnapshot()
        self.seen: set[str] = set()
        self.tasks: asyncio.TaskGroup | None = None

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One API call, retried while AWS throttles or fails transiently."""
        method = getattr(self.client, _snake(operation))
        limits = self.limits
        attempt = 0
        while True:
            attempt += 1
            error: Exception
            async with self.sending(operation) as released_at:
                if self.bucket is not None:
                    await self.bucket.take()
                self.progress.api_calls += 1
                try:
                    async with asyncio.timeout(limits.call_timeout):
                        answer: dict[str, Any] = await method(**params)
                except Exception as caught:
                    error = caught
                else:
                    self.rates.answered(operation, released_at, throttled=False)
                    return answer  # the caller reports, once it has taken in the answer
            throttled = is_throttling(error)
            if throttled:
                self.progress.throttled_calls += 1
                self.rates.answered(operation, released_at, throttled=True)
            self.report()
            refused = is_access_denied(error)
            attempts = limits.refusal_attempts if refused else limits.max_attempts
            if not (refused or is_transient(error)) or attempt >= attempts:
                raise classify(error) from error
            if not throttled:  # a throttled call waits for its operation's (now lower) rate
                await asyncio.sleep(backoff(attempt, limits.base_backoff, limits.max_backoff))

    @asynccontextmanager
    async def sending(self, operation: str) -> AsyncIterator[float]:
        """Wait for the operation's rate, then hold a slot while the call is in flight (never
        while backing off); yields when the rate let the call go.

        The rate comes first, outside the slots, so that calls of an operation AWS holds back do
        not keep other operations' calls from being sent. A call let go by a rate that has been
        cut while it waited for a slot queues again, to go at the new rate.
        """
        while True:
            released = await self.rates.acquire(operation)
            await self.slots.acquire()
            if not self.rates.cut_since(operation, released):
                break
            self.slots.release()
        try:
            yield released
        finally:
            self.slots.release()

    async def pages(
        self, operation: str, key: str, parent_id: str, take: Callable[[list[Any]], None]
    ) -> None:
        """Every page of a list call for one parent; a page may be empty before the last."""
        token = ""
        while True:
            params: dict[str, Any] = {"ParentId": parent_id, "MaxResults": PAGE_SIZE}
            if token:
                params["NextToken"] = token
            try:
                answer = await self.call(operation, **params)
            except DiscoveryFailure as failure:
                if parent_id == self.snapshot.root_id or not is_access_denied(failure.__cause__):
                    raise
                self.refuse(parent_id)
                return
            take(answer.get(key) or [])
            self.report()
            token = answer.get("NextToken") or ""
            if not token:
                return

    def visit(self, parent_id: str, included: bool = True) -> None:
        """Start listing the OUs of one parent, and its accounts if it is inside an included
        subtree (canopy_discovery.filters: elsewhere none would be kept)."""
        assert self.tasks is not None
        self.tasks.create_task(
            self.pages(
                "ListOrganizationalUnitsForParent",
                "OrganizationalUnits",
                parent_id,
                lambda page: self.add_units(parent_id, page, included),
            )
        )
        if not included:
            return
        self.tasks.create_task(
            self.pages(
                "ListAccountsForParent",
                "Accounts",
                parent_id,
                lambda page: self.add_accounts(parent_id, page),
            )
        )

    def refuse(self, unit_id: str) -> None:
        """The credentials may not list this OU's children: it and its subtree are not visible."""
        if unit_id not in self.progress.refused_organizational_units:
            refused = (*self.progress.refused_organizational_units, unit_id)
            self.progress.refused_organizational_units = refused
        self.report()

    def add_units(self, parent_id: str, page: list[dict[str, Any]], included: bool = True) -> None:
        """Record a page of OUs and crawl each one at once, but for excluded ones."""
        for unit in page:
            unit_id = unit["Id"]
            # An OU moved while we crawl can show up under two parents: keep the first.
            if unit_id in self.seen:
                continue
            self.seen.add(unit_id)
            self.snapshot.organizational_units.add(
                id=unit_id, parent_id=parent_id, name=unit.get("Name", "")
            )
            self.progress.organizational_units_found += 1
            if self.scope.enters(unit_id):
                self.visit(unit_id, self.scope.child_included(included, unit_id))

    def add_accounts(self, parent_id: str, page: list[dict[str, Any]]) -> None:
        """Record a page of accounts."""
        for account in page:
            account_id = account["Id"]
            if account_id in self.seen:
                continue
            self.seen.add(account_id)
            entry = self.snapshot.accounts.add(
                id=account_id,
                name=account.get("Name", ""),
                email=account.get("Email", ""),
                parent_id=parent_id,
                state=account_state(account),
            )
            joined = account.get("JoinedTimestamp")
            if joined is not None:
                entry.joined_time.FromDatetime(joined)
            self.progress.accounts_found += 1

    async def describe(self) -> None:
        """The organization's id and management account."""
        organization = (await self.call("DescribeOrganization"))["Organization"]
        self.snapshot.organization_id = organization["Id"]
        self.snapshot.management_account_id = organization.get("MasterAccountId", "")
        self.report()

    async def run(self) -> tree_pb.OrganizationSnapshot:
        """Crawl everything; the complete snapshot."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self.tasks = tasks
                tasks.create_task(self.describe())
                try:
                    roots = (await self.call("ListRoots"))["Roots"]
                except DiscoveryFailure as failure:
                    # Only the management account or a delegated administrator may list roots.
                    if is_access_denied(failure.__cause__):
                        raise not_management_account(failure.message) from failure.__cause__
                    raise
                self.report()
                if not roots:
                    raise DiscoveryFailure(OTHER, "ListRoots answered with no root")
                self.snapshot.root_id = roots[0]["Id"]
                self.visit(self.snapshot.root_id, self.scope.root_included(self.snapshot.root_id))
        except BaseExceptionGroup as group:
            raise _first_failure(group) from None
        progress = self.progress
        if progress.refused_organizational_units:
            self.snapshot, outermost = without_subtrees(
                self.snapshot, progress.refused_organizational_units
            )
            progress.refused_organizational_units = outermost
            progress.organizational_units_found = len(self.snapshot.organizational_units)
            progress.accounts_found = len(self.snapshot.accounts)
            self.report()
        return self.snapshot


def without_subtrees(
    snapshot: tree_pb.OrganizationSnapshot, unit_ids: Iterable[str]
) -> tuple[tree_pb.OrganizationSnapshot, tuple[str, ...]]:
    """The snapshot without the given OUs and everything below them; and those of the OUs not
    below another one of them, sorted."""
    children: dict[str, list[str]] = defaultdict(list)
    parents: dict[str, str] = {}
    for unit in snapshot.organizational_units:
        children[unit.parent_id].append(unit.id)
        parents[unit.id] = unit.parent_id
    roots = set(unit_ids)
    hidden: set[str] = set()
    pending = list(roots)
    while pending:
        unit_id = pending.pop()
        if unit_id not in hidden:
            hidden.add(unit_id)
            pending.extend(children[unit_id])
    outermost = tuple(sorted(u for u in roots if parents.get(u, "") not in hidden))
    pruned = tree_pb.OrganizationSnapshot()
    pruned.CopyFrom(snapshot)
    del pruned.organizational_units[:]
    del pruned.accounts[:]
    pruned.organizational_units.extend(
        unit for unit in snapshot.organizational_units if unit.id not in hidden
    )
    pruned.accounts.extend(
        account for account in snapshot.accounts if account.parent_id not in hidden
    )
    return pruned, outermost


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The failure to report from a crawl whose tasks failed (all others were cancelled)."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_failure(error)
        if isinstance(error, DiscoveryFailure):
            return error
        if not isinstance(error, Exception):
            return error  # KeyboardInterrupt and the like pass through untouched
        return classify(error)
    return classify(group)


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")


async def crawl(
    aws: AwsSettings,
    role_arn: str,
    external_id: str,
    limits: CrawlLimits,
    on_progress: Callable[[CrawlProgress], None] | None = None,
    *,
    scope: Scope | None = None,
    then: Callable[[Callable[..., Any], tree_pb.OrganizationSnapshot], Awaitable[None]]
    | None = None,
) -> tree_pb.OrganizationSnapshot:
    """Assume the discovery role and crawl the whole organization, but what `scope` leaves out
    (canopy_discovery.filters: the snapshot is as crawled, to be filtered).

    Returns the complete snapshot or raises DiscoveryFailure; `on_progress` gets a copy of the
    counters after every call. `then` is given the crawl's API caller and the snapshot, under
    the crawl's deadline, for more reads (which filter ids exist).
    """
    started = time.monotonic()
    progress = CrawlProgress()

    def report() -> None:
        progress.elapsed = time.monotonic() - started
        if on_progress is not None:
            on_progress(dataclasses.replace(progress))

    deadline = asyncio.timeout(limits.crawl_timeout)
    try:
        async with deadline:
            progress.api_calls += 1
            session = await assumed_session(aws, role_arn, external_id)
            report()
            async with organizations_client(
                session, aws, concurrency=limits.max_concurrency, call_timeout=limits.call_timeout
            ) as client:
                crawler = _Crawl(client, limits, progress, report, scope)
                snapshot = await crawler.run()
                if then is not None:
                    await then(crawler.call, snapshot)
                return snapshot
    except TimeoutError as error:
        if deadline.expired():
            raise DiscoveryFailure(
                CRAWL_DEADLINE_EXCEEDED,
                f"the crawl did not finish within {limits.crawl_timeout:g} s "
                f"({progress.api_calls} calls, {progress.accounts_found} accounts found so far)",
            ) from error
        raise classify(error) from error
    except DiscoveryFailure:
        raise
    except Exception as error:
        raise classify(error) from error


def api_caller(
    client: Any,
    limits: CrawlLimits,
    progress: CrawlProgress,
    report: Callable[[], None] = lambda: None,
) -> Callable[..., Any]:
    """An awaitable `call(operation, **params)` answering the call's dict, with a crawl's
    discipline (one concurrency bound, each operation's rate learned from throttling, retries of
    transient errors with backoff, a timeout per attempt, the calls counted in `progress`), for
    reads outside a crawl: targeted refreshes."""
    return _Crawl(client, limits, progress, report).call
