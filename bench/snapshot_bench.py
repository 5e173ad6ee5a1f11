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
from collections.abc import Awaitable, Callable
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


def organization(
    seed: int = 7, accounts: int = ACCOUNTS, units: int = sum(LEVELS)
) -> tree_pb.OrganizationSnapshot:
    """A deterministic organization of the benchmark's shape: `accounts` accounts (the first is
    the management account) in `units` OUs, spread over the levels as LEVELS spreads 1,000."""
    rng = random.Random(seed)
    made: list[tree_pb.OrganizationalUnit] = []
    previous = [ROOT]
    n = 0
    levels = [max(1, size * units // sum(LEVELS)) for size in LEVELS]
    levels[-1] += units - sum(levels)
    for size in levels:
        level = []
        for _ in range(size):
            n += 1
            unit_id = f"ou-b{n % 97:03d}-{n:08d}"
            made.append(
                tree_pb.OrganizationalUnit(
                    id=unit_id,
                    parent_id=rng.choice(previous),
                    name=f"Unit {n} {rng.choice(['Prod', 'Dev', 'Shared'])}",
                )
            )
            level.append(unit_id)
        previous = level
    parents = [ROOT] + [u.id for u in made]
    members = [
        tree_pb.Account(
            id=f"{100000000000 + i:012d}",
            name=f"Team {i % 9000} {rng.choice(['prod', 'staging', 'dev'])}",
            email=f"aws+{i}@example.com",
            parent_id=rng.choice(parents),
            state="ACTIVE" if i % 50 else "SUSPENDED",
        )
        for i in range(accounts)
    ]
    return tree_pb.OrganizationSnapshot(
        organization_id="o-benchmark01",
        management_account_id="100000000000",
        root_id=ROOT,
        organizational_units=made,
        accounts=members,
    )


def one_percent_changed(base: tree_pb.OrganizationSnapshot) -> tree_pb.OrganizationSnapshot:
    """Half of 1% of the accounts renamed, half moved to another OU."""
    changed = tree_pb.OrganizationSnapshot()
    changed.CopyFrom(base)
    rng = random.Random(11)
    picks = rng.sample(range(len(base.accounts)), len(base.accounts) // 100)
    units = [u.id for u in base.organizational_units]
    for k, i in enumerate(picks):
        if k % 2:
            changed.accounts[i].name += " renamed"
        else:
            changed.accounts[i].parent_id = rng.choice(units)
    return changed


async def create_integration(
    channel: grpc.aio.Channel,
    role_arn: str = "arn:aws:iam::100000000000:role/canopy",
    external_id: str = "t_bench:abcd1234",
) -> pb.Integration:
    """The integration the snapshots are applied to, in tenant t_bench."""
    created = await rpc_grpc.IntegrationServiceStub(channel).CreateIntegration(
        rpc.CreateIntegrationRequest(
            integration=pb.Integration(
                handle="bench",
                scope=types_pb2.Scope(tenant_id="t_bench"),
                discovery_access=pb.AwsDiscoveryAccess(role_arn=role_arn, external_id=external_id),
                member_access=pb.AwsMemberAccess(role_name="canopy-member"),
            )
        ),
        metadata=bearer(t_bench="owner"),
    )
    return created.integration


async def measure_applies(
    channel: grpc.aio.Channel,
    integration_id: str,
    base: tree_pb.OrganizationSnapshot,
    changed: tree_pb.OrganizationSnapshot,
    runs: int = RUNS,
    settle: Callable[[], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """`base` applied to the integration's empty tree, again unchanged (`runs` times), and
    `changed` (`runs` times, `base` re-applied after each): the median run of each. `settle`,
    if given, is awaited after the first apply: the state a later sync finds."""
    tree = tree_grpc.ConnectionTreeServiceStub(channel)
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

    results: dict[str, Any] = {}
    measured: dict[str, list[tuple[float, Any]]] = {"first": [await apply(base)]}
    if settle is not None:
        await settle()
    measured["unchanged"] = [await apply(base) for _ in range(runs)]
    measured["one_percent"] = []
    for _ in range(runs):
        measured["one_percent"].append(await apply(changed))
        await apply(base)
    for name, found in measured.items():
        seconds, reply = sorted(found, key=lambda run: run[0])[len(found) // 2]
        results[name] = {
            "seconds": round(seconds, 3),
            "outcome": tree_pb.ApplyOutcome.Name(reply.outcome),
            "rows_written": reply.summary.rows_written,
            "events_emitted": reply.summary.events_emitted,
            "connections_created": reply.summary.connections_created,
            "connections_renamed": reply.summary.connections_renamed,
            "connections_moved": reply.summary.connections_moved,
        }
        if len(found) > 1:
            results[name]["runs_seconds"] = [round(run[0], 3) for run in found]
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


MESSAGE_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]


async def run(admin_dsn: str) -> dict[str, Any]:
    """Times, rows written and events emitted by the three applies."""
    base = organization()
    results: dict[str, Any] = {
        "accounts": ACCOUNTS,
        "organizational_units": len(base.organizational_units),
        "snapshot_bytes": base.ByteSize(),
    }
    async with (
        fresh_database(admin_dsn) as dsn,
        in_process(dsn) as services,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{services.integration.port}", options=MESSAGE_OPTIONS
        ) as channel,
    ):
        created = await create_integration(channel)
        results.update(await measure_applies(channel, created.id, base, one_percent_changed(base)))
    return results
