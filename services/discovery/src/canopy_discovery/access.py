"""Access tests: can the platform assume the discovery role and read the organization, and can it
assume the member role in given accounts? Each answers with what is wrong, never an exception
for an AWS problem, so a user can fix their trust policy or external id before the first sync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from canopy_discovery.aws import (
    ACCESS_DENIED,
    OTHER,
    AwsSettings,
    DiscoveryFailure,
    assumed_session,
    classify,
    create_client,
    is_access_denied,
    not_management_account,
    organizations_client,
)

# One access test never waits longer than this for one AWS call.
CALL_TIMEOUT = 15.0


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


@dataclass(frozen=True)
class MemberResult:
    """The outcome of assuming the member role in one account."""

    account_id: str
    role_arn: str
    ok: bool
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


async def test_discovery_access(aws: AwsSettings, role_arn: str, external_id: str) -> AccessResult:
    """Assume the discovery role and read the organization and its root, as a crawl would."""
    account_id = ""
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
        return AccessResult(
            ok=False, account_id=account_id, reason=failure.reason, message=failure.message
        )
    if not roots:
        return AccessResult(
            ok=False,
            account_id=account_id,
            reason=OTHER,
            message="ListRoots answered with no root",
        )
    return AccessResult(
        ok=True,
        account_id=account_id,
        organization_id=organization["Id"],
        management_account_id=organization.get("MasterAccountId", ""),
        root_id=roots[0]["Id"],
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
