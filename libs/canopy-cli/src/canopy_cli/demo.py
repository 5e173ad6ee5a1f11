"""The demo organization `make run` serves: a simulated AWS Organization in moto, a demo tenant,
org and workspaces, and an integration created, synced, shared and attached through the API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.discovery.v1 import discovery_service_pb2_grpc as dgrpc
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_pb2 as dirpb
from canopy.permissions.v1 import directory_service_pb2 as dirrpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dirgrpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2

TENANT = "t_demo"
ORG = "o_demo"
WORKSPACES = ("w_analytics", "w_security", "w_finops")
EXTERNAL_ID = f"{ORG}:demo1234"
# moto's account: the simulated organization's management account, and the platform's own.
SIMULATED_ACCOUNT_ID = "123456789012"
TERMINAL = {
    dpb.SYNC_RUN_STATE_SUCCEEDED,
    dpb.SYNC_RUN_STATE_FAILED,
    dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION,
    dpb.SYNC_RUN_STATE_CANCELLED,
}

# OUs three levels deep; account names that need slugging, that collide, that are reserved.
UNITS = {
    "Production": None,
    "Web": "Production",
    "Frontend": "Web",
    "Data Platform": "Production",
    "Development": None,
    "Sandbox": "Development",
    "Security": None,
    "Shared Services": None,
}
ACCOUNTS = [
    ("Prod — Web", "Frontend"),
    ("prod web", "Frontend"),
    ("Checkout (EU)", "Frontend"),
    ("Checkout (US)", "Frontend"),
    ("API Gateway", "Web"),
    ("Search", "Web"),
    ("Data Lake", "Data Platform"),
    ("Data Lake", "Data Platform"),
    ("ETL & Pipelines", "Data Platform"),
    ("Warehouse", "Data Platform"),
    ("Équipe Analytique", "Data Platform"),
    ("Dev — Alice", "Sandbox"),
    ("Dev — Bob", "Sandbox"),
    ("Dev — Chen", "Sandbox"),
    ("123 Legacy", "Development"),
    ("Staging", "Development"),
    ("QA", "Development"),
    ("Security Tooling", "Security"),
    ("Log Archive", "Security"),
    ("Audit", "Security"),
    ("Public", "Shared Services"),
    ("pg_admin", "Shared Services"),
    ("Networking", "Shared Services"),
    ("DNS", "Shared Services"),
    ("Identity", "Shared Services"),
    ("CI/CD", "Shared Services"),
    ("Backups", "Shared Services"),
    ("Observability", "Shared Services"),
    ("Old Marketing", "Development"),  # suspended below
]
SUSPENDED = "Old Marketing"


@dataclass(frozen=True)
class DemoOrganization:
    """What was built in moto."""

    organization_id: str
    management_account_id: str
    discovery_role_arn: str


def build_organization(endpoint_url: str) -> DemoOrganization:
    """Create the simulated organization in moto (blocking: boto3)."""
    import boto3  # type: ignore[import-untyped]

    client: Any = boto3.client(
        "organizations",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    organization = client.create_organization(FeatureSet="ALL")["Organization"]
    root = client.list_roots()["Roots"][0]["Id"]
    ids: dict[str, str] = {}
    for name, parent in UNITS.items():
        parent_id = ids[parent] if parent else root
        ids[name] = client.create_organizational_unit(ParentId=parent_id, Name=name)[
            "OrganizationalUnit"
        ]["Id"]
    for i, (name, unit) in enumerate(ACCOUNTS):
        status = client.create_account(AccountName=name, Email=f"aws+{i}@demo.example")
        account_id = status["CreateAccountStatus"]["AccountId"]
        client.move_account(
            AccountId=account_id, SourceParentId=root, DestinationParentId=ids[unit]
        )
        if name == SUSPENDED:
            client.close_account(AccountId=account_id)
    management = organization["MasterAccountId"]
    return DemoOrganization(
        organization["Id"], management, f"arn:aws:iam::{management}:role/canopy-discovery"
    )


async def seed_directory(channel: grpc.aio.Channel, metadata: Any) -> None:
    """The demo tenant, org and workspaces."""
    directory = dirgrpc.DirectoryServiceStub(channel)
    await directory.UpsertTenant(
        dirrpc.UpsertTenantRequest(
            tenant=dirpb.Tenant(
                id=TENANT, handle="demo", display_name="Demo", plan=types_pb2.PLAN_ENTERPRISE
            )
        ),
        metadata=metadata,
    )
    await directory.UpsertOrg(
        dirrpc.UpsertOrgRequest(
            org=dirpb.Org(
                id=ORG,
                tenant_id=TENANT,
                handle="platform",
                display_name="Platform",
                plan=types_pb2.PLAN_TEAM,
            )
        ),
        metadata=metadata,
    )
    for workspace_id in WORKSPACES:
        await directory.UpsertWorkspace(
            dirrpc.UpsertWorkspaceRequest(
                workspace=dirpb.Workspace(id=workspace_id, org_id=ORG, handle=workspace_id[2:])
            ),
            metadata=metadata,
        )


async def create_and_sync(
    integration: grpc.aio.Channel,
    discovery: grpc.aio.Channel,
    permissions: grpc.aio.Channel,
    organization: DemoOrganization,
    metadata: Any,
) -> tuple[pb.Integration, dpb.SyncRun, tree_pb.ConnectionTree]:
    """Create the integration (shared with every workspace of the org), wait for its first
    sync, attach its root folder to the first workspace; return the tree."""
    integrations = rpc_grpc.IntegrationServiceStub(integration)
    existing = await integrations.ListIntegrations(
        rpc.ListIntegrationsRequest(scope=types_pb2.Scope(org_id=ORG)), metadata=metadata
    )
    created = next((i for i in existing.integrations if i.handle == "aws-demo"), None)
    if created is None:
        created = (
            await integrations.CreateIntegration(
                rpc.CreateIntegrationRequest(
                    integration=pb.Integration(
                        handle="aws-demo",
                        scope=types_pb2.Scope(org_id=ORG),
                        discovery_access=pb.AwsDiscoveryAccess(
                            role_arn=organization.discovery_role_arn, external_id=EXTERNAL_ID
                        ),
                        member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                        handle_prefix="aws_",
                    ),
                    initial_permissions=pb.RootFolderPermissions(
                        mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
                    ),
                    request_id="demo-create-aws-demo",
                ),
                metadata=metadata,
            )
        ).integration
    runs = dgrpc.DiscoveryServiceStub(discovery)
    if existing_id := (
        created.id if any(i.id == created.id for i in existing.integrations) else ""
    ):
        # Started before, on another simulated organization: this one replaces it.
        started = await runs.SyncIntegration(
            drpc.SyncIntegrationRequest(integration_id=existing_id, confirm_deletions=True),
            metadata=metadata,
        )
        run = await _finished(runs, started.run.id, metadata)
    else:
        run = await _first_run(runs, created.id, metadata)
    schemas = wgrpc.WorkspaceSchemaServiceStub(permissions)
    for _ in range(200):  # the permissions service learns the tree from the tree log
        try:
            await schemas.AttachSchema(
                wrpc.AttachSchemaRequest(
                    workspace_id=WORKSPACES[0],
                    folder_id=created.root_folder_id,
                    request_id="demo-attach-root",
                ),
                metadata=metadata,
            )
            break
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                break  # attached by an earlier run of the demo
            if error.code() not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND):
                raise
            await asyncio.sleep(0.1)
    tree = await tree_grpc.ConnectionTreeServiceStub(integration).GetConnectionTree(
        tree_rpc.GetConnectionTreeRequest(integration_id=created.id), metadata=metadata
    )
    return created, run, tree.tree


async def _finished(runs: Any, run_id: str, metadata: Any) -> dpb.SyncRun:
    last: dpb.SyncRun | None = None
    async for reply in runs.WatchSyncRun(drpc.WatchSyncRunRequest(id=run_id), metadata=metadata):
        last = reply.run
        if reply.run.state in TERMINAL:
            break
    assert last is not None
    return last


async def _first_run(runs: Any, integration_id: str, metadata: Any) -> dpb.SyncRun:
    for _ in range(600):
        listed = await runs.ListSyncRuns(
            drpc.ListSyncRunsRequest(integration_id=integration_id, page_size=1),
            metadata=metadata,
        )
        if listed.runs:
            return await _finished(runs, listed.runs[0].id, metadata)
        await asyncio.sleep(0.1)
    raise RuntimeError("the first sync of the demo integration did not start")


async def main() -> None:
    """`python -m canopy_cli.demo`: build the demo against running services and a moto server
    (docker compose runs it once the suite is up). Addresses and the AWS endpoint come from the
    usual `CANOPY_*` variables; the token is minted from `CANOPY_JWT_SECRET`."""
    import os

    from canopy_core.auth import mint_token, signing_secret
    from canopy_core.server import peer_credentials
    from canopy_core.settings import ServiceSettings

    settings = ServiceSettings()
    secret = signing_secret(settings)
    assert secret is not None, "set CANOPY_JWT_SECRET"
    metadata = (("authorization", f"Bearer {mint_token(secret, 'demo', system=True)}"),)
    endpoint = os.environ["CANOPY_AWS_ENDPOINT_URL"]
    organization = None
    for _ in range(120):  # the moto container may still be starting
        try:
            organization = await asyncio.to_thread(build_organization, endpoint)
            break
        except Exception:
            await asyncio.sleep(1)
    assert organization is not None, f"no AWS endpoint at {endpoint}"
    tls = peer_credentials(settings)

    def open_channel(address: str) -> grpc.aio.Channel:
        if tls is not None:
            return grpc.aio.secure_channel(address, tls)
        return grpc.aio.insecure_channel(address)

    async with (
        open_channel(settings.integration_address) as integration,
        open_channel(settings.discovery_address) as discovery,
        open_channel(settings.permissions_address) as permissions,
    ):
        for channel in (integration, discovery, permissions):
            await asyncio.wait_for(channel.channel_ready(), 300)
        await seed_directory(permissions, metadata)
        created, run, tree = await create_and_sync(
            integration, discovery, permissions, organization, metadata
        )
    from rich.console import Console

    from canopy_cli import render

    print(
        f"demo integration {created.id}: sync {dpb.SyncRunState.Name(run.state)}, "
        f"{run.progress.accounts_found} accounts; root folder attached to {WORKSPACES[0]}"
    )
    Console().print(render.connection_tree(tree))


if __name__ == "__main__":
    asyncio.run(main())
