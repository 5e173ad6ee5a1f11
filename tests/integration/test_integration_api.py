"""IntegrationService over real gRPC and PostgreSQL: creating integrations at tenant and org
scope, plan gating, tenant-wide handles, roles, idempotent creates, external ids, role templates,
listing, updates, deletion, and every bad input answered INVALID_ARGUMENT naming its field."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import cfnlint.api  # type: ignore[import-untyped]  # cfn-lint ships no type information
import grpc
import pytest
import yaml
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.type.v1 import types_pb2
from canopy_core.directory import DirectoryClient
from canopy_core.errors import InvalidArgument
from canopy_core.server import serve
from canopy_integration.server import purge_tombstones
from canopy_integration.server import spec as integration_spec
from canopy_integration.settings import IntegrationSettings
from canopy_integration.tree import CONNECTIONS_PAGE, FOLDERS_PAGE
from tests.helpers import (
    ErrorDetails,
    bearer,
    error_details,
    free_port,
    token,
    unkeyed_page_token,
)
from tests.integration.conftest import (
    MEMBER,
    ORG_OWNER,
    OUTSIDER,
    OWNER,
    ROOT,
    SYSTEM,
    TRUSTED_ACCOUNT_ID,
    Suite,
    account,
    create,
    new_integration,
    snapshot,
)

TEAM_OWNER = bearer(token("tina", t_team="owner"))
MADE_UP_ID = "i_0000000000zzzzzzzzzzzzzzzz"

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED


async def fails(call: Awaitable[Any]) -> ErrorDetails:
    """The error a call fails with (it must fail)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return error_details(caught.value)


def mask(*paths: str) -> FieldMask:
    return FieldMask(paths=list(paths))


async def update(
    suite: Suite, message: pb.Integration, *paths: str, metadata: Any = OWNER
) -> pb.Integration:
    reply = await suite.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(integration=message, update_mask=mask(*paths)),
        metadata=metadata,
    )
    return reply.integration


async def get(suite: Suite, integration_id: str, metadata: Any = OWNER) -> pb.Integration:
    reply = await suite.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=integration_id), metadata=metadata
    )
    return reply.integration


async def list_ids(
    suite: Suite,
    scope: types_pb2.Scope,
    *,
    include_org_integrations: bool = False,
    metadata: Any = OWNER,
) -> list[str]:
    reply = await suite.integrations.ListIntegrations(
        rpc.ListIntegrationsRequest(scope=scope, include_org_integrations=include_org_integrations),
        metadata=metadata,
    )
    return [i.id for i in reply.integrations]


def tenant(tenant_id: str = "t_acme") -> types_pb2.Scope:
    return types_pb2.Scope(tenant_id=tenant_id)


def org(org_id: str = "o_ops") -> types_pb2.Scope:
    return types_pb2.Scope(org_id=org_id)


def without_volatile(message: pb.Integration) -> pb.Integration:
    """A copy without the fields every update changes (etag, update time)."""
    copy = pb.Integration()
    copy.CopyFrom(message)
    copy.ClearField("etag")
    copy.ClearField("update_time")
    return copy


# -- create ------------------------------------------------------------------------------------


async def test_create_at_tenant_scope_is_pending_with_a_root_folder_and_defaults(
    suite: Suite,
) -> None:
    created = await create(suite, new_integration("aws-prod"))
    assert created.id.startswith("i_")
    assert created.handle == "aws-prod"
    assert created.scope == tenant("t_acme")
    assert created.tenant_id == "t_acme"
    assert created.kind == pb.INTEGRATION_KIND_AWS_ORGANIZATION
    assert created.state == pb.INTEGRATION_STATE_PENDING
    assert created.state_reason == ""
    assert created.sync_interval.ToTimedelta().total_seconds() == 15 * 60
    assert created.HasField("max_delete_fraction")
    assert created.max_delete_fraction == 0.5
    assert created.tree_generation == 0
    assert created.etag
    assert created.create_time.seconds > 0
    assert created.discovery_access.external_id == "t_acme:abcd1234"
    assert created.root_folder_id.startswith("f_")

    folder = (
        await suite.tree.GetFolder(
            tree_rpc.GetFolderRequest(id=created.root_folder_id), metadata=OWNER
        )
    ).folder
    assert folder.kind == tree_pb.FOLDER_KIND_ROOT
    assert folder.integration_id == created.id
    assert folder.parent_folder_id == ""
    assert (folder.title, folder.handle) == ("aws-prod", "aws-prod")

    assert await get(suite, created.id) == created


async def test_create_at_org_scope_fills_the_tenant_and_creates_a_root_folder(
    suite: Suite,
) -> None:
    created = await create(suite, new_integration("ops-aws", org_id="o_ops"))
    assert created.scope == org("o_ops")
    assert created.tenant_id == "t_acme"
    assert created.kind == pb.INTEGRATION_KIND_AWS_ORGANIZATION
    assert created.state == pb.INTEGRATION_STATE_PENDING
    assert created.sync_interval.ToTimedelta().total_seconds() == 15 * 60
    assert created.max_delete_fraction == 0.5
    folder = (
        await suite.tree.GetFolder(
            tree_rpc.GetFolderRequest(id=created.root_folder_id), metadata=OWNER
        )
    ).folder
    assert folder.kind == tree_pb.FOLDER_KIND_ROOT
    assert (folder.title, folder.handle) == ("ops-aws", "ops-aws")


async def test_create_keeps_the_given_optional_settings(suite: Suite) -> None:
    message = new_integration(
        "aws-tuned",
        prefix="aws_",
        sync_interval=Duration(seconds=3600),
        max_delete_fraction=0.0,
        connection_config=pb.ConnectionConfig(
            regions=types_pb2.StringList(values=["us-east-1", "eu-*"]),
            max_error_retry_attempts=3,
        ),
        crawl_limits=pb.CrawlLimits(max_concurrency=4),
    )
    created = await create(suite, message)
    assert created.handle_prefix == "aws_"
    assert created.sync_interval.seconds == 3600
    assert created.HasField("max_delete_fraction")
    assert created.max_delete_fraction == 0.0
    assert list(created.connection_config.regions.values) == ["us-east-1", "eu-*"]
    assert created.connection_config.max_error_retry_attempts == 3
    assert created.crawl_limits.max_concurrency == 4


# -- plans -------------------------------------------------------------------------------------


async def test_plan_gating_refuses_a_team_tenant_and_a_free_org(suite: Suite) -> None:
    team_tenant = await fails(
        create(suite, new_integration("aws", tenant_id="t_team"), metadata=TEAM_OWNER)
    )
    assert team_tenant.code == grpc.StatusCode.FAILED_PRECONDITION
    assert team_tenant.reason == "PLAN_NOT_ELIGIBLE"

    free_org = await fails(create(suite, new_integration("aws", org_id="o_free")))
    assert free_org.code == grpc.StatusCode.FAILED_PRECONDITION
    assert free_org.reason == "PLAN_NOT_ELIGIBLE"

    assert await list_ids(suite, tenant("t_team"), metadata=TEAM_OWNER) == []
    assert await list_ids(suite, org("o_free")) == []


async def test_plan_gating_allows_an_enterprise_org_in_a_team_tenant(suite: Suite) -> None:
    created = await create(suite, new_integration("aws", org_id="o_ent"), metadata=TEAM_OWNER)
    assert created.scope == org("o_ent")
    assert created.tenant_id == "t_team"
    assert created.state == pb.INTEGRATION_STATE_PENDING


# -- handles -----------------------------------------------------------------------------------


async def test_integration_handles_are_unique_across_the_tenant_including_org_level_ones(
    suite: Suite,
) -> None:
    first = await create(suite, new_integration("aws"))
    taken = await fails(create(suite, new_integration("aws", org_id="o_ops")))
    assert taken.code == grpc.StatusCode.ALREADY_EXISTS
    assert taken.reason == "HANDLE_TAKEN"
    assert await list_ids(suite, tenant(), include_org_integrations=True) == [first.id]

    # And the other way round: an org-level handle blocks a tenant-level one.
    await create(suite, new_integration("ops-aws", org_id="o_ops"))
    taken_again = await fails(create(suite, new_integration("ops-aws")))
    assert taken_again.code == grpc.StatusCode.ALREADY_EXISTS
    assert taken_again.reason == "HANDLE_TAKEN"


async def test_the_same_handle_in_another_tenant_is_fine(suite: Suite) -> None:
    ours = await create(suite, new_integration("aws"))
    theirs = await create(suite, new_integration("aws", tenant_id="t_other"), metadata=OUTSIDER)
    assert theirs.handle == ours.handle == "aws"
    assert theirs.id != ours.id
    assert theirs.tenant_id == "t_other"


# -- roles -------------------------------------------------------------------------------------


async def test_a_member_reads_but_cannot_create_update_or_delete(suite: Suite) -> None:
    existing = await create(suite, new_integration("aws"))

    denied = await fails(create(suite, new_integration("aws-2"), metadata=MEMBER))
    assert denied.code == DENIED
    denied = await fails(
        update(suite, pb.Integration(id=existing.id, handle="renamed"), "handle", metadata=MEMBER)
    )
    assert denied.code == DENIED
    denied = await fails(
        suite.integrations.DeleteIntegration(
            rpc.DeleteIntegrationRequest(id=existing.id, confirm_handle="aws"), metadata=MEMBER
        )
    )
    assert denied.code == DENIED

    assert await get(suite, existing.id, metadata=MEMBER) == await get(suite, existing.id)
    assert await list_ids(suite, tenant(), metadata=MEMBER) == [existing.id]


async def test_an_org_owner_creates_org_scoped_integrations_but_not_tenant_scoped_ones(
    suite: Suite,
) -> None:
    created = await create(suite, new_integration("ops-aws", org_id="o_ops"), metadata=ORG_OWNER)
    assert created.scope == org("o_ops")
    assert await list_ids(suite, org("o_ops"), metadata=ORG_OWNER) == [created.id]

    denied = await fails(create(suite, new_integration("acme-aws"), metadata=ORG_OWNER))
    assert denied.code == DENIED


async def test_a_tenant_owner_creates_and_manages_org_scoped_integrations_in_its_orgs(
    suite: Suite,
) -> None:
    created = await create(suite, new_integration("ops-aws", org_id="o_ops"), metadata=OWNER)
    assert created.scope == org("o_ops")
    renamed = await update(
        suite, pb.Integration(id=created.id, handle="ops-aws-2"), "handle", metadata=OWNER
    )
    assert renamed.handle == "ops-aws-2"


async def test_an_outsider_is_denied_everything_without_learning_what_exists(
    suite: Suite,
) -> None:
    existing = await create(suite, new_integration("aws"))

    on_existing = await fails(get(suite, existing.id, metadata=OUTSIDER))
    on_made_up = await fails(get(suite, MADE_UP_ID, metadata=OUTSIDER))
    assert on_existing.code == DENIED
    assert on_made_up.code == on_existing.code

    listed = await fails(list_ids(suite, tenant(), metadata=OUTSIDER))
    assert listed.code == DENIED
    listed_org = await fails(list_ids(suite, org("o_ops"), metadata=OUTSIDER))
    assert listed_org.code == DENIED

    updated = await fails(
        update(suite, pb.Integration(id=existing.id, handle="mine"), "handle", metadata=OUTSIDER)
    )
    assert updated.code == DENIED
    deleted = await fails(
        suite.integrations.DeleteIntegration(
            rpc.DeleteIntegrationRequest(id=existing.id, confirm_handle="aws"), metadata=OUTSIDER
        )
    )
    assert deleted.code == DENIED
    deleted_made_up = await fails(
        suite.integrations.DeleteIntegration(
            rpc.DeleteIntegrationRequest(id=MADE_UP_ID, confirm_handle="aws"), metadata=OUTSIDER
        )
    )
    assert deleted_made_up.code == deleted.code

    assert await get(suite, existing.id) == existing


# -- request ids -------------------------------------------------------------------------------


async def test_a_create_retried_with_the_same_request_id_returns_the_first_integration(
    suite: Suite,
) -> None:
    first = await create(suite, new_integration("aws"), request_id="req-0001")
    again = await create(suite, new_integration("aws"), request_id="req-0001")
    assert again.id == first.id
    assert again.root_folder_id == first.root_folder_id
    assert await list_ids(suite, tenant()) == [first.id]


async def test_a_request_id_reused_for_a_different_request_is_invalid(suite: Suite) -> None:
    first = await create(suite, new_integration("aws"), request_id="req-0001")
    reused = await fails(create(suite, new_integration("aws-other"), request_id="req-0001"))
    assert reused.code == INVALID
    assert reused.fields == ["request_id"]
    assert await list_ids(suite, tenant()) == [first.id]


# -- external ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "external_id"),
    [
        ("discovery_access.external_id", "o_ops:abcd1234"),
        ("discovery_access.external_id", "t_other:abcd1234"),
        ("member_access.external_id", "o_ops:abcd1234"),
        ("member_access.external_id", "t_other:abcd1234"),
    ],
)
async def test_an_external_id_naming_another_owner_is_refused(
    suite: Suite, field: str, external_id: str
) -> None:
    message = new_integration("aws")
    access, name = field.split(".")
    setattr(getattr(message, access), name, external_id)
    refused = await fails(create(suite, message))
    assert refused.code == INVALID
    assert refused.reason == "EXTERNAL_ID_OWNER_MISMATCH"
    assert refused.fields == [f"integration.{field}"]
    assert await list_ids(suite, tenant()) == []


async def test_an_update_to_an_external_id_of_another_owner_is_refused(suite: Suite) -> None:
    created = await create(suite, new_integration("aws"))
    message = pb.Integration(
        id=created.id,
        discovery_access=pb.AwsDiscoveryAccess(
            role_arn=created.discovery_access.role_arn, external_id="t_other:abcd1234"
        ),
    )
    refused = await fails(update(suite, message, "discovery_access"))
    assert refused.code == INVALID
    assert refused.reason == "EXTERNAL_ID_OWNER_MISMATCH"
    assert refused.fields == ["integration.discovery_access.external_id"]
    assert await get(suite, created.id) == created


@pytest.mark.parametrize(
    "role_arn",
    [
        "arn:aws-cn:iam::111111111111:role/canopy-discovery",
        "arn:aws-us-gov:iam::111111111111:role/canopy-discovery",
    ],
)
async def test_a_role_arn_of_another_partition_is_refused_naming_the_served_one(
    suite: Suite, role_arn: str
) -> None:
    message = new_integration("aws")
    message.discovery_access.role_arn = role_arn
    created = await fails(create(suite, message))
    assert created.code == INVALID
    assert created.fields == ["integration.discovery_access.role_arn"]
    assert created.reason == "UNSUPPORTED_PARTITION"
    assert "partition 'aws'" in created.message

    existing = await create(suite, new_integration("aws"))
    for paths in (["discovery_access"], ["discovery_access.role_arn"]):
        updated = await fails(
            update(
                suite,
                pb.Integration(
                    id=existing.id,
                    discovery_access=pb.AwsDiscoveryAccess(
                        role_arn=role_arn, external_id=existing.discovery_access.external_id
                    ),
                ),
                *paths,
            )
        )
        assert updated.code == INVALID
        assert updated.fields == ["integration.discovery_access.role_arn"]
        assert "partition 'aws'" in updated.message
    assert await get(suite, existing.id) == existing


@pytest.mark.parametrize(
    "integration_settings",
    [{"trusted_account_id": TRUSTED_ACCOUNT_ID, "aws_partition": "aws-cn"}],
)
async def test_a_deployment_for_aws_cn_serves_its_roles_and_trusts_its_account_there(
    suite: Suite,
) -> None:
    message = new_integration("aws")
    message.discovery_access.role_arn = "arn:aws-cn:iam::111111111111:role/canopy-discovery"
    created = await create(suite, message)
    refused = new_integration("aws-global")
    failure = await fails(create(suite, refused))
    assert failure.fields == ["integration.discovery_access.role_arn"]
    assert "partition 'aws-cn'" in failure.message

    for kind in (
        rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE,
        rpc.ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET,
    ):
        reply = await render(suite, kind=kind, integration_id=created.id)
        (statement,) = role_of(reply.template_yaml)["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"]["AWS"] == f"arn:aws-cn:iam::{TRUSTED_ACCOUNT_ID}:root"
    await suite.tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=created.id,
            snapshot=snapshot([], [(account(7), ROOT, "Web")]),
        ),
        metadata=SYSTEM,
    )
    listed = await suite.tree.ListConnections(
        tree_rpc.ListConnectionsRequest(integration_id=created.id), metadata=OWNER
    )
    assert [c.effective_config.role_arn for c in listed.connections] == [
        f"arn:aws-cn:iam::{account(7)}:role/canopy-member"
    ]


async def test_generate_external_id_prefixes_the_owner_and_a_fresh_random_suffix(
    suite: Suite,
) -> None:
    async def generate(scope: types_pb2.Scope, **kw: Any) -> str:
        reply = await suite.integrations.GenerateExternalId(
            rpc.GenerateExternalIdRequest(scope=scope, **kw), metadata=OWNER
        )
        return reply.external_id

    tenant_ids = [await generate(tenant()) for _ in range(3)]
    for external_id in tenant_ids:
        assert re.fullmatch(r"t_acme:[a-z0-9]{8}", external_id), external_id
    assert len(set(tenant_ids)) == 3

    org_id = await generate(org("o_ops"))
    assert re.fullmatch(r"o_ops:[a-z0-9]{8}", org_id), org_id

    assert await generate(tenant(), suffix="mine0042") == "t_acme:mine0042"

    # What it generates is accepted by CreateIntegration for that scope.
    message = new_integration("aws")
    message.discovery_access.external_id = tenant_ids[0]
    created = await create(suite, message)
    assert created.discovery_access.external_id == tenant_ids[0]


@pytest.mark.parametrize("suffix", ["abc1234", "ABCD1234", "abcd12345", "abcd-123", ""])
async def test_generate_external_id_refuses_a_bad_suffix(suite: Suite, suffix: str) -> None:
    refused = await fails(
        suite.integrations.GenerateExternalId(
            rpc.GenerateExternalIdRequest(scope=tenant(), suffix=suffix), metadata=OWNER
        )
    )
    assert refused.code == INVALID
    assert refused.fields == ["suffix"]


async def test_generate_external_id_is_denied_to_an_outsider(suite: Suite) -> None:
    denied = await fails(
        suite.integrations.GenerateExternalId(
            rpc.GenerateExternalIdRequest(scope=tenant("t_acme")), metadata=OUTSIDER
        )
    )
    assert denied.code == DENIED
    denied_org = await fails(
        suite.integrations.GenerateExternalId(
            rpc.GenerateExternalIdRequest(scope=org("o_ops")), metadata=OUTSIDER
        )
    )
    assert denied_org.code == DENIED


# -- what the directory is asked ---------------------------------------------------------------


async def test_a_malformed_scope_id_names_the_field_instead_of_blaming_the_directory(
    suite: Suite,
) -> None:
    async def watch(scope: types_pb2.Scope) -> Any:
        stream = suite.tree.WatchTreeEvents(
            tree_rpc.WatchTreeEventsRequest(scope=scope), metadata=OWNER
        )
        try:
            return await anext(aiter(stream))
        finally:
            stream.cancel()

    calls: dict[str, Callable[[types_pb2.Scope], Awaitable[Any]]] = {
        "ListIntegrations": lambda scope: suite.integrations.ListIntegrations(
            rpc.ListIntegrationsRequest(scope=scope), metadata=OWNER
        ),
        "GenerateExternalId": lambda scope: suite.integrations.GenerateExternalId(
            rpc.GenerateExternalIdRequest(scope=scope), metadata=OWNER
        ),
        "WatchTreeEvents": watch,
    }
    for name, call in calls.items():
        for scope, field in ((tenant("T BAD"), "scope.tenant_id"), (org("o_OPS"), "scope.org_id")):
            refused = await fails(call(scope))
            assert (name, refused.code, refused.fields) == (name, INVALID, [field])


async def test_an_id_the_directory_refuses_is_the_callers_error_on_the_callers_field(
    suite: Suite,
) -> None:
    # The directory client, asked about an id nobody checked first: the permissions service
    # answers INVALID_ARGUMENT on its own `id`, which is the caller's field here.
    runtime = suite.integration_service.runtime
    channel = runtime.channel(runtime.settings.permissions_address)
    try:
        with pytest.raises(InvalidArgument) as caught:
            await DirectoryClient(channel).workspace(
                "W BAD", field="initial_permissions.grantees[0].workspace_id"
            )
    finally:
        await channel.close()
    assert [v.field for v in caught.value.violations] == [
        "initial_permissions.grantees[0].workspace_id"
    ]


async def test_create_with_the_directory_down_is_unavailable(
    suite: Suite, service_env: dict[str, Any]
) -> None:
    cut_off = await serve(
        integration_spec(),
        IntegrationSettings(
            **{
                **service_env,
                "db_schema": "integration_cut_off",
                "permissions_address": f"127.0.0.1:{free_port()}",
            }
        ),
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cut_off.port}") as channel:
            stub = rpc_grpc.IntegrationServiceStub(channel)
            down = await fails(
                stub.CreateIntegration(
                    rpc.CreateIntegrationRequest(integration=new_integration("aws")),
                    metadata=OWNER,
                )
            )
    finally:
        await cut_off.stop()
    assert (down.code, down.reason) == (grpc.StatusCode.UNAVAILABLE, "DIRECTORY_UNAVAILABLE")


# -- role templates ----------------------------------------------------------------------------


def lint(template: str) -> list[str]:
    """cfn-lint's default rules (errors and warnings)."""
    return [str(match) for match in cfnlint.api.lint(template, regions=["us-east-1"])]


async def render(suite: Suite, **kw: Any) -> rpc.RenderRoleTemplateResponse:
    response: rpc.RenderRoleTemplateResponse = await suite.integrations.RenderRoleTemplate(
        rpc.RenderRoleTemplateRequest(**kw), metadata=OWNER
    )
    return response


class CloudFormationLoader(yaml.SafeLoader):
    """A safe loader that reads CloudFormation's short-form tags (`!Sub`) as their long forms."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def role_of(template: str) -> dict[str, Any]:
    """The properties of the one IAM role the template creates."""
    parsed = yaml.load(template, Loader=CloudFormationLoader)
    (resource,) = parsed["Resources"].values()
    assert resource["Type"] == "AWS::IAM::Role"
    properties: dict[str, Any] = resource["Properties"]
    return properties


def in_aws(value: Any) -> str:
    """A string, or an `Fn::Sub` of one, as it reads in the `aws` partition."""
    if isinstance(value, dict) and list(value) == ["Fn::Sub"]:
        value = value["Fn::Sub"]
    assert isinstance(value, str), value
    return value.replace("${AWS::Partition}", "aws")


def assert_role_template(
    reply: rpc.RenderRoleTemplateResponse,
    role_name: str,
    external_id: str,
    path: str | None = None,
) -> None:
    assert reply.trusted_account_id == TRUSTED_ACCOUNT_ID
    assert reply.file_name.endswith(".yaml")
    role = role_of(reply.template_yaml)
    assert role["RoleName"] == role_name
    assert role.get("Path") == path
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sts:AssumeRole"
    assert in_aws(statement["Principal"]["AWS"]) == f"arn:aws:iam::{TRUSTED_ACCOUNT_ID}:root"
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": external_id}}
    (policy,) = role["ManagedPolicyArns"]
    assert in_aws(policy) == "arn:aws:iam::aws:policy/ReadOnlyAccess"


async def test_render_role_template_for_explicit_role_names_and_external_ids_passes_cfn_lint(
    suite: Suite,
) -> None:
    discovery = await render(
        suite,
        kind=rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE,
        role_name="canopy-discovery",
        external_id="t_acme:abcd1234",
    )
    assert_role_template(discovery, "canopy-discovery", "t_acme:abcd1234")
    assert lint(discovery.template_yaml) == []

    member = await render(
        suite,
        kind=rpc.ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET,
        role_name="canopy-member",
        external_id="o_ops:wxyz9876",
    )
    assert_role_template(member, "canopy-member", "o_ops:wxyz9876")
    assert member.file_name != discovery.file_name
    assert lint(member.template_yaml) == []


async def test_render_role_template_takes_role_and_external_id_from_an_integration(
    suite: Suite,
) -> None:
    message = new_integration("aws")
    message.discovery_access.role_arn = "arn:aws:iam::111111111111:role/team/acme-discovery"
    message.discovery_access.external_id = "t_acme:disc0001"
    message.member_access.role_name = "acme-member"
    message.member_access.external_id = "t_acme:memb0001"
    created = await create(suite, message)

    discovery = await render(
        suite, kind=rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE, integration_id=created.id
    )
    assert_role_template(discovery, "acme-discovery", "t_acme:disc0001", path="/team/")
    assert "t_acme:memb0001" not in discovery.template_yaml

    member = await render(
        suite, kind=rpc.ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET, integration_id=created.id
    )
    assert_role_template(member, "acme-member", "t_acme:memb0001")
    assert "t_acme:disc0001" not in member.template_yaml


@pytest.mark.parametrize(
    "integration_settings",
    # No trusted account configured, and the discovery service that would say whose
    # credentials it holds is not running.
    [{"trusted_account_id": None, "discovery_address": f"127.0.0.1:{free_port()}"}],
)
async def test_render_role_template_never_guesses_the_account_to_trust(suite: Suite) -> None:
    failure = await fails(
        render(
            suite,
            kind=rpc.ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET,
            role_name="canopy-member",
            external_id="t_acme:abcd1234",
        )
    )
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.reason == "DISCOVERY_UNAVAILABLE"
    # Bad input is still the caller's error, found before the account is needed.
    bad = await fails(
        render(suite, kind=rpc.ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET, role_name="canopy")
    )
    assert bad.code == INVALID
    assert bad.fields == ["external_id"]


async def test_render_role_template_refuses_bad_input_naming_the_field(suite: Suite) -> None:
    unspecified = await fails(
        render(
            suite,
            kind=rpc.ROLE_TEMPLATE_KIND_UNSPECIFIED,
            role_name="canopy",
            external_id="t_acme:abcd1234",
        )
    )
    assert unspecified.code == INVALID
    assert unspecified.fields == ["kind"]

    no_role = await fails(
        render(suite, kind=rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE, external_id="t_acme:abcd1234")
    )
    assert no_role.code == INVALID
    assert no_role.fields == ["role_name"]

    bad_role = await fails(
        render(
            suite,
            kind=rpc.ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET,
            role_name="bad name",
            external_id="t_acme:abcd1234",
        )
    )
    assert bad_role.code == INVALID
    assert bad_role.fields == ["role_name"]

    no_external_id = await fails(
        render(suite, kind=rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE, role_name="canopy")
    )
    assert no_external_id.code == INVALID
    assert no_external_id.fields == ["external_id"]


# -- list --------------------------------------------------------------------------------------


async def test_list_integrations_pages_through_all_oldest_first(suite: Suite) -> None:
    created = [(await create(suite, new_integration(f"aws-{n}"))).id for n in range(5)]
    seen: list[str] = []
    sizes: list[int] = []
    page_token = ""
    for _ in range(5):
        reply = await suite.integrations.ListIntegrations(
            rpc.ListIntegrationsRequest(scope=tenant(), page_size=2, page_token=page_token),
            metadata=OWNER,
        )
        seen.extend(i.id for i in reply.integrations)
        sizes.append(len(reply.integrations))
        page_token = reply.next_page_token
        if not page_token:
            break
    assert seen == created
    assert sizes == [2, 2, 1]
    assert page_token == ""


async def test_list_integrations_refuses_bad_paging_arguments(suite: Suite) -> None:
    for n in range(3):
        await create(suite, new_integration(f"aws-{n}"))

    negative = await fails(
        suite.integrations.ListIntegrations(
            rpc.ListIntegrationsRequest(scope=tenant(), page_size=-1), metadata=OWNER
        )
    )
    assert negative.code == INVALID
    assert negative.fields == ["page_size"]

    first = await suite.integrations.ListIntegrations(
        rpc.ListIntegrationsRequest(scope=tenant(), page_size=1), metadata=OWNER
    )
    assert first.next_page_token
    other_scope = await fails(
        suite.integrations.ListIntegrations(
            rpc.ListIntegrationsRequest(
                scope=org("o_ops"), page_size=1, page_token=first.next_page_token
            ),
            metadata=OWNER,
        )
    )
    assert other_scope.code == INVALID
    assert other_scope.fields == ["page_token"]

    other_flag = await fails(
        suite.integrations.ListIntegrations(
            rpc.ListIntegrationsRequest(
                scope=tenant(),
                include_org_integrations=True,
                page_size=1,
                page_token=first.next_page_token,
            ),
            metadata=OWNER,
        )
    )
    assert other_flag.code == INVALID
    assert other_flag.fields == ["page_token"]

    garbage = await fails(
        suite.integrations.ListIntegrations(
            rpc.ListIntegrationsRequest(scope=tenant(), page_token="not-a-token"), metadata=OWNER
        )
    )
    assert garbage.code == INVALID
    assert garbage.fields == ["page_token"]

    no_scope = await fails(
        suite.integrations.ListIntegrations(rpc.ListIntegrationsRequest(), metadata=OWNER)
    )
    assert no_scope.code == INVALID
    assert no_scope.fields == ["scope"]


async def test_list_connections_refuses_forged_and_wrong_shaped_page_tokens(suite: Suite) -> None:
    created = await create(suite)
    await suite.tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=created.id,
            snapshot=snapshot([], [(account(n), ROOT, f"A{n}") for n in range(3)]),
            expected_generation=created.tree_generation,
        ),
        metadata=SYSTEM,
    )
    arguments = {"integration_id": created.id, "folder_id": None}
    keys = suite.integration_service.runtime.page_tokens
    # A NUL byte once reached PostgreSQL (INTERNAL); the rest are not ids at all.
    positions: list[Any] = ["c_\x00", 17, None, {"id": "c_1"}, [], ["c_1", "c_2"], [17]]
    tokens = [unkeyed_page_token(p, arguments) for p in positions]
    tokens += [keys.seal(CONNECTIONS_PAGE, p, arguments) for p in ([p] for p in positions)]
    tokens.append(keys.seal(FOLDERS_PAGE, ["f_1"], arguments))  # another list's token
    for page_token in tokens:
        refused = await fails(
            suite.tree.ListConnections(
                tree_rpc.ListConnectionsRequest(
                    integration_id=created.id, page_size=1, page_token=page_token
                ),
                metadata=OWNER,
            )
        )
        assert (refused.code, refused.fields) == (INVALID, ["page_token"])
    first = await suite.tree.ListConnections(
        tree_rpc.ListConnectionsRequest(integration_id=created.id, page_size=2), metadata=OWNER
    )
    rest = await suite.tree.ListConnections(
        tree_rpc.ListConnectionsRequest(
            integration_id=created.id, page_size=2, page_token=first.next_page_token
        ),
        metadata=OWNER,
    )
    assert (len(first.connections), len(rest.connections)) == (2, 1)
    assert not rest.next_page_token


async def test_a_system_caller_lists_every_scopes_integrations_without_a_scope(
    suite: Suite,
) -> None:
    made = [
        (await create(suite, new_integration("aws-t"))).id,
        (await create(suite, new_integration("aws-o", org_id="o_ops"))).id,
        (await create(suite, new_integration("aws-x", tenant_id="t_other"), metadata=OUTSIDER)).id,
        (await create(suite, new_integration("aws-e", org_id="o_ent"), metadata=SYSTEM)).id,
    ]
    seen: list[str] = []
    page_token = ""
    while True:
        reply = await suite.integrations.ListIntegrations(
            rpc.ListIntegrationsRequest(page_size=3, page_token=page_token), metadata=SYSTEM
        )
        seen.extend(i.id for i in reply.integrations)
        page_token = reply.next_page_token
        if not page_token:
            break
    assert seen == sorted(made)

    for metadata in (OWNER, OUTSIDER):  # everyone else still names a scope
        refused = await fails(
            suite.integrations.ListIntegrations(rpc.ListIntegrationsRequest(), metadata=metadata)
        )
        assert refused.code == INVALID
        assert refused.fields == ["scope"]
    with_orgs = await fails(
        suite.integrations.ListIntegrations(
            rpc.ListIntegrationsRequest(include_org_integrations=True), metadata=SYSTEM
        )
    )
    assert with_orgs.fields == ["include_org_integrations"]


async def test_list_integrations_includes_org_level_ones_only_when_asked(suite: Suite) -> None:
    tenant_level = await create(suite, new_integration("aws"))
    org_level = await create(suite, new_integration("ops-aws", org_id="o_ops"))

    assert await list_ids(suite, tenant()) == [tenant_level.id]
    assert await list_ids(suite, tenant(), include_org_integrations=True) == [
        tenant_level.id,
        org_level.id,
    ]
    assert await list_ids(suite, org("o_ops")) == [org_level.id]


# -- update ------------------------------------------------------------------------------------


async def test_update_handle_renames_the_integration_and_its_root_folder(suite: Suite) -> None:
    created = await create(suite, new_integration("aws"))
    renamed = await update(suite, pb.Integration(id=created.id, handle="aws-main"), "handle")
    assert renamed.handle == "aws-main"
    assert renamed.etag != created.etag
    assert (await get(suite, created.id)).handle == "aws-main"

    folder = (
        await suite.tree.GetFolder(
            tree_rpc.GetFolderRequest(id=created.root_folder_id), metadata=OWNER
        )
    ).folder
    assert folder.title == "aws-main"
    assert folder.handle == "aws-main"

    # The old handle is free again.
    again = await create(suite, new_integration("aws"))
    assert again.handle == "aws"


@dataclass(frozen=True)
class FieldChange:
    """One masked update, and how the returned integration must differ from before."""

    path: str
    given: pb.Integration
    expect: Callable[[pb.Integration], None]


def _set_prefix(i: pb.Integration) -> None:
    i.handle_prefix = "acme_"


def _set_regions(i: pb.Integration) -> None:
    i.connection_config.regions.values[:] = ["eu-west-1", "us-*"]


def _set_interval(i: pb.Integration) -> None:
    i.sync_interval.seconds = 2 * 3600


def _set_fraction(i: pb.Integration) -> None:
    i.max_delete_fraction = 0.25


def _set_concurrency(i: pb.Integration) -> None:
    i.crawl_limits.max_concurrency = 7


EVENT_QUEUE = "https://sqs.us-east-1.amazonaws.com/111111111111/canopy-org-events"


def _set_event_queue(i: pb.Integration) -> None:
    # The interval set above stays: only an unset one follows the queue.
    i.discovery_access.event_queue = EVENT_QUEUE
    i.event_queue_status.state = pb.EVENT_QUEUE_STATE_PENDING


FIELD_CHANGES = [
    FieldChange("handle_prefix", pb.Integration(handle_prefix="acme_"), _set_prefix),
    FieldChange(
        "connection_config.regions",
        pb.Integration(
            connection_config=pb.ConnectionConfig(
                regions=types_pb2.StringList(values=["eu-west-1", "us-*"]),
                # Not in the mask: must not be applied.
                max_error_retry_attempts=2,
            )
        ),
        _set_regions,
    ),
    FieldChange(
        "sync_interval", pb.Integration(sync_interval=Duration(seconds=7200)), _set_interval
    ),
    FieldChange("max_delete_fraction", pb.Integration(max_delete_fraction=0.25), _set_fraction),
    FieldChange(
        "crawl_limits.max_concurrency",
        pb.Integration(
            crawl_limits=pb.CrawlLimits(
                max_concurrency=7,
                # Not in the mask: must not be applied.
                max_requests_per_second=3.0,
            )
        ),
        _set_concurrency,
    ),
    FieldChange(
        "discovery_access.event_queue",
        pb.Integration(
            discovery_access=pb.AwsDiscoveryAccess(
                event_queue="arn:aws:sqs:us-east-1:111111111111:canopy-org-events",
                # Not in the mask: must not be applied.
                external_id="t_acme:zzzz9999",
            )
        ),
        _set_event_queue,
    ),
]


async def test_update_changes_just_the_masked_field(suite: Suite) -> None:
    created = await create(suite, new_integration("aws"))
    current = created
    for change in FIELD_CHANGES:
        given = pb.Integration()
        given.CopyFrom(change.given)
        given.id = created.id
        # Fields outside the mask are ignored, even when they differ.
        given.handle = "ignored-handle"
        updated = await update(suite, given, change.path)
        expected = without_volatile(current)
        change.expect(expected)
        assert without_volatile(updated) == expected, change.path
        assert updated.etag != current.etag, change.path
        assert await get(suite, created.id) == updated, change.path
        current = updated


async def test_update_refuses_unknown_output_only_and_empty_masks(suite: Suite) -> None:
    created = await create(suite, new_integration("aws"))
    message = pb.Integration(id=created.id, handle="renamed")

    unknown = await fails(update(suite, message, "nonsense"))
    assert unknown.code == INVALID
    assert unknown.fields == ["update_mask.paths[0]"]

    second_unknown = await fails(update(suite, message, "handle", "connection_config.nope"))
    assert second_unknown.code == INVALID
    assert second_unknown.fields == ["update_mask.paths[1]"]

    for path in ("state", "id", "tree_generation", "root_folder_id", "etag"):
        output_only = await fails(update(suite, message, path))
        assert output_only.code == INVALID, path
        assert output_only.fields == ["update_mask.paths[0]"], path

    empty = await fails(update(suite, message))
    assert empty.code == INVALID

    assert await get(suite, created.id) == created


async def test_update_with_a_stale_etag_is_aborted_and_changes_nothing(suite: Suite) -> None:
    created = await create(suite, new_integration("aws"))
    current = await update(suite, pb.Integration(id=created.id, handle="aws-2"), "handle")
    stale = await fails(
        update(suite, pb.Integration(id=created.id, handle="aws-3", etag=created.etag), "handle")
    )
    assert stale.code == grpc.StatusCode.ABORTED
    assert stale.reason == "ETAG_MISMATCH"
    assert await get(suite, created.id) == current

    fresh = await update(
        suite, pb.Integration(id=created.id, handle="aws-3", etag=current.etag), "handle"
    )
    assert fresh.handle == "aws-3"


async def test_update_to_a_handle_taken_in_the_tenant_already_exists(suite: Suite) -> None:
    await create(suite, new_integration("ops-aws", org_id="o_ops"))
    created = await create(suite, new_integration("aws"))
    taken = await fails(update(suite, pb.Integration(id=created.id, handle="ops-aws"), "handle"))
    assert taken.code == grpc.StatusCode.ALREADY_EXISTS
    assert taken.reason == "HANDLE_TAKEN"
    assert await get(suite, created.id) == created


async def test_update_refuses_a_bad_value_naming_the_field(suite: Suite) -> None:
    created = await create(suite, new_integration("aws"))
    bad_handle = await fails(update(suite, pb.Integration(id=created.id, handle="AWS"), "handle"))
    assert bad_handle.code == INVALID
    assert bad_handle.fields == ["integration.handle"]
    bad_regions = await fails(
        update(
            suite,
            pb.Integration(
                id=created.id,
                connection_config=pb.ConnectionConfig(regions=types_pb2.StringList()),
            ),
            "connection_config.regions",
        )
    )
    assert bad_regions.code == INVALID
    assert bad_regions.fields == ["integration.connection_config.regions"]
    assert await get(suite, created.id) == created


async def test_update_refuses_a_duration_past_protobufs_range_only_where_the_mask_names_it(
    suite: Suite,
) -> None:
    created = await create(suite, new_integration("aws"))
    endless = pb.Integration(
        id=created.id,
        sync_interval=Duration(seconds=2**63 - 1),
        crawl_limits=pb.CrawlLimits(max_concurrency=3, crawl_timeout=Duration(seconds=-(2**63))),
    )
    refused = await fails(update(suite, endless, "sync_interval"))
    assert (refused.code, refused.fields) == (INVALID, ["integration.sync_interval"])
    refused = await fails(update(suite, endless, "crawl_limits"))
    assert (refused.code, refused.fields) == (INVALID, ["integration.crawl_limits.crawl_timeout"])
    # Left out of the mask, the same values are not read.
    updated = await update(suite, endless, "crawl_limits.max_concurrency")
    assert updated.crawl_limits.max_concurrency == 3
    assert updated.sync_interval == created.sync_interval


# -- delete ------------------------------------------------------------------------------------


async def test_delete_with_a_wrong_confirmation_is_refused_and_keeps_the_integration(
    suite: Suite,
) -> None:
    created = await create(suite, new_integration("aws"))
    for confirmation in ("", "aws-prod", "AWS"):
        refused = await fails(
            suite.integrations.DeleteIntegration(
                rpc.DeleteIntegrationRequest(id=created.id, confirm_handle=confirmation),
                metadata=OWNER,
            )
        )
        assert refused.code == grpc.StatusCode.FAILED_PRECONDITION, confirmation
        assert refused.reason == "CONFIRMATION_MISMATCH", confirmation
    assert await get(suite, created.id) == created


async def test_delete_with_a_stale_etag_is_aborted(suite: Suite) -> None:
    created = await create(suite, new_integration("aws"))
    current = await update(
        suite, pb.Integration(id=created.id, handle_prefix="x_"), "handle_prefix"
    )
    stale = await fails(
        suite.integrations.DeleteIntegration(
            rpc.DeleteIntegrationRequest(id=created.id, confirm_handle="aws", etag=created.etag),
            metadata=OWNER,
        )
    )
    assert stale.code == grpc.StatusCode.ABORTED
    assert await get(suite, created.id) == current


async def test_delete_removes_the_integration_and_its_root_folder(suite: Suite) -> None:
    created = await create(suite, new_integration("aws"))
    await suite.integrations.DeleteIntegration(
        rpc.DeleteIntegrationRequest(id=created.id, confirm_handle="aws", etag=created.etag),
        metadata=OWNER,
    )
    assert await list_ids(suite, tenant()) == []

    gone = await fails(get(suite, created.id))
    assert gone.code == grpc.StatusCode.NOT_FOUND
    folder_gone = await fails(
        suite.tree.GetFolder(tree_rpc.GetFolderRequest(id=created.root_folder_id), metadata=OWNER)
    )
    assert folder_gone.code == grpc.StatusCode.NOT_FOUND

    # The handle is free again.
    assert (await create(suite, new_integration("aws"))).handle == "aws"


async def test_deleted_ids_are_forgotten_after_the_tombstone_retention(suite: Suite) -> None:
    created = await create(suite, new_integration("aws"))
    await suite.integrations.DeleteIntegration(
        rpc.DeleteIntegrationRequest(id=created.id, confirm_handle="aws", etag=created.etag),
        metadata=OWNER,
    )
    runtime = suite.integration_service.runtime
    assert "tombstone-purge" in [task.get_name() for task in runtime.tasks]
    # The integration was deleted 91 days ago, its root folder just now.
    async with runtime.db.transaction() as conn:
        await conn.execute(
            "UPDATE tombstones SET deleted_at = now() - interval '91 days' WHERE id = $1",
            created.id,
        )
    assert (await fails(get(suite, created.id))).code == grpc.StatusCode.NOT_FOUND

    purge = asyncio.create_task(
        purge_tombstones(runtime.db, timedelta(days=90), timedelta(hours=1))
    )
    try:
        async with asyncio.timeout(10):
            while True:
                async with runtime.db.connection() as conn:
                    if not await conn.fetchval(
                        "SELECT count(*) FROM tombstones WHERE id = $1", created.id
                    ):
                        break
                await asyncio.sleep(0.02)
    finally:
        purge.cancel()
    # Forgotten: even the owner now learns only that it may not read such an id.
    assert (await fails(get(suite, created.id))).code == DENIED
    folder_gone = await fails(
        suite.tree.GetFolder(tree_rpc.GetFolderRequest(id=created.root_folder_id), metadata=OWNER)
    )
    assert folder_gone.code == grpc.StatusCode.NOT_FOUND  # within the retention still


# -- bad input ---------------------------------------------------------------------------------


Edit = Callable[[pb.Integration], None]


def setting(path: str, value: Any) -> Edit:
    """An edit setting a (dotted) field of the integration; messages are copied in."""

    def edit(message: pb.Integration) -> None:
        *parents, name = path.split(".")
        target: Any = message
        for parent in parents:
            target = getattr(target, parent)
        if isinstance(value, Message):
            field = getattr(target, name)
            field.SetInParent()
            field.CopyFrom(value)
        else:
            setattr(target, name, value)

    return edit


def clearing(name: str) -> Edit:
    def edit(message: pb.Integration) -> None:
        message.ClearField(name)  # type: ignore[arg-type]

    return edit


def strings(*values: str) -> types_pb2.StringList:
    return types_pb2.StringList(values=list(values))


@dataclass(frozen=True)
class BadInput:
    """A create request that differs from a valid one in one field, and that field's path."""

    id: str
    field: str
    edit: Edit | None = None
    org_id: str | None = None
    permissions: pb.RootFolderPermissions | None = None

    def request(self, handle: str = "aws-bad") -> rpc.CreateIntegrationRequest:
        message = new_integration(handle, org_id=self.org_id)
        if self.edit is not None:
            self.edit(message)
        request = rpc.CreateIntegrationRequest(integration=message)
        if self.permissions is not None:
            request.initial_permissions.CopyFrom(self.permissions)
        return request


IN = "integration."
ROLE = "arn:aws:iam::111111111111:role/"
CONFIG = f"{IN}connection_config."
ALL_ORGS = pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_ORGS
ALL_WORKSPACES = pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
NONE = pb.ROOT_FOLDER_PERMISSIONS_MODE_NONE
SPECIFIC = pb.ROOT_FOLDER_PERMISSIONS_MODE_SPECIFIC

BAD_INPUTS = [
    BadInput("handle-empty", f"{IN}handle", setting("handle", "")),
    BadInput("handle-upper-case", f"{IN}handle", setting("handle", "Aws")),
    BadInput("handle-40-chars", f"{IN}handle", setting("handle", "a" * 40)),
    BadInput("handle-leading-digit", f"{IN}handle", setting("handle", "1aws")),
    BadInput("handle-double-dash", f"{IN}handle", setting("handle", "a--b")),
    BadInput("handle-trailing-dash", f"{IN}handle", setting("handle", "aws-")),
    BadInput("handle-trailing-newline", f"{IN}handle", setting("handle", "aws\n")),
    BadInput("prefix-trailing-newline", f"{IN}handle_prefix", setting("handle_prefix", "aws_\n")),
    BadInput("scope-none", f"{IN}scope", clearing("scope")),
    BadInput(
        "role-arn-empty", f"{IN}discovery_access.role_arn", setting("discovery_access.role_arn", "")
    ),
    BadInput(
        "role-arn-wrong-partition",
        f"{IN}discovery_access.role_arn",
        setting("discovery_access.role_arn", "arn:aws-xx:iam::111111111111:role/canopy"),
    ),
    BadInput(
        "role-arn-11-digit-account",
        f"{IN}discovery_access.role_arn",
        setting("discovery_access.role_arn", "arn:aws:iam::11111111111:role/canopy"),
    ),
    BadInput(
        "role-arn-user-not-role",
        f"{IN}discovery_access.role_arn",
        setting("discovery_access.role_arn", "arn:aws:iam::111111111111:user/canopy"),
    ),
    BadInput(
        "role-arn-oversized",
        f"{IN}discovery_access.role_arn",
        setting("discovery_access.role_arn", ROLE + "p/" * 2500 + "canopy"),
    ),
    BadInput(
        "member-role-empty", f"{IN}member_access.role_name", setting("member_access.role_name", "")
    ),
    BadInput(
        "member-role-65-chars",
        f"{IN}member_access.role_name",
        setting("member_access.role_name", "r" * 65),
    ),
    BadInput(
        "member-role-space",
        f"{IN}member_access.role_name",
        setting("member_access.role_name", "canopy member"),
    ),
    BadInput(
        "external-id-empty",
        f"{IN}discovery_access.external_id",
        setting("discovery_access.external_id", ""),
    ),
    BadInput(
        "external-id-missing-suffix",
        f"{IN}discovery_access.external_id",
        setting("discovery_access.external_id", "t_acme:"),
    ),
    BadInput(
        "external-id-no-separator",
        f"{IN}discovery_access.external_id",
        setting("discovery_access.external_id", "t_acme"),
    ),
    BadInput(
        "external-id-7-char-suffix",
        f"{IN}discovery_access.external_id",
        setting("discovery_access.external_id", "t_acme:abcd123"),
    ),
    BadInput(
        "external-id-upper-case",
        f"{IN}discovery_access.external_id",
        setting("discovery_access.external_id", "t_acme:ABCD1234"),
    ),
    BadInput(
        "member-external-id-malformed",
        f"{IN}member_access.external_id",
        setting("member_access.external_id", "t_acme:abc"),
    ),
    BadInput("prefix-upper-case", f"{IN}handle_prefix", setting("handle_prefix", "Aws")),
    BadInput("prefix-reserved-pg", f"{IN}handle_prefix", setting("handle_prefix", "pg_")),
    BadInput(
        "prefix-reserved-steampipe", f"{IN}handle_prefix", setting("handle_prefix", "steampipe_")
    ),
    BadInput("prefix-21-chars", f"{IN}handle_prefix", setting("handle_prefix", "a" * 21)),
    BadInput("prefix-double-underscore", f"{IN}handle_prefix", setting("handle_prefix", "a__b")),
    BadInput("prefix-oversized", f"{IN}handle_prefix", setting("handle_prefix", "a" * 5000)),
    BadInput(
        "regions-set-but-empty", f"{CONFIG}regions", setting("connection_config.regions", strings())
    ),
    BadInput(
        "regions-bad-region",
        f"{CONFIG}regions[0]",
        setting("connection_config.regions", strings("US-EAST-1")),
    ),
    BadInput(
        "regions-second-bad",
        f"{CONFIG}regions[1]",
        setting("connection_config.regions", strings("us-east-1", "us east")),
    ),
    BadInput(
        "regions-not-a-region-of-the-partition",
        f"{CONFIG}regions[2]",
        setting("connection_config.regions", strings("us-east-1", "us-*", "zz-foo")),
    ),
    BadInput(
        "regions-too-short-to-be-a-region",
        f"{CONFIG}regions[0]",
        setting("connection_config.regions", strings("us")),
    ),
    BadInput(
        "regions-unknown-number",
        f"{CONFIG}regions[1]",
        setting("connection_config.regions", strings("*", "eu-west-10")),
    ),
    BadInput(
        "regions-pattern-matching-nothing",
        f"{CONFIG}regions[0]",
        setting("connection_config.regions", strings("xx-*")),
    ),
    BadInput(
        "default-region-not-of-the-partition",
        f"{CONFIG}default_region",
        setting("connection_config.default_region", "eu-west-10"),
    ),
    BadInput(
        "default-region-not-a-region",
        f"{CONFIG}default_region",
        setting("connection_config.default_region", "east"),
    ),
    BadInput(
        "retry-attempts-zero",
        f"{CONFIG}max_error_retry_attempts",
        setting("connection_config.max_error_retry_attempts", 0),
    ),
    BadInput(
        "retry-delay-zero",
        f"{CONFIG}min_error_retry_delay_ms",
        setting("connection_config.min_error_retry_delay_ms", 0),
    ),
    BadInput(
        "ignore-error-messages-bad-regex",
        f"{CONFIG}ignore_error_messages[0]",
        setting("connection_config.ignore_error_messages", strings("(")),
    ),
    BadInput(
        "endpoint-url-ftp",
        f"{CONFIG}endpoint_url",
        setting("connection_config.endpoint_url", "ftp://x"),
    ),
    BadInput(
        "sync-interval-10s", f"{IN}sync_interval", setting("sync_interval", Duration(seconds=10))
    ),
    BadInput(
        "sync-interval-25h",
        f"{IN}sync_interval",
        setting("sync_interval", Duration(seconds=25 * 3600)),
    ),
    # Past protobuf's Duration range, where converting it overflowed (was INTERNAL).
    BadInput(
        "sync-interval-int64-max",
        f"{IN}sync_interval",
        setting("sync_interval", Duration(seconds=2**63 - 1)),
    ),
    BadInput(
        "crawl-timeout-int64-min",
        f"{IN}crawl_limits.crawl_timeout",
        setting("crawl_limits.crawl_timeout", Duration(seconds=-(2**63))),
    ),
    BadInput(
        "max-delete-fraction-1.5", f"{IN}max_delete_fraction", setting("max_delete_fraction", 1.5)
    ),
    BadInput(
        "max-delete-fraction-negative",
        f"{IN}max_delete_fraction",
        setting("max_delete_fraction", -0.1),
    ),
    BadInput(
        "crawl-concurrency-zero",
        f"{IN}crawl_limits.max_concurrency",
        setting("crawl_limits.max_concurrency", 0),
    ),
    BadInput(
        "crawl-concurrency-above-64",
        f"{IN}crawl_limits.max_concurrency",
        setting("crawl_limits.max_concurrency", 65),
    ),
    BadInput(
        "crawl-rate-zero",
        f"{IN}crawl_limits.max_requests_per_second",
        setting("crawl_limits.max_requests_per_second", 0.0),
    ),
    BadInput(
        "crawl-timeout-above-1h",
        f"{IN}crawl_limits.crawl_timeout",
        setting("crawl_limits.crawl_timeout", Duration(seconds=2 * 3600)),
    ),
    BadInput(
        "permissions-all-orgs-at-org-scope",
        "initial_permissions.mode",
        org_id="o_ops",
        permissions=pb.RootFolderPermissions(mode=ALL_ORGS),
    ),
    BadInput(
        "permissions-all-workspaces-at-tenant-scope",
        "initial_permissions.mode",
        permissions=pb.RootFolderPermissions(mode=ALL_WORKSPACES),
    ),
    BadInput(
        "permissions-mode-unspecified",
        "initial_permissions.mode",
        permissions=pb.RootFolderPermissions(),
    ),
    BadInput(
        "permissions-mode-unspecified-with-grantees",
        "initial_permissions.mode",
        org_id="o_ops",
        permissions=pb.RootFolderPermissions(grantees=[types_pb2.Grantee(workspace_id="w_ops1")]),
    ),
    BadInput(
        "permissions-mode-unknown",
        "initial_permissions.mode",
        permissions=pb.RootFolderPermissions(mode=99),  # type: ignore[arg-type]
    ),
    BadInput(
        "permissions-specific-without-grantees",
        "initial_permissions.grantees",
        permissions=pb.RootFolderPermissions(mode=SPECIFIC),
    ),
    BadInput(
        "permissions-workspace-outside-scope",
        "initial_permissions.grantees[0]",
        permissions=pb.RootFolderPermissions(
            mode=SPECIFIC, grantees=[types_pb2.Grantee(workspace_id="w_other")]
        ),
    ),
    BadInput(
        "permissions-org-of-another-tenant",
        "initial_permissions.grantees[0]",
        permissions=pb.RootFolderPermissions(
            mode=SPECIFIC, grantees=[types_pb2.Grantee(org_id="o_elsewhere")]
        ),
    ),
    BadInput(
        "permissions-workspace-id-malformed",
        "initial_permissions.grantees[0].workspace_id",
        permissions=pb.RootFolderPermissions(
            mode=SPECIFIC, grantees=[types_pb2.Grantee(workspace_id="W BAD")]
        ),
    ),
    BadInput(
        "permissions-org-id-malformed",
        "initial_permissions.grantees[0].org_id",
        permissions=pb.RootFolderPermissions(
            mode=SPECIFIC, grantees=[types_pb2.Grantee(org_id="o-ops")]
        ),
    ),
    BadInput(
        "permissions-tenant-id-malformed",
        "initial_permissions.grantees[0].tenant_id",
        permissions=pb.RootFolderPermissions(
            mode=SPECIFIC, grantees=[types_pb2.Grantee(tenant_id="t_ACME")]
        ),
    ),
    BadInput(
        "permissions-second-workspace-id-malformed",
        "initial_permissions.grantees[1].workspace_id",
        org_id="o_ops",
        permissions=pb.RootFolderPermissions(
            mode=SPECIFIC,
            grantees=[
                types_pb2.Grantee(workspace_id="w_ops1"),
                types_pb2.Grantee(workspace_id="w"),
            ],
        ),
    ),
    BadInput(
        "permissions-other-org-at-org-scope",
        "initial_permissions.grantees[0]",
        org_id="o_ops",
        permissions=pb.RootFolderPermissions(
            mode=SPECIFIC, grantees=[types_pb2.Grantee(org_id="o_free")]
        ),
    ),
]


async def test_create_refuses_each_bad_input_naming_its_field(suite: Suite) -> None:
    # One service for the whole table (a service per case would be slow); every case is tried
    # and every mismatch reported.
    problems: list[str] = []
    for index, case in enumerate(BAD_INPUTS):
        request = case.request(handle=f"bad{index}")
        try:
            await suite.integrations.CreateIntegration(request, metadata=OWNER)
        except grpc.aio.AioRpcError as error:
            refused = error_details(error)
            seen = (refused.code, refused.domain, sorted(set(refused.fields)))
            if seen != (INVALID, "canopy.dev", [case.field]):
                problems.append(f"{case.id}: expected INVALID_ARGUMENT {case.field}, got {seen}")
        else:
            problems.append(f"{case.id}: expected INVALID_ARGUMENT {case.field}, got created")
    assert not problems, "\n".join(problems)
    assert await list_ids(suite, tenant(), include_org_integrations=True) == []


async def test_the_bad_input_baseline_is_valid(suite: Suite) -> None:
    # Guards the table above: each case differs from this request in one field only.
    baseline = BadInput("baseline", "")
    reply = await suite.integrations.CreateIntegration(baseline.request(), metadata=OWNER)
    assert reply.integration.handle == "aws-bad"
    at_org = BadInput(
        "baseline-org",
        "",
        org_id="o_ops",
        permissions=pb.RootFolderPermissions(
            mode=SPECIFIC, grantees=[types_pb2.Grantee(workspace_id="w_ops1")]
        ),
    )
    request = at_org.request()
    request.integration.handle = "aws-bad-org"
    reply = await suite.integrations.CreateIntegration(request, metadata=OWNER)
    assert reply.integration.scope == org("o_ops")


async def created_event(suite: Suite, integration_id: str) -> tree_pb.IntegrationCreated:
    stream = suite.tree.WatchTreeEvents(
        tree_rpc.WatchTreeEventsRequest(integration_id=integration_id), metadata=OWNER
    )
    try:
        reply = await anext(aiter(stream))
    finally:
        stream.cancel()
    return reply.events[0].integration_created


async def test_initial_permissions_say_which_grants_the_root_folder_gets(suite: Suite) -> None:
    # Left out: no grants, written down as NONE.
    unset = await create(suite, new_integration("aws-unset"))
    assert (await created_event(suite, unset.id)).initial_permissions.mode == NONE
    # Each scope's own "everything" mode, and NONE, as given.
    cases = [
        (new_integration("aws-tenant-all"), ALL_ORGS),
        (new_integration("aws-org-all", org_id="o_ops"), ALL_WORKSPACES),
        (new_integration("aws-none"), NONE),
    ]
    for message, mode in cases:
        created = await create(
            suite, message, initial_permissions=pb.RootFolderPermissions(mode=mode)
        )
        event = await created_event(suite, created.id)
        assert (message.handle, event.initial_permissions.mode) == (message.handle, mode)


async def test_a_malformed_integration_id_names_the_id_field(suite: Suite) -> None:
    on_get = await fails(get(suite, "x"))
    assert on_get.code == INVALID
    assert on_get.fields == ["id"]

    on_delete = await fails(
        suite.integrations.DeleteIntegration(
            rpc.DeleteIntegrationRequest(id="x", confirm_handle="x"), metadata=OWNER
        )
    )
    assert on_delete.code == INVALID
    assert on_delete.fields == ["id"]

    on_update = await fails(update(suite, pb.Integration(id="x", handle="aws"), "handle"))
    assert on_update.code == INVALID
    assert on_update.fields == ["integration.id"]
