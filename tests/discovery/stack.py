"""The three services in this process over real gRPC, PostgreSQL and a moto server (through
the fault proxy), started and stopped one by one as a test needs; and the calls the discovery
tests make of them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.discovery.v1 import discovery_service_pb2_grpc as dgrpc
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dirgrpc
from canopy.type.v1 import types_pb2
from canopy_core.server import RunningService, serve
from canopy_discovery.server import spec as discovery_spec
from canopy_discovery.settings import DiscoverySettings
from canopy_integration.server import spec as integration_spec
from canopy_integration.settings import IntegrationSettings
from canopy_permissions.server import spec as permissions_spec
from canopy_permissions.settings import PermissionsSettings
from tests.awsfaults import FaultProxy
from tests.discovery.conftest import DISCOVERY_ROLE
from tests.integration.conftest import OWNER, SYSTEM, TRUSTED_ACCOUNT_ID, seed_directory

if TYPE_CHECKING:
    from canopy.discovery.v1.discovery_service_pb2_grpc import DiscoveryServiceAsyncStub
    from canopy.integration.v1.connection_tree_service_pb2_grpc import (
        ConnectionTreeServiceAsyncStub,
    )
    from canopy.integration.v1.integration_service_pb2_grpc import IntegrationServiceAsyncStub
    from canopy.permissions.v1.directory_service_pb2_grpc import DirectoryServiceAsyncStub

EXTERNAL_ID = "t_acme:k3j9x0ab"
TERMINAL = {
    dpb.SYNC_RUN_STATE_SUCCEEDED,
    dpb.SYNC_RUN_STATE_FAILED,
    dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION,
    dpb.SYNC_RUN_STATE_CANCELLED,
}


def discovery_env(service_env: dict[str, Any], proxy: FaultProxy, **extra: Any) -> dict[str, Any]:
    return {
        **service_env,
        "db_schema": "discovery",
        "aws_endpoint_url": proxy.url,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "sync_workers": 2,
        "lease_ttl": 3,
        "scheduler_poll_interval": 0.3,
        "crawl_timeout": 30,
        "crawl_call_timeout": 5,
        **extra,
    }


@dataclass
class Stack:
    """Three services in this process, and stubs to call them."""

    integrations: IntegrationServiceAsyncStub
    tree: ConnectionTreeServiceAsyncStub
    directory: DirectoryServiceAsyncStub
    services: dict[str, RunningService]
    settings: dict[str, Any]
    discovery_address: str
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def discovery(self) -> DiscoveryServiceAsyncStub:
        """A stub of the discovery service (whichever replica serves its address)."""
        stub: DiscoveryServiceAsyncStub = dgrpc.DiscoveryServiceStub(self.channels[1])
        return stub

    async def start_discovery(self, **overrides: Any) -> RunningService:
        """The discovery service on its address (again, after `stop_discovery`)."""
        port = int(self.discovery_address.rsplit(":", 1)[1])
        running = await serve(
            discovery_spec(), DiscoverySettings(**{**self.settings, "port": port, **overrides})
        )
        self.services["discovery"] = running
        return running

    async def stop_discovery(self) -> None:
        """Stop the discovery service (its schedule stays in its database)."""
        await self.services.pop("discovery").stop()

    async def add_discovery_replica(self, **overrides: Any) -> RunningService:
        """Another discovery service on the same database (a second replica)."""
        replica = await serve(discovery_spec(), DiscoverySettings(**{**self.settings, **overrides}))
        self.services[f"discovery-{len(self.services)}"] = replica
        return replica

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        # The integration service last: discovery and permissions follow its tree log, and
        # must not see it go away.
        for name in sorted(self.services, key=lambda n: (n == "integration", n == "permissions")):
            await self.services[name].stop()


async def start_stack(
    service_env: dict[str, Any],
    proxy: FaultProxy,
    *,
    integration: dict[str, Any] | None = None,
    discovery: dict[str, Any] | None = None,
    with_discovery: bool = True,
) -> Stack:
    """Permissions, integration (trusting moto's account unless told otherwise) and, unless
    `with_discovery` is false, discovery; the directory seeded."""
    from tests.helpers import free_port

    integration_port = free_port()
    permissions = await serve(
        permissions_spec(),
        PermissionsSettings(
            **{
                **service_env,
                "db_schema": "permissions",
                "integration_address": f"127.0.0.1:{integration_port}",
            }
        ),
    )
    discovery_address = f"127.0.0.1:{free_port()}"
    running = await serve(
        integration_spec(),
        IntegrationSettings(
            **{
                **service_env,
                "port": integration_port,
                "db_schema": "integration",
                "permissions_address": f"127.0.0.1:{permissions.port}",
                "discovery_address": discovery_address,
                "trusted_account_id": TRUSTED_ACCOUNT_ID,
                **(integration or {}),
            }
        ),
    )
    settings = discovery_env(
        service_env,
        proxy,
        integration_address=f"127.0.0.1:{running.port}",
        permissions_address=f"127.0.0.1:{permissions.port}",
        **(discovery or {}),
    )
    channels = [
        grpc.aio.insecure_channel(address)
        for address in (
            f"127.0.0.1:{running.port}",
            discovery_address,
            f"127.0.0.1:{permissions.port}",
        )
    ]
    directory: DirectoryServiceAsyncStub = dirgrpc.DirectoryServiceStub(channels[2])
    await seed_directory(directory)
    stack = Stack(
        integrations=rpc_grpc.IntegrationServiceStub(channels[0]),
        tree=tree_grpc.ConnectionTreeServiceStub(channels[0]),
        directory=directory,
        services={"integration": running, "permissions": permissions},
        settings=settings,
        discovery_address=discovery_address,
        channels=channels,
    )
    if with_discovery:
        await stack.start_discovery()
    return stack


async def create(stack: Stack, handle: str = "aws-prod", **extra: Any) -> pb.Integration:
    reply = await stack.integrations.CreateIntegration(
        rpc.CreateIntegrationRequest(
            integration=pb.Integration(
                handle=handle,
                scope=types_pb2.Scope(tenant_id="t_acme"),
                discovery_access=pb.AwsDiscoveryAccess(
                    role_arn=DISCOVERY_ROLE, external_id=EXTERNAL_ID
                ),
                member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                **extra,
            )
        ),
        metadata=OWNER,
    )
    return reply.integration


async def runs_of(stack: Stack, integration_id: str) -> list[dpb.SyncRun]:
    reply = await stack.discovery.ListSyncRuns(
        drpc.ListSyncRunsRequest(integration_id=integration_id, page_size=100), metadata=SYSTEM
    )
    return list(reply.runs)


async def finished(stack: Stack, run_id: str, timeout: float = 30) -> dpb.SyncRun:
    """Follow a run with WatchSyncRun until it ends."""
    last: dpb.SyncRun | None = None

    async def follow() -> None:
        nonlocal last
        async for reply in stack.discovery.WatchSyncRun(
            drpc.WatchSyncRunRequest(id=run_id), metadata=SYSTEM
        ):
            last = reply.run
            if reply.run.state in TERMINAL:
                return

    await asyncio.wait_for(follow(), timeout)
    assert last is not None
    return last


async def first_run(stack: Stack, integration_id: str, timeout: float = 30) -> dpb.SyncRun:
    """The run that creating the integration started, once it has ended."""
    for _ in range(int(timeout * 10)):
        found = await runs_of(stack, integration_id)
        if found:
            return await finished(stack, found[-1].id, timeout)
        await asyncio.sleep(0.1)
    raise AssertionError("no run was started")


async def sync(stack: Stack, integration_id: str, **kw: Any) -> dpb.SyncRun:
    reply = await stack.discovery.SyncIntegration(
        drpc.SyncIntegrationRequest(integration_id=integration_id, **kw), metadata=OWNER
    )
    return await finished(stack, reply.run.id)


async def handles(stack: Stack, integration_id: str) -> dict[str, str]:
    reply = await stack.tree.ListConnections(
        tree_rpc.ListConnectionsRequest(integration_id=integration_id, page_size=100),
        metadata=SYSTEM,
    )
    return {c.account_id: c.handle for c in reply.connections}
