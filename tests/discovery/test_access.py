"""Access tests against a real moto server, with the proxy supplying what moto does not check."""

from __future__ import annotations

import socket

from canopy_discovery import access
from canopy_discovery.aws import AwsSettings
from tests.awsfaults import FaultProxy, Rule
from tests.discovery.conftest import DISCOVERY_ROLE, EXTERNAL_ID, Org, aws_settings

MEMBER_ROLE = "OrganizationAccountAccessRole"


def member_role(account_id: str) -> str:
    """The member role's ARN in one account."""
    return f"arn:aws:iam::{account_id}:role/{MEMBER_ROLE}"


def closed_port_url() -> str:
    """A local URL nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# TestDiscoveryAccess


async def test_discovery_access_answers_organization_management_account_and_root(
    aws: AwsSettings, org: Org
) -> None:
    result = await access.test_discovery_access(aws, DISCOVERY_ROLE, EXTERNAL_ID)
    assert result == access.AccessResult(
        ok=True,
        account_id="123456789012",
        organization_id=org.id,
        management_account_id="123456789012",
        root_id=org.root_id,
    )


async def test_discovery_access_with_role_trust_refused_says_assume_role_denied(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    proxy.add(Rule(operation="AssumeRole", role_arn=DISCOVERY_ROLE, error="AccessDenied"))
    result = await access.test_discovery_access(proxied, DISCOVERY_ROLE, EXTERNAL_ID)
    assert (result.ok, result.reason) == (False, "ASSUME_ROLE_DENIED")
    assert DISCOVERY_ROLE in result.message
    assert "trust policy" in result.message
    assert "external id" in result.message
    assert proxy.counts["DescribeOrganization"] == 0


async def test_discovery_access_in_a_member_account_says_not_management_or_delegated_admin(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    # moto lets a member account list the roots as if it were the management account; AWS
    # answers AccessDeniedException, which the proxy supplies for this role's credentials.
    member = org.account("workloads")
    role = f"arn:aws:iam::{member}:role/canopy-discovery"
    proxy.add(
        Rule(
            operation="ListRoots",
            role_arn=role,
            error="AccessDeniedException",
            message="You don't have permissions to access this resource.",
        )
    )
    result = await access.test_discovery_access(proxied, role, EXTERNAL_ID)
    assert (result.ok, result.reason) == (False, "NOT_MANAGEMENT_OR_DELEGATED_ADMIN")
    assert result.account_id == member
    assert "management account" in result.message
    assert "delegated administrator" in result.message


async def test_discovery_access_outside_any_organization_says_organization_not_in_use(
    aws: AwsSettings, org: Org
) -> None:
    # moto itself answers AWSOrganizationsNotInUseException for an account in no organization.
    role = "arn:aws:iam::999999999999:role/canopy-discovery"
    result = await access.test_discovery_access(aws, role, EXTERNAL_ID)
    assert (result.ok, result.reason) == (False, "ORGANIZATION_NOT_IN_USE")
    assert result.account_id == "999999999999"
    assert "not a member of an AWS Organization" in result.message


async def test_discovery_access_with_organizations_not_in_use_error_says_so(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    proxy.add(Rule(operation="DescribeOrganization", error="AWSOrganizationsNotInUseException"))
    result = await access.test_discovery_access(proxied, DISCOVERY_ROLE, EXTERNAL_ID)
    assert (result.ok, result.reason) == (False, "ORGANIZATION_NOT_IN_USE")


async def test_discovery_access_to_an_endpoint_nobody_listens_on_says_unreachable() -> None:
    result = await access.test_discovery_access(
        aws_settings(closed_port_url()), DISCOVERY_ROLE, EXTERNAL_ID
    )
    assert (result.ok, result.reason) == (False, "UNREACHABLE")
    assert "cannot reach" in result.message


async def test_discovery_access_with_platform_credentials_refused_says_access_denied(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    proxy.add(Rule(operation="AssumeRole", error="InvalidClientTokenId", status=403))
    result = await access.test_discovery_access(proxied, DISCOVERY_ROLE, EXTERNAL_ID)
    assert (result.ok, result.reason) == (False, "ACCESS_DENIED")
    assert "platform's own credentials" in result.message


async def test_discovery_access_throttled_says_throttled(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    proxy.add(Rule(operation="ListRoots", error="TooManyRequestsException"))
    result = await access.test_discovery_access(proxied, DISCOVERY_ROLE, EXTERNAL_ID)
    assert (result.ok, result.reason) == (False, "THROTTLED")


# TestMemberAccess


async def test_member_access_confirms_each_account_in_the_order_given(
    aws: AwsSettings, org: Org
) -> None:
    accounts = [org.account(f"member-{i}") for i in range(5)]
    targets = [(a, member_role(a)) for a in reversed(accounts)]
    results = await access.test_member_access(aws, targets, EXTERNAL_ID, concurrency=2)
    assert results == [access.MemberResult(a, r, ok=True) for a, r in targets]


async def test_member_access_reports_the_denied_account_and_passes_the_others(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    good, bad = org.account("good"), org.account("bad")
    proxy.add(Rule(operation="AssumeRole", role_arn=member_role(bad), error="AccessDenied"))
    results = await access.test_member_access(
        proxied, [(good, member_role(good)), (bad, member_role(bad))], EXTERNAL_ID
    )
    assert results[0] == access.MemberResult(good, member_role(good), ok=True)
    assert (results[1].account_id, results[1].ok, results[1].reason) == (
        bad,
        False,
        "ASSUME_ROLE_DENIED",
    )
    assert member_role(bad) in results[1].message


async def test_member_access_with_a_role_in_another_account_is_refused(
    aws: AwsSettings, org: Org
) -> None:
    member = org.account("member")
    elsewhere = member_role("210987654321")
    results = await access.test_member_access(aws, [(member, elsewhere)], EXTERNAL_ID)
    assert (results[0].ok, results[0].reason) == (False, "ACCESS_DENIED")
    assert "210987654321" in results[0].message


async def test_member_access_to_an_unreachable_endpoint_says_unreachable_per_account() -> None:
    targets = [("111111111111", member_role("111111111111"))]
    results = await access.test_member_access(aws_settings(closed_port_url()), targets, EXTERNAL_ID)
    assert (results[0].ok, results[0].reason) == (False, "UNREACHABLE")


# The organization's accounts, for TestMemberAccess of unsaved settings


async def test_organization_accounts_lists_only_active_accounts_across_pages(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    made = org.bulk_accounts(30, org.root_id)
    org.suspend(made[0])
    org.set_state(made[1], "PENDING_CLOSURE")
    org.set_state(made[2], "", status="ACTIVE")  # an answer without State: Status decides
    result = await access.organization_accounts(proxied, DISCOVERY_ROLE, EXTERNAL_ID)
    assert (result.ok, result.organization_id) == (True, org.id)
    assert sorted(result.active_account_ids) == sorted([org.management_account_id, *made[2:]])
    assert proxy.counts["ListAccounts"] == 2  # 31 accounts, 20 a page


async def test_organization_accounts_follows_next_token_past_an_empty_page(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    member = org.account("member")
    proxy.add(Rule(operation="ListAccounts", empty_first_page=True, first=1))
    result = await access.organization_accounts(proxied, DISCOVERY_ROLE, EXTERNAL_ID)
    assert sorted(result.active_account_ids) == sorted([org.management_account_id, member])


async def test_organization_accounts_with_discovery_role_refused_names_the_role(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    proxy.add(Rule(operation="AssumeRole", role_arn=DISCOVERY_ROLE, error="AccessDenied"))
    result = await access.organization_accounts(proxied, DISCOVERY_ROLE, EXTERNAL_ID)
    assert (result.ok, result.reason, result.active_account_ids) == (
        False,
        "ASSUME_ROLE_DENIED",
        (),
    )
    assert DISCOVERY_ROLE in result.message
    assert proxy.counts["ListAccounts"] == 0


async def test_organization_accounts_without_list_accounts_permission_says_access_denied(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    proxy.add(Rule(operation="ListAccounts", error="AccessDeniedException"))
    result = await access.organization_accounts(proxied, DISCOVERY_ROLE, EXTERNAL_ID)
    assert (result.ok, result.reason) == (False, "ACCESS_DENIED")
    assert "ListAccounts" in result.message
