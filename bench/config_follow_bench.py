"""`canopy workspace config --follow` under organization changes: 5,000 accounts in 500 OUs,
the root attached to one workspace, the command following it into a directory as a process of
its own (as the sidecar runs). The services run in this process.

Reported under `workspace_config`:
- `follow_delay`: for single account renames applied with ApplyDiscoverySnapshot by a system
  caller, the time from the change's commit to the rename that makes the render holding the new
  name current (p50 / p99 / max / mean). The commit's time is when ApplyDiscoverySnapshot
  returned (the commit precedes it by the reply's trip: the figure errs low by that much); the
  rename's is the mtime of the new `..data` symlink, made just before it is renamed into place.
  Target: p99 < 10 s.
- `prefix_change_rewrite_ms`: for handle prefix changes (every schema renamed), from
  UpdateIntegration's return to the rename of the first render in which all 5,000 names carry
  the new prefix (each run, and the worst). Target: < 2 s.

BENCH_FOLLOW_ACCOUNTS, _UNITS, _CHANGES, _PREFIX_CHANGES and _COALESCE change the sizes;
BENCH_FOLLOW_VERBOSE=1 shows the command's own output.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from bench.services import SECRET, SYSTEM, bearer, common_settings, free_port, seed
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
from canopy_cli.outdir import DATA, STATE
from canopy_core.auth import mint_token
from canopy_core.server import serve, tune_gc
from canopy_integration.server import spec as integration_spec
from canopy_integration.settings import IntegrationSettings
from canopy_permissions.server import spec as permissions_spec
from canopy_permissions.settings import PermissionsSettings

ACCOUNTS = int(os.environ.get("BENCH_FOLLOW_ACCOUNTS", 5_000))
UNITS = int(os.environ.get("BENCH_FOLLOW_UNITS", 500))
CHANGES = int(os.environ.get("BENCH_FOLLOW_CHANGES", 20))
PREFIX_CHANGES = int(os.environ.get("BENCH_FOLLOW_PREFIX_CHANGES", 3))
COALESCE = float(os.environ.get("BENCH_FOLLOW_COALESCE", 0.5))
BLOCK = re.compile(rb'^connection\s+"([a-z0-9_]+)"\s*\{(.*?)^\}', re.MULTILINE | re.DOTALL)
AGGREGATOR = re.compile(rb'^\s*type\s*=\s*"aggregator"', re.MULTILINE)
ORG_OWNER = bearer(o_bench="owner")


def organization(renamed: dict[int, str]) -> tree_pb.OrganizationSnapshot:
    """ACCOUNTS accounts in UNITS OUs (two levels), some renamed."""
    units = [
        tree_pb.OrganizationalUnit(
            id=f"ou-bench-{u:08d}",
            parent_id="r-bench" if u < UNITS // 10 else f"ou-bench-{u % (UNITS // 10):08d}",
            name=f"Unit {u}",
        )
        for u in range(UNITS)
    ]
    accounts = [
        tree_pb.Account(
            id=f"{100000000000 + i:012d}",
            name=renamed.get(i, f"Account {i}"),
            parent_id=f"ou-bench-{i % UNITS:08d}",
            state="ACTIVE",
        )
        for i in range(ACCOUNTS)
    ]
    return tree_pb.OrganizationSnapshot(
        organization_id="o-benchmark01",
        management_account_id="100000000000",
        root_id="r-bench",
        organizational_units=units,
        accounts=accounts,
    )


def connections(out: Path) -> set[bytes]:
    """The schemas the current .spc connects (its aggregators left out)."""
    text = (out / DATA / "aws.spc").read_bytes()
    return {name for name, body in BLOCK.findall(text) if not AGGREGATOR.search(body)}


def holding(name: bytes) -> Callable[[set[bytes]], bool]:
    return lambda names: name in names


def all_prefixed(prefix: bytes) -> Callable[[set[bytes]], bool]:
    return lambda names: len(names) == ACCOUNTS and all(n.startswith(prefix) for n in names)


async def swapped_to(out: Path, holds: Callable[[set[bytes]], bool], timeout: float = 60) -> float:
    """Wait until the current render satisfies `holds`; when its `..data` was made."""
    deadline = time.monotonic() + timeout
    checked = None  # each render is read once
    while time.monotonic() < deadline:
        try:
            current = os.readlink(out / DATA)
            if current != checked:
                made = os.lstat(out / DATA).st_mtime_ns / 1e9
                if holds(connections(out)) and os.readlink(out / DATA) == current:
                    return made
                checked = current
        except OSError:
            pass
        await asyncio.sleep(0.005)
    raise TimeoutError(f"the files in {out} never showed the change")


async def run(admin_dsn: str) -> dict[str, Any]:
    """The figures of single renames and prefix changes followed into a directory."""
    async with fresh_database(admin_dsn) as dsn:
        integration_port, permissions_port = free_port(), free_port()
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
        tune_gc()
        process: asyncio.subprocess.Process | None = None
        try:
            async with (
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
                            id="o_bench",
                            tenant_id="t_bench",
                            handle="ops",
                            plan=types_pb2.PLAN_TEAM,
                        )
                    ),
                    metadata=SYSTEM,
                )
                await directory.UpsertWorkspace(
                    drpc.UpsertWorkspaceRequest(
                        workspace=dpb.Workspace(id="w_bench", org_id="o_bench", handle="bench")
                    ),
                    metadata=SYSTEM,
                )
                integrations = rpc_grpc.IntegrationServiceStub(i_channel)
                tree = tree_grpc.ConnectionTreeServiceStub(i_channel)
                schemas = wgrpc.WorkspaceSchemaServiceStub(p_channel)
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
                                member_access=pb.AwsMemberAccess(role_name="m"),
                            ),
                            initial_permissions=pb.RootFolderPermissions(
                                mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
                            ),
                        ),
                        metadata=ORG_OWNER,
                    )
                ).integration

                async def apply(renamed: dict[int, str]) -> None:
                    current = await integrations.GetIntegration(
                        rpc.GetIntegrationRequest(id=created.id), metadata=SYSTEM
                    )
                    await tree.ApplyDiscoverySnapshot(
                        tree_rpc.ApplyDiscoverySnapshotRequest(
                            integration_id=created.id,
                            snapshot=organization(renamed),
                            expected_generation=current.integration.tree_generation,
                        ),
                        metadata=SYSTEM,
                    )

                await apply({})
                for attempt in range(600):  # permissions projects the tree asynchronously
                    try:
                        await schemas.AttachSchema(
                            wrpc.AttachSchemaRequest(
                                workspace_id="w_bench", folder_id=created.root_folder_id
                            ),
                            metadata=SYSTEM,
                        )
                        break
                    except grpc.aio.AioRpcError:
                        if attempt == 599:
                            raise
                        await asyncio.sleep(0.1)
                out = Path(tempfile.mkdtemp(prefix="canopy-bench-follow-")) / "config"
                token = mint_token(SECRET, "bench", system=True, ttl_seconds=3600)
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    "from canopy_cli.main import app; app()",
                    "workspace",
                    "config",
                    "w_bench",
                    "--out",
                    str(out),
                    "--follow",
                    "--coalesce",
                    str(COALESCE),
                    env={
                        **os.environ,
                        "CANOPY_TOKEN": token,
                        "CANOPY_PERMISSIONS_ADDRESS": f"127.0.0.1:{permissions.port}",
                    },
                    stdout=None
                    if os.environ.get("BENCH_FOLLOW_VERBOSE")
                    else asyncio.subprocess.DEVNULL,
                    stderr=None
                    if os.environ.get("BENCH_FOLLOW_VERBOSE")
                    else asyncio.subprocess.DEVNULL,
                )
                expected = {f"account_{i}".encode() for i in range(ACCOUNTS)}
                await swapped_to(out, lambda names: names == expected, timeout=300)
                assert (out / STATE).exists()
                print(f"  {ACCOUNTS} schemas on disk; {CHANGES} renames", file=sys.stderr)

                delays: list[float] = []
                renamed: dict[int, str] = {}
                for n in range(CHANGES):
                    account = (n * 997) % ACCOUNTS
                    renamed[account] = f"Renamed {n}"
                    await apply(renamed)
                    committed = time.time()
                    made = await swapped_to(out, holding(f"renamed_{n}".encode()))
                    delays.append(made - committed)

                print(f"  {PREFIX_CHANGES} prefix changes", file=sys.stderr)
                rewrites: list[float] = []
                for n in range(PREFIX_CHANGES):
                    prefix = f"p{n}_"
                    await integrations.UpdateIntegration(
                        rpc.UpdateIntegrationRequest(
                            integration=pb.Integration(id=created.id, handle_prefix=prefix),
                            update_mask=FieldMask(paths=["handle_prefix"]),
                        ),
                        metadata=ORG_OWNER,
                    )
                    committed = time.time()
                    made = await swapped_to(out, all_prefixed(prefix.encode()))
                    rewrites.append(made - committed)
        finally:
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
            await integration.stop()
            await permissions.stop()
    return {
        "schemas": ACCOUNTS,
        "folders": UNITS,
        "coalesce_s": COALESCE,
        "follow_delay": summary_ms(delays),
        "prefix_change_rewrite_ms": {
            "runs": [round(r * 1000, 1) for r in rewrites],
            "max": round(max(rewrites) * 1000, 1),
        },
    }
