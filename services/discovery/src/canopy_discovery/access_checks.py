"""TestDiscoveryAccess and TestMemberAccess: who may ask, and about which roles (and event
queues); and whether the role templates trust the account of the credentials discovery really
uses."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable
from dataclasses import dataclass

from canopy_core.auth import Principal
from canopy_core.directory import Directory
from canopy_core.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied
from canopy_core.event_queues import event_queue_problem
from canopy_core.validation import Violations
from canopy_discovery import access
from canopy_discovery.aws import UNSUPPORTED_PARTITION, AwsSettings, DiscoveryFailure
from canopy_discovery.integration_client import IntegrationClient
from canopy_discovery.runs import scope_of

ROLE_ARN = re.compile(
    r"^arn:(aws|aws-cn|aws-us-gov):iam::\d{12}:role/[\w+=,.@/-]{1,512}\Z", re.ASCII
)
EXTERNAL_ID = re.compile(r"^([to]_[a-z0-9]{1,60}):[a-z0-9]{8}\Z", re.ASCII)
EXTERNAL_ID_RULE = "must be '<tenant or org id>:<8 of [a-z0-9]>'"
EXTERNAL_ID_OWNER_MISMATCH = "EXTERNAL_ID_OWNER_MISMATCH"
ROLE_NAME = re.compile(r"^[A-Za-z0-9_+=,.@-]{1,64}\Z", re.ASCII)
ROLE_NAME_RULE = "must be 1-64 characters of letters, digits and '_+=,.@-'"
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


def _discovery_access_violations(
    aws: AwsSettings, at: str, role_arn: str, external_id: str, event_queue: str
) -> tuple[list[FieldViolation], str | None]:
    """The problems of a discovery role, external id and event queue given under `at`, and the
    reason code for a role or queue in another partition."""
    found = []
    reason = None
    arn = ROLE_ARN.match(role_arn)
    if arn is None:
        found.append(FieldViolation(f"{at}.role_arn", "must be an IAM role ARN"))
    elif arn.group(1) != aws.partition:
        reason = UNSUPPORTED_PARTITION
        found.append(
            FieldViolation(
                f"{at}.role_arn",
                f"is in partition {arn.group(1)!r}; this deployment serves partition "
                f"{aws.partition!r} only (CANOPY_AWS_PARTITION)",
            )
        )
    if EXTERNAL_ID.match(external_id) is None:
        found.append(FieldViolation(f"{at}.external_id", EXTERNAL_ID_RULE))
    queue_problem = event_queue_problem(event_queue, aws.partition) if event_queue else None
    if queue_problem is not None:
        found.append(FieldViolation(f"{at}.event_queue", queue_problem.description))
        if queue_problem.wrong_partition:
            reason = UNSUPPORTED_PARTITION
    return found, reason


async def _owner_chain(
    directory: Directory, tenant_id: str | None, org_id: str | None, field: str
) -> tuple[str | None, ...]:
    """The scope chain (an org's tenant first) of a tenant or org; just the id when the
    directory does not know it."""
    try:
        if org_id:
            info = await directory.org(org_id, field=field)
            return (info.tenant_id, org_id)
        await directory.tenant(tenant_id or "", field=field)
    except NotFound:
        return (org_id or tenant_id,)
    return (tenant_id,)


def _owner_ids(owner_id: str) -> tuple[str | None, str | None]:
    """(tenant id, org id) of an external id's owner."""
    return (None, owner_id) if owner_id.startswith("o_") else (owner_id, None)


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
    found, reason = _discovery_access_violations(aws, "access", role_arn, external_id, event_queue)
    if found:
        raise InvalidArgument(found, reason=reason)
    owner_id = external_id.partition(":")[0]
    chain = await _owner_chain(directory, *_owner_ids(owner_id), field="access.external_id")
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


@dataclass(frozen=True)
class UnsavedMemberAccess:
    """The settings of an integration not created yet that a member access test needs."""

    tenant_id: str
    org_id: str
    discovery_role_arn: str
    discovery_external_id: str
    event_queue: str
    member_role_name: str
    member_external_id: str  # empty: the discovery role's


@dataclass(frozen=True)
class MemberAccessReport:
    """Per-account results of a member access test, and for unsaved settings what the
    discovery role read of the organization (with no results when it could not)."""

    results: list[access.MemberResult]
    organization: access.OrganizationAccounts | None = None


def _target_violations(
    integration_id: str, unsaved: UnsavedMemberAccess | None, account_ids: list[str], sample: int
) -> list[FieldViolation]:
    found = []
    if integration_id and unsaved is not None:
        found.append(
            FieldViolation("unsaved", "give either an integration_id or unsaved, not both")
        )
    elif not integration_id and unsaved is None:
        found.append(
            FieldViolation(
                "integration_id",
                "is required, unless `unsaved` gives the settings of an integration not created",
            )
        )
    for i, account_id in enumerate(account_ids):
        if not ACCOUNT_ID.match(account_id):
            found.append(FieldViolation(f"account_ids[{i}]", "must be 12 digits"))
    if sample < 0 or sample > MAX_SAMPLE:
        found.append(FieldViolation("sample_size", f"must be between 0 and {MAX_SAMPLE}"))
    if len(account_ids) > MAX_SAMPLE:
        found.append(FieldViolation("account_ids", f"at most {MAX_SAMPLE} accounts"))
    return found


def _unsaved_violations(
    aws: AwsSettings, unsaved: UnsavedMemberAccess
) -> tuple[list[FieldViolation], str | None]:
    """What CreateIntegration would refuse of these settings: the scope, the roles, and
    external ids that must name the scope (confused-deputy protection)."""
    found = []
    reason = None
    if bool(unsaved.tenant_id) == bool(unsaved.org_id):
        found.append(FieldViolation("unsaved.scope", "name exactly one tenant_id or org_id"))
    else:
        kind, owner_id = (
            ("org", unsaved.org_id) if unsaved.org_id else ("tenant", unsaved.tenant_id)
        )
        scope = Violations()
        scope.resource_id(f"unsaved.scope.{kind}_id", owner_id, kind[0])
        found.extend(scope.found)
    discovery, reason = _discovery_access_violations(
        aws,
        "unsaved.discovery_access",
        unsaved.discovery_role_arn,
        unsaved.discovery_external_id,
        "",
    )
    found.extend(discovery)
    if unsaved.event_queue:
        found.append(
            FieldViolation(
                "unsaved.discovery_access.event_queue",
                "is not used to test member access: leave it empty (TestDiscoveryAccess "
                "checks a queue)",
            )
        )
    if not unsaved.member_role_name:
        found.append(FieldViolation("unsaved.member_access.role_name", "is required"))
    elif not ROLE_NAME.match(unsaved.member_role_name):
        found.append(FieldViolation("unsaved.member_access.role_name", ROLE_NAME_RULE))
    if unsaved.member_external_id and not EXTERNAL_ID.match(unsaved.member_external_id):
        found.append(FieldViolation("unsaved.member_access.external_id", EXTERNAL_ID_RULE))
    scope_owner = unsaved.org_id or unsaved.tenant_id
    for field, external_id in (
        ("unsaved.discovery_access.external_id", unsaved.discovery_external_id),
        ("unsaved.member_access.external_id", unsaved.member_external_id),
    ):
        owner = EXTERNAL_ID.match(external_id)
        if scope_owner and owner is not None and owner.group(1) != scope_owner:
            reason = EXTERNAL_ID_OWNER_MISMATCH
            found.append(
                FieldViolation(field, f"names another owner (must start with '{scope_owner}:')")
            )
    return found, reason


async def member_access(
    integrations: IntegrationClient,
    directory: Directory,
    aws: AwsSettings,
    principal: Principal,
    integration_id: str,
    unsaved: UnsavedMemberAccess | None,
    account_ids: list[str],
    sample_size: int,
) -> MemberAccessReport:
    """Assume the member role in the given accounts, or in a sample: of a saved integration
    (members of its scope), or of settings not saved yet (callers who may create an integration
    in their scope)."""
    found = _target_violations(integration_id, unsaved, account_ids, sample_size)
    reason = None
    if unsaved is not None:
        more, reason = _unsaved_violations(aws, unsaved)
        found.extend(more)
    if found:
        raise InvalidArgument(found, reason=reason)
    if unsaved is not None:
        return await _unsaved_member_access(
            directory, aws, principal, unsaved, account_ids, sample_size
        )
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
        targets = sorted(random.sample(known, min(len(known), sample_size or DEFAULT_SAMPLE)))
    # The discovery role's partition, which validation keeps to the deployment's own: a role
    # left in another one by an older release fails UNSUPPORTED_PARTITION rather than sending
    # AssumeRole to the same account number in the wrong partition.
    partition = integration.discovery_access.role_arn.split(":")[1]
    role = integration.member_access.role_name
    external_id = integration.member_access.external_id or integration.discovery_access.external_id
    results = await access.test_member_access(
        aws, [(a, f"arn:{partition}:iam::{a}:role/{role}") for a in targets], external_id
    )
    return MemberAccessReport(results)


async def _unsaved_member_access(
    directory: Directory,
    aws: AwsSettings,
    principal: Principal,
    unsaved: UnsavedMemberAccess,
    account_ids: list[str],
    sample_size: int,
) -> MemberAccessReport:
    owner_id = unsaved.org_id or unsaved.tenant_id
    field = f"unsaved.scope.{'org_id' if unsaved.org_id else 'tenant_id'}"
    chain = await _owner_chain(directory, unsaved.tenant_id, unsaved.org_id, field)
    # As CreateIntegration: owners of the scope (or of an org's tenant) only.
    principal.require_owner(*chain, resource=f"integrations of {owner_id}")
    organization = await access.organization_accounts(
        aws, unsaved.discovery_role_arn, unsaved.discovery_external_id
    )
    if not organization.ok:
        return MemberAccessReport([], organization)
    active = set(organization.active_account_ids)
    if account_ids:
        targets = account_ids
    else:
        count = min(len(active), sample_size or DEFAULT_SAMPLE)
        targets = sorted(random.sample(organization.active_account_ids, count))

    def role_arn(account_id: str) -> str:
        return f"arn:{aws.partition}:iam::{account_id}:role/{unsaved.member_role_name}"

    tested = await access.test_member_access(
        aws,
        [(a, role_arn(a)) for a in targets if a in active],
        unsaved.member_external_id or unsaved.discovery_external_id,
    )
    by_account = {r.account_id: r for r in tested}
    results = [
        by_account.get(a) or access.account_not_found(a, role_arn(a), organization.organization_id)
        for a in targets
    ]
    return MemberAccessReport(results, organization)
