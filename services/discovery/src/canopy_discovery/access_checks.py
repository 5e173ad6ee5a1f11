"""TestDiscoveryAccess and TestMemberAccess: who may ask, and about which roles (and event
queues); and whether the role templates trust the account of the credentials discovery really
uses."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable

from canopy_core.auth import Principal
from canopy_core.directory import Directory
from canopy_core.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied
from canopy_core.event_queues import event_queue_problem
from canopy_discovery import access
from canopy_discovery.aws import UNSUPPORTED_PARTITION, AwsSettings, DiscoveryFailure
from canopy_discovery.integration_client import IntegrationClient
from canopy_discovery.runs import scope_of

ROLE_ARN = re.compile(
    r"^arn:(aws|aws-cn|aws-us-gov):iam::\d{12}:role/[\w+=,.@/-]{1,512}\Z", re.ASCII
)
EXTERNAL_ID = re.compile(r"^([to]_[a-z0-9]{1,60}):[a-z0-9]{8}\Z", re.ASCII)
ACCOUNT_ID = re.compile(r"^\d{12}\Z", re.ASCII)
MAX_SAMPLE = 50
DEFAULT_SAMPLE = 5


async def _platform_account(aws: AwsSettings) -> str:
    try:
        return await access.platform_account_id(aws)
    except DiscoveryFailure:
        return ""  # nothing to compare; the role test reports what is wrong with AWS


async def _checked(
    aws: AwsSettings,
    role_arn: str,
    external_id: str,
    trusted: Awaitable[str],
    event_queue: str = "",
) -> access.AccessResult:
    """The role test (and its queue's), with the accounts of discovery's credentials and of
    the templates."""
    result, platform, trusted_account = await asyncio.gather(
        access.test_discovery_access(aws, role_arn, external_id, event_queue),
        _platform_account(aws),
        trusted,
    )
    return access.with_queue_check(access.with_trust_check(result, platform, trusted_account))


async def discovery_access_for_integration(
    integrations: IntegrationClient, aws: AwsSettings, principal: Principal, integration_id: str
) -> access.AccessResult:
    """Test an integration's discovery role (members of its scope), and that its templates
    trust discovery's own account."""
    await scope_of(integrations, principal, integration_id)
    integration = await integrations.get_integration(integration_id)
    trusted = integrations.trusted_account_id(integration_id=integration_id)
    role = integration.discovery_access
    return await _checked(aws, role.role_arn, role.external_id, trusted, role.event_queue)


async def platform_credentials(aws: AwsSettings) -> access.AccessResult:
    """The account of the platform's own credentials (any authenticated caller: every role
    template shows it anyway)."""
    return await access.test_platform_credentials(aws)


async def discovery_access_for_role(
    integrations: IntegrationClient,
    directory: Directory,
    aws: AwsSettings,
    principal: Principal,
    role_arn: str,
    external_id: str,
    event_queue: str = "",
) -> access.AccessResult:
    """Test a role (and its queue) before an integration exists; the external id must be the
    caller's scope's (else Canopy would be a confused deputy, probing roles with someone else's
    external id)."""
    found = []
    reason = None
    arn = ROLE_ARN.match(role_arn)
    if arn is None:
        found.append(FieldViolation("access.role_arn", "must be an IAM role ARN"))
    elif arn.group(1) != aws.partition:
        reason = UNSUPPORTED_PARTITION
        found.append(
            FieldViolation(
                "access.role_arn",
                f"is in partition {arn.group(1)!r}; this deployment serves partition "
                f"{aws.partition!r} only (CANOPY_AWS_PARTITION)",
            )
        )
    owner = EXTERNAL_ID.match(external_id)
    if owner is None:
        found.append(
            FieldViolation("access.external_id", "must be '<tenant or org id>:<8 of [a-z0-9]>'")
        )
    queue_problem = event_queue_problem(event_queue, aws.partition) if event_queue else None
    if queue_problem is not None:
        found.append(FieldViolation("access.event_queue", queue_problem.description))
        if queue_problem.wrong_partition:
            reason = UNSUPPORTED_PARTITION
    if found:
        raise InvalidArgument(found, reason=reason)
    assert owner is not None
    owner_id = owner.group(1)
    try:
        if owner_id.startswith("o_"):
            info = await directory.org(owner_id, field="access.external_id")
            chain: tuple[str | None, ...] = (info.tenant_id, owner_id)
        else:
            await directory.tenant(owner_id, field="access.external_id")
            chain = (owner_id,)
    except NotFound:
        chain = (owner_id,)
    if not principal.is_owner(*chain):
        raise PermissionDenied(
            f"{principal.subject!r} may not use the external id of {owner_id}",
            reason="EXTERNAL_ID_OWNER_MISMATCH",
            metadata={"field": "access.external_id", "owner": owner_id},
        )
    trusted = integrations.trusted_account_id(
        role_name=role_arn.rsplit("/", 1)[-1], external_id=external_id
    )
    return await _checked(aws, role_arn, external_id, trusted, event_queue)


async def member_access(
    integrations: IntegrationClient,
    aws: AwsSettings,
    principal: Principal,
    integration_id: str,
    account_ids: list[str],
    sample_size: int,
) -> list[access.MemberResult]:
    """Assume the member role in the given accounts of the integration, or in a sample."""
    found = []
    for i, account_id in enumerate(account_ids):
        if not ACCOUNT_ID.match(account_id):
            found.append(FieldViolation(f"account_ids[{i}]", "must be 12 digits"))
    if sample_size < 0 or sample_size > MAX_SAMPLE:
        found.append(FieldViolation("sample_size", f"must be between 0 and {MAX_SAMPLE}"))
    if len(account_ids) > MAX_SAMPLE:
        found.append(FieldViolation("account_ids", f"at most {MAX_SAMPLE} accounts"))
    if found:
        raise InvalidArgument(found)
    await scope_of(integrations, principal, integration_id)
    integration = await integrations.get_integration(integration_id)
    known = await integrations.account_ids(integration_id)
    if account_ids:
        strangers = [a for a in account_ids if a not in set(known)]
        if strangers:
            raise InvalidArgument(
                [
                    FieldViolation(
                        f"account_ids[{account_ids.index(a)}]",
                        "is not an account of this integration",
                    )
                    for a in strangers
                ]
            )
        targets = account_ids
    else:
        targets = random.sample(known, min(len(known), sample_size or DEFAULT_SAMPLE))
    # The discovery role's partition, which validation keeps to the deployment's own: a role
    # left in another one by an older release fails UNSUPPORTED_PARTITION rather than sending
    # AssumeRole to the same account number in the wrong partition.
    partition = integration.discovery_access.role_arn.split(":")[1]
    role = integration.member_access.role_name
    external_id = integration.member_access.external_id or integration.discovery_access.external_id
    return await access.test_member_access(
        aws,
        [(a, f"arn:{partition}:iam::{a}:role/{role}") for a in sorted(targets)],
        external_id,
    )
