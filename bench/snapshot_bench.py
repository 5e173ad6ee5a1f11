"""Applying discovery snapshots: 10,000 accounts in 1,000 OUs five levels deep, to an empty
tree, again unchanged, and again with 1% of the accounts renamed or moved.

The unchanged and the 1% applies take a tenth of the first, so a checkpoint or an autovacuum of
the shared server weighs on one run of them far more: each is measured RUNS times (the 1% change
from the base tree each time, the base re-applied in between, unmeasured) and the median run is
reported, with every run's time beside it."""

from __future__ import annotations

import random
import sys
import time
from typing import Any

import grpc

from bench.services import SYSTEM, bearer, in_process
from bench.support import fresh_database
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.type.v1 import types_pb2

LEVELS = (10, 40, 150, 300, 500)  # 1,000 OUs
ACCOUNTS = 10_000
ROOT = "r-bench"
RUNS = 3


def organization(seed: int = 7) -> tree_pb.OrganizationSnapshot:
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
                    id=unit_id,
                    parent_id=rng.choice(previous),
                    name=f"Unit {n} {rng.choice(['Prod', 'Dev', 'Shared'])}",
                )
            )
            level.append(unit_id)
        previous = level
    parents = [ROOT] + [u.id for u in units]
    accounts = [
        tree_pb.Account(
            id=f"{100000000000 + i:012d}",
            name=f"Team {i % 9000} {rng.choice(['prod', 'staging', 'dev'])}",
            email=f"aws+{i}@example.com",
            parent_id=rng.choice(parents),
            state="ACTIVE" if i % 50 else "SUSPENDED",
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


def one_percent_changed(base: tree_pb.OrganizationSnapshot) -> tree_pb.OrganizationSnapshot:
    """Half of 1% of the accounts renamed, half moved to another OU."""
    changed = tree_pb.OrganizationSnapshot()
    changed.CopyFrom(base)
    rng = random.Random(11)
    picks = rng.sample(range(ACCOUNTS), ACCOUNTS // 100)
    units = [u.id for u in base.organizational_units]
    for k, i in enumerate(picks):
        if k % 2:
            changed.accounts[i].name += " renamed"
        else:
            changed.accounts[i].parent_id = rng.choice(units)
    return changed


async def run(admin_dsn: str) -> dict[str, Any]:
    """Times, rows written and events emitted by the three applies."""
    base = organization()
    changed = one_percent_changed(base)
    results: dict[str, Any] = {
        "accounts": ACCOUNTS,
        "organizational_units": len(base.organizational_units),
        "snapshot_bytes": base.ByteSize(),
    }
    async with fresh_database(admin_dsn) as dsn, in_process(dsn) as services:
        options = [
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
        ]
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{services.integration.port}", options=options
        ) as channel:
            integrations = rpc_grpc.IntegrationServiceStub(channel)
            tree = tree_grpc.ConnectionTreeServiceStub(channel)
            created = await integrations.CreateIntegration(
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
            integration_id = created.integration.id
            generation = 0

            async def apply(snap: tree_pb.OrganizationSnapshot) -> tuple[float, Any]:
                nonlocal generation
                started = time.perf_counter()
                reply = await tree.ApplyDiscoverySnapshot(
                    tree_rpc.ApplyDiscoverySnapshotRequest(
                        integration_id=integration_id,
                        snapshot=snap,
                        expected_generation=generation,
                        confirm_deletions=True,
                    ),
                    metadata=SYSTEM,
                    timeout=600,
                )
                generation = reply.generation
                return time.perf_counter() - started, reply

            measured: dict[str, list[tuple[float, Any]]] = {"first": [await apply(base)]}
            measured["unchanged"] = [await apply(base) for _ in range(RUNS)]
            measured["one_percent"] = []
            for _ in range(RUNS):
                measured["one_percent"].append(await apply(changed))
                await apply(base)
            for name, runs in measured.items():
                seconds, reply = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
                results[name] = {
                    "seconds": round(seconds, 3),
                    "outcome": tree_pb.ApplyOutcome.Name(reply.outcome),
                    "rows_written": reply.summary.rows_written,
                    "events_emitted": reply.summary.events_emitted,
                    "connections_created": reply.summary.connections_created,
                    "connections_renamed": reply.summary.connections_renamed,
                    "connections_moved": reply.summary.connections_moved,
                }
                if len(runs) > 1:
                    results[name]["runs_seconds"] = [round(run[0], 3) for run in runs]
                print(
                    f"  apply {name}: {seconds:.2f} s, {reply.summary.rows_written} rows",
                    file=sys.stderr,
                )
    results["unchanged_vs_first"] = round(
        results["unchanged"]["seconds"] / results["first"]["seconds"], 3
    )
    results["one_percent_vs_first"] = round(
        results["one_percent"]["seconds"] / results["first"]["seconds"], 3
    )
    return results
