"""The product guide, end to end: the three services as separate processes, AWS played by a
moto server behind the fault proxy (and a second moto, in its own process, for a role that sees
another organization). Every step is checked on the tree and on a workspace's schema stream."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.discovery.v1 import discovery_service_pb2_grpc as dgrpc
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dirgrpc
from canopy.permissions.v1 import workspace_schema_pb2 as wpb
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2
from tests.awsfaults import FaultProxy
from tests.discovery.conftest import CREDENTIALS, Org
from tests.e2e.processes import ServiceProcess
from tests.helpers import bearer, token
from tests.integration.conftest import ORG_OWNER, OWNER, SYSTEM, seed_directory

ROLE_A = "arn:aws:iam::123456789012:role/canopy-discovery"
ROLE_B = "arn:aws:iam::123456789012:role/canopy-discovery-other-org"
TERMINAL = {
    dpb.SYNC_RUN_STATE_SUCCEEDED,
    dpb.SYNC_RUN_STATE_FAILED,
    dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION,
    dpb.SYNC_RUN_STATE_CANCELLED,
}


@pytest.fixture
def second_moto() -> Iterator[str]:
    """Another moto server, in its own process: another AWS Organization."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(10)


class Client:
    """Stubs on the three processes."""

    def __init__(self, running: dict[str, ServiceProcess]) -> None:
        self.channels = [
            grpc.aio.insecure_channel(running[n].address)
            for n in ("integration", "discovery", "permissions")
        ]
        self.integrations = rpc_grpc.IntegrationServiceStub(self.channels[0])
        self.tree = tree_grpc.ConnectionTreeServiceStub(self.channels[0])
        self.discovery = dgrpc.DiscoveryServiceStub(self.channels[1])
        self.directory = dirgrpc.DirectoryServiceStub(self.channels[2])
        self.schemas = wgrpc.WorkspaceSchemaServiceStub(self.channels[2])

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    async def handles(self, integration_id: str) -> dict[str, str]:
        """Account id → handle, from the whole tree."""
        reply = await self.tree.GetConnectionTree(
            tree_rpc.GetConnectionTreeRequest(integration_id=integration_id), metadata=SYSTEM
        )
        found: dict[str, str] = {}

        def walk(node: tree_pb.FolderNode) -> None:
            found.update({c.account_id: c.handle for c in node.connections})
            for child in node.folders:
                walk(child)

        walk(reply.tree.root)
        return found

    async def run_to_end(self, run_id: str) -> dpb.SyncRun:
        async for reply in self.discovery.WatchSyncRun(
            drpc.WatchSyncRunRequest(id=run_id), metadata=SYSTEM
        ):
            if reply.run.state in TERMINAL:
                return reply.run
        raise AssertionError("the run stream ended early")

    async def sync(self, integration_id: str, confirm: bool = False) -> dpb.SyncRun:
        started = await self.discovery.SyncIntegration(
            drpc.SyncIntegrationRequest(integration_id=integration_id, confirm_deletions=confirm),
            metadata=OWNER,
        )
        return await self.run_to_end(started.run.id)

    async def latest_run(self, integration_id: str, trigger: int) -> dpb.SyncRun:
        for _ in range(300):
            runs = await self.discovery.ListSyncRuns(
                drpc.ListSyncRunsRequest(integration_id=integration_id), metadata=SYSTEM
            )
            for run in runs.runs:
                if run.trigger == trigger:
                    return await self.run_to_end(run.id)
            await asyncio.sleep(0.1)
        raise AssertionError("no such run")


class Stream:
    """A workspace's schema stream, collected in the background."""

    def __init__(self, client: Client, workspace_id: str, after: int) -> None:
        self.events: list[wpb.SchemaEvent] = []
        self.call = client.schemas.WatchWorkspaceSchemas(
            wrpc.WatchWorkspaceSchemasRequest(workspace_id=workspace_id, after_revision=after),
            metadata=SYSTEM,
        )
        self.task = asyncio.create_task(self._run())
        self.seen = 0

    async def _run(self) -> None:
        try:
            async for reply in self.call:
                self.events.extend(reply.events)
        except grpc.aio.AioRpcError:
            pass

    async def next(self, count: int, timeout: float = 30) -> list[wpb.SchemaEvent]:
        """The next `count` events after those already taken."""
        deadline = time.monotonic() + timeout
        while len(self.events) < self.seen + count:
            assert time.monotonic() < deadline, (
                f"waited for {count} events: {self.events[self.seen :]}"
            )
            await asyncio.sleep(0.05)
        taken = self.events[self.seen : self.seen + count]
        self.seen += count
        return taken


def summary(events: list[wpb.SchemaEvent]) -> list[tuple[str, ...]]:
    """Events as comparable tuples."""
    found: list[tuple[str, ...]] = []
    for e in events:
        kind = e.WhichOneof("event")
        if kind == "schema_added":
            found.append(("added", e.schema_added.schema.name))
        elif kind == "schema_renamed":
            found.append(("renamed", e.schema_renamed.old_name, e.schema_renamed.new_name))
        elif kind == "schema_removed":
            found.append(
                (
                    "removed",
                    e.schema_removed.name,
                    wpb.SchemaRemovedReason.Name(e.schema_removed.reason),
                )
            )
        elif kind == "schema_config_changed":
            found.append(("config", e.schema_config_changed.schema.name))
    return sorted(found)


async def test_the_product_guide_end_to_end(
    services: dict[str, ServiceProcess],
    org: Org,
    proxy: FaultProxy,
    second_moto: str,
) -> None:
    client = Client(services)
    try:
        await walk_the_guide(client, org, proxy, second_moto)
    finally:
        await client.close()


async def walk_the_guide(client: Client, org: Org, proxy: FaultProxy, second_moto: str) -> None:
    await seed_directory(client.directory)

    # The organization: OUs, accounts, names that need slugging.
    prod = org.ou("Production")
    web = org.ou("Web", prod)
    dev = org.ou("Development")
    web_prod = org.account("Web Prod", web)
    data = org.account("Data — Lake", prod)
    sandbox = org.account("Sandbox", dev)
    old = org.account("Old", dev)

    # Steps 3 to 5: external id, access test, create at org scope with every workspace granted.
    external = await client.integrations.GenerateExternalId(
        rpc.GenerateExternalIdRequest(scope=types_pb2.Scope(org_id="o_ops")), metadata=ORG_OWNER
    )
    access = await client.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(
            access=pb.AwsDiscoveryAccess(role_arn=ROLE_A, external_id=external.external_id)
        ),
        metadata=ORG_OWNER,
    )
    assert access.ok
    assert access.organization_id == org.id
    created = (
        await client.integrations.CreateIntegration(
            rpc.CreateIntegrationRequest(
                integration=pb.Integration(
                    handle="aws-ops",
                    scope=types_pb2.Scope(org_id="o_ops"),
                    discovery_access=pb.AwsDiscoveryAccess(
                        role_arn=ROLE_A, external_id=external.external_id
                    ),
                    member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                ),
                initial_permissions=pb.RootFolderPermissions(
                    mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
                ),
            ),
            metadata=ORG_OWNER,
        )
    ).integration
    first = await client.latest_run(created.id, dpb.SYNC_TRIGGER_CREATED)
    assert first.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    handles = await client.handles(created.id)
    assert handles[web_prod] == "web_prod"
    assert handles[data] == "data_lake"

    # A tenant-scoped integration of the same organization: handles stay unique in the tenant.
    tenant_level = (
        await client.integrations.CreateIntegration(
            rpc.CreateIntegrationRequest(
                integration=pb.Integration(
                    handle="aws-tenant",
                    scope=types_pb2.Scope(tenant_id="t_acme"),
                    discovery_access=pb.AwsDiscoveryAccess(
                        role_arn=ROLE_A, external_id="t_acme:abcd1234"
                    ),
                    member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                ),
            ),
            metadata=OWNER,
        )
    ).integration
    assert (
        await client.latest_run(tenant_level.id, dpb.SYNC_TRIGGER_CREATED)
    ).state == dpb.SYNC_RUN_STATE_SUCCEEDED
    tenant_handles = await client.handles(tenant_level.id)
    assert tenant_handles[web_prod].startswith("web_prod_")
    assert not set(tenant_handles.values()) & set(handles.values())

    # Attach the root folder to a workspace and follow its stream.
    listed = await client.schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(workspace_id="w_ops1"), metadata=SYSTEM
    )
    stream = Stream(client, "w_ops1", listed.revision)
    for _ in range(100):
        try:
            await client.schemas.AttachSchema(
                wrpc.AttachSchemaRequest(workspace_id="w_ops1", folder_id=created.root_folder_id),
                metadata=bearer(token("wendy", w_ops1="member")),
            )
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)  # the permissions service is still projecting the tree
    names = sorted(handles.values())
    assert summary(await stream.next(len(names))) == [("added", n) for n in names]

    # The organization changes: add, rename, move, suspend, remove; add and rename OUs.
    security = org.ou("Security")
    audit = org.account("Audit", security)
    org.rename_account(web_prod, "Website")
    org.move(sandbox, prod)
    org.rename_ou(dev, "Dev")
    org.suspend(old)
    org.remove(data)
    run = await client.sync(created.id)
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED, run
    assert summary(await stream.next(4)) == sorted(
        [
            ("added", "audit"),
            ("renamed", "web_prod", "website"),
            ("removed", "data_lake", "SCHEMA_REMOVED_REASON_CONNECTION_DELETED"),
            ("removed", "old", "SCHEMA_REMOVED_REASON_CONNECTION_DELETED"),
        ]
    )
    handles = await client.handles(created.id)
    assert handles[audit] == "audit"

    # A new handle prefix renames every schema.
    await client.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=created.id, handle_prefix="aws_"),
            update_mask=FieldMask(paths=["handle_prefix"]),
        ),
        metadata=ORG_OWNER,
    )
    renames = summary(await stream.next(len(handles)))
    assert renames == sorted(("renamed", h, f"aws_{h}") for h in handles.values())

    # A per-connection handle and a per-connection setting.
    connections = await client.tree.ListConnections(
        tree_rpc.ListConnectionsRequest(integration_id=created.id), metadata=SYSTEM
    )
    audit_connection = next(c for c in connections.connections if c.account_id == audit)
    await client.tree.UpdateConnection(
        tree_rpc.UpdateConnectionRequest(
            connection=tree_pb.Connection(id=audit_connection.id, handle="compliance"),
            update_mask=FieldMask(paths=["handle"]),
        ),
        metadata=ORG_OWNER,
    )
    await client.tree.UpdateConnection(
        tree_rpc.UpdateConnectionRequest(
            connection=tree_pb.Connection(
                id=audit_connection.id,
                config_overrides=pb.ConnectionConfig(
                    regions=types_pb2.StringList(values=["eu-west-1"])
                ),
            ),
            update_mask=FieldMask(paths=["config_overrides.regions"]),
        ),
        metadata=ORG_OWNER,
    )
    assert summary(await stream.next(2)) == [
        ("config", "compliance"),
        ("renamed", "aws_audit", "compliance"),
    ]

    # Credentials that see another organization: guarded, then confirmed.
    other: Any = boto3.client(
        "organizations", endpoint_url=second_moto, region_name="us-east-1", **CREDENTIALS
    )
    other.create_organization(FeatureSet="ALL")
    other_account = other.create_account(AccountName="Elsewhere", Email="e@example.com")[
        "CreateAccountStatus"
    ]["AccountId"]
    proxy.routes[ROLE_B] = second_moto
    before = await client.handles(created.id)
    await client.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(
                id=created.id,
                discovery_access=pb.AwsDiscoveryAccess(
                    role_arn=ROLE_B, external_id=external.external_id
                ),
            ),
            update_mask=FieldMask(paths=["discovery_access"]),
        ),
        metadata=ORG_OWNER,
    )
    guarded = await client.latest_run(created.id, dpb.SYNC_TRIGGER_SETTINGS_CHANGED)
    assert guarded.state == dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION
    assert await client.handles(created.id) == before
    confirmed = await client.sync(created.id, confirm=True)
    assert confirmed.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    after = await client.handles(created.id)
    # Both organizations have moto's management account 123456789012; it too is replaced.
    assert set(after) == {other_account, "123456789012"}
    switched = summary(await stream.next(len(before) + len(after)))
    assert [s for s in switched if s[0] == "removed"] == sorted(
        ("removed", h, "SCHEMA_REMOVED_REASON_CONNECTION_DELETED") for h in before.values()
    )
    assert [s for s in switched if s[0] == "added"] == sorted(("added", h) for h in after.values())

    # Delete: every schema leaves every workspace.
    await client.integrations.DeleteIntegration(
        rpc.DeleteIntegrationRequest(id=created.id, confirm_handle="aws-ops"), metadata=ORG_OWNER
    )
    assert summary(await stream.next(len(after))) == sorted(
        ("removed", h, "SCHEMA_REMOVED_REASON_INTEGRATION_DELETED") for h in after.values()
    )
    final = await client.schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(workspace_id="w_ops1"), metadata=SYSTEM
    )
    assert list(final.schemas) == []
    stream.call.cancel()
