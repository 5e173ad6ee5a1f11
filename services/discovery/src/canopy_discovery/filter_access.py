"""TestDiscoveryAccess's look at the discovery filters: does each id name an OU, the root or
an account of the organization the role reads? One Describe call per OU and account id (the
root's id is compared), with the crawl's discipline of retries and concurrency."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy_core.discovery_filters import DiscoveryFilters
from canopy_discovery.access import AccessResult
from canopy_discovery.aws import (
    AwsSettings,
    DiscoveryFailure,
    assumed_session,
    organizations_client,
)
from canopy_discovery.crawler import CrawlLimits, CrawlProgress, api_caller
from canopy_discovery.filters import unmatched_filters, unmatched_message

FILTERS_UNMATCHED = "FILTERS_UNMATCHED"
LIMITS = CrawlLimits(max_concurrency=8, call_timeout=15.0, max_attempts=4)
CHECK_TIMEOUT = 120.0


@dataclass(frozen=True)
class FilterCheck:
    """What was found of the filters' ids."""

    ok: bool
    unmatched: DiscoveryFilters
    message: str = ""


async def check_filter_ids(
    aws: AwsSettings, role_arn: str, external_id: str, filters: DiscoveryFilters, root_id: str
) -> FilterCheck:
    """The ids of `filters` that name nothing in the organization of `root_id`, read with the
    discovery role; raises DiscoveryFailure when they cannot be read."""
    async with asyncio.timeout(CHECK_TIMEOUT):
        session = await assumed_session(aws, role_arn, external_id)
        async with organizations_client(
            session, aws, concurrency=LIMITS.max_concurrency, call_timeout=LIMITS.call_timeout
        ) as client:
            call = api_caller(client, LIMITS, CrawlProgress())
            # Nothing seen yet but the root: every OU and account id is asked about.
            unmatched = await unmatched_filters(
                call, tree_pb.OrganizationSnapshot(root_id=root_id), filters
            )
    if not unmatched:
        return FilterCheck(ok=True, unmatched=unmatched)
    return FilterCheck(ok=False, unmatched=unmatched, message=unmatched_message(unmatched))


def with_filter_check(result: AccessResult, check: FilterCheck | None) -> AccessResult:
    """A role test's result failed FILTERS_UNMATCHED when the role works but filter ids name
    nothing (the role's own failure, or its queue's, comes first)."""
    if check is None or check.ok or not result.ok:
        return result
    message = f"the discovery role works, but {check.message}"
    return replace(result, ok=False, reason=FILTERS_UNMATCHED, message=message)


async def checked_filters(
    aws: AwsSettings,
    role_arn: str,
    external_id: str,
    filters: DiscoveryFilters,
    result: AccessResult,
) -> tuple[AccessResult, FilterCheck | None]:
    """The result with the filter check, when there are ids and the organization was read."""
    if not filters or not result.root_id:
        return result, None
    try:
        check = await check_filter_ids(aws, role_arn, external_id, filters, result.root_id)
    except (DiscoveryFailure, TimeoutError) as error:
        message = error.message if isinstance(error, DiscoveryFailure) else "timed out"
        check = FilterCheck(ok=False, unmatched=DiscoveryFilters(), message=message)
        return result, check
    return with_filter_check(result, check), check
