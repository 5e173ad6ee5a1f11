"""Workspace schema streams under a prefix change: 1,000 connections in one integration, its
root folder attached to 100 workspaces, one watcher per workspace plus 900 idle watchers on
other workspaces. The services run as separate processes; this process only watches.

Reported: time from the update's commit to the last of the 100,000 `SchemaRenamed` events,
events per second, the p50/p99 delay per event (receipt - commit), and the rows the change wrote
to the workspace schema log (one per workspace per applied batch with compact events,
BENCH_COMPACT_EVENTS=1, the default; one per event with BENCH_COMPACT_EVENTS=0)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import asyncpg
import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from bench.services import SYSTEM, bearer, processes
from bench.support import fresh_database, summary_ms
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_pb2 as dpb
from canopy.permissions.v1 import directory_service_pb2 as drpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dgrpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2

CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", 1_000))
ATTACHED = int(os.environ.get("BENCH_ATTACHED", 100))
IDLE = int(os.environ.get("BENCH_IDLE", 900))
COMPACT_EVENTS = os.environ.get("BENCH_COMPACT_EVENTS", "1") != "0"


async def _log_rows(dsn: str, after_revision: int | None = None) -> tuple[int, int]:
    """The permissions service's schema log: its head, and the rows after `after_revision`."""
    conn = await asyncpg.connect(dsn)
    try:
        head: int = await conn.fetchval("SELECT revision FROM permissions.event_log_head")
        rows: int = await conn.fetchval(
            "SELECT count(*) FROM permissions.event_log WHERE revision > $1",
            head if after_revision is None else after_revision,
        )
        return head, rows
    finally:
        await conn.close()


async def seed_workspaces(directory: Any, count: int) -> None:
    """Tenant t_bench (ENTERPRISE), its org o_bench (TEAM), and workspaces w_0000 … in it."""
    await directory.UpsertTenant(
        drpc.UpsertTenantRequest(
            tenant=dpb.Tenant(id="t_bench", handle="bench", plan=types_pb2.PLAN_ENTERPRISE)
        ),
        metadata=SYSTEM,
    )
    await directory.UpsertOrg(
        drpc.UpsertOrgRequest(
            org=dpb.Org(id="o_bench", tenant_id="t_bench", handle="ops", plan=types_pb2.PLAN_TEAM)
        ),
        metadata=SYSTEM,
    )
    for i in range(count):
        await directory.UpsertWorkspace(
            drpc.UpsertWorkspaceRequest(
                workspace=dpb.Workspace(id=f"w_{i:04d}", org_id="o_bench", handle=f"ws{i}")
            ),
            metadata=SYSTEM,
        )


async def flat_integration(integrations: Any, tree: Any, connections: int) -> pb.Integration:
    """Integration `aws` of o_bench, granted to all its workspaces, with `connections` accounts
    under the root ("Account <i>"; handle prefix none)."""
    created: pb.Integration = (
        await integrations.CreateIntegration(
            rpc.CreateIntegrationRequest(
                integration=pb.Integration(
                    handle="aws",
                    scope=types_pb2.Scope(org_id="o_bench"),
                    discovery_access=pb.AwsDiscoveryAccess(
                        role_arn="arn:aws:iam::100000000000:role/d",
                        external_id="o_bench:abcd1234",
                    ),
                    member_access=pb.AwsMemberAccess(role_name="m"),
                ),
                initial_permissions=pb.RootFolderPermissions(
                    mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
                ),
            ),
            metadata=bearer(o_bench="owner"),
        )
    ).integration
    await tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=created.id,
            snapshot=tree_pb.OrganizationSnapshot(
                organization_id="o-benchmark01",
                management_account_id="100000000000",
                root_id="r-bench",
                accounts=[
                    tree_pb.Account(
                        id=f"{100000000000 + i:012d}",
                        name=f"Account {i}",
                        parent_id="r-bench",
                        state="ACTIVE",
                    )
                    for i in range(connections)
                ],
            ),
        ),
        metadata=SYSTEM,
    )
    return created


async def run(
    admin_dsn: str, connections: int = CONNECTIONS, attached: int = ATTACHED, idle: int = IDLE
) -> dict[str, Any]:
    """The figures of one prefix change: `connections` connections, their integration's root
    folder attached to `attached` workspaces, and `idle` more workspaces watched."""
    async with (
        fresh_database(admin_dsn) as dsn,
        processes(dsn, {"CANOPY_COMPACT_EVENTS": "true" if COMPACT_EVENTS else "false"}) as (
            p_address,
            i_address,
        ),
        grpc.aio.insecure_channel(p_address) as p_channel,
        grpc.aio.insecure_channel(
            i_address, options=[("grpc.max_send_message_length", 64 << 20)]
        ) as i_channel,
    ):
        await seed_workspaces(dgrpc.DirectoryServiceStub(p_channel), attached + idle)
        integrations = rpc_grpc.IntegrationServiceStub(i_channel)
        tree = tree_grpc.ConnectionTreeServiceStub(i_channel)
        schemas = wgrpc.WorkspaceSchemaServiceStub(p_channel)
        created = await flat_integration(integrations, tree, connections)
        for i in range(attached):
            for _ in range(200):  # the permissions service projects the tree asynchronously
                try:
                    await schemas.AttachSchema(
                        wrpc.AttachSchemaRequest(
                            workspace_id=f"w_{i:04d}", folder_id=created.root_folder_id
                        ),
                        metadata=SYSTEM,
                    )
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
        print(
            f"  {attached} workspaces attached; starting {attached + idle} watchers",
            file=sys.stderr,
        )
        revisions = [
            (
                await schemas.ListWorkspaceSchemas(
                    wrpc.ListWorkspaceSchemasRequest(workspace_id=f"w_{i:04d}", page_size=1),
                    metadata=SYSTEM,
                )
            ).revision
            for i in range(attached + idle)
        ]
        received: list[float] = []
        per_watcher: dict[int, int] = {}
        last_revision: dict[int, int] = {}
        done = asyncio.Event()
        expected = connections * attached
        ready = 0

        async def watch(i: int) -> None:
            nonlocal ready
            call = watch_stubs[i % len(watch_stubs)].WatchWorkspaceSchemas(
                wrpc.WatchWorkspaceSchemasRequest(
                    workspace_id=f"w_{i:04d}", after_revision=revisions[i]
                ),
                metadata=SYSTEM,
            )
            first = True
            async for reply in call:
                if first:
                    ready += 1
                    first = False
                now = time.perf_counter()
                renamed = sum(1 for e in reply.events if e.HasField("schema_renamed"))
                received.extend([now] * renamed)
                per_watcher[i] = per_watcher.get(i, 0) + renamed
                last_revision[i] = reply.latest_revision
                if len(received) >= expected:
                    done.set()

        # Workspace services are separate clients: 100 streams per connection at most.
        watch_channels = [
            grpc.aio.insecure_channel(p_address) for _ in range((attached + idle + 99) // 100)
        ]
        watch_stubs = [wgrpc.WorkspaceSchemaServiceStub(c) for c in watch_channels]
        watchers = [asyncio.create_task(watch(i)) for i in range(attached + idle)]
        for _ in range(600):  # every watcher has had its first progress message: all live
            if ready >= len(watchers):
                break
            await asyncio.sleep(0.05)
        before, _ = await _log_rows(dsn)
        started = time.perf_counter()
        await integrations.UpdateIntegration(
            rpc.UpdateIntegrationRequest(
                integration=pb.Integration(id=created.id, handle_prefix="aws_"),
                update_mask=FieldMask(paths=["handle_prefix"]),
            ),
            metadata=bearer(o_bench="owner"),
        )
        committed = time.perf_counter()  # the update's transaction has committed

        async def report() -> None:
            while True:
                await asyncio.sleep(5)
                print(f"  … {len(received)} events", file=sys.stderr)

        reporter = asyncio.create_task(report())
        try:
            await asyncio.wait_for(done.wait(), float(os.environ.get("BENCH_TIMEOUT", 300)))
        except TimeoutError:
            short = {i: n for i, n in per_watcher.items() if n < connections and i < attached}
            print(
                f"  short watchers: {short} {[last_revision.get(i) for i in short]}",
                file=sys.stderr,
            )
            raise
        finally:
            reporter.cancel()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            for channel in watch_channels:
                await channel.close()
        head, rows = await _log_rows(dsn, before)
    delays = [t - committed for t in received]
    last = max(received) - committed
    result = {
        "connections": connections,
        "workspaces_attached": attached,
        "watchers": attached + idle,
        "events_expected": expected,
        "events_received": len(received),
        "update_rpc_seconds": round(committed - started, 3),
        "commit_to_last_event_seconds": round(last, 3),
        "events_per_second": round(len(received) / max(last, 1e-9)),
        "compact_events": COMPACT_EVENTS,
        "events_written_per_change": head - before,
        "rows_written_per_change": rows,
        "delay": summary_ms(delays),
    }
    print(f"  {len(received)} events, last after {last:.2f} s", file=sys.stderr)
    return result
