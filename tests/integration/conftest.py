"""The integration service in-process on port 0, beside the permissions service it asks about
tenants, orgs and workspaces; a seeded directory; stubs and snapshot builders."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_pb2 as dpb
from canopy.permissions.v1 import directory_service_pb2 as drpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dgrpc
from canopy.type.v1 import types_pb2
from canopy_core.server import RunningService, serve
from canopy_integration.server import spec as integration_spec
from canopy_integration.settings import IntegrationSettings
from canopy_permissions.server import spec as permissions_spec
from canopy_permissions.settings import PermissionsSettings
from tests.helpers import bearer, token

if TYPE_CHECKING:
    from canopy.integration.v1.connection_tree_service_pb2_grpc import (
        ConnectionTreeServiceAsyncStub,
    )
    from canopy.integration.v1.integration_service_pb2_grpc import IntegrationServiceAsyncStub

SYSTEM = bearer(token("platform", system=True))
OWNER = bearer(token("olivia", t_acme="owner"))
ORG_OWNER = bearer(token("oscar", o_ops="owner"))
MEMBER = bearer(token("mia", t_acme="member"))
OUTSIDER = bearer(token("eve", t_other="owner"))
ROLE_ARN = "arn:aws:iam::111111111111:role/canopy-discovery"
# The platform account role templates trust, configured explicitly (there is no default).
TRUSTED_ACCOUNT_ID = "123456789012"


@dataclass
class Suite:
    """Running services and stubs."""

    integrations: IntegrationServiceAsyncStub
    tree: ConnectionTreeServiceAsyncStub
    directory: Any
    integration_service: RunningService
    channels: list[grpc.aio.Channel] = field(default_factory=list)


async def seed_directory(directory: Any) -> None:
    """t_acme (ENTERPRISE) with o_ops (TEAM), o_free (FREE) and workspaces; t_team (TEAM)."""
    tenants = [
        ("t_acme", "acme", types_pb2.PLAN_ENTERPRISE),
        ("t_team", "teamco", types_pb2.PLAN_TEAM),
        ("t_other", "other", types_pb2.PLAN_ENTERPRISE),
    ]
    for tid, handle, plan in tenants:
        await directory.UpsertTenant(
            drpc.UpsertTenantRequest(tenant=dpb.Tenant(id=tid, handle=handle, plan=plan)),
            metadata=SYSTEM,
        )
    orgs = [
        ("o_ops", "t_acme", "ops", types_pb2.PLAN_TEAM),
        ("o_free", "t_acme", "free", types_pb2.PLAN_FREE),
        ("o_ent", "t_team", "ent", types_pb2.PLAN_ENTERPRISE),
        ("o_elsewhere", "t_other", "else", types_pb2.PLAN_TEAM),
    ]
    for oid, tid, handle, plan in orgs:
        await directory.UpsertOrg(
            drpc.UpsertOrgRequest(org=dpb.Org(id=oid, tenant_id=tid, handle=handle, plan=plan)),
            metadata=SYSTEM,
        )
    for wid, oid in (("w_ops1", "o_ops"), ("w_ops2", "o_ops"), ("w_other", "o_elsewhere")):
        await directory.UpsertWorkspace(
            drpc.UpsertWorkspaceRequest(
                workspace=dpb.Workspace(id=wid, org_id=oid, handle=wid[2:])
            ),
            metadata=SYSTEM,
        )


@pytest.fixture
def integration_settings() -> dict[str, Any]:
    """Settings of the suite's integration service on top of the test defaults (a test module
    overrides this fixture to run it configured otherwise)."""
    return {"trusted_account_id": TRUSTED_ACCOUNT_ID}


@pytest.fixture
async def suite(
    service_env: dict[str, Any], integration_settings: dict[str, Any]
) -> AsyncIterator[Suite]:
    permissions = await serve(
        permissions_spec(), PermissionsSettings(**{**service_env, "db_schema": "permissions"})
    )
    integration = await serve(
        integration_spec(),
        IntegrationSettings(
            **{
                **service_env,
                "db_schema": "integration",
                "permissions_address": f"127.0.0.1:{permissions.port}",
                **integration_settings,
            }
        ),
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{integration.port}")
    directory_channel = grpc.aio.insecure_channel(f"127.0.0.1:{permissions.port}")
    directory = dgrpc.DirectoryServiceStub(directory_channel)
    await seed_directory(directory)
    yield Suite(
        integrations=rpc_grpc.IntegrationServiceStub(channel),
        tree=tree_grpc.ConnectionTreeServiceStub(channel),
        directory=directory,
        integration_service=integration,
        channels=[channel, directory_channel],
    )
    for ch in (channel, directory_channel):
        await ch.close()
    await integration.stop()
    await permissions.stop()


def new_integration(
    handle: str = "aws-prod",
    *,
    tenant_id: str | None = "t_acme",
    org_id: str | None = None,
    prefix: str = "",
    **extra: Any,
) -> pb.Integration:
    owner = org_id or tenant_id or ""
    scope = types_pb2.Scope(org_id=org_id) if org_id else types_pb2.Scope(tenant_id=tenant_id or "")
    return pb.Integration(
        handle=handle,
        scope=scope,
        discovery_access=pb.AwsDiscoveryAccess(role_arn=ROLE_ARN, external_id=f"{owner}:abcd1234"),
        member_access=pb.AwsMemberAccess(role_name="canopy-member"),
        handle_prefix=prefix,
        **extra,
    )


async def create(
    suite: Suite, message: pb.Integration | None = None, metadata: Any = OWNER, **kw: Any
) -> pb.Integration:
    reply = await suite.integrations.CreateIntegration(
        rpc.CreateIntegrationRequest(integration=message or new_integration(), **kw),
        metadata=metadata,
    )
    return reply.integration


async def set_inherited_regions(suite: Suite, integration_id: str, regions: list[str]) -> None:
    """UpdateIntegration of the regions every connection without its own inherits."""
    await suite.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(
                id=integration_id,
                connection_config=pb.ConnectionConfig(regions=types_pb2.StringList(values=regions)),
            ),
            update_mask=FieldMask(paths=["connection_config.regions"]),
        ),
        metadata=OWNER,
    )


ROOT = "r-ab12"
ORG = "o-abcdefghij"


def ou(n: int) -> str:
    return f"ou-ab12-{n:08d}"


def account(n: int) -> str:
    return f"{n:012d}"


def snapshot(
    units: list[tuple[str, str, str]],
    accounts: list[tuple[str, str, str] | tuple[str, str, str, str]],
    *,
    organization_id: str = ORG,
    root_id: str = ROOT,
) -> tree_pb.OrganizationSnapshot:
    """units: (id, parent, name); accounts: (id, parent, name[, state])."""
    return tree_pb.OrganizationSnapshot(
        organization_id=organization_id,
        management_account_id="999999999999",
        root_id=root_id,
        organizational_units=[
            tree_pb.OrganizationalUnit(id=i, parent_id=p, name=n) for i, p, n in units
        ],
        accounts=[
            tree_pb.Account(
                id=a[0],
                parent_id=a[1],
                name=a[2],
                email=f"{a[0]}@example.com",
                state=a[3] if len(a) > 3 else "ACTIVE",
            )
            for a in accounts
        ],
    )
