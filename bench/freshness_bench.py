"""Live updates: how soon a workspace sees a change of a 5,000-account organization once its
event reaches the queue, and how many Organizations calls each change costs.

The organization is the crawl bench's (5,000 accounts in 500 OUs, five levels; 1 in 50 accounts
SUSPENDED) plus a few empty OUs. 200 changes, each of a different account or OU: 60 moves (half
into, half out of the folders a workspace has attached), 50 account renames, 40 account
creations (CreateAccount, CreateAccountResult, then MoveAccount into an attached folder), 30
closures (CloseAccount, CloseAccountResult), 12 OU renames and 8 deletions of empty OUs. They
arrive as SQS messages, the EventBridge events AWS would deliver (built from the real samples of
tests/discovery/event_samples), in BURSTS bursts of CHANGES / BURSTS changes, GAP seconds apart.

The three services run as processes, with discovery's defaults (the coalescing window among
them) but for its AWS endpoint. A workspace watches WatchWorkspaceSchemas: each change of an
account has exactly one schema event (added, renamed or removed), matched to the change by
account or connection; an OU rename or deletion changes no schema name, so it is timed at its
tree event (WatchTreeEvents: FolderUpdated, FolderDeleted) instead.
- `delay`: from the change's last message sent to its workspace event (`p50_ms`, `p99_ms`…);
  `folder_delay`: the same for OU changes, to their tree event; `all_changes_delay`: both.
- `api_calls_per_change`: Organizations calls served during the changes over the changed
  entities (retries included; AssumeRole and SQS calls not counted).
- `tree_matches_full_crawl`: at the end, a full crawl of the organization (SyncIntegration)
  applies nothing (`APPLY_OUTCOME_UNCHANGED`), and the snapshot the refreshes left equals that
  crawl's, OU for OU and account for account.

moto spends 10-30 ms of CPU on an Organizations call of an organization this size (and it lives
in this process). So, as in the crawl bench, moto only answers once, before anything is
measured: a recording proxy keeps its answers to a crawl of the organization before the changes,
to what a refresh reads of each changed entity after them (DescribeAccount, ListParents,
DescribeOrganizationalUnit; "not found" answers too), and to a crawl after them. A replaying
proxy in a process of its own serves those answers with LATENCY added to every call, as AWS's
own latency, and forwards what it has not recorded: SQS, cheap in moto whatever the
organization's size (`organizations_misses`, Organizations calls it had not recorded, should be
0). Its recordings of the final crawl are loaded only for the crawl at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import boto3  # type: ignore[import-untyped]
import grpc
from moto.organizations.models import OrganizationsBackend, organizations_backends
from moto.server import ThreadedMotoServer

from bench.crawl_bench import build_organization, canopy_crawl
from bench.services import SECRET, SYSTEM, bearer, free_port, subprocess_service
from bench.support import fresh_database, summary_ms
from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.discovery.v1 import discovery_service_pb2_grpc as dgrpc
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_pb2 as dirpb
from canopy.permissions.v1 import directory_service_pb2 as dirrpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dirgrpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2
from canopy_discovery.crawler import CrawlLimits
from canopy_discovery.settings import DiscoverySettings
from tests.awsfaults import FaultProxy, Recorded, Rule
from tests.discovery import org_events as ev

CHANGES = {"move": 60, "rename": 50, "create": 40, "close": 30, "ou_rename": 12, "ou_delete": 8}
BURSTS = 20
GAP = 2.5  # seconds between bursts
LATENCY = 0.05  # added to every call by the replay, as AWS's latency
ACCOUNT = "123456789012"  # moto's, the organization's management account
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/canopy-discovery"
EXTERNAL_ID = "o_bench:fresh001"
QUEUE = "canopy-events"
QUEUE_URL = f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{QUEUE}"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
ROOT_DIR = Path(__file__).resolve().parent.parent
WAIT_FOR_EVENTS = 120.0  # seconds after the last burst before a change counts as missed
_NOT_COUNTED = ("AssumeRole", "GetCallerIdentity")
WINDOW = DiscoverySettings.model_fields["event_coalesce_window"].default.total_seconds()


def _log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


@dataclass
class Change:
    """One change of the organization, its messages, and what shows it."""

    kind: str
    entity: str  # account or OU id
    messages: list[dict[str, Any]]
    # What the watchers see: ("added", account) / ("removed", account) / ("renamed", account) /
    # ("folder_updated", ou) / ("folder_deleted", ou).
    shows_as: tuple[str, str]
    sent: float = 0.0  # time.perf_counter() when its last message was sent
    seen: float | None = None


@dataclass
class Plan:
    """The changes, and the OUs a workspace has attached."""

    changes: list[Change] = field(default_factory=list)
    attached: list[str] = field(default_factory=list)  # level-1 OUs whose subtrees are attached


def _subtree(backend: OrganizationsBackend, tops: list[str]) -> set[str]:
    children: dict[str, list[str]] = {}
    for unit in backend.ou:
        children.setdefault(str(unit.parent_id), []).append(unit.id)
    found, stack = set(), list(tops)
    while stack:
        unit_id = stack.pop()
        found.add(unit_id)
        stack.extend(children.get(unit_id, []))
    return found


def plan_and_make_changes(moto_url: str, seed: int = 13) -> Plan:
    """Choose the changes (each of another entity), make them in moto, and build their events."""
    client = boto3.client(
        "organizations", endpoint_url=moto_url, region_name="us-east-1", **CREDENTIALS
    )
    organization = client.describe_organization()["Organization"]
    root_id = client.list_roots()["Roots"][0]["Id"]
    backend = organizations_backends[organization["MasterAccountId"]]["aws"]
    organization_id = organization["Id"]
    rng = random.Random(seed)
    tops = [u.id for u in backend.ou if u.parent_id == root_id and str(u.name).startswith("Unit ")]
    plan = Plan(attached=tops[:2])
    inside_units = _subtree(backend, plan.attached)
    spare = [u.id for u in backend.ou if str(u.name).startswith("Spare ")]
    other_units = [u.id for u in backend.ou if u.id not in inside_units and u.id not in spare]
    active = [a for a in backend.accounts if a.id != ACCOUNT and (a.state or a.status) == "ACTIVE"]
    inside = [a for a in active if a.parent_id in inside_units]
    outside = [a for a in active if a.parent_id not in inside_units]
    rng.shuffle(inside)
    rng.shuffle(outside)
    inside_list = sorted(inside_units)

    def change(kind: str, entity: str, messages: list[dict[str, Any]], shows: str) -> None:
        plan.changes.append(Change(kind, entity, messages, (shows, entity)))

    half = CHANGES["move"] // 2
    for account in outside[:half]:
        source, account.parent_id = account.parent_id, rng.choice(inside_list)
        change("move", account.id, [ev.moved(account.id, source, account.parent_id)], "added")
    for account in inside[:half]:
        source, account.parent_id = account.parent_id, rng.choice(other_units)
        change("move", account.id, [ev.moved(account.id, source, account.parent_id)], "removed")
    pool = inside[half:]
    for account in pool[: CHANGES["rename"]]:
        account.name = f"{account.name} renamed"
        change("rename", account.id, [ev.renamed(account.id)], "renamed")
    pool = pool[CHANGES["rename"] :]
    for account in pool[: CHANGES["close"]]:
        account.state = account.status = "SUSPENDED"
        messages = [ev.close_started(account.id), ev.closed(account.id)]
        change("close", account.id, messages, "removed")
    for i in range(CHANGES["create"]):
        name = f"vended-{i}-prod"
        status = backend.create_account(AccountName=name, Email=f"vended+{i}@example.com")
        made = backend.get_account_by_id(status["CreateAccountStatus"]["AccountId"])
        made.parent_id = rng.choice(inside_list)
        messages = [ev.create_started(), ev.created(made.id)]
        messages.append(ev.moved(made.id, root_id, made.parent_id))
        change("create", made.id, messages, "added")
    renamed = rng.sample(other_units, CHANGES["ou_rename"])
    for i, unit_id in enumerate(renamed):
        backend.update_organizational_unit(OrganizationalUnitId=unit_id, Name=f"Renamed {i}")
        change(
            "ou_rename",
            unit_id,
            [ev.unit_renamed(unit_id, f"Renamed {i}", organization_id)],
            "folder_updated",
        )
    for unit_id in spare[: CHANGES["ou_delete"]]:
        backend.delete_organizational_unit(OrganizationalUnitId=unit_id)
        change("ou_delete", unit_id, [ev.unit_deleted(unit_id)], "folder_deleted")
    rng.shuffle(plan.changes)
    return plan


def add_spare_units(moto_url: str, count: int) -> None:
    """Empty OUs, under the root, that the changes delete."""
    client = boto3.client(
        "organizations", endpoint_url=moto_url, region_name="us-east-1", **CREDENTIALS
    )
    root_id = client.list_roots()["Roots"][0]["Id"]
    for i in range(count):
        client.create_organizational_unit(ParentId=root_id, Name=f"Spare {i}")


def record_reads(url: str, plan: Plan, known_units: set[str]) -> None:
    """Through the recording proxy, what a refresh reads of each changed entity."""
    client = boto3.client("organizations", endpoint_url=url, region_name="us-east-1", **CREDENTIALS)
    for change in plan.changes:
        calls: list[tuple[str, dict[str, str]]]
        if change.kind.startswith("ou_"):
            calls = [("describe_organizational_unit", {"OrganizationalUnitId": change.entity})]
            if change.entity not in known_units:
                calls.append(("list_parents", {"ChildId": change.entity}))
        else:
            calls = [
                ("describe_account", {"AccountId": change.entity}),
                ("list_parents", {"ChildId": change.entity}),
            ]
        for method, params in calls:
            # "Not found" is an answer too, and recorded.
            with contextlib.suppress(client.exceptions.ClientError):
                getattr(client, method)(**params)


# The replaying proxy, in its own process


class ReplayProcess:
    """A child process running the replaying FaultProxy; commands go over its stdin."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    async def start(cls, recording: Path, upstream: str) -> ReplayProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.freshness_bench",
            "replay",
            str(recording),
            upstream,
            str(LATENCY),
            cwd=ROOT_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"the replay process exited with {await process.wait()}")
        return cls(process, json.loads(line)["url"])

    async def command(self, name: str) -> Any:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{name}\n".encode())
        await self.process.stdin.drain()
        return json.loads(await self.process.stdout.readline())

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def serve_replay(recording: Path, upstream: str, latency: float) -> None:
    """The child: replay `recording` with `latency` added to every call until stdin closes.
    Commands, one JSON line answered each: `clear` zeroes the counters, `stats` reports them,
    `load PATH` adds (over the same keys) the recordings of PATH."""
    logging.getLogger("aiohttp").setLevel(logging.ERROR)
    proxy = FaultProxy(upstream, mode="replay")
    proxy.load(recording)
    proxy.add(Rule(latency=latency))
    with proxy:
        print(json.dumps({"url": proxy.url}), flush=True)
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "clear":
                proxy.clear()
                proxy.add(Rule(latency=latency))
                print("{}", flush=True)
            elif command == "load":
                kept = json.loads(Path(argument).read_text())
                proxy.recordings.update({k: Recorded(**v) for k, v in kept.items()})
                print("{}", flush=True)
            elif command == "stats":
                counts = dict(proxy.counts)
                print(json.dumps({"by_operation": counts, "replayed": proxy.replayed}), flush=True)
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)


# The services and the watchers


def _snapshot_key(snapshot: tree_pb.OrganizationSnapshot) -> tuple[list[str], list[str]]:
    return (
        sorted(f"{u.id}/{u.parent_id}/{u.name}" for u in snapshot.organizational_units),
        sorted(f"{a.id}/{a.parent_id}/{a.name}/{a.state}/{a.email}" for a in snapshot.accounts),
    )


async def _seed(directory: Any) -> None:
    await directory.UpsertTenant(
        dirrpc.UpsertTenantRequest(
            tenant=dirpb.Tenant(id="t_bench", handle="bench", plan=types_pb2.PLAN_ENTERPRISE)
        ),
        metadata=SYSTEM,
    )
    await directory.UpsertOrg(
        dirrpc.UpsertOrgRequest(
            org=dirpb.Org(id="o_bench", tenant_id="t_bench", handle="ops", plan=types_pb2.PLAN_TEAM)
        ),
        metadata=SYSTEM,
    )
    await directory.UpsertWorkspace(
        dirrpc.UpsertWorkspaceRequest(
            workspace=dirpb.Workspace(id="w_bench", org_id="o_bench", handle="live")
        ),
        metadata=SYSTEM,
    )


async def run(admin_dsn: str) -> dict[str, Any]:
    """Build, record, replay, send the changes, watch; the figures."""
    load_average = round(os.getloadavg()[0], 2)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    workdir = Path(tempfile.mkdtemp(prefix="canopy-bench-fresh-"))
    before_changes, after_changes = workdir / "before.json", workdir / "after.json"
    try:
        host, port = server.get_host_and_port()
        moto_url = f"http://{host}:{port}"
        # moto keeps its state per process: a bench run before this one left its organization.
        reset = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
        await asyncio.to_thread(lambda: urllib.request.urlopen(reset).close())
        started = time.perf_counter()
        ous, accounts = await asyncio.to_thread(build_organization, moto_url)
        await asyncio.to_thread(add_spare_units, moto_url, CHANGES["ou_delete"])
        sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1", **CREDENTIALS)
        dead = sqs.create_queue(QueueName=f"{QUEUE}-dlq")["QueueUrl"]
        dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])
        redrive = {"deadLetterTargetArn": dead_arn["Attributes"]["QueueArn"], "maxReceiveCount": 5}
        sqs.create_queue(QueueName=QUEUE, Attributes={"RedrivePolicy": json.dumps(redrive)})
        _log(f"built {ous} OUs and {accounts} accounts in {time.perf_counter() - started:.1f} s")

        limits = CrawlLimits(max_concurrency=1)
        with FaultProxy(moto_url, mode="record") as recorder:
            first = await canopy_crawl(recorder.url, limits)
            assert first.snapshot is not None
            known_units = {u.id for u in first.snapshot.organizational_units}
            plan = await asyncio.to_thread(plan_and_make_changes, moto_url)
            await asyncio.to_thread(record_reads, recorder.url, plan, known_units)
            recorder.save(before_changes)
        moto_ms = first.seconds / first.api_calls * 1000
        _log(f"recorded the crawl ({moto_ms:.1f} ms/call in moto) and the refreshes' reads")
        with FaultProxy(moto_url, mode="record") as recorder:
            final = await canopy_crawl(recorder.url, limits)
            assert final.snapshot is not None
            recorder.save(after_changes)
        _log("recorded the crawl after the changes")

        replay = await ReplayProcess.start(before_changes, moto_url)
        try:
            measured = await _measure(
                admin_dsn, moto_url, replay, plan, final.snapshot, after_changes
            )
        finally:
            await replay.stop()
        return {
            "environment": {"cpus": os.cpu_count(), "load_average_1m": load_average},
            "accounts": accounts,
            "organizational_units": ous + CHANGES["ou_delete"],
            "latency_ms": LATENCY * 1000,
            "moto_live_ms_per_call": round(moto_ms, 2),
            **measured,
        }
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _measure(
    admin_dsn: str,
    moto_url: str,
    replay: ReplayProcess,
    plan: Plan,
    expected: tree_pb.OrganizationSnapshot,
    after_changes: Path,
) -> dict[str, Any]:
    """Start the services, crawl through the replay, send the changes, watch; the figures."""
    async with fresh_database(admin_dsn) as dsn:
        ports = {name: free_port() for name in ("integration", "permissions", "discovery")}
        common = {
            "CANOPY_DATABASE_URL": dsn,
            "CANOPY_JWT_SECRET": SECRET,
            "CANOPY_METRICS_PORT": "none",
            "CANOPY_LOG_LEVEL": "WARNING",
            "CANOPY_INTEGRATION_ADDRESS": f"127.0.0.1:{ports['integration']}",
            "CANOPY_PERMISSIONS_ADDRESS": f"127.0.0.1:{ports['permissions']}",
            "CANOPY_DISCOVERY_ADDRESS": f"127.0.0.1:{ports['discovery']}",
            "CANOPY_TRUSTED_ACCOUNT_ID": ACCOUNT,
        }
        discovery_env = {
            **common,
            "CANOPY_AWS_ENDPOINT_URL": replay.url,
            "CANOPY_AWS_ACCESS_KEY_ID": "testing",
            "CANOPY_AWS_SECRET_ACCESS_KEY": "testing",
        }
        large = [
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
        ]
        async with (
            subprocess_service("canopy_permissions", common, ports["permissions"]) as p_address,
            subprocess_service("canopy_integration", common, ports["integration"]) as i_address,
            subprocess_service("canopy_discovery", discovery_env, ports["discovery"]) as d_address,
            grpc.aio.insecure_channel(p_address) as p_channel,
            grpc.aio.insecure_channel(i_address, options=large) as i_channel,
            grpc.aio.insecure_channel(d_address) as d_channel,
        ):
            stubs = Stubs(
                integrations=rpc_grpc.IntegrationServiceStub(i_channel),
                tree=tree_grpc.ConnectionTreeServiceStub(i_channel),
                schemas=wgrpc.WorkspaceSchemaServiceStub(p_channel),
                discovery=dgrpc.DiscoveryServiceStub(d_channel),
            )
            await _seed(dirgrpc.DirectoryServiceStub(p_channel))
            integration = await _followed_integration(stubs)
            folders = await _pages(
                stubs.tree.ListFolders,
                lambda token: tree_rpc.ListFoldersRequest(
                    integration_id=integration.id, page_size=100, page_token=token
                ),
                "folders",
            )
            by_aws = {f.aws_id: f for f in folders}
            for unit_id in plan.attached:
                await _attach(stubs.schemas, by_aws[unit_id].id)
            connections = await _pages(
                stubs.tree.ListConnections,
                lambda token: tree_rpc.ListConnectionsRequest(
                    integration_id=integration.id, page_size=100, page_token=token
                ),
                "connections",
            )
            account_of = {c.id: c.account_id for c in connections}
            revision = await _settled_revision(stubs.schemas)
            _log(f"{len(connections)} connections; sending {len(plan.changes)} changes")

            watch = Watch(plan, account_of)
            watchers = [
                asyncio.create_task(watch.schemas(stubs.schemas, revision)),
                asyncio.create_task(watch.tree(stubs.tree, integration.id)),
            ]
            await asyncio.sleep(3)  # both streams are live, the tree log's backlog read
            await replay.command("clear")
            sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1", **CREDENTIALS)
            per_burst = len(plan.changes) // BURSTS
            sent_messages = 0
            for burst in range(BURSTS):
                changes = plan.changes[burst * per_burst : (burst + 1) * per_burst]
                bodies = [json.dumps(m) for change in changes for m in change.messages]
                random.Random(burst).shuffle(bodies)
                await asyncio.to_thread(ev.send, sqs, QUEUE_URL, *bodies)
                now = time.perf_counter()
                for change in changes:
                    change.sent = now
                sent_messages += len(bodies)
                await asyncio.sleep(GAP)
            try:
                await asyncio.wait_for(watch.all_seen.wait(), WAIT_FOR_EVENTS)
            except TimeoutError:
                _log(f"{len(watch.pending)} changes never seen: {list(watch.pending)[:5]}")
            await asyncio.sleep(2)  # anything unexpected after the last
            served = await replay.command("stats")
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            runs = await _pages(
                stubs.discovery.ListSyncRuns,
                lambda token: drpc.ListSyncRunsRequest(
                    integration_id=integration.id, page_size=100, page_token=token
                ),
                "runs",
            )
            connection = await asyncpg.connect(dsn)
            try:
                stored = await connection.fetchval(
                    "SELECT snapshot FROM discovery.applied_snapshots WHERE integration_id = $1",
                    integration.id,
                )
            finally:
                await connection.close()
            refreshed = tree_pb.OrganizationSnapshot.FromString(bytes(stored))
            _log("a full crawl of the organization after the changes")
            await replay.command(f"load {after_changes}")
            crawl = await stubs.discovery.SyncIntegration(
                drpc.SyncIntegrationRequest(integration_id=integration.id),
                metadata=bearer(o_bench="owner"),
            )
            final = await _finished(stubs.discovery, crawl.run.id)
    return _figures(plan, watch, served, runs, sent_messages, refreshed, expected, final)


@dataclass
class Stubs:
    """The services' stubs."""

    integrations: Any
    tree: Any
    schemas: Any
    discovery: Any


class Watch:
    """The workspace's schema events and the integration's folder events, matched to changes."""

    def __init__(self, plan: Plan, account_of: dict[str, str]) -> None:
        self.pending = {change.shows_as: change for change in plan.changes}
        self.account_of = account_of
        self.unexpected: list[tuple[str, str]] = []
        self.all_seen = asyncio.Event()

    def seen(self, key: tuple[str, str]) -> None:
        change = self.pending.pop(key, None)
        if change is None:
            self.unexpected.append(key)
            return
        change.seen = time.perf_counter()
        if not self.pending:
            self.all_seen.set()

    async def schemas(self, schemas: Any, after: int) -> None:
        call = schemas.WatchWorkspaceSchemas(
            wrpc.WatchWorkspaceSchemasRequest(workspace_id="w_bench", after_revision=after),
            metadata=SYSTEM,
        )
        async for reply in call:
            for event in reply.events:
                kind = event.WhichOneof("event")
                if kind == "schema_added":
                    self.seen(("added", event.schema_added.schema.account_id))
                elif kind == "schema_renamed":
                    connection = event.schema_renamed.connection_id
                    self.seen(("renamed", self.account_of.get(connection, connection)))
                elif kind == "schema_removed":
                    connection = event.schema_removed.connection_id
                    self.seen(("removed", self.account_of.get(connection, connection)))
                else:
                    self.unexpected.append((str(kind), ""))

    async def tree(self, tree: Any, integration_id: str) -> None:
        call = tree.WatchTreeEvents(
            tree_rpc.WatchTreeEventsRequest(integration_id=integration_id), metadata=SYSTEM
        )
        # From the start of the log: its backlog (the first crawl) holds no title change or
        # deletion of a folder, so nothing in it is taken for a change's event.
        async for reply in call:
            for event in reply.events:
                kind = event.WhichOneof("event")
                if kind == "folder_updated" and "title" in event.folder_updated.changed_fields:
                    self.seen(("folder_updated", event.folder_updated.after.aws_id))
                elif kind == "folder_deleted":
                    self.seen(("folder_deleted", event.folder_deleted.folder.aws_id))


async def _followed_integration(stubs: Stubs) -> pb.Integration:
    """The integration with its event queue, once crawled and its queue followed."""
    created = (
        await stubs.integrations.CreateIntegration(
            rpc.CreateIntegrationRequest(
                integration=pb.Integration(
                    handle="aws",
                    scope=types_pb2.Scope(org_id="o_bench"),
                    discovery_access=pb.AwsDiscoveryAccess(
                        role_arn=ROLE_ARN, external_id=EXTERNAL_ID, event_queue=QUEUE_URL
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

    async def ready() -> pb.Integration | None:
        reply = await stubs.integrations.GetIntegration(
            rpc.GetIntegrationRequest(id=created.id), metadata=SYSTEM
        )
        found: pb.Integration = reply.integration
        crawled = found.state == pb.INTEGRATION_STATE_ENABLED
        following = found.event_queue_status.state == pb.EVENT_QUEUE_STATE_FOLLOWING
        return found if crawled and following else None

    found: pb.Integration = await _until("the first crawl and the queue followed", ready)
    return found


async def _until(what: str, check: Any, timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


async def _pages(method: Any, request: Any, key: str) -> list[Any]:
    found: list[Any] = []
    token = ""
    while True:
        reply = await method(request(token), metadata=SYSTEM)
        found.extend(getattr(reply, key))
        token = reply.next_page_token
        if not token:
            return found


async def _attach(schemas: Any, folder_id: str) -> None:
    for _ in range(600):  # the permissions service learns the tree from the tree log
        try:
            await schemas.AttachSchema(
                wrpc.AttachSchemaRequest(workspace_id="w_bench", folder_id=folder_id),
                metadata=SYSTEM,
            )
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    raise RuntimeError("a folder never reached the permissions service")


async def _settled_revision(schemas: Any) -> int:
    """The workspace's schema log revision once the attachments' events have stopped."""
    last, stable_since = -1, time.monotonic()
    while True:
        reply = await schemas.ListWorkspaceSchemas(
            wrpc.ListWorkspaceSchemasRequest(workspace_id="w_bench", page_size=1),
            metadata=SYSTEM,
        )
        if reply.revision != last:
            last, stable_since = reply.revision, time.monotonic()
        elif last > 0 and time.monotonic() - stable_since > 3:
            return int(last)
        await asyncio.sleep(0.2)


async def _finished(discovery: Any, run_id: str) -> dpb.SyncRun:
    async def ended() -> dpb.SyncRun | None:
        reply = await discovery.GetSyncRun(drpc.GetSyncRunRequest(id=run_id), metadata=SYSTEM)
        run: dpb.SyncRun = reply.run
        active = (dpb.SYNC_RUN_STATE_QUEUED, dpb.SYNC_RUN_STATE_RUNNING)
        return run if run.state not in active else None

    found: dpb.SyncRun = await _until("the final crawl", ended)
    return found


def _figures(
    plan: Plan,
    watch: Watch,
    served: dict[str, Any],
    runs: list[dpb.SyncRun],
    sent_messages: int,
    refreshed: tree_pb.OrganizationSnapshot,
    expected: tree_pb.OrganizationSnapshot,
    final: dpb.SyncRun,
) -> dict[str, Any]:
    account_changes = [c for c in plan.changes if not c.kind.startswith("ou_")]
    folder_changes = [c for c in plan.changes if c.kind.startswith("ou_")]

    def delays(changes: list[Change]) -> list[float]:
        return [c.seen - c.sent for c in changes if c.seen is not None]

    organizations = {
        op: n
        for op, n in served["by_operation"].items()
        if op[:1].isupper() and op not in _NOT_COUNTED
    }
    organizations = {op: n for op, n in organizations.items() if op not in _SQS}
    calls = sum(organizations.values())
    replayable = calls + sum(served["by_operation"].get(op, 0) for op in _NOT_COUNTED)
    event_runs = [r for r in runs if r.trigger == dpb.SYNC_TRIGGER_ORGANIZATION_EVENTS]
    fallbacks = Counter(r.full_crawl_reason for r in event_runs if r.full_crawl_reason)
    refreshes = [r for r in event_runs if not r.full_crawl_reason]
    all_delays = delays(plan.changes)
    identical = _snapshot_key(refreshed) == _snapshot_key(expected)
    unchanged = final.apply_outcome == tree_pb.APPLY_OUTCOME_UNCHANGED
    figures: dict[str, Any] = {
        "changes": len(plan.changes),
        "changes_by_kind": dict(Counter(c.kind for c in plan.changes)),
        "messages_sent": sent_messages,
        "bursts": BURSTS,
        "seconds_between_bursts": GAP,
        "coalescing_window_seconds": WINDOW,
        "changes_seen": sum(1 for c in plan.changes if c.seen is not None),
        "unexpected_events": len(watch.unexpected),
        "delay": summary_ms(delays(account_changes)),
        "folder_delay": summary_ms(delays(folder_changes)),
        "all_changes_delay": summary_ms(all_delays),
        "api_calls_per_change": round(calls / len(plan.changes), 3),
        "organizations_calls": calls,
        "organizations_calls_by_operation": organizations,
        "organizations_misses": replayable - served["replayed"],
        "refresh_runs": len(refreshes),
        "full_crawl_fallbacks": dict(fallbacks),
        "refresh_api_calls_total": sum(r.progress.api_calls for r in refreshes),
        "tree_matches_full_crawl": identical and unchanged,
        "final_crawl_apply_outcome": tree_pb.ApplyOutcome.Name(final.apply_outcome),
    }
    figures["targets_met"] = {
        "p99_under_10_s": figures["all_changes_delay"]["p99_ms"] < 10_000,
        "api_calls_per_change_at_most_4": figures["api_calls_per_change"] <= 4,
        "every_change_reflected_exactly": (
            figures["changes_seen"] == len(plan.changes)
            and not watch.unexpected
            and figures["tree_matches_full_crawl"]
        ),
    }
    return figures


_SQS = frozenset(
    {
        "ReceiveMessage",
        "DeleteMessageBatch",
        "DeleteMessage",
        "ChangeMessageVisibilityBatch",
        "ChangeMessageVisibility",
        "GetQueueAttributes",
        "SendMessageBatch",
    }
)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.freshness_bench")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="serve recorded answers (the bench's child)")
    replay.add_argument("recording", type=Path)
    replay.add_argument("upstream", help="where misses go: the moto server")
    replay.add_argument("latency", type=float, help="seconds added to every call")
    args = parser.parse_args(argv)
    serve_replay(args.recording, args.upstream, args.latency)


if __name__ == "__main__":
    main(sys.argv[1:])
