"""TestMemberAccess before an integration exists: unsaved settings over real gRPC, PostgreSQL and
a moto server behind the fault proxy (moto checks neither trust policies nor external ids; the
proxy refuses AssumeRole as AWS would, and records which role was assumed with which id)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.type.v1 import types_pb2
from tests.awsfaults import FaultProxy, Rule
from tests.discovery.conftest import DISCOVERY_ROLE, Org
from tests.discovery.stack import EXTERNAL_ID, Stack, create, first_run, start_stack
from tests.helpers import error_details
from tests.integration.conftest import MEMBER, ORG_OWNER, OUTSIDER, OWNER, SYSTEM

MEMBER_ROLE = "canopy-member"
MEMBER_EXTERNAL_ID = "t_acme:memb0001"


@pytest.fixture
async def stack(service_env: dict[str, Any], proxy: FaultProxy) -> AsyncIterator[Stack]:
    built = await start_stack(service_env, proxy)
    yield built
    await built.close()


def member_role(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:role/{MEMBER_ROLE}"


def unsaved(
    scope: types_pb2.Scope | None = None,
    role_arn: str = DISCOVERY_ROLE,
    external_id: str = EXTERNAL_ID,
    role_name: str = MEMBER_ROLE,
    member_external_id: str = "",
    event_queue: str = "",
) -> drpc.UnsavedMemberAccess:
    """Settings as the set-up would have them before CreateIntegration (tenant t_acme)."""
    return drpc.UnsavedMemberAccess(
        scope=scope or types_pb2.Scope(tenant_id="t_acme"),
        discovery_access=pb.AwsDiscoveryAccess(
            role_arn=role_arn, external_id=external_id, event_queue=event_queue
        ),
        member_access=pb.AwsMemberAccess(role_name=role_name, external_id=member_external_id),
    )


async def member_access(
    stack: Stack, metadata: Any = OWNER, **request: Any
) -> drpc.TestMemberAccessResponse:
    """TestMemberAccess's answer to this caller."""
    reply: drpc.TestMemberAccessResponse = await stack.discovery.TestMemberAccess(
        drpc.TestMemberAccessRequest(**request), metadata=metadata
    )
    return reply


async def test_unsaved_settings_sample_active_accounts_of_the_organization(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    accounts = [org.account(f"member-{i}") for i in range(8)]
    org.suspend(accounts[0])
    org.set_state(accounts[1], "PENDING_CLOSURE")
    active = {org.management_account_id, *accounts[2:]}  # 7 accounts
    samples = []
    for _ in range(3):
        reply = await member_access(stack, unsaved=unsaved(), sample_size=4)
        sampled = [r.account_id for r in reply.results]
        assert len(set(sampled)) == 4
        assert set(sampled) <= active
        assert sampled == sorted(sampled)
        assert all(r.ok for r in reply.results)
        assert [r.role_arn for r in reply.results] == [member_role(a) for a in sampled]
        samples.append(frozenset(sampled))
    assert (reply.organization.ok, reply.organization.organization_id) == (True, org.id)
    assert reply.organization.active_account_count == 7
    # The discovery role once per call, then each sampled account's member role, with the
    # discovery role's external id (the member access names none).
    assert proxy.assumed[0] == (DISCOVERY_ROLE, EXTERNAL_ID)
    assert sorted(proxy.assumed[1:5]) == [(member_role(a), EXTERNAL_ID) for a in sorted(samples[0])]
    # Sample size 0 means 5; more than the organization has means all of it.
    assert len((await member_access(stack, unsaved=unsaved())).results) == 5
    every = await member_access(stack, unsaved=unsaved(), sample_size=50)
    assert {r.account_id for r in every.results} == active


async def test_unsaved_settings_test_the_given_accounts_in_request_order(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    first, second, closed = org.account("first"), org.account("second"), org.account("closed")
    org.suspend(closed)
    stranger = "210987654321"
    reply = await member_access(
        stack,
        unsaved=unsaved(member_external_id=MEMBER_EXTERNAL_ID),
        account_ids=[second, stranger, closed, first],
    )
    assert [(r.account_id, r.ok) for r in reply.results] == [
        (second, True),
        (stranger, False),
        (closed, False),
        (first, True),
    ]
    for result in reply.results[1:3]:
        assert result.reason == dpb.ACCESS_FAILURE_REASON_ACCOUNT_NOT_FOUND
        assert org.id in result.message
    # No role is tried in an account outside the organization; the member roles are assumed
    # with the member access's own external id.
    assert sorted(proxy.assumed[1:]) == sorted(
        [(member_role(first), MEMBER_EXTERNAL_ID), (member_role(second), MEMBER_EXTERNAL_ID)]
    )


async def test_unsaved_settings_report_the_account_whose_member_role_is_refused(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    good, bad = org.account("good"), org.account("bad")
    proxy.add(Rule(operation="AssumeRole", role_arn=member_role(bad), error="AccessDenied"))
    reply = await member_access(stack, unsaved=unsaved(), account_ids=[good, bad])
    assert reply.organization.ok
    assert [(r.account_id, r.ok, r.reason) for r in reply.results] == [
        (good, True, dpb.ACCESS_FAILURE_REASON_UNSPECIFIED),
        (bad, False, dpb.ACCESS_FAILURE_REASON_ASSUME_ROLE_DENIED),
    ]
    assert member_role(bad) in reply.results[1].message


async def test_unsaved_settings_with_the_discovery_role_refused_name_it_and_try_no_member(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    member = org.account("member")
    proxy.add(Rule(operation="AssumeRole", role_arn=DISCOVERY_ROLE, error="AccessDenied"))
    for request in ({}, {"account_ids": [member]}):
        reply = await member_access(stack, unsaved=unsaved(), **request)
        assert not reply.organization.ok
        assert reply.organization.reason == dpb.ACCESS_FAILURE_REASON_ASSUME_ROLE_DENIED
        assert DISCOVERY_ROLE in reply.organization.message
        assert list(reply.results) == []
    assert {role for role, _ in proxy.assumed} == {DISCOVERY_ROLE}


async def test_unsaved_settings_of_a_member_account_role_say_not_management_account(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    member = org.account("workloads")
    role = f"arn:aws:iam::{member}:role/canopy-discovery"
    proxy.add(Rule(operation="ListRoots", role_arn=role, error="AccessDeniedException"))
    reply = await member_access(stack, unsaved=unsaved(role_arn=role))
    assert reply.organization.reason == (
        dpb.ACCESS_FAILURE_REASON_NOT_MANAGEMENT_OR_DELEGATED_ADMIN
    )
    assert list(reply.results) == []


async def test_a_saved_integration_answers_the_given_accounts_in_request_order(
    stack: Stack, org: Org
) -> None:
    first, second = org.account("first"), org.account("second")
    created = await create(stack)
    await first_run(stack, created.id)
    reply = await member_access(
        stack, metadata=MEMBER, integration_id=created.id, account_ids=[second, first]
    )
    assert [r.account_id for r in reply.results] == [second, first]
    assert not reply.HasField("organization")


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (unsaved(external_id="t_other:abcd1234"), "unsaved.discovery_access.external_id"),
        (
            unsaved(member_external_id="o_ops:abcd1234"),
            "unsaved.member_access.external_id",
        ),
        (
            unsaved(scope=types_pb2.Scope(org_id="o_ops")),
            "unsaved.discovery_access.external_id",
        ),
    ],
)
async def test_an_external_id_of_another_owner_than_the_scope_is_refused(
    stack: Stack, org: Org, proxy: FaultProxy, settings: drpc.UnsavedMemberAccess, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await member_access(stack, unsaved=settings)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "EXTERNAL_ID_OWNER_MISMATCH"
    assert field in details.fields
    assert proxy.assumed == []


async def create_code(
    stack: Stack, handle: str, scope: types_pb2.Scope, metadata: Any
) -> grpc.StatusCode:
    """What CreateIntegration answers this caller for this scope (OK if it creates)."""
    owner = scope.org_id or scope.tenant_id
    try:
        await stack.integrations.CreateIntegration(
            rpc.CreateIntegrationRequest(
                integration=pb.Integration(
                    handle=handle,
                    scope=scope,
                    discovery_access=pb.AwsDiscoveryAccess(
                        role_arn=DISCOVERY_ROLE, external_id=f"{owner}:abcd1234"
                    ),
                    member_access=pb.AwsMemberAccess(role_name=MEMBER_ROLE),
                )
            ),
            metadata=metadata,
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_callers_are_authorised_as_for_creating_an_integration_in_the_scope(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    tenant, ops = types_pb2.Scope(tenant_id="t_acme"), types_pb2.Scope(org_id="o_ops")
    cases = [
        ("tenant-member", tenant, MEMBER, grpc.StatusCode.PERMISSION_DENIED),
        ("tenant-outsider", tenant, OUTSIDER, grpc.StatusCode.PERMISSION_DENIED),
        ("tenant-org-owner", tenant, ORG_OWNER, grpc.StatusCode.PERMISSION_DENIED),
        ("org-outsider", ops, OUTSIDER, grpc.StatusCode.PERMISSION_DENIED),
        ("org-member", ops, MEMBER, grpc.StatusCode.PERMISSION_DENIED),
        ("org-owner", ops, ORG_OWNER, grpc.StatusCode.OK),
        ("org-tenant-owner", ops, OWNER, grpc.StatusCode.OK),
        ("tenant-owner", tenant, OWNER, grpc.StatusCode.OK),
    ]
    answers = {}
    for handle, scope, metadata, _expected in cases:
        owner = scope.org_id or scope.tenant_id
        settings = unsaved(scope=scope, external_id=f"{owner}:abcd1234")
        try:
            reply = await member_access(stack, metadata, unsaved=settings, sample_size=1)
            answers[handle] = grpc.StatusCode.OK
            assert reply.organization.ok
        except grpc.aio.AioRpcError as error:
            answers[handle] = error.code()
    assert answers == {handle: expected for handle, _, _, expected in cases}
    # Only the allowed callers' tests reached AWS.
    assert sum(role == DISCOVERY_ROLE for role, _ in proxy.assumed) == 3
    # CreateIntegration answers every caller alike (last: creating starts syncs).
    for handle, scope, metadata, _expected in cases:
        assert await create_code(stack, handle, scope, metadata) == answers[handle], handle


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({}, "integration_id"),
        ({"integration_id": "i_abc", "unsaved": unsaved()}, "unsaved"),
        ({"unsaved": unsaved(scope=types_pb2.Scope())}, "unsaved.scope"),
        (
            {"unsaved": unsaved(scope=types_pb2.Scope(tenant_id="acme"))},
            "unsaved.scope.tenant_id",
        ),
        (
            {"unsaved": unsaved(scope=types_pb2.Scope(org_id="t_acme"))},
            "unsaved.scope.org_id",
        ),
        ({"unsaved": unsaved(role_arn="")}, "unsaved.discovery_access.role_arn"),
        (
            {"unsaved": unsaved(role_arn="arn:aws-cn:iam::123456789012:role/r")},
            "unsaved.discovery_access.role_arn",
        ),
        ({"unsaved": unsaved(external_id="t_acme")}, "unsaved.discovery_access.external_id"),
        (
            {
                "unsaved": unsaved(
                    event_queue="https://sqs.us-east-1.amazonaws.com/123456789012/events"
                )
            },
            "unsaved.discovery_access.event_queue",
        ),
        ({"unsaved": unsaved(role_name="")}, "unsaved.member_access.role_name"),
        ({"unsaved": unsaved(role_name="canopy member")}, "unsaved.member_access.role_name"),
        ({"unsaved": unsaved(role_name="r" * 65)}, "unsaved.member_access.role_name"),
        (
            {"unsaved": unsaved(member_external_id="t_acme:short")},
            "unsaved.member_access.external_id",
        ),
        ({"unsaved": unsaved(), "account_ids": ["12345"]}, "account_ids[0]"),
        ({"unsaved": unsaved(), "account_ids": ["123456789012"] * 51}, "account_ids"),
        ({"unsaved": unsaved(), "sample_size": 51}, "sample_size"),
        ({"unsaved": unsaved(), "sample_size": -1}, "sample_size"),
    ],
)
async def test_bad_unsaved_input_is_invalid_argument_naming_the_field(
    stack: Stack, proxy: FaultProxy, request_fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await member_access(stack, SYSTEM, **request_fields)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details.fields
    assert proxy.assumed == []
