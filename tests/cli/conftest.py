"""The three services in this process on their own ports, a moto organization behind discovery,
and a runner that invokes the `canopy` command against them from a worker thread.

CliRunner runs the command synchronously; the services run on the test's event loop, so every
invocation goes through `asyncio.to_thread` to keep them serving. CliRunner swaps the process's
stdout and stderr while it runs, so two invocations must never overlap: background changes during
a watch are made with the async stubs instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from typer.testing import CliRunner, Result

from canopy.discovery.v1 import discovery_service_pb2_grpc as dgrpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dirgrpc
from canopy.permissions.v1 import permission_service_pb2_grpc as pgrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy_cli.main import app
from canopy_core.server import RunningService, serve
from canopy_discovery.server import spec as discovery_spec
from canopy_discovery.settings import DiscoverySettings
from canopy_integration.server import spec as integration_spec
from canopy_integration.settings import IntegrationSettings
from canopy_permissions.server import spec as permissions_spec
from canopy_permissions.settings import PermissionsSettings
from tests.discovery.conftest import moto_server, moto_url, org  # noqa: F401
from tests.helpers import JWT_SECRET, free_port
from tests.integration.conftest import TRUSTED_ACCOUNT_ID, seed_directory

if TYPE_CHECKING:
    from canopy.discovery.v1.discovery_service_pb2_grpc import DiscoveryServiceAsyncStub
    from canopy.integration.v1.integration_service_pb2_grpc import IntegrationServiceAsyncStub
    from canopy.permissions.v1.directory_service_pb2_grpc import DirectoryServiceAsyncStub
    from canopy.permissions.v1.permission_service_pb2_grpc import PermissionServiceAsyncStub
    from canopy.permissions.v1.workspace_schema_service_pb2_grpc import (
        WorkspaceSchemaServiceAsyncStub,
    )


@dataclass
class Cli:
    """The running services, async stubs for changes made beside the command, and `run` to
    invoke the command with the environment a user beside `make run` would have."""

    env: dict[str, str | None]
    services: dict[str, RunningService]
    integrations: IntegrationServiceAsyncStub
    discovery: DiscoveryServiceAsyncStub
    directory: DirectoryServiceAsyncStub
    permissions: PermissionServiceAsyncStub
    schemas: WorkspaceSchemaServiceAsyncStub
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    runner: CliRunner = field(default_factory=CliRunner)

    async def run(
        self, *args: str, input: str | None = None, env: Mapping[str, str | None] | None = None
    ) -> Result:
        """`canopy ARGS…` in a worker thread; its exit code, stdout and stderr."""
        return await asyncio.to_thread(
            self.runner.invoke, app, list(args), input=input, env={**self.env, **(env or {})}
        )


def cli_env(tmp_path: Path, **addresses: str) -> dict[str, str | None]:
    """No token: the command mints a system token from CANOPY_JWT_SECRET, as beside `make run`."""
    return {
        "CANOPY_TOKEN": None,
        "CANOPY_JWT_SECRET": JWT_SECRET,
        "CANOPY_DATA_DIR": str(tmp_path / "cli"),
        "CANOPY_INTEGRATION_ADDRESS": addresses.get("integration", f"127.0.0.1:{free_port()}"),
        "CANOPY_DISCOVERY_ADDRESS": addresses.get("discovery", f"127.0.0.1:{free_port()}"),
        "CANOPY_PERMISSIONS_ADDRESS": addresses.get("permissions", f"127.0.0.1:{free_port()}"),
        "COLUMNS": "200",
    }


@pytest.fixture
async def cli(service_env: dict[str, Any], moto_url: str, tmp_path: Path) -> AsyncIterator[Cli]:  # noqa: F811
    integration_port, permissions_port = free_port(), free_port()
    permissions = await serve(
        permissions_spec(),
        PermissionsSettings(
            **{
                **service_env,
                "db_schema": "permissions",
                "port": permissions_port,
                "integration_address": f"127.0.0.1:{integration_port}",
            }
        ),
    )
    discovery_port = free_port()
    integration = await serve(
        integration_spec(),
        IntegrationSettings(
            **{
                **service_env,
                "db_schema": "integration",
                "port": integration_port,
                "permissions_address": f"127.0.0.1:{permissions_port}",
                "discovery_address": f"127.0.0.1:{discovery_port}",
                "trusted_account_id": TRUSTED_ACCOUNT_ID,
            }
        ),
    )
    discovery = await serve(
        discovery_spec(),
        DiscoverySettings(
            **{
                **service_env,
                "db_schema": "discovery",
                "port": discovery_port,
                "aws_endpoint_url": moto_url,
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
                "sync_workers": 2,
                "scheduler_poll_interval": 0.3,
                "crawl_timeout": 30,
                "crawl_call_timeout": 5,
                "integration_address": f"127.0.0.1:{integration_port}",
                "permissions_address": f"127.0.0.1:{permissions_port}",
            }
        ),
    )
    ichannel = grpc.aio.insecure_channel(f"127.0.0.1:{integration_port}")
    dchannel = grpc.aio.insecure_channel(f"127.0.0.1:{discovery.port}")
    pchannel = grpc.aio.insecure_channel(f"127.0.0.1:{permissions_port}")
    await seed_directory(dirgrpc.DirectoryServiceStub(pchannel))
    built = Cli(
        env=cli_env(
            tmp_path,
            integration=f"127.0.0.1:{integration_port}",
            discovery=f"127.0.0.1:{discovery.port}",
            permissions=f"127.0.0.1:{permissions_port}",
        ),
        services={"discovery": discovery, "integration": integration, "permissions": permissions},
        integrations=rpc_grpc.IntegrationServiceStub(ichannel),
        discovery=dgrpc.DiscoveryServiceStub(dchannel),
        directory=dirgrpc.DirectoryServiceStub(pchannel),
        permissions=pgrpc.PermissionServiceStub(pchannel),
        schemas=wgrpc.WorkspaceSchemaServiceStub(pchannel),
        channels=[ichannel, dchannel, pchannel],
    )
    yield built
    for channel in built.channels:
        await channel.close()
    for name in ("discovery", "integration", "permissions"):  # a test may have restarted one
        await built.services[name].stop()
