"""The state the fuzz test runs against, and a valid seed request per RPC.

The state is made through the RPCs, as the platform and an owner would: tenants, orgs and
workspaces; an org-scoped integration synced from a moto organization (its tree is what most
seeds read); a tenant-scoped scratch integration (what snapshots, settings changes and syncs are
applied to); a folder grant and a connection grant; a folder and a connection attached; two
sync runs. A seed is written against it; `restore` undoes a mutation of the seed that
succeeded, so that later cases start from the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import boto3  # type: ignore[import-untyped]
import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as trpc
from canopy.integration.v1 import integration_pb2 as ipb
from canopy.integration.v1 import integration_service_pb2 as irpc
from canopy.permissions.v1 import change_impact_service_pb2 as imprpc
from canopy.permissions.v1 import directory_pb2 as dirpb
from canopy.permissions.v1 import directory_service_pb2 as dirrpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import workspace_config_service_pb2 as crpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.type.v1 import types_pb2
from tests.discovery.conftest import CREDENTIALS, DISCOVERY_ROLE, Org
from tests.helpers import bearer, token

C = grpc.StatusCode
SCHEMAS = ("integration", "discovery", "permissions")
OWNER = bearer(token("fuzzer", ttl=86_400, t_acme="owner", t_scratch="owner"))
SYSTEM = bearer(token("platform", system=True, ttl=86_400))
STALE_ETAG = 'W/"stale"'
EXTERNAL_ID = "o_ops:abcd1234"
DAY = Duration(seconds=86_400)
# The organization's change events: a queue in moto, in the discovery role's account.
EVENT_QUEUE = f"https://sqs.us-east-1.amazonaws.com/{DISCOVERY_ROLE.split(':')[4]}/fuzz-events"


# -- the seeded state -----------------------------------------------------------------------------


@dataclass
class Stubs:
    """Typed stubs over the services' channels, for seeding and restoring."""

    integrations: Any
    tree: Any
    discovery: Any
    directory: Any
    permissions: Any
    schemas: Any


@dataclass
class World:
    """The ids and values the seeds are written against; refreshed after a change."""

    stubs: Stubs
    org: Org
    main: ipb.Integration = field(default_factory=ipb.Integration)
    scratch: ipb.Integration = field(default_factory=ipb.Integration)
    broken: ipb.Integration = field(default_factory=ipb.Integration)  # ERROR, FAILURE below
    folders: dict[str, str] = field(default_factory=dict)  # title → id, in main
    connections: dict[str, tree_pb.Connection] = field(default_factory=dict)  # account name →
    runs: list[str] = field(default_factory=list)
    scratch_snapshot: tree_pb.OrganizationSnapshot = field(
        default_factory=tree_pb.OrganizationSnapshot
    )
    page_tokens: dict[str, str] = field(default_factory=dict)  # RPC label → a real next token

    def connection(self, name: str) -> str:
        return self.connections[name].id

    async def refresh(self) -> None:
        """Re-read what later seeds depend on (the tree generations)."""
        for name in ("scratch", "broken"):
            got = await self.stubs.integrations.GetIntegration(
                irpc.GetIntegrationRequest(id=getattr(self, name).id), metadata=OWNER
            )
            setattr(self, name, got.integration)


def connection_config() -> ipb.ConnectionConfig:
    """Every configuration field set, valid."""
    return ipb.ConnectionConfig(
        regions=types_pb2.StringList(values=["us-east-1", "eu-west-1"]),
        default_region="us-east-1",
        max_error_retry_attempts=5,
        min_error_retry_delay_ms=50,
        ignore_error_codes=types_pb2.StringList(values=["AccessDenied"]),
        ignore_error_messages=types_pb2.StringList(values=["^timeout.*$"]),
        endpoint_url="https://example.com",
        s3_force_path_style=True,
    )


def new_integration(handle: str, *, org_id: str = "", tenant_id: str = "") -> ipb.Integration:
    """An integration message with every writable field set, valid."""
    owner = org_id or tenant_id
    return ipb.Integration(
        handle=handle,
        scope=types_pb2.Scope(org_id=org_id) if org_id else types_pb2.Scope(tenant_id=tenant_id),
        discovery_access=ipb.AwsDiscoveryAccess(
            role_arn=DISCOVERY_ROLE, external_id=f"{owner}:abcd1234", event_queue=EVENT_QUEUE
        ),
        member_access=ipb.AwsMemberAccess(role_name="canopy-member"),
        handle_prefix="",
        connection_config=connection_config(),
        sync_interval=DAY,  # no scheduled sync during the run
        max_delete_fraction=0.5,
        crawl_limits=ipb.CrawlLimits(
            max_concurrency=4, max_requests_per_second=50, crawl_timeout=Duration(seconds=60)
        ),
    )


WRITABLE_TOP = [
    "handle",
    "handle_prefix",
    "discovery_access",
    "member_access",
    "connection_config",
    "sync_interval",
    "max_delete_fraction",
    "crawl_limits",
]


async def build_world(stubs: Stubs, org: Org, db: asyncpg.Connection) -> World:
    """The state the seeds need, made through the RPCs as the platform and an owner would."""
    world = World(stubs, org)
    sqs = boto3.client(
        "sqs", endpoint_url=org.client.meta.endpoint_url, region_name="us-east-1", **CREDENTIALS
    )
    sqs.create_queue(QueueName=EVENT_QUEUE.rsplit("/", 1)[1])
    production = org.ou("Production")
    org.ou("Europe", production)
    staging = org.ou("Staging")
    for name, parent in (("Web Prod", production), ("Data Prod", production)):
        org.account(name, parent)
    org.account("Web Staging", staging)
    org.account("Sandbox")

    for tenant_id, handle in (("t_acme", "acme"), ("t_scratch", "scratch")):
        await stubs.directory.UpsertTenant(
            dirrpc.UpsertTenantRequest(
                tenant=dirpb.Tenant(id=tenant_id, handle=handle, plan=types_pb2.PLAN_ENTERPRISE)
            ),
            metadata=SYSTEM,
        )
    for org_id, tenant_id, handle in (("o_ops", "t_acme", "ops"), ("o_scratch", "t_scratch", "so")):
        await stubs.directory.UpsertOrg(
            dirrpc.UpsertOrgRequest(
                org=dirpb.Org(
                    id=org_id, tenant_id=tenant_id, handle=handle, plan=types_pb2.PLAN_TEAM
                )
            ),
            metadata=SYSTEM,
        )
    for workspace_id, org_id in WORKSPACES:
        await upsert_workspace(stubs, workspace_id, org_id)

    main = new_integration("fuzz-main", org_id="o_ops")
    world.main = (
        await stubs.integrations.CreateIntegration(
            irpc.CreateIntegrationRequest(
                integration=main,
                initial_permissions=ipb.RootFolderPermissions(
                    mode=ipb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
                ),
            ),
            metadata=OWNER,
        )
    ).integration
    for name, handle, tenant_id in (
        ("scratch", "fuzz-scratch", "t_acme"),
        ("broken", "fuzz-broken", "t_scratch"),
    ):
        made = new_integration(handle, tenant_id=tenant_id)
        made.handle_prefix = "s_"
        created = await stubs.integrations.CreateIntegration(
            irpc.CreateIntegrationRequest(
                integration=made,
                initial_permissions=ipb.RootFolderPermissions(
                    mode=ipb.ROOT_FOLDER_PERMISSIONS_MODE_NONE
                ),
            ),
            metadata=OWNER,
        )
        setattr(world, name, created.integration)
    await settle(db)  # the first syncs have run
    for integration in (world.main, world.scratch, world.broken):
        tree = await stubs.tree.GetConnectionTree(
            trpc.GetConnectionTreeRequest(integration_id=integration.id), metadata=OWNER
        )
        state = tree.tree.integration_state
        assert state == ipb.INTEGRATION_STATE_ENABLED, f"{integration.handle}: first sync {state}"
    tree = (
        await stubs.tree.GetConnectionTree(
            trpc.GetConnectionTreeRequest(integration_id=world.main.id), metadata=OWNER
        )
    ).tree

    def walk(node: tree_pb.FolderNode) -> None:
        world.folders[node.folder.title] = node.folder.id
        for connection in node.connections:
            world.connections[connection.account_name] = connection
        for child in node.folders:
            walk(child)

    walk(tree.root)
    assert {"Production", "Europe", "Staging"} <= set(world.folders), world.folders
    world.scratch_snapshot = org.expected()
    await world.refresh()
    await record_failure(world)
    await restore_queue_status(world, b"")  # the scratch integration's queue is followed

    # Sharing: a grant on a folder and a connection, a folder and a connection attached.
    await stubs.permissions.SetPermissions(
        prpc.SetPermissionsRequest(
            folder_id=world.folders["Staging"],
            grantees=[types_pb2.Grantee(workspace_id="w_ops2")],
        ),
        metadata=OWNER,
    )
    await set_base_grants(world)
    await restore_connection(world, b"")
    await stubs.schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id="w_ops1", folder_id=world.main.root_folder_id),
        metadata=OWNER,
    )
    await attach_base(world)
    # A second run, so that runs have pages.
    await stubs.discovery.SyncIntegration(
        drpc.SyncIntegrationRequest(integration_id=world.main.id), metadata=OWNER
    )
    await settle(db)
    runs = await stubs.discovery.ListSyncRuns(
        drpc.ListSyncRunsRequest(integration_id=world.main.id), metadata=OWNER
    )
    world.runs = [r.id for r in runs.runs]
    assert len(world.runs) >= 2, runs
    await world.refresh()
    return world


WORKSPACES = (
    ("w_ops1", "o_ops"),
    ("w_ops2", "o_ops"),
    ("w_doomed", "o_ops"),
    ("w_scratch", "o_scratch"),
)


async def upsert_workspace(stubs: Stubs, workspace_id: str, org_id: str) -> None:
    await stubs.directory.UpsertWorkspace(
        dirrpc.UpsertWorkspaceRequest(
            workspace=dirpb.Workspace(id=workspace_id, org_id=org_id, handle=workspace_id[2:])
        ),
        metadata=SYSTEM,
    )


async def set_base_grants(world: World) -> None:
    """The grant that the SetPermissions seed rewrites."""
    await world.stubs.permissions.SetPermissions(
        prpc.SetPermissionsRequest(
            connection_id=world.connection("Sandbox"),
            grantees=[types_pb2.Grantee(workspace_id="w_ops2")],
        ),
        metadata=OWNER,
    )


async def attach_base(world: World) -> None:
    """The attachment that the AttachSchema seed repeats (and DeleteWorkspace would end)."""
    for workspace_id in ("w_ops2", "w_doomed"):
        with contextlib.suppress(grpc.aio.AioRpcError):  # already attached
            await world.stubs.schemas.AttachSchema(
                wrpc.AttachSchemaRequest(
                    workspace_id=workspace_id, connection_id=world.connection("Web Prod")
                ),
                metadata=OWNER,
            )


# -- the seeds: one or more valid requests per RPC -------------------------------------------------


Restore = Callable[[World, bytes], Awaitable[None]]


@dataclass(frozen=True)
class Seed:
    """A request to start from; `expect` is its own answer (a refused seed keeps its mutations
    from changing anything once they pass validation); `restore` undoes a mutation that
    succeeded and changed the stored data."""

    name: str
    build: Callable[[World], Message]
    metadata: tuple[tuple[str, str], ...] = OWNER
    expect: grpc.StatusCode = C.OK
    restore: Restore | None = None
    list_page_size: bool = False  # a list call with page_size 1: its next token seeds forgeries
    weight: float = 1.0  # share of the cases: below 1 where successes cost, above for lists


async def restore_scratch(world: World, _reply: bytes) -> None:
    """The scratch integration's settings and tree back to the base."""
    base = new_integration("fuzz-scratch", tenant_id="t_acme")
    base.handle_prefix = "s_"
    base.id = world.scratch.id
    await world.stubs.integrations.UpdateIntegration(
        irpc.UpdateIntegrationRequest(integration=base, update_mask=FieldMask(paths=WRITABLE_TOP)),
        metadata=OWNER,
    )
    await world.refresh()
    await world.stubs.tree.ApplyDiscoverySnapshot(
        trpc.ApplyDiscoverySnapshotRequest(
            integration_id=world.scratch.id,
            expected_generation=world.scratch.tree_generation,
            snapshot=world.scratch_snapshot,
            confirm_deletions=True,
        ),
        metadata=SYSTEM,
    )


async def delete_created(world: World, reply: bytes) -> None:
    created = irpc.CreateIntegrationResponse.FromString(reply).integration
    await world.stubs.integrations.DeleteIntegration(
        irpc.DeleteIntegrationRequest(id=created.id, confirm_handle=created.handle),
        metadata=OWNER,
    )


async def restore_directory(world: World, _reply: bytes) -> None:
    for tenant_id, handle in (("t_acme", "acme"), ("t_scratch", "scratch")):
        await world.stubs.directory.UpsertTenant(
            dirrpc.UpsertTenantRequest(
                tenant=dirpb.Tenant(id=tenant_id, handle=handle, plan=types_pb2.PLAN_ENTERPRISE)
            ),
            metadata=SYSTEM,
        )
    for org_id, tenant_id, handle in (("o_ops", "t_acme", "ops"), ("o_scratch", "t_scratch", "so")):
        await world.stubs.directory.UpsertOrg(
            dirrpc.UpsertOrgRequest(
                org=dirpb.Org(
                    id=org_id, tenant_id=tenant_id, handle=handle, plan=types_pb2.PLAN_TEAM
                )
            ),
            metadata=SYSTEM,
        )
    for workspace_id, org_id in WORKSPACES:
        await upsert_workspace(world.stubs, workspace_id, org_id)
    await attach_base(world)


async def restore_folder(world: World, _reply: bytes) -> None:
    await world.stubs.tree.UpdateFolder(
        trpc.UpdateFolderRequest(
            folder=tree_pb.Folder(id=world.folders["Staging"], handle=""),
            update_mask=FieldMask(paths=["handle"]),
        ),
        metadata=OWNER,
    )


async def restore_connection(world: World, _reply: bytes) -> None:
    """Data Prod: a dynamic handle, and every setting overridden."""
    await world.stubs.tree.UpdateConnection(
        trpc.UpdateConnectionRequest(
            connection=tree_pb.Connection(
                id=world.connection("Data Prod"), config_overrides=connection_config()
            ),
            update_mask=FieldMask(paths=["handle", "config_overrides"]),
        ),
        metadata=OWNER,
    )


async def restore_grants(world: World, _reply: bytes) -> None:
    await set_base_grants(world)


async def restore_attachments(world: World, _reply: bytes) -> None:
    await attach_base(world)


async def nothing_to_restore(_world: World, _reply: bytes) -> None:
    """Reads, runs and scratch entities: the new state is as good a baseline as the old."""


def _update_scratch(w: World) -> Message:
    base = new_integration("fuzz-scratch", tenant_id="t_acme")
    base.handle_prefix = "s_"
    base.id = w.scratch.id
    return irpc.UpdateIntegrationRequest(
        integration=base, update_mask=FieldMask(paths=WRITABLE_TOP)
    )


def _create_taken(w: World) -> Message:
    return irpc.CreateIntegrationRequest(
        integration=new_integration("fuzz-main", org_id="o_ops"),
        initial_permissions=ipb.RootFolderPermissions(
            mode=ipb.ROOT_FOLDER_PERMISSIONS_MODE_SPECIFIC,
            grantees=[types_pb2.Grantee(workspace_id="w_ops1")],
        ),
    )


def _create_new(w: World) -> Message:
    return irpc.CreateIntegrationRequest(
        integration=new_integration("fuzz-new", tenant_id="t_acme"),
        initial_permissions=ipb.RootFolderPermissions(
            mode=ipb.ROOT_FOLDER_PERMISSIONS_MODE_SPECIFIC,
            grantees=[
                types_pb2.Grantee(org_id="o_ops"),
                types_pb2.Grantee(workspace_id="w_ops1"),
            ],
        ),
    )


def _apply(w: World) -> Message:
    return trpc.ApplyDiscoverySnapshotRequest(
        integration_id=w.scratch.id,
        expected_generation=w.scratch.tree_generation,
        snapshot=w.scratch_snapshot,
    )


FAILURE = tree_pb.DiscoveryFailure(reason="ACCESS_DENIED", message="denied by a test")


def _apply_failure(w: World) -> Message:
    """The failure the broken integration already records: a change only if mutated."""
    return trpc.ApplyDiscoverySnapshotRequest(
        integration_id=w.broken.id, expected_generation=w.broken.tree_generation, failure=FAILURE
    )


async def record_failure(world: World) -> None:
    """The broken integration: ERROR with FAILURE, its tree the organization's."""
    if world.broken.state != ipb.INTEGRATION_STATE_ERROR:
        await world.stubs.tree.ApplyDiscoverySnapshot(
            trpc.ApplyDiscoverySnapshotRequest(
                integration_id=world.broken.id,
                expected_generation=world.broken.tree_generation,
                snapshot=world.scratch_snapshot,
                confirm_deletions=True,
            ),
            metadata=SYSTEM,
        )
        await world.refresh()
    await world.stubs.tree.ApplyDiscoverySnapshot(_apply_failure(world), metadata=SYSTEM)


def _preview_rename(w: World) -> Message:
    """What renaming a connection of the main integration would do to workspaces."""
    before = w.connections["Data Prod"]
    after = tree_pb.Connection()
    after.CopyFrom(before)
    after.handle = "data_renamed"
    return imprpc.PreviewTreeChangeRequest(
        events=[
            tree_pb.TreeEvent(
                integration_id=w.main.id,
                connection_updated=tree_pb.ConnectionUpdated(
                    before=before, after=after, changed_fields=["handle"]
                ),
            )
        ]
    )


QUEUE_FOLLOWED = ipb.EventQueueStatus(state=ipb.EVENT_QUEUE_STATE_FOLLOWING)


def _report_queue(w: World) -> Message:
    """Discovery's report that it follows the scratch integration's queue."""
    return trpc.ApplyDiscoverySnapshotRequest(
        integration_id=w.scratch.id, event_queue_status=QUEUE_FOLLOWED
    )


async def restore_queue_status(world: World, _reply: bytes) -> None:
    await world.stubs.tree.ApplyDiscoverySnapshot(_report_queue(world), metadata=SYSTEM)


async def restore_broken(world: World, _reply: bytes) -> None:
    await world.refresh()
    await record_failure(world)


SEEDS: dict[str, list[Seed]] = {
    # IntegrationService
    "IntegrationService/CreateIntegration": [
        Seed("handle_taken", _create_taken, expect=C.ALREADY_EXISTS, restore=delete_created),
        Seed("new", _create_new, restore=delete_created, weight=0.25),
    ],
    "IntegrationService/GetIntegration": [
        Seed("main", lambda w: irpc.GetIntegrationRequest(id=w.main.id)),
    ],
    "IntegrationService/ListIntegrations": [
        Seed(
            "tenant_with_orgs",
            lambda w: irpc.ListIntegrationsRequest(
                scope=types_pb2.Scope(tenant_id="t_acme"),
                include_org_integrations=True,
                page_size=1,
            ),
            list_page_size=True,
            weight=3.0,
        ),
    ],
    "IntegrationService/UpdateIntegration": [
        Seed("scratch_unchanged", _update_scratch, restore=restore_scratch),
    ],
    "IntegrationService/DeleteIntegration": [
        Seed(
            "wrong_confirmation",
            lambda w: irpc.DeleteIntegrationRequest(
                id=w.scratch.id, confirm_handle="not-the-handle", etag=STALE_ETAG
            ),
            expect=C.FAILED_PRECONDITION,
            restore=nothing_to_restore,
        ),
    ],
    "IntegrationService/GenerateExternalId": [
        Seed(
            "org",
            lambda w: irpc.GenerateExternalIdRequest(
                scope=types_pb2.Scope(org_id="o_ops"), suffix="abcd1234"
            ),
        ),
    ],
    "IntegrationService/RenderRoleTemplate": [
        Seed(
            "discovery_role",
            lambda w: irpc.RenderRoleTemplateRequest(
                kind=irpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE,
                role_name="canopy-discovery",
                external_id=EXTERNAL_ID,
            ),
        ),
        Seed(
            "member_role_of_integration",
            lambda w: irpc.RenderRoleTemplateRequest(
                kind=irpc.ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET, integration_id=w.main.id
            ),
        ),
        Seed(
            "discovery_role_with_event_queue",
            lambda w: irpc.RenderRoleTemplateRequest(
                kind=irpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE,
                integration_id=w.main.id,
                event_queue=True,
            ),
        ),
    ],
    # ConnectionTreeService
    "ConnectionTreeService/GetFolder": [
        Seed("ou", lambda w: trpc.GetFolderRequest(id=w.folders["Production"])),
    ],
    "ConnectionTreeService/ListFolders": [
        Seed(
            "integration",
            lambda w: trpc.ListFoldersRequest(integration_id=w.main.id, page_size=1),
            list_page_size=True,
            weight=3.0,
        ),
        Seed(
            "parent",
            lambda w: trpc.ListFoldersRequest(parent_folder_id=w.main.root_folder_id, page_size=1),
        ),
    ],
    "ConnectionTreeService/UpdateFolder": [
        Seed(
            "back_to_dynamic",
            lambda w: trpc.UpdateFolderRequest(
                folder=tree_pb.Folder(id=w.folders["Staging"], handle=""),
                update_mask=FieldMask(paths=["handle"]),
            ),
            restore=restore_folder,
        ),
    ],
    "ConnectionTreeService/GetConnection": [
        Seed("account", lambda w: trpc.GetConnectionRequest(id=w.connection("Web Prod"))),
    ],
    "ConnectionTreeService/ListConnections": [
        Seed(
            "integration",
            lambda w: trpc.ListConnectionsRequest(integration_id=w.main.id, page_size=1),
            list_page_size=True,
            weight=3.0,
        ),
        Seed(
            "folder",
            lambda w: trpc.ListConnectionsRequest(folder_id=w.folders["Production"], page_size=1),
        ),
    ],
    "ConnectionTreeService/UpdateConnection": [
        Seed(
            "overrides",
            lambda w: trpc.UpdateConnectionRequest(
                connection=tree_pb.Connection(
                    id=w.connection("Data Prod"), config_overrides=connection_config()
                ),
                update_mask=FieldMask(paths=["config_overrides"]),
            ),
            restore=restore_connection,
        ),
        Seed(
            "stale_with_handle",
            lambda w: trpc.UpdateConnectionRequest(
                connection=tree_pb.Connection(
                    id=w.connection("Data Prod"), handle="data_x", etag=STALE_ETAG
                ),
                update_mask=FieldMask(paths=["handle", "config_overrides.regions"]),
            ),
            expect=C.ABORTED,
            restore=restore_connection,
        ),
    ],
    "ConnectionTreeService/GetConnectionTree": [
        Seed("main", lambda w: trpc.GetConnectionTreeRequest(integration_id=w.main.id)),
    ],
    "ConnectionTreeService/ApplyDiscoverySnapshot": [
        Seed("same_snapshot", _apply, metadata=SYSTEM, restore=restore_scratch, weight=0.7),
        Seed("failure", _apply_failure, metadata=SYSTEM, restore=restore_broken),
        Seed(
            "event_queue_status",
            _report_queue,
            metadata=SYSTEM,
            restore=restore_queue_status,
            weight=0.5,
        ),
    ],
    "ConnectionTreeService/WatchTreeEvents": [
        Seed(
            "integration",
            lambda w: trpc.WatchTreeEventsRequest(after_revision=0, integration_id=w.main.id),
        ),
        Seed(
            "scope",
            lambda w: trpc.WatchTreeEventsRequest(
                after_revision=1, scope=types_pb2.Scope(org_id="o_ops")
            ),
        ),
    ],
    # DiscoveryService
    "DiscoveryService/TestDiscoveryAccess": [
        Seed("integration", lambda w: drpc.TestDiscoveryAccessRequest(integration_id=w.main.id)),
        Seed(
            "access",
            lambda w: drpc.TestDiscoveryAccessRequest(
                access=ipb.AwsDiscoveryAccess(
                    role_arn=DISCOVERY_ROLE, external_id=EXTERNAL_ID, event_queue=EVENT_QUEUE
                )
            ),
        ),
    ],
    "DiscoveryService/TestMemberAccess": [
        Seed(
            "accounts",
            lambda w: drpc.TestMemberAccessRequest(
                integration_id=w.main.id,
                account_ids=[w.connections["Web Prod"].account_id],
                sample_size=1,
            ),
        ),
        Seed(
            "unsaved",
            lambda w: drpc.TestMemberAccessRequest(
                unsaved=drpc.UnsavedMemberAccess(
                    scope=types_pb2.Scope(org_id="o_ops"),
                    discovery_access=ipb.AwsDiscoveryAccess(
                        role_arn=DISCOVERY_ROLE, external_id=EXTERNAL_ID
                    ),
                    member_access=ipb.AwsMemberAccess(role_name="canopy-member"),
                ),
                sample_size=1,
            ),
        ),
    ],
    "DiscoveryService/SyncIntegration": [
        Seed(
            "main",
            lambda w: drpc.SyncIntegrationRequest(integration_id=w.main.id),
            restore=nothing_to_restore,
        ),
    ],
    "DiscoveryService/GetSyncRun": [
        Seed("first", lambda w: drpc.GetSyncRunRequest(id=w.runs[-1])),
    ],
    "DiscoveryService/ListSyncRuns": [
        Seed(
            "main",
            lambda w: drpc.ListSyncRunsRequest(integration_id=w.main.id, page_size=1),
            list_page_size=True,
            weight=3.0,
        ),
    ],
    "DiscoveryService/WatchSyncRun": [
        Seed("finished", lambda w: drpc.WatchSyncRunRequest(id=w.runs[-1])),
    ],
    # DirectoryService
    "DirectoryService/UpsertTenant": [
        Seed(
            "scratch_unchanged",
            lambda w: dirrpc.UpsertTenantRequest(
                tenant=dirpb.Tenant(
                    id="t_scratch", handle="scratch", plan=types_pb2.PLAN_ENTERPRISE
                )
            ),
            metadata=SYSTEM,
            restore=restore_directory,
        ),
    ],
    "DirectoryService/GetTenant": [
        Seed("acme", lambda w: dirrpc.GetTenantRequest(id="t_acme")),
    ],
    "DirectoryService/UpsertOrg": [
        Seed(
            "scratch_unchanged",
            lambda w: dirrpc.UpsertOrgRequest(
                org=dirpb.Org(
                    id="o_scratch", tenant_id="t_scratch", handle="so", plan=types_pb2.PLAN_TEAM
                )
            ),
            metadata=SYSTEM,
            restore=restore_directory,
        ),
    ],
    "DirectoryService/GetOrg": [
        Seed("ops", lambda w: dirrpc.GetOrgRequest(id="o_ops")),
    ],
    "DirectoryService/UpsertWorkspace": [
        Seed(
            "scratch_unchanged",
            lambda w: dirrpc.UpsertWorkspaceRequest(
                workspace=dirpb.Workspace(id="w_scratch", org_id="o_scratch", handle="scratch")
            ),
            metadata=SYSTEM,
            restore=restore_directory,
        ),
    ],
    "DirectoryService/GetWorkspace": [
        Seed("ops1", lambda w: dirrpc.GetWorkspaceRequest(id="w_ops1")),
    ],
    "DirectoryService/ListWorkspaces": [
        Seed(
            "ops",
            lambda w: dirrpc.ListWorkspacesRequest(org_id="o_ops", page_size=1),
            list_page_size=True,
            weight=3.0,
        ),
    ],
    "DirectoryService/DeleteWorkspace": [
        Seed(
            "stale",
            lambda w: dirrpc.DeleteWorkspaceRequest(id="w_doomed", etag=STALE_ETAG),
            metadata=SYSTEM,
            expect=C.ABORTED,
            restore=restore_directory,
        ),
    ],
    # PermissionService
    "PermissionService/GetPermissions": [
        Seed("folder", lambda w: prpc.GetPermissionsRequest(folder_id=w.folders["Staging"])),
    ],
    "PermissionService/SetPermissions": [
        Seed(
            "same_grants",
            lambda w: prpc.SetPermissionsRequest(
                connection_id=w.connection("Sandbox"),
                grantees=[
                    types_pb2.Grantee(workspace_id="w_ops2"),
                    types_pb2.Grantee(org_id="o_ops"),
                ],
            ),
            restore=restore_grants,
        ),
    ],
    "PermissionService/ListAvailableConnections": [
        Seed(
            "ops1",
            lambda w: prpc.ListAvailableConnectionsRequest(workspace_id="w_ops1", page_size=1),
            list_page_size=True,
            weight=3.0,
        ),
    ],
    # WorkspaceSchemaService
    "WorkspaceSchemaService/AttachSchema": [
        Seed(
            "already_attached",
            lambda w: wrpc.AttachSchemaRequest(
                workspace_id="w_ops2", connection_id=w.connection("Web Prod")
            ),
            expect=C.ALREADY_EXISTS,
            restore=restore_attachments,
        ),
    ],
    "WorkspaceSchemaService/DetachSchema": [
        Seed(
            "not_attached",
            lambda w: wrpc.DetachSchemaRequest(
                workspace_id="w_ops2", connection_id=w.connection("Data Prod")
            ),
            expect=C.NOT_FOUND,
            restore=restore_attachments,
        ),
    ],
    "WorkspaceSchemaService/ListWorkspaceSchemas": [
        Seed(
            "ops1",
            lambda w: wrpc.ListWorkspaceSchemasRequest(workspace_id="w_ops1", page_size=1),
            list_page_size=True,
            weight=3.0,
        ),
    ],
    "WorkspaceSchemaService/WatchWorkspaceSchemas": [
        Seed(
            "ops1",
            lambda w: wrpc.WatchWorkspaceSchemasRequest(workspace_id="w_ops1", after_revision=0),
        ),
    ],
    # ChangeImpactService (system callers: the integration service's previews)
    "ChangeImpactService/PreviewTreeChange": [
        Seed("rename", _preview_rename, metadata=SYSTEM, weight=0.3),
    ],
    # WorkspaceConfigService
    "WorkspaceConfigService/RenderWorkspaceConfig": [
        Seed(
            "ops1_source_profile",
            lambda w: crpc.RenderWorkspaceConfigRequest(
                workspace_id="w_ops1",
                credential_source=crpc.AwsCredentialSource(source_profile="platform"),
                connection_patterns=["web_*", "*_prod", "[a-z]?ta*"],
            ),
        ),
        Seed(
            "ops1_credential_source",
            lambda w: crpc.RenderWorkspaceConfigRequest(
                workspace_id="w_ops1",
                credential_source=crpc.AwsCredentialSource(credential_source="EcsContainer"),
            ),
            weight=0.5,
        ),
    ],
}


# -- stored data and background work ----------------------------------------------------------------


# Leases held for as long as a replica runs (an event queue's follower renews its lease every
# few seconds): they move on by themselves, and are no data a call could change.
LEASE_COLUMNS = {"discovery.event_queues": ("lease_owner", "lease_expires_at")}


async def digest(db: asyncpg.Connection) -> dict[str, str]:
    """A digest of every table of every service's schema, by table."""
    tables = await db.fetch(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE' "
        "ORDER BY 1, 2",
        list(SCHEMAS),
    )
    parts = []
    for t in tables:
        name = f"{t['table_schema']}.{t['table_name']}"
        row = (
            f"(to_jsonb(x) - ARRAY{list(LEASE_COLUMNS[name])}::text[])"
            if name in LEASE_COLUMNS
            else "x"
        )
        parts.append(
            f"SELECT '{name}' AS name, "
            f"md5(coalesce(string_agg(md5({row}::text), '' ORDER BY md5({row}::text)), '')) "
            f'AS digest FROM "{t["table_schema"]}"."{t["table_name"]}" x'
        )
    rows = await db.fetch(" UNION ALL ".join(parts))
    return {r["name"]: r["digest"] for r in rows}


async def quiet(db: asyncpg.Connection) -> bool:
    """No sync queued, running or leased, every event queue's follower has reported on it, and
    the projection has read the whole tree log."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM discovery.sync_runs WHERE state IN ('QUEUED', 'RUNNING'))"
        " AS active,"
        " (SELECT count(*) FROM discovery.schedules WHERE lease_owner IS NOT NULL)"
        " + (SELECT count(*) FROM integration.integrations"
        "    WHERE event_queue <> '' AND event_queue_state = 'PENDING') AS leased,"
        " (SELECT revision FROM integration.event_log_head) AS head,"
        " (SELECT coalesce(max(revision), 0) FROM permissions.consumer_cursors) AS projected,"
        " (SELECT coalesce(max(revision), 0) FROM discovery.consumer_cursors) AS triggered"
    )
    assert row is not None
    return bool(
        row["active"] == 0
        and row["leased"] == 0
        and row["projected"] >= row["head"]
        and row["triggered"] >= row["head"]
    )


async def settle(db: asyncpg.Connection, timeout: float = 90) -> dict[str, str]:
    """Wait until background work is done and the stored data stays the same; its digest."""
    deadline = time.monotonic() + timeout
    last: dict[str, str] | None = None
    steady = 0
    while True:
        now = await digest(db)
        if await quiet(db) and now == last:
            steady += 1
            if steady >= 2:
                return now
        else:
            steady = 0
        last = now
        if time.monotonic() > deadline:
            raise TimeoutError("background work did not settle")
        await asyncio.sleep(0.03)
