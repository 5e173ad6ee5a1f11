"""Rendering a workspace's Steampipe configuration: 5,000 schemas under 500 folders (three
levels of OUs below the root), the integration's root folder attached to the workspace.

Reported, each the median of RUNS renders after one to warm up:
- `render_ms`: server side, the use case the servicer runs (one REPEATABLE READ snapshot read,
  then the render and the hashes), called in this process against the service's database;
- `rpc_ms`: the whole RenderWorkspaceConfig call as a client in this process sees it (header
  and every chunk);
- `bytes` (all files) and each file's size; and, as a baseline of the same run,
  `list_schemas_ms`: reading the same 5,000 schemas with ListWorkspaceSchemas (100 a page)."""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from bench.services import SYSTEM, bearer, common_settings, free_port, seed
from bench.support import fresh_database
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_pb2 as dpb
from canopy.permissions.v1 import directory_service_pb2 as drpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dgrpc
from canopy.permissions.v1 import workspace_config_service_pb2 as crpc
from canopy.permissions.v1 import workspace_config_service_pb2_grpc as cgrpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2
from canopy_core.auth import Principal
from canopy_core.server import RunningService, serve, tune_gc
from canopy_integration.server import spec as integration_spec
from canopy_integration.settings import IntegrationSettings
from canopy_permissions.server import spec as permissions_spec
from canopy_permissions.settings import PermissionsSettings
from canopy_permissions.workspace_config import render_workspace_config

LEVELS = (20, 80, 400)  # 500 OUs
ACCOUNTS = 5_000
ROOT = "r-bench"
RUNS = 7
WORKSPACE = "w_bench"


def organization(seed: int = 5) -> tree_pb.OrganizationSnapshot:
    """A deterministic organization of the benchmark's shape."""
    rng = random.Random(seed)
    units: list[tree_pb.OrganizationalUnit] = []
    previous = [ROOT]
    n = 0
    for size in LEVELS:
        level = []
        for _ in range(size):
            n += 1
            unit_id = f"ou-b{n % 97:03d}-{n:08d}"
            units.append(
                tree_pb.OrganizationalUnit(
                    id=unit_id, parent_id=rng.choice(previous), name=f"Unit {n}"
                )
            )
            level.append(unit_id)
        previous = level
    parents = [ROOT] + [u.id for u in units]
    accounts = [
        tree_pb.Account(
            id=f"{100000000000 + i:012d}",
            name=f"Team {i} {rng.choice(['prod', 'staging', 'dev'])}",
            email=f"aws+{i}@example.com",
            parent_id=rng.choice(parents),
            state="ACTIVE",
        )
        for i in range(ACCOUNTS)
    ]
    return tree_pb.OrganizationSnapshot(
        organization_id="o-benchmark01",
        management_account_id="100000000000",
        root_id=ROOT,
        organizational_units=units,
        accounts=accounts,
    )


async def _list_all(schemas: Any) -> int:
    count, token = 0, ""
    while True:
        page = await schemas.ListWorkspaceSchemas(
            wrpc.ListWorkspaceSchemasRequest(
                workspace_id=WORKSPACE, page_size=100, page_token=token
            ),
            metadata=SYSTEM,
        )
        count += len(page.schemas)
        token = page.next_page_token
        if not token:
            return count


async def render_rpc(
    stub: Any, workspace_id: str = WORKSPACE, timeout: float | None = None
) -> tuple[crpc.WorkspaceConfigHeader, int]:
    """One RenderWorkspaceConfig call: its header and the bytes of every chunk after it."""
    header, received = None, 0
    async for reply in stub.RenderWorkspaceConfig(
        crpc.RenderWorkspaceConfigRequest(workspace_id=workspace_id),
        metadata=SYSTEM,
        timeout=timeout,
    ):
        if reply.HasField("header"):
            header = reply.header
        else:
            received += len(reply.chunk.data)
    assert header is not None
    return header, received


@asynccontextmanager
async def _services(dsn: str) -> AsyncIterator[tuple[RunningService, RunningService]]:
    """The permissions and integration services in this process, each knowing the other (the
    permissions service follows the integration service's tree log)."""
    permissions_port, integration_port = free_port(), free_port()
    permissions = await serve(
        permissions_spec(),
        PermissionsSettings(
            **{
                **common_settings(dsn),
                "port": permissions_port,
                "integration_address": f"127.0.0.1:{integration_port}",
            }
        ),
    )
    integration = await serve(
        integration_spec(),
        IntegrationSettings(
            **{
                **common_settings(dsn),
                "port": integration_port,
                "permissions_address": f"127.0.0.1:{permissions_port}",
            }
        ),
    )
    tune_gc()  # as a service process does once started
    try:
        yield permissions, integration
    finally:  # the follower of the tree log first, so that it sees no outage
        await permissions.stop()
        await integration.stop()


def _ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


async def run(admin_dsn: str) -> dict[str, Any]:
    """The figures of one workspace's render."""
    async with (
        fresh_database(admin_dsn) as dsn,
        _services(dsn) as (permissions, integration),
        grpc.aio.insecure_channel(f"127.0.0.1:{permissions.port}") as p_channel,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{integration.port}",
            options=[("grpc.max_send_message_length", 64 << 20)],
        ) as i_channel,
    ):
        directory = dgrpc.DirectoryServiceStub(p_channel)
        await seed(directory)
        await directory.UpsertOrg(
            drpc.UpsertOrgRequest(
                org=dpb.Org(
                    id="o_bench", tenant_id="t_bench", handle="ops", plan=types_pb2.PLAN_TEAM
                )
            ),
            metadata=SYSTEM,
        )
        await directory.UpsertWorkspace(
            drpc.UpsertWorkspaceRequest(
                workspace=dpb.Workspace(id=WORKSPACE, org_id="o_bench", handle="bench")
            ),
            metadata=SYSTEM,
        )
        integrations = rpc_grpc.IntegrationServiceStub(i_channel)
        created = (
            await integrations.CreateIntegration(
                rpc.CreateIntegrationRequest(
                    integration=pb.Integration(
                        handle="aws",
                        scope=types_pb2.Scope(org_id="o_bench"),
                        discovery_access=pb.AwsDiscoveryAccess(
                            role_arn="arn:aws:iam::100000000000:role/d",
                            external_id="o_bench:abcd1234",
                        ),
                        member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                    ),
                    initial_permissions=pb.RootFolderPermissions(
                        mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
                    ),
                ),
                metadata=bearer(o_bench="owner"),
            )
        ).integration
        await tree_grpc.ConnectionTreeServiceStub(i_channel).ApplyDiscoverySnapshot(
            tree_rpc.ApplyDiscoverySnapshotRequest(
                integration_id=created.id, snapshot=organization()
            ),
            metadata=SYSTEM,
        )
        schemas = wgrpc.WorkspaceSchemaServiceStub(p_channel)
        for _ in range(600):  # the permissions service projects the tree asynchronously
            try:
                await schemas.AttachSchema(
                    wrpc.AttachSchemaRequest(
                        workspace_id=WORKSPACE, folder_id=created.root_folder_id
                    ),
                    metadata=SYSTEM,
                )
                break
            except grpc.aio.AioRpcError as error:
                failure = error
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"the workspace never attached the root folder: {failure}")
        attached = 0
        for _ in range(600):  # the schemas arrive as the projection catches up
            attached = await _list_all(schemas)
            if attached == ACCOUNTS:
                break
            await asyncio.sleep(0.1)
        print(f"  {attached} schemas attached; rendering", file=sys.stderr)

        db = permissions.runtime.db
        system = Principal("bench", system=True)
        stub = cgrpc.WorkspaceConfigServiceStub(p_channel)
        rendered = await render_workspace_config(db, system, WORKSPACE, (None, ""), [])
        await render_rpc(stub)
        await _list_all(schemas)
        render_s, rpc_s, list_s = [], [], []
        for _ in range(RUNS):
            started = time.perf_counter()
            rendered = await render_workspace_config(db, system, WORKSPACE, (None, ""), [])
            render_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            header, received = await render_rpc(stub)
            rpc_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            listed = await _list_all(schemas)
            list_s.append(time.perf_counter() - started)
    sizes = {f.path: len(f.data) for f in rendered.files}
    assert received == sum(sizes.values()) == sum(f.size for f in header.files)
    assert listed == ACCOUNTS
    schema_count = sum(1 for name in rendered.search_path if "__" not in name)
    result = {
        "schemas": schema_count,
        "folders": 1 + sum(LEVELS),
        "aggregators": len(rendered.search_path) - schema_count,
        "render_ms": _ms(render_s),
        "render_ms_runs": [round(s * 1000, 1) for s in render_s],
        "rpc_ms": _ms(rpc_s),
        "bytes": sum(sizes.values()),
        "file_bytes": sizes,
        "baseline_list_schemas_ms": _ms(list_s),
    }
    print(
        f"  render {result['render_ms']} ms, RPC {result['rpc_ms']} ms, "
        f"{result['bytes']} bytes; listing {result['baseline_list_schemas_ms']} ms",
        file=sys.stderr,
    )
    return result
