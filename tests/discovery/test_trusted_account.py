"""The platform account role templates trust, over real gRPC with moto behind the fault proxy:
configured, or derived from the credentials discovery uses, never a default; TestDiscoveryAccess
naming both accounts when they disagree; and roles of a partition the deployment does not serve.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import pytest
import yaml

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.type.v1 import types_pb2
from tests.awsfaults import FaultProxy, Rule
from tests.discovery.conftest import DISCOVERY_ROLE, MANAGEMENT_ACCOUNT, Org
from tests.discovery.stack import EXTERNAL_ID, Stack, create, first_run, start_stack
from tests.helpers import ErrorDetails, error_details
from tests.integration.conftest import MEMBER, OWNER

OTHER_ACCOUNT = "111111111111"
DENIED_CREDENTIALS = Rule(
    service="sts", operation="GetCallerIdentity", error="InvalidClientTokenId", status=403
)


@pytest.fixture
async def stacks(service_env: dict[str, Any], proxy: FaultProxy) -> AsyncIterator[list[Stack]]:
    """Stacks a test starts with `start_stack(service_env, proxy, ...)`, closed after it."""
    started: list[Stack] = []
    yield started
    for stack in started:
        await stack.close()


async def start(
    stacks: list[Stack], service_env: dict[str, Any], proxy: FaultProxy, **kw: Any
) -> Stack:
    stack = await start_stack(service_env, proxy, **kw)
    stacks.append(stack)
    return stack


async def fails(call: Awaitable[Any]) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return error_details(caught.value)


def template_request() -> rpc.RenderRoleTemplateRequest:
    return rpc.RenderRoleTemplateRequest(
        kind=rpc.ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET,
        role_name="canopy-member",
        external_id=EXTERNAL_ID,
    )


def trusted_principal(template: str) -> str:
    parsed = yaml.safe_load(template.replace("!GetAtt", "").replace("!Sub", ""))
    (statement,) = parsed["Resources"]["CanopyMemberRole"]["Properties"][
        "AssumeRolePolicyDocument"
    ]["Statement"]
    principal: str = statement["Principal"]["AWS"]
    return principal


async def test_unconfigured_templates_trust_the_account_of_discoverys_credentials(
    stacks: list[Stack], service_env: dict[str, Any], proxy: FaultProxy
) -> None:
    stack = await start(stacks, service_env, proxy, integration={"trusted_account_id": None})
    reply = await stack.integrations.RenderRoleTemplate(template_request(), metadata=OWNER)
    # moto answers GetCallerIdentity for the platform's keys with its own account.
    assert reply.trusted_account_id == MANAGEMENT_ACCOUNT
    assert trusted_principal(reply.template_yaml) == f"arn:aws:iam::{MANAGEMENT_ACCOUNT}:root"
    assert proxy.counts["GetCallerIdentity"] == 1
    await stack.integrations.RenderRoleTemplate(template_request(), metadata=OWNER)
    assert proxy.counts["GetCallerIdentity"] == 1  # kept for a while, not asked per template


async def test_no_template_without_an_account_configured_or_derivable(
    stacks: list[Stack], service_env: dict[str, Any], proxy: FaultProxy
) -> None:
    stack = await start(stacks, service_env, proxy, integration={"trusted_account_id": None})
    proxy.add(DENIED_CREDENTIALS)
    failure = await fails(stack.integrations.RenderRoleTemplate(template_request(), metadata=OWNER))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.reason == "TRUSTED_ACCOUNT_UNKNOWN"
    assert failure.metadata["setting"] == "CANOPY_TRUSTED_ACCOUNT_ID"
    assert "InvalidClientTokenId" in failure.message
    # Once discovery can read its credentials again, templates render.
    proxy.clear()
    reply = await stack.integrations.RenderRoleTemplate(template_request(), metadata=OWNER)
    assert reply.trusted_account_id == MANAGEMENT_ACCOUNT


async def test_platform_credentials_answer_with_their_account_or_why_not(
    stacks: list[Stack], service_env: dict[str, Any], proxy: FaultProxy
) -> None:
    stack = await start(stacks, service_env, proxy)
    request = drpc.TestDiscoveryAccessRequest(platform_credentials=drpc.PlatformCredentials())
    ok = await stack.discovery.TestDiscoveryAccess(request, metadata=MEMBER)
    assert ok.ok
    assert ok.platform_account_id == MANAGEMENT_ACCOUNT
    proxy.add(DENIED_CREDENTIALS)
    refused = await stack.discovery.TestDiscoveryAccess(request, metadata=MEMBER)
    assert not refused.ok
    assert refused.platform_account_id == ""
    assert refused.reason == dpb.ACCESS_FAILURE_REASON_ACCESS_DENIED
    assert "InvalidClientTokenId" in refused.message


async def test_access_test_names_both_accounts_when_the_templates_trust_another(
    stacks: list[Stack], service_env: dict[str, Any], proxy: FaultProxy, org: Org
) -> None:
    stack = await start(
        stacks, service_env, proxy, integration={"trusted_account_id": OTHER_ACCOUNT}
    )
    created = await create(stack)
    await first_run(stack, created.id)
    for request in (
        drpc.TestDiscoveryAccessRequest(integration_id=created.id),
        drpc.TestDiscoveryAccessRequest(
            access=pb.AwsDiscoveryAccess(role_arn=DISCOVERY_ROLE, external_id=EXTERNAL_ID)
        ),
    ):
        reply = await stack.discovery.TestDiscoveryAccess(request, metadata=OWNER)
        assert not reply.ok
        assert reply.reason == dpb.ACCESS_FAILURE_REASON_TRUSTED_ACCOUNT_MISMATCH
        assert (reply.trusted_account_id, reply.platform_account_id) == (
            OTHER_ACCOUNT,
            MANAGEMENT_ACCOUNT,
        )
        assert OTHER_ACCOUNT in reply.message
        assert MANAGEMENT_ACCOUNT in reply.message
        assert "CANOPY_TRUSTED_ACCOUNT_ID" in reply.message
        # moto lets the role be assumed anyway: what it read is still reported.
        assert reply.organization_id == org.id


async def test_access_test_reports_both_accounts_when_they_agree(
    stacks: list[Stack], service_env: dict[str, Any], proxy: FaultProxy, org: Org
) -> None:
    stack = await start(stacks, service_env, proxy)
    reply = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(
            access=pb.AwsDiscoveryAccess(role_arn=DISCOVERY_ROLE, external_id=EXTERNAL_ID)
        ),
        metadata=OWNER,
    )
    assert reply.ok, reply.message
    assert reply.trusted_account_id == reply.platform_account_id == MANAGEMENT_ACCOUNT


async def test_access_test_refuses_a_role_of_another_partition_naming_the_field(
    stacks: list[Stack], service_env: dict[str, Any], proxy: FaultProxy
) -> None:
    stack = await start(stacks, service_env, proxy)
    failure = await fails(
        stack.discovery.TestDiscoveryAccess(
            drpc.TestDiscoveryAccessRequest(
                access=pb.AwsDiscoveryAccess(
                    role_arn=f"arn:aws-us-gov:iam::{MANAGEMENT_ACCOUNT}:role/canopy-discovery",
                    external_id=EXTERNAL_ID,
                )
            ),
            metadata=OWNER,
        )
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == ["access.role_arn"]
    assert failure.reason == "UNSUPPORTED_PARTITION"
    assert "partition 'aws'" in failure.message
    assert proxy.counts["AssumeRole"] == 0


async def test_discovery_never_assumes_a_role_of_another_partition(
    stacks: list[Stack], service_env: dict[str, Any], proxy: FaultProxy, org: Org
) -> None:
    # An integration service set up for aws-cn in front of a discovery service for aws: the
    # integration's roles are in a partition discovery cannot reach.
    stack = await start(stacks, service_env, proxy, integration={"aws_partition": "aws-cn"})
    reply = await stack.integrations.CreateIntegration(
        rpc.CreateIntegrationRequest(
            integration=pb.Integration(
                handle="aws-cn",
                scope=types_pb2.Scope(tenant_id="t_acme"),
                discovery_access=pb.AwsDiscoveryAccess(
                    role_arn=f"arn:aws-cn:iam::{MANAGEMENT_ACCOUNT}:role/canopy-discovery",
                    external_id=EXTERNAL_ID,
                ),
                member_access=pb.AwsMemberAccess(role_name="canopy-member"),
            )
        ),
        metadata=OWNER,
    )
    run = await first_run(stack, reply.integration.id)
    assert run.state == dpb.SYNC_RUN_STATE_FAILED
    assert run.failure_reason == "UNSUPPORTED_PARTITION"
    tested = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(integration_id=reply.integration.id), metadata=OWNER
    )
    assert not tested.ok
    assert tested.reason == dpb.ACCESS_FAILURE_REASON_UNSUPPORTED_PARTITION
    members = await stack.discovery.TestMemberAccess(
        drpc.TestMemberAccessRequest(integration_id=reply.integration.id), metadata=OWNER
    )
    assert members.results == []  # no connection was ever discovered
    assert proxy.counts["AssumeRole"] == 0
