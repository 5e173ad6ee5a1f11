"""Access tests: can the platform assume the discovery role and read the organization (and its
event queue), and can it assume the member role in given accounts? Each answers with what is
wrong, never an exception for an AWS problem, so a user can fix their trust policy or external
id before the first sync. Also: whose are the platform's own credentials, and do the role
templates trust that account?
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from canopy_core.event_queues import event_queue_problem, parse_event_queue
from canopy_discovery.aws import (
    ACCESS_DENIED,
    ACCOUNT_NOT_FOUND,
    OTHER,
    TRUSTED_ACCOUNT_MISMATCH,
    AwsSettings,
    DiscoveryFailure,
    assumed_session,
    classify,
    create_client,
    is_access_denied,
    not_management_account,
    organizations_client,
    platform_session,
)
from canopy_discovery.crawler import account_state
from canopy_discovery.queue_access import (
    EVENT_QUEUE_ERROR,
    QueueCheck,
    check_event_queue,
    not_checked,
)

# One access test never waits longer than this for one AWS call.
CALL_TIMEOUT = 15.0
# Listing an organization's accounts, 20 a page: an organization of 10,000 is 500 calls.
ACCOUNT_LIST_TIMEOUT = 120.0
ACCOUNTS_PER_PAGE = 20
EVENT_QUEUE = "EVENT_QUEUE"  # the role works, its queue does not


@dataclass(frozen=True)
class AccessResult:
    """The outcome of testing the discovery role: the organization it sees, or why it cannot."""

    ok: bool
    account_id: str = ""
    organization_id: str = ""
    management_account_id: str = ""
    root_id: str = ""
    reason: str = ""
    message: str = ""
    platform_account_id: str = ""  # whose credentials discovery calls STS with
    trusted_account_id: str = ""  # the account the role templates trust
    event_queue: QueueCheck | None = None  # with a queue to check


@dataclass(frozen=True)
class MemberResult:
    """The outcome of assuming the member role in one account."""

    account_id: str
    role_arn: str
    ok: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class OrganizationAccounts:
    """What a discovery role read of its organization: its ACTIVE accounts, or why it could not."""

    ok: bool
    organization_id: str = ""
    active_account_ids: tuple[str, ...] = ()
    reason: str = ""
    message: str = ""


async def _call(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    """One bounded call; any failure becomes a DiscoveryFailure."""
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            answer: dict[str, Any] = await getattr(client, operation)(**params)
            return answer
    except DiscoveryFailure:
        raise
    except Exception as error:
        raise classify(error) from error


async def _caller_account(session: Any, aws: AwsSettings) -> str:
    async with create_client(session, "sts", aws, call_timeout=CALL_TIMEOUT) as sts:
        return str((await _call(sts, "get_caller_identity"))["Account"])


async def platform_account_id(aws: AwsSettings) -> str:
    """The account of the platform's own credentials (STS GetCallerIdentity); raises
    DiscoveryFailure when they cannot be read."""
    try:
        async with asyncio.timeout(2 * CALL_TIMEOUT):
            return await _caller_account(platform_session(aws), aws)
    except Exception as error:
        raise classify(error) from error


async def test_platform_credentials(aws: AwsSettings) -> AccessResult:
    """Whose are the platform's credentials: ok with `platform_account_id`, or why unreadable."""
    try:
        account_id = await platform_account_id(aws)
    except DiscoveryFailure as failure:
        return AccessResult(ok=False, reason=failure.reason, message=failure.message)
    return AccessResult(ok=True, platform_account_id=account_id)


def with_trust_check(result: AccessResult, platform: str, trusted: str) -> AccessResult:
    """A role test's result with both accounts, failed TRUSTED_ACCOUNT_MISMATCH when the
    templates trust another account than the one discovery's credentials belong to (either
    unknown: nothing to compare). The mismatch comes first: it explains a denied AssumeRole."""
    result = replace(result, platform_account_id=platform, trusted_account_id=trusted)
    if not platform or not trusted or platform == trusted:
        return result
    message = (
        f"the role templates trust AWS account {trusted}, but the credentials discovery uses "
        f"belong to account {platform}: a role made from those templates will not let discovery "
        f"assume it. Set CANOPY_TRUSTED_ACCOUNT_ID (integration service) to {platform}, or give "
        f"discovery credentials of account {trusted}"
    )
    if not result.ok:
        message += f" (the role test itself: {result.reason}: {result.message})"
    return replace(result, ok=False, reason=TRUSTED_ACCOUNT_MISMATCH, message=message)


def with_queue_check(result: AccessResult) -> AccessResult:
    """A role test's result failed EVENT_QUEUE when the role works but its queue does not."""
    queue = result.event_queue
    if not result.ok or queue is None or queue.ok:
        return result
    message = "the discovery role works, but discovery cannot follow its event queue: "
    return replace(result, ok=False, reason=EVENT_QUEUE, message=message + queue.message)


async def test_discovery_access(
    aws: AwsSettings,
    role_arn: str,
    external_id: str,
    event_queue: str = "",  # noqa: PT028 - not a test: the name is the RPC's
) -> AccessResult:
    """Assume the discovery role and read the organization and its root, as a crawl would, and
    the attributes of its `event_queue` (URL or ARN) if it has one."""
    result = await _test_role(aws, role_arn, external_id)
    if not event_queue:
        return result.access
    problem = event_queue_problem(event_queue, aws.partition)
    if problem is not None:  # stored before the deployment moved to another partition
        queue = QueueCheck(
            event_queue, ok=False, reason=EVENT_QUEUE_ERROR, message=problem.description
        )
        return replace(result.access, event_queue=queue)
    parsed = parse_event_queue(event_queue, aws.partition)
    if result.session is None:
        why = f"the discovery role could not be assumed ({result.access.reason})"
        queue = not_checked(parsed, why)
    else:
        role_account = role_arn.split(":")[4]
        queue = await check_event_queue(result.session, aws, parsed, role_account)
    return replace(result.access, event_queue=queue)


@dataclass(frozen=True)
class _RoleTest:
    access: AccessResult
    session: Any  # the role's session, if it could be assumed


async def _test_role(aws: AwsSettings, role_arn: str, external_id: str) -> _RoleTest:
    account_id = ""
    session = None
    try:
        async with asyncio.timeout(4 * CALL_TIMEOUT):
            session = await assumed_session(aws, role_arn, external_id)
            account_id = await _caller_account(session, aws)
            async with organizations_client(session, aws, call_timeout=CALL_TIMEOUT) as client:
                organization = (await _call(client, "describe_organization"))["Organization"]
                try:
                    roots = (await _call(client, "list_roots"))["Roots"]
                except DiscoveryFailure as refused:
                    # Member accounts may describe their organization but not list its roots.
                    if is_access_denied(refused.__cause__):
                        raise not_management_account(refused.message) from refused.__cause__
                    raise
    except Exception as error:
        failure = classify(error)  # a DiscoveryFailure stays itself
        access = AccessResult(
            ok=False, account_id=account_id, reason=failure.reason, message=failure.message
        )
        return _RoleTest(access, session if account_id else None)
    if not roots:
        access = AccessResult(
            ok=False,
            account_id=account_id,
            reason=OTHER,
            message="ListRoots answered with no root",
        )
        return _RoleTest(access, session)
    access = AccessResult(
        ok=True,
        account_id=account_id,
        organization_id=organization["Id"],
        management_account_id=organization.get("MasterAccountId", ""),
        root_id=roots[0]["Id"],
    )
    return _RoleTest(access, session)


async def organization_accounts(
    aws: AwsSettings, role_arn: str, external_id: str
) -> OrganizationAccounts:
    """Assume the discovery role, check it reads the organization as a crawl needs (the same
    diagnosis as `test_discovery_access`), and list the organization's ACTIVE accounts (State,
    else Status), in the order AWS lists them."""
    tested = await _test_role(aws, role_arn, external_id)
    if not tested.access.ok:
        return OrganizationAccounts(
            ok=False, reason=tested.access.reason, message=tested.access.message
        )
    active: list[str] = []
    try:
        async with asyncio.timeout(ACCOUNT_LIST_TIMEOUT):
            async with organizations_client(
                tested.session, aws, call_timeout=CALL_TIMEOUT
            ) as client:
                token = ""
                while True:
                    page = await _call(
                        client,
                        "list_accounts",
                        MaxResults=ACCOUNTS_PER_PAGE,
                        **({"NextToken": token} if token else {}),
                    )
                    active.extend(
                        account["Id"]
                        for account in page.get("Accounts", [])
                        if account_state(account) == "ACTIVE"
                    )
                    token = page.get("NextToken") or ""
                    if not token:
                        break
    except Exception as error:
        failure = classify(error)
        return OrganizationAccounts(ok=False, reason=failure.reason, message=failure.message)
    return OrganizationAccounts(
        ok=True,
        organization_id=tested.access.organization_id,
        active_account_ids=tuple(active),
    )


def account_not_found(account_id: str, role_arn: str, organization_id: str) -> MemberResult:
    """The result for an account that is not an ACTIVE account of the organization: no role is
    assumed there."""
    return MemberResult(
        account_id,
        role_arn,
        ok=False,
        reason=ACCOUNT_NOT_FOUND,
        message=f"{account_id} is not an ACTIVE account of organization {organization_id}",
    )


async def _member_access(
    aws: AwsSettings, account_id: str, role_arn: str, external_id: str
) -> MemberResult:
    try:
        async with asyncio.timeout(3 * CALL_TIMEOUT):
            session = await assumed_session(aws, role_arn, external_id)
            seen = await _caller_account(session, aws)
    except Exception as error:
        failure = classify(error)
        return MemberResult(
            account_id, role_arn, ok=False, reason=failure.reason, message=failure.message
        )
    if seen != account_id:
        return MemberResult(
            account_id,
            role_arn,
            ok=False,
            reason=ACCESS_DENIED,
            message=f"assuming {role_arn} gave credentials of account {seen}, not {account_id}",
        )
    return MemberResult(account_id, role_arn, ok=True)


async def test_member_access(
    aws: AwsSettings,
    targets: Sequence[tuple[str, str]],
    external_id: str,
    concurrency: int = 8,  # noqa: PT028 - not a test: the name is the RPC's
) -> list[MemberResult]:
    """Assume the member role in each (account id, role ARN) target; one result per target, in
    the order given."""
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(account_id: str, role_arn: str) -> MemberResult:
        async with slots:
            return await _member_access(aws, account_id, role_arn, external_id)

    return list(await asyncio.gather(*(one(a, r) for a, r in targets)))
