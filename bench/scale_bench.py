"""Cost curves: how each cost grows with the organization (1,000 / 10,000 / 50,000 accounts, OUs
at a tenth, five levels deep) and with the workspaces of one change (10 / 100 / 1,000).

Per organization size, on a fresh database, the permissions, integration and discovery services
run as processes (as an operator runs them), so that each one's peak resident memory
(`VmHWM` of /proc/PID/status, at the end of the size's run) is its own:
- `apply`: the organization (`snapshot_bench.organization`, scaled) applied with
  ApplyDiscoverySnapshot to an empty tree, again unchanged, and again with 1 % of the accounts
  renamed or moved (`snapshot_bench.measure_applies`: medians of RUNS). The re-applies are
  measured as a later sync meets them: after `share` (below), once the permissions service has
  followed the first apply's events. Right after a first apply of 50,000 accounts, it is still
  projecting them, on the same CPUs, and an unchanged re-apply then takes about three times as
  long (1.1 s against 0.35 s on 2 CPUs).
- `crawl`: the discovery service syncs the integration (SyncIntegration, then WatchSyncRun to its
  end) against a replaying FaultProxy (`crawl_bench.ReplayProcess`, 50 ms added to every call)
  whose answers are made from the very snapshot applied: the Organizations API's answers
  for it, 20 to a page, as the crawler asks for them (`organizations_recording`). moto answers
  an organization of 50,000 accounts far too slowly to record one (it filters every account on
  each listing), so nothing here is moto's; `proxy_misses` (requests with no recorded answer)
  must be 0 and the run must apply nothing new: the crawl found exactly the organization. The
  crawl runs at concurrency 32 (CANOPY_CRAWL_CONCURRENCY; the default is 8). Reported: its
  Organizations calls, the run's crawl time (progress.elapsed) and the whole run's.
- `share`: right after the first apply, `projection_seconds` until the permissions service has
  followed its tree events (its cursor, read from its table, reaches the tree log's head); then
  the integration's root folder (granted to every org of the tenant) attached to one workspace
  (`attach_seconds`: the AttachSchema call, which adds every schema), and one render of the
  workspace's configuration (RenderWorkspaceConfig, every schema in it), with its bytes.
- `read`: GetConnectionTree (one message: its bytes) and ListConnections over every page
  (100 a page, the most a page holds), each timed once.
- `peak_rss_mib` of each service.

`schema_streams`: `sharing_bench.run` with STREAM_CONNECTIONS connections, the handle prefix
changed with 10 / 100 / 1,000 workspaces attached (and watched): commit to the last
SchemaRenamed.

`growth_exponents`: per curve, log(cost_largest / cost_smallest) / log(size_largest /
size_smallest): 1 is linear, below 1 better. `targets_met`: every exponent <= 1.1 (noise),
unchanged re-apply < 10 % of the first at the largest size, each service < 1 GiB resident there.
`slow_test`: the 50,000-account end-to-end test (`pytest -m slow tests/e2e/test_scale.py`), its
outcome and time.

BENCH_SCALE_SIZES / BENCH_SCALE_WORKSPACES (comma-separated) pick other sizes;
BENCH_SCALE_SLOW_TEST=0 skips the slow test.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from bench import crawl_bench, sharing_bench, snapshot_bench
from bench.services import SYSTEM, ChildService, bearer, child_service, free_port, process_env
from bench.support import fresh_database
from bench.workspace_config_bench import render_rpc
from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.discovery.v1 import discovery_service_pb2_grpc as dgrpc
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_pb2
from canopy.permissions.v1 import directory_service_pb2 as dir_rpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dir_grpc
from canopy.permissions.v1 import workspace_config_service_pb2_grpc as cgrpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2
from canopy_discovery.aws import DEFAULT_SESSION_SECONDS, SESSION_NAME
from canopy_discovery.crawler import PAGE_SIZE
from canopy_permissions.projection import CURSOR as PROJECTION_CURSOR


def _sizes(variable: str, default: tuple[int, ...]) -> tuple[int, ...]:
    configured = os.environ.get(variable)
    return tuple(int(n) for n in configured.split(",")) if configured else default


SIZES = _sizes("BENCH_SCALE_SIZES", (1_000, 10_000, 50_000))
WORKSPACES = _sizes("BENCH_SCALE_WORKSPACES", (10, 100, 1_000))
STREAM_CONNECTIONS = 100  # per workspace: 1,000 workspaces are 100,000 SchemaRenamed
RUNS = 3
WORKSPACE = "w_scale"
GIB = 1 << 30
ROOT_DIR = Path(__file__).resolve().parent.parent
SLOW_TEST = "tests/e2e/test_scale.py"
OPTIONS = snapshot_bench.MESSAGE_OPTIONS
# The integration's (crawl_bench's has a 9-character suffix: its crawls need no integration).
EXTERNAL_ID = "t_bench:scale001"


def _log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# The Organizations API's answers for a snapshot

_ASSUME_ROLE_ANSWER = (
    '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
    "<Credentials><AccessKeyId>ASIABENCHSCALE000001</AccessKeyId>"
    "<SecretAccessKey>benchscalesecret</SecretAccessKey><SessionToken>benchscaletoken"
    "</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration></Credentials>"
    "<AssumedRoleUser><AssumedRoleId>AROABENCHSCALE:{session}</AssumedRoleId>"
    "<Arn>arn:aws:sts::{account}:assumed-role/canopy-discovery/{session}</Arn>"
    "</AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>bench</RequestId>"
    "</ResponseMetadata></AssumeRoleResponse>"
)


def organizations_recording(snapshot: tree_pb.OrganizationSnapshot) -> dict[str, Any]:
    """What a recording FaultProxy would have kept of a crawl of `snapshot` (AssumeRole of
    crawl_bench's role, then every listing, PAGE_SIZE to a page): `FaultProxy.load`'s format."""
    org_id, management = snapshot.organization_id, snapshot.management_account_id
    arn = f"arn:aws:organizations::{management}"
    kept: dict[str, Any] = {}

    def keep(operation: str, sent: dict[str, Any], answer: dict[str, Any]) -> None:
        key = f"organizations {operation} {json.dumps(sent, sort_keys=True)}"
        kept[key] = {
            "status": 200,
            "content_type": "application/x-amz-json-1.1",
            "body": json.dumps(answer),
        }

    asked = {
        "Action": "AssumeRole",
        "DurationSeconds": DEFAULT_SESSION_SECONDS,
        "ExternalId": EXTERNAL_ID,
        "RoleArn": crawl_bench.ROLE_ARN,
        "RoleSessionName": SESSION_NAME,
        "Version": "2011-06-15",
    }
    kept["sts AssumeRole " + "&".join(f"{k}={v}" for k, v in sorted(asked.items()))] = {
        "status": 200,
        "content_type": "text/xml",
        "body": _ASSUME_ROLE_ANSWER.format(session=SESSION_NAME, account=management),
    }
    keep(
        "DescribeOrganization",
        {},
        {
            "Organization": {
                "Id": org_id,
                "Arn": f"{arn}:organization/{org_id}",
                "FeatureSet": "ALL",
                "MasterAccountArn": f"{arn}:account/{org_id}/{management}",
                "MasterAccountId": management,
                "MasterAccountEmail": "management@example.com",
            }
        },
    )
    root = snapshot.root_id
    keep("ListRoots", {}, {"Roots": [{"Id": root, "Arn": f"{arn}:root/{org_id}/{root}"}]})
    units: dict[str, list[dict[str, Any]]] = {root: []}
    accounts: dict[str, list[dict[str, Any]]] = {root: []}
    for unit in snapshot.organizational_units:
        units[unit.id], accounts[unit.id] = [], []
    for unit in snapshot.organizational_units:
        units[unit.parent_id].append(
            {"Id": unit.id, "Arn": f"{arn}:ou/{org_id}/{unit.id}", "Name": unit.name}
        )
    for account in snapshot.accounts:
        accounts[account.parent_id].append(
            {
                "Id": account.id,
                "Arn": f"{arn}:account/{org_id}/{account.id}",
                "Email": account.email,
                "Name": account.name,
                "Status": account.state,
                "State": account.state,
            }
        )
    for operation, key, listing in (
        ("ListOrganizationalUnitsForParent", "OrganizationalUnits", units),
        ("ListAccountsForParent", "Accounts", accounts),
    ):
        for parent, found in listing.items():
            pages = [found[i : i + PAGE_SIZE] for i in range(0, len(found), PAGE_SIZE)] or [[]]
            for n, page in enumerate(pages):
                sent: dict[str, Any] = {"MaxResults": PAGE_SIZE, "ParentId": parent}
                if n:
                    sent["NextToken"] = f"{parent}/{n}"
                answer: dict[str, Any] = {key: page}
                if n + 1 < len(pages):
                    answer["NextToken"] = f"{parent}/{n + 1}"
                keep(operation, sent, answer)
    return kept


# One organization size


async def _setup(p_channel: grpc.aio.Channel, i_channel: grpc.aio.Channel) -> pb.Integration:
    """Tenant t_bench with an org and workspace WORKSPACE; the integration, its root folder
    granted to every org of the tenant, with crawl_bench's discovery role."""
    directory = dir_grpc.DirectoryServiceStub(p_channel)
    await directory.UpsertTenant(
        dir_rpc.UpsertTenantRequest(
            tenant=directory_pb2.Tenant(
                id="t_bench", handle="bench", plan=types_pb2.PLAN_ENTERPRISE
            )
        ),
        metadata=SYSTEM,
    )
    await directory.UpsertOrg(
        dir_rpc.UpsertOrgRequest(
            org=directory_pb2.Org(
                id="o_bench", tenant_id="t_bench", handle="ops", plan=types_pb2.PLAN_TEAM
            )
        ),
        metadata=SYSTEM,
    )
    await directory.UpsertWorkspace(
        dir_rpc.UpsertWorkspaceRequest(
            workspace=directory_pb2.Workspace(id=WORKSPACE, org_id="o_bench", handle="scale")
        ),
        metadata=SYSTEM,
    )
    created = await rpc_grpc.IntegrationServiceStub(i_channel).CreateIntegration(
        rpc.CreateIntegrationRequest(
            integration=pb.Integration(
                handle="bench",
                scope=types_pb2.Scope(tenant_id="t_bench"),
                discovery_access=pb.AwsDiscoveryAccess(
                    role_arn=crawl_bench.ROLE_ARN, external_id=EXTERNAL_ID
                ),
                member_access=pb.AwsMemberAccess(role_name="canopy-member"),
            ),
            initial_permissions=pb.RootFolderPermissions(
                mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_ORGS
            ),
        ),
        metadata=bearer(t_bench="owner"),
    )
    return created.integration


def _discovery_env(env: dict[str, str], replay: crawl_bench.ReplayProcess) -> dict[str, str]:
    """The discovery service's environment: AWS is the replay; crawls at concurrency 32."""
    return {
        **env,
        "CANOPY_AWS_ENDPOINT_URL": replay.url,
        "CANOPY_AWS_ACCESS_KEY_ID": "testing",
        "CANOPY_AWS_SECRET_ACCESS_KEY": "testing",
        "CANOPY_CRAWL_CONCURRENCY": str(crawl_bench.CONCURRENCY),
        "CANOPY_CRAWL_TIMEOUT": "1800",
        "CANOPY_SCHEDULER_POLL_INTERVAL": "0.5",
    }


async def _crawl(
    discovery: ChildService, replay: crawl_bench.ReplayProcess, integration_id: str
) -> dict[str, Any]:
    """A sync of the integration by the discovery service, to its end, against the replay
    (cleared before the service started: it syncs a new integration at once, on its own)."""
    async with grpc.aio.insecure_channel(discovery.address, options=OPTIONS) as channel:
        stub = dgrpc.DiscoveryServiceStub(channel)
        run = (
            await stub.SyncIntegration(
                drpc.SyncIntegrationRequest(integration_id=integration_id),
                metadata=bearer(t_bench="owner"),
            )
        ).run
        async for reply in stub.WatchSyncRun(
            drpc.WatchSyncRunRequest(id=run.id), metadata=SYSTEM, timeout=1800
        ):
            run = reply.run
            if run.state not in (dpb.SYNC_RUN_STATE_QUEUED, dpb.SYNC_RUN_STATE_RUNNING):
                break
    seconds = (run.end_time.ToDatetime() - run.start_time.ToDatetime()).total_seconds()
    served = await replay.command("stats")
    figures = {
        "state": dpb.SyncRunState.Name(run.state),
        "apply_outcome": tree_pb.ApplyOutcome.Name(run.apply_outcome),
        "rows_written": run.summary.rows_written,
        "failure": run.failure_message,
        "api_calls": run.progress.api_calls,
        "accounts_found": run.progress.accounts_found,
        "organizational_units_found": run.progress.organizational_units_found,
        "crawl_seconds": round(run.progress.elapsed.ToTimedelta().total_seconds(), 3),
        "run_seconds": round(seconds, 3),
        "proxy_requests": served["requests"],
        "proxy_misses": served["misses"],
    }
    _log(f"crawl: {figures['api_calls']} calls, {figures['crawl_seconds']} s ({figures['state']})")
    return figures


async def _projected(dsn: str) -> float:
    """Seconds until the permissions service has followed the integration service's tree log to
    its head (read from both services' tables: a bench may look; services never do)."""
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        head = await conn.fetchval("SELECT revision FROM integration.event_log_head")
        while time.perf_counter() - started < 900:
            cursor = await conn.fetchval(
                "SELECT revision FROM permissions.consumer_cursors WHERE consumer = $1",
                PROJECTION_CURSOR.consumer,
            )
            if cursor is not None and cursor >= head:
                break
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _share(
    dsn: str, p_channel: grpc.aio.Channel, folder_id: str, schemas: int
) -> dict[str, Any]:
    """Right after the first apply: until the permissions service has projected it; attach the
    root folder to WORKSPACE; time a render holding every schema."""
    projected = await _projected(dsn)
    attach = wgrpc.WorkspaceSchemaServiceStub(p_channel)
    renders = cgrpc.WorkspaceConfigServiceStub(p_channel)
    started = time.perf_counter()
    await attach.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id=WORKSPACE, folder_id=folder_id),
        metadata=SYSTEM,
        timeout=300,
    )
    attached = time.perf_counter() - started
    started = time.perf_counter()
    header, received = await render_rpc(renders, WORKSPACE, timeout=300)
    render = time.perf_counter() - started
    seen = sum(1 for name in header.search_path if "__" not in name)
    if seen != schemas:
        raise AssertionError(f"the render holds {seen} schemas, not {schemas}")
    _log(
        f"projected in {projected:.1f} s, attached {seen} schemas in {attached:.2f} s; "
        f"render {render:.2f} s, {received} bytes"
    )
    return {
        "schemas": seen,
        "projection_seconds": round(projected, 3),
        "attach_seconds": round(attached, 3),
        "render_seconds": round(render, 3),
        "render_bytes": received,
    }


async def _read(i_channel: grpc.aio.Channel, integration_id: str) -> dict[str, Any]:
    """GetConnectionTree once, and ListConnections over every page."""
    tree = tree_grpc.ConnectionTreeServiceStub(i_channel)
    started = time.perf_counter()
    whole = await tree.GetConnectionTree(
        tree_rpc.GetConnectionTreeRequest(integration_id=integration_id),
        metadata=SYSTEM,
        timeout=300,
    )
    tree_seconds = time.perf_counter() - started
    started = time.perf_counter()
    pages = listed = 0
    token = ""
    while True:
        page = await tree.ListConnections(
            tree_rpc.ListConnectionsRequest(
                integration_id=integration_id, page_size=100, page_token=token
            ),
            metadata=SYSTEM,
            timeout=60,
        )
        pages += 1
        listed += len(page.connections)
        token = page.next_page_token
        if not token:
            break
    list_seconds = time.perf_counter() - started
    _log(f"tree {tree_seconds:.2f} s; {pages} pages in {list_seconds:.2f} s")
    return {
        "get_connection_tree_seconds": round(tree_seconds, 3),
        "get_connection_tree_bytes": whole.ByteSize(),
        "list_connections_seconds": round(list_seconds, 3),
        "list_connections_pages": pages,
        "list_connections_ms_per_page": round(list_seconds / pages * 1000, 2),
        "connections_listed": listed,
    }


async def measure_size(admin_dsn: str, accounts: int) -> dict[str, Any]:
    """Every figure of one organization size (see the module docstring)."""
    base = snapshot_bench.organization(accounts=accounts, units=accounts // 10)
    active = sum(1 for a in base.accounts if a.state == "ACTIVE")
    workdir = Path(tempfile.mkdtemp(prefix="canopy-bench-scale-"))
    recording = workdir / "organizations.json"
    recording.write_text(json.dumps(organizations_recording(base)))
    results: dict[str, Any] = {
        "accounts": accounts,
        "organizational_units": len(base.organizational_units),
        "active_accounts": active,
        "snapshot_bytes": base.ByteSize(),
    }
    # Misses go nowhere (a closed port): every answer must come from the recording.
    replay = await crawl_bench.ReplayProcess.start(recording, f"http://127.0.0.1:{free_port()}")
    try:
        async with fresh_database(admin_dsn) as dsn:
            integration_port, permissions_port = free_port(), free_port()
            env = {
                **process_env(dsn, integration_port, permissions_port),
                "CANOPY_DISCOVERY_ADDRESS": f"127.0.0.1:{free_port()}",
            }
            async with (
                child_service("canopy_permissions", env, permissions_port) as permissions,
                child_service("canopy_integration", env, integration_port) as integration,
                grpc.aio.insecure_channel(permissions.address, options=OPTIONS) as p_channel,
                grpc.aio.insecure_channel(integration.address, options=OPTIONS) as i_channel,
            ):
                created = await _setup(p_channel, i_channel)

                async def share() -> None:
                    results["share"] = await _share(dsn, p_channel, created.root_folder_id, active)

                # The re-applies measured are those of a later sync, once the permissions
                # service has followed the first apply's events (as they compete for the CPUs).
                results["apply"] = await snapshot_bench.measure_applies(
                    i_channel,
                    created.id,
                    base,
                    snapshot_bench.one_percent_changed(base),
                    RUNS,
                    settle=share,
                )
                # Started only now: it would sync the new integration at once.
                await replay.command("clear")
                async with child_service(
                    "canopy_discovery", _discovery_env(env, replay)
                ) as discovery:
                    results["crawl"] = await _crawl(discovery, replay, created.id)
                    results["read"] = await _read(i_channel, created.id)
                    rss = {
                        "permissions": permissions.peak_rss_bytes(),
                        "integration": integration.peak_rss_bytes(),
                        "discovery": discovery.peak_rss_bytes(),
                    }
                results["peak_rss_mib"] = {k: round(v / (1 << 20), 1) for k, v in rss.items()}
                _log(f"peak RSS (MiB): {results['peak_rss_mib']}")
    finally:
        await replay.stop()
    return results


# The curves


def growth_exponent(sizes: list[int], costs: list[float]) -> float | None:
    """log(cost ratio) / log(size ratio) between the smallest and the largest size."""
    if len(sizes) < 2 or costs[0] <= 0 or costs[-1] <= 0:
        return None
    return round(math.log(costs[-1] / costs[0]) / math.log(sizes[-1] / sizes[0]), 3)


def curves(by_size: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each cost, in order of size, by name."""
    picks = {
        "apply_first_seconds": ("apply", "first", "seconds"),
        "apply_unchanged_seconds": ("apply", "unchanged", "seconds"),
        "apply_one_percent_seconds": ("apply", "one_percent", "seconds"),
        "crawl_api_calls": ("crawl", "api_calls"),
        "crawl_seconds": ("crawl", "crawl_seconds"),
        "share_projection_seconds": ("share", "projection_seconds"),
        "share_attach_seconds": ("share", "attach_seconds"),
        "share_render_seconds": ("share", "render_seconds"),
        "get_connection_tree_seconds": ("read", "get_connection_tree_seconds"),
        "list_connections_all_pages_seconds": ("read", "list_connections_seconds"),
        "rss_permissions_mib": ("peak_rss_mib", "permissions"),
        "rss_integration_mib": ("peak_rss_mib", "integration"),
        "rss_discovery_mib": ("peak_rss_mib", "discovery"),
    }
    found: dict[str, list[float]] = {}
    for name, path in picks.items():
        values = []
        for figures in by_size:
            value: Any = figures
            for key in path:
                value = value[key]
            values.append(float(value))
        found[name] = values
    return found


def run_slow_test() -> dict[str, Any]:
    """The 50,000-account end-to-end test, in a pytest process of its own."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "slow",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            SLOW_TEST,
        ],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    figures: dict[str, Any] = {}
    for line in tail:  # the test prints its own figures as one JSON line
        if line.startswith("SCALE_TEST_FIGURES "):
            figures = json.loads(line.partition(" ")[2])
    _log(f"slow test: exit {done.returncode} in {seconds:.0f} s")
    return {
        "test": SLOW_TEST,
        "passed": done.returncode == 0,
        "seconds": round(seconds, 1),
        **({"figures": figures} if figures else {}),
        **({} if done.returncode == 0 else {"output_tail": tail}),
    }


async def run(admin_dsn: str) -> dict[str, Any]:
    """Every size, the schema streams, the exponents and the targets (see the docstring)."""
    started = time.perf_counter()
    by_size = []
    for accounts in SIZES:
        _log(f"{accounts} accounts …")
        by_size.append(await measure_size(admin_dsn, accounts))
    streams = []
    for workspaces in WORKSPACES:
        _log(f"schema stream, {workspaces} workspaces …")
        figures = await sharing_bench.run(admin_dsn, STREAM_CONNECTIONS, workspaces, 0)
        streams.append(figures)
    by_name = curves(by_size)
    sizes = [figures["accounts"] for figures in by_size]
    exponents = {name: growth_exponent(sizes, values) for name, values in by_name.items()}
    stream_seconds = [figures["commit_to_last_event_seconds"] for figures in streams]
    exponents["schema_stream_commit_to_last_event_seconds"] = growth_exponent(
        list(WORKSPACES), stream_seconds
    )
    largest = by_size[-1]
    targets = {
        "every_curve_linear_or_better": all(e is None or e <= 1.1 for e in exponents.values()),
        "unchanged_reapply_under_10_percent_of_first": largest["apply"]["unchanged_vs_first"] < 0.1,
        "each_service_under_1_gib": all(
            mib * (1 << 20) < GIB for mib in largest["peak_rss_mib"].values()
        ),
        "crawl_exact": all(
            f["crawl"]["proxy_misses"] == 0 and f["crawl"]["state"] == "SYNC_RUN_STATE_SUCCEEDED"
            for f in by_size
        ),
    }
    results: dict[str, Any] = {
        "sizes": sizes,
        "by_size": by_size,
        "schema_streams": {
            "connections": STREAM_CONNECTIONS,
            "workspaces": list(WORKSPACES),
            "by_workspaces": streams,
        },
        "curves": {**by_name, "schema_stream_commit_to_last_event_seconds": stream_seconds},
        "growth_exponents": exponents,
        "targets_met": targets,
    }
    if os.environ.get("BENCH_SCALE_SLOW_TEST", "1") != "0":
        results["slow_test"] = run_slow_test()
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    """One PNG of the curves: times and memory against accounts, the stream against
    workspaces; log-log, with a dotted linear slope for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["sizes"]
    by_name = results["curves"]
    figure, (times, memory, stream) = plt.subplots(1, 3, figsize=(16, 5.2))
    labels = {
        "apply_first_seconds": "apply, first",
        "apply_unchanged_seconds": "apply, unchanged",
        "apply_one_percent_seconds": "apply, 1 % changed",
        "crawl_seconds": "crawl (50 ms a call, 32 in flight)",
        "share_projection_seconds": "first apply followed by permissions",
        "share_attach_seconds": "attach root folder (all schemas)",
        "share_render_seconds": "workspace render",
        "get_connection_tree_seconds": "GetConnectionTree",
        "list_connections_all_pages_seconds": "ListConnections, every page",
    }
    for name, label in labels.items():
        times.plot(sizes, by_name[name], marker="o", label=label)
    for name in ("rss_permissions_mib", "rss_integration_mib", "rss_discovery_mib"):
        memory.plot(sizes, by_name[name], marker="o", label=name.split("_")[1])
    memory.axhline(1024, color="red", linestyle="--", linewidth=1, label="1 GiB target")
    workspaces = results["schema_streams"]["workspaces"]
    stream.plot(
        workspaces,
        by_name["schema_stream_commit_to_last_event_seconds"],
        marker="o",
        label=f"prefix change, {results['schema_streams']['connections']} connections",
    )
    for axes, xs, ys in (
        (times, sizes, by_name["apply_first_seconds"]),
        (stream, workspaces, by_name["schema_stream_commit_to_last_event_seconds"]),
    ):
        axes.plot(xs, [ys[0] * x / xs[0] for x in xs], color="grey", linestyle=":", label="linear")
    times.set(xlabel="accounts (OUs: a tenth)", ylabel="seconds", title="Cost by organization")
    memory.set(xlabel="accounts", ylabel="MiB", title="Peak resident memory per service")
    stream.set(xlabel="workspaces attached", ylabel="seconds", title="Commit to last SchemaRenamed")
    for axes in (times, memory, stream):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
