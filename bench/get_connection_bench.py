"""GetConnection throughput with 32 concurrent callers, each reading a connection of its own: the
integration service (token check, database read, effective configuration) against a bare
grpc.aio server returning the same bytes, both as separate processes running side by side,
measured in turns (bare, service, bare, …) so that a slow moment of a shared machine does not
land on one of them only; the medians of the turns are compared."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from bench.services import SECRET, SYSTEM, bearer, in_process, subprocess_service
from bench.support import fresh_database
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.type.v1 import types_pb2

CALLERS = 32
WARMUP_SECONDS = 1.0
SECONDS = 2.0  # per turn
TURNS = 3


async def _throughput(address: str, connection_ids: list[str], metadata: Any) -> dict[str, Any]:
    """Calls per second with CALLERS concurrent callers on one channel, each asking for a
    connection of its own (the service reads no row for two callers at once)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = tree_grpc.ConnectionTreeServiceStub(channel)
        counting = False
        calls = 0
        errors = 0
        stop_at = time.perf_counter() + WARMUP_SECONDS + SECONDS

        async def caller(connection_id: str) -> None:
            nonlocal calls, errors
            request = tree_rpc.GetConnectionRequest(id=connection_id)
            while time.perf_counter() < stop_at:
                try:
                    await stub.GetConnection(request, metadata=metadata, timeout=10)
                    if counting:
                        calls += 1
                except grpc.aio.AioRpcError:
                    errors += 1

        tasks = [asyncio.create_task(caller(connection_ids[i])) for i in range(CALLERS)]
        await asyncio.sleep(WARMUP_SECONDS)
        counting = True
        started = time.perf_counter()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {"calls_per_second": round(calls / elapsed), "errors": errors}


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run, with every run's rate beside it."""
    ordered = sorted(runs, key=lambda r: r["calls_per_second"])
    return {
        **ordered[len(ordered) // 2],
        "runs_calls_per_second": [r["calls_per_second"] for r in runs],
        "errors": sum(r["errors"] for r in runs),
    }


async def run(admin_dsn: str) -> dict[str, Any]:
    """Both throughputs and their ratio."""
    async with fresh_database(admin_dsn) as dsn:
        async with (
            in_process(dsn) as services,
            grpc.aio.insecure_channel(f"127.0.0.1:{services.integration.port}") as ch,
        ):
            created = await rpc_grpc.IntegrationServiceStub(ch).CreateIntegration(
                rpc.CreateIntegrationRequest(
                    integration=pb.Integration(
                        handle="bench",
                        scope=types_pb2.Scope(tenant_id="t_bench"),
                        discovery_access=pb.AwsDiscoveryAccess(
                            role_arn="arn:aws:iam::100000000000:role/canopy",
                            external_id="t_bench:abcd1234",
                        ),
                        member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                    )
                ),
                metadata=bearer(t_bench="owner"),
            )
            tree = tree_grpc.ConnectionTreeServiceStub(ch)
            await tree.ApplyDiscoverySnapshot(
                tree_rpc.ApplyDiscoverySnapshotRequest(
                    integration_id=created.integration.id,
                    snapshot=tree_pb.OrganizationSnapshot(
                        organization_id="o-benchmark01",
                        management_account_id="100000000000",
                        root_id="r-bench",
                        accounts=[
                            tree_pb.Account(
                                id=f"{100000000000 + i:012d}",
                                name=f"Account {i}",
                                email=f"a{i}@example.com",
                                parent_id="r-bench",
                                state="ACTIVE",
                            )
                            for i in range(100)
                        ],
                    ),
                ),
                metadata=SYSTEM,
            )
            listed = await tree.ListConnections(
                tree_rpc.ListConnectionsRequest(
                    integration_id=created.integration.id, page_size=CALLERS
                ),
                metadata=SYSTEM,
            )
            connection_ids = [c.id for c in listed.connections[:CALLERS]]
            reply = await tree.GetConnection(
                tree_rpc.GetConnectionRequest(id=connection_ids[0]), metadata=SYSTEM
            )
        response_file = Path(tempfile.mkdtemp(prefix="canopy-bench-echo-")) / "response.bin"
        response_file.write_bytes(reply.SerializeToString())
        member = bearer(subject="reader", t_bench="member")
        env = {
            "CANOPY_DATABASE_URL": dsn,
            "CANOPY_DB_SCHEMA": "integration",
            "CANOPY_JWT_SECRET": SECRET,
            "CANOPY_METRICS_PORT": "none",
            "CANOPY_LOG_LEVEL": "WARNING",
            "CANOPY_DATA_DIR": str(response_file.parent),
            "ECHO_RESPONSE_FILE": str(response_file),
        }
        async with (
            subprocess_service("bench.echo_server", env) as bare_address,
            subprocess_service("canopy_integration", env) as service_address,
        ):
            turns: dict[str, list[dict[str, Any]]] = {"bare": [], "service": []}
            for _ in range(TURNS):
                turns["bare"].append(await _throughput(bare_address, connection_ids, member))
                turns["service"].append(await _throughput(service_address, connection_ids, member))
        bare, service = _median(turns["bare"]), _median(turns["service"])
    print(
        f"  GetConnection/s: bare {bare['calls_per_second']}, service {service['calls_per_second']}",
        file=sys.stderr,
    )
    return {
        "callers": CALLERS,
        "seconds_per_turn": SECONDS,
        "turns": TURNS,
        "response_bytes": reply.ByteSize(),
        "bare_grpc_aio": bare,
        "integration_service": service,
        "service_vs_bare": round(service["calls_per_second"] / max(bare["calls_per_second"], 1), 3),
    }
