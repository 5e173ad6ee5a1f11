"""A fuzz test over every RPC of the suite, against the three services running as processes.

The RPCs come from the service descriptors of the generated API (`every_rpc`); each has one or
more valid seed requests (`SEEDS`, written by hand against a seeded state: tenant, orgs,
workspaces, an org-scoped integration synced from a moto organization, a tenant-scoped scratch
integration, a folder grant, attachments, sync runs). `tests.e2e.mutations` turns each seed into
bad inputs, one field at a time, and each is sent as raw bytes with a token allowed to make the
seed call, so what is exercised is input validation, not authentication.

Every call must answer: a status other than INTERNAL, UNKNOWN, UNAVAILABLE (every dependency is
up: UNAVAILABLE is an input error reported as an outage, or a dropped connection),
UNAUTHENTICATED, DEADLINE_EXCEEDED (a hang) and the other codes outside the contract; a
`google.rpc.Status` with an `ErrorInfo` on every error; a `BadRequest` naming a field of the
request on every INVALID_ARGUMENT; no error, traceback or "unexpected error" line in any
service's log; and no change to any table of any service's schema after a refused call. A
mutation that is a valid request may succeed: it is counted, the seed's `restore` undoes it,
background work (projection, discovery runs) is waited for, and the new state is the baseline.
At the end every service still answers Health SERVING.

Seeded and bounded: `CANOPY_FUZZ_CASES` (default 2500) inputs in all, spread over the seeds
in proportion to their fields; `CANOPY_FUZZ_SEED` (default 0) picks them; past the
deterministic mutations a long run adds random ones. `CANOPY_FUZZ_ONLY=ListFolders,GetFolder`
fuzzes only those RPCs. The counts per RPC are printed to the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.discovery.v1 import discovery_service_pb2_grpc as dgrpc
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as trpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tgrpc
from canopy.integration.v1 import integration_pb2 as ipb
from canopy.integration.v1 import integration_service_pb2 as irpc
from canopy.integration.v1 import integration_service_pb2_grpc as igrpc
from canopy.permissions.v1 import directory_pb2 as dirpb
from canopy.permissions.v1 import directory_service_pb2 as dirrpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dirgrpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import permission_service_pb2_grpc as pgrpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2
from tests.discovery.conftest import DISCOVERY_ROLE, Org
from tests.e2e import mutations as mut
from tests.e2e.processes import SERVICES, ServiceProcess
from tests.helpers import bearer, token

SERVICE_MODULES: Sequence[ModuleType] = (irpc, trpc, drpc, dirrpc, prpc, wrpc)
PROCESS_OF = {
    "canopy.integration.v1.IntegrationService": "integration",
    "canopy.integration.v1.ConnectionTreeService": "integration",
    "canopy.discovery.v1.DiscoveryService": "discovery",
    "canopy.permissions.v1.DirectoryService": "permissions",
    "canopy.permissions.v1.PermissionService": "permissions",
    "canopy.permissions.v1.WorkspaceSchemaService": "permissions",
}
SCHEMAS = ("integration", "discovery", "permissions")
C = grpc.StatusCode
# What the contract lets a call answer when every dependency is up and the token is allowed.
ALLOWED = {
    C.OK,
    C.INVALID_ARGUMENT,
    C.NOT_FOUND,
    C.ALREADY_EXISTS,
    C.FAILED_PRECONDITION,
    C.ABORTED,
    C.PERMISSION_DENIED,
    C.OUT_OF_RANGE,
}
CALL_TIMEOUT = 30.0
STREAM_FIRST_MESSAGE = 5.0  # the services send a progress message every second when idle
HEALTH_EVERY = 250

OWNER = bearer(token("fuzzer", ttl=86_400, t_acme="owner", t_scratch="owner"))
SYSTEM = bearer(token("platform", system=True, ttl=86_400))
STALE_ETAG = 'W/"stale"'
EXTERNAL_ID = "o_ops:abcd1234"
DAY = Duration(seconds=86_400)


# -- the RPCs, from the descriptors --------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One RPC of a Canopy service, as its descriptor describes it."""

    service: str
    name: str
    request: type[Message]
    response: type[Message]
    streaming: bool

    @property
    def method(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def label(self) -> str:
        return f"{self.service.rsplit('.', 1)[-1]}/{self.name}"


def every_rpc() -> list[Rpc]:
    """Every RPC of the six Canopy services, unary and server-streaming."""
    from google.protobuf import message_factory

    found = []
    for module in SERVICE_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert not method.client_streaming, f"{method.full_name}: client streaming"
                found.append(
                    Rpc(
                        service.full_name,
                        method.name,
                        message_factory.GetMessageClass(method.input_type),
                        message_factory.GetMessageClass(method.output_type),
                        method.server_streaming,
                    )
                )
    return found


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
        """Re-read what later seeds depend on (the scratch integration's generation)."""
        got = await self.stubs.integrations.GetIntegration(
            irpc.GetIntegrationRequest(id=self.scratch.id), metadata=OWNER
        )
        self.scratch = got.integration


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
            role_arn=DISCOVERY_ROLE, external_id=f"{owner}:abcd1234"
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
    scratch = new_integration("fuzz-scratch", tenant_id="t_acme")
    scratch.handle_prefix = "s_"
    world.scratch = (
        await stubs.integrations.CreateIntegration(
            irpc.CreateIntegrationRequest(
                integration=scratch,
                initial_permissions=ipb.RootFolderPermissions(
                    mode=ipb.ROOT_FOLDER_PERMISSIONS_MODE_NONE
                ),
            ),
            metadata=OWNER,
        )
    ).integration
    await settle(db)  # both first syncs have run
    for integration in (world.main, world.scratch):
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


def _apply_failure(w: World) -> Message:
    return trpc.ApplyDiscoverySnapshotRequest(
        integration_id=w.scratch.id,
        expected_generation=w.scratch.tree_generation,
        failure=tree_pb.DiscoveryFailure(reason="ACCESS_DENIED", message="denied by a test"),
    )


SEEDS: dict[str, list[Seed]] = {
    # IntegrationService
    "IntegrationService/CreateIntegration": [
        Seed("handle_taken", _create_taken, expect=C.ALREADY_EXISTS, restore=delete_created),
        Seed("new", _create_new, restore=delete_created),
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
        Seed("same_snapshot", _apply, metadata=SYSTEM, restore=restore_scratch),
        Seed("failure", _apply_failure, metadata=SYSTEM, restore=restore_scratch),
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
                access=ipb.AwsDiscoveryAccess(role_arn=DISCOVERY_ROLE, external_id=EXTERNAL_ID)
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
        ),
    ],
    "WorkspaceSchemaService/WatchWorkspaceSchemas": [
        Seed(
            "ops1",
            lambda w: wrpc.WatchWorkspaceSchemasRequest(workspace_id="w_ops1", after_revision=0),
        ),
    ],
}


# -- stored data and background work ----------------------------------------------------------------


async def digest(db: asyncpg.Connection) -> dict[str, str]:
    """A digest of every table of every service's schema, by table."""
    tables = await db.fetch(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE' "
        "ORDER BY 1, 2",
        list(SCHEMAS),
    )
    parts = [
        f"SELECT '{t['table_schema']}.{t['table_name']}' AS name, "
        f"md5(coalesce(string_agg(md5(x::text), '' ORDER BY md5(x::text)), '')) AS digest "
        f'FROM "{t["table_schema"]}"."{t["table_name"]}" x'
        for t in tables
    ]
    rows = await db.fetch(" UNION ALL ".join(parts))
    return {r["name"]: r["digest"] for r in rows}


async def quiet(db: asyncpg.Connection) -> bool:
    """No sync queued, running or leased, and the projection has read the whole tree log."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM discovery.sync_runs WHERE state IN ('QUEUED', 'RUNNING'))"
        " AS active,"
        " (SELECT count(*) FROM discovery.schedules WHERE lease_owner IS NOT NULL) AS leased,"
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
        await asyncio.sleep(0.1)


# -- calling and judging ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a call answered."""

    code: grpc.StatusCode
    details: str
    trailing: tuple[tuple[str, Any], ...]
    reply: bytes
    seconds: float
    note: str = ""

    @property
    def status(self) -> status_pb2.Status | None:
        packed = dict(self.trailing).get("grpc-status-details-bin")
        return status_pb2.Status.FromString(packed) if packed else None

    @property
    def reason(self) -> str:
        """`domain/REASON` of the ErrorInfo, if any."""
        for detail in self.status.details if self.status else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return f"{info.domain}/{info.reason}"
        return ""

    @property
    def fields(self) -> list[str]:
        """The fields the BadRequest names."""
        found: list[str] = []
        for detail in self.status.details if self.status else ():
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                found += [v.field for v in bad.field_violations]
        return found


@dataclass(frozen=True)
class Case:
    """One input sent: enough to reproduce it."""

    number: int
    rpc: Rpc
    seed: str
    mutation: mut.Mutation
    payload: bytes

    def describe(self) -> str:
        shown = self.payload if len(self.payload) <= 160 else self.payload[:160] + b"..."
        return (
            f"#{self.number} {self.rpc.label} seed={self.seed} field={self.mutation.path} "
            f"mutation={self.mutation.kind} ({self.mutation.detail}); "
            f"{len(self.payload)} bytes {shown!r}"
        )


@dataclass(frozen=True)
class Problem:
    """One rule an answer broke, and what showed it."""

    rule: str  # status | error_details | field_violation | log | data_changed
    evidence: str


@dataclass
class Finding:
    """A case that broke one or more rules."""

    case: Case
    outcome: Outcome
    problems: list[Problem]

    def cause(self) -> tuple[str, str, str]:
        """What makes two findings one cause: the status, the rules broken, and the exception
        and frame that the log names (else the error's reason and normalised message)."""
        rules = ",".join(sorted({p.rule for p in self.problems}))
        logged = [p.evidence for p in self.problems if p.rule == "log"]
        if logged:
            key = _traceback_key(logged[0])
        else:
            key = f"{self.outcome.reason} {_normalised(self.outcome.details)}".strip()
        return self.outcome.code.name, rules, key


def _traceback_key(evidence: str) -> str:
    """The last exception type and the innermost frame of our code (else the last frame)."""
    types = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exhausted|Warning))\b", evidence, re.M)
    frames = re.findall(r'File "([^"]+)", line \d+, in ([\w.<>]+)', evidence)
    ours = [f for f in frames if "/canopy" in f[0] or "/services/" in f[0] or "/libs/" in f[0]]
    frame = (ours or frames or [("", "")])[-1]
    where = f"{Path(frame[0]).name}:{frame[1]}" if frame[0] else ""
    if types or where:
        return f"{types[-1] if types else ''} at {where}".strip()
    return _normalised(evidence)


def _normalised(text: str) -> str:
    """A message with its values left out, so that one cause with many inputs is one group."""
    text = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "…", text)
    text = re.sub(r"\b[a-z]_[0-9a-z]{6,}\b|\d+", "#", text)
    return text[:160]


class Logs:
    """New lines of each service's log since the last look: the errors among them."""

    def __init__(self, services: dict[str, ServiceProcess]) -> None:
        self.services = services
        self.offsets = {name: s.log.stat().st_size for name, s in services.items()}

    def errors(self) -> list[str]:
        found = []
        for name, service in self.services.items():
            with service.log.open("rb") as handle:
                handle.seek(self.offsets[name])
                data = handle.read()
            complete = data.rfind(b"\n") + 1
            self.offsets[name] += complete
            for raw in data[:complete].decode(errors="replace").splitlines():
                problem = _problem(raw)
                if problem:
                    found.append(f"{name}: {problem}")
        return found


def _problem(line: str) -> str | None:
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        bad = re.search(r"Traceback|Exception|Error|^E\d{4}", line)
        return line[:2000] if bad else None
    level = str(entry.get("level", ""))
    message = str(entry.get("msg", ""))
    if level in ("error", "critical") or "exception" in entry or "unexpected" in message.lower():
        exception = str(entry.get("exception", ""))
        return f"[{level}] {entry.get('logger')}: {message} {exception}"[:4000]
    return None


def request_fields(rpc: Rpc) -> set[str]:
    descriptor = rpc.request.DESCRIPTOR
    return {f.name for f in descriptor.fields} | set(descriptor.oneofs_by_name)


def judge(case: Case, outcome: Outcome) -> list[Problem]:
    """The rules every answer must keep, apart from logs and stored data."""
    problems = []
    if outcome.code not in ALLOWED:
        problems.append(Problem("status", f"{outcome.code.name}: {outcome.details} {outcome.note}"))
    if outcome.code == C.OK or outcome.code not in ALLOWED:
        return problems
    if outcome.status is None:
        problems.append(Problem("error_details", f"no google.rpc.Status: {outcome.details}"))
        return problems
    if not outcome.reason.startswith("canopy.dev/"):
        problems.append(Problem("error_details", f"no ErrorInfo of canopy.dev: {outcome.details}"))
    if outcome.code == C.INVALID_ARGUMENT:
        known = request_fields(case.rpc)
        named = [f for f in outcome.fields if re.split(r"[.\[]", f, maxsplit=1)[0] in known]
        if not named:
            problems.append(
                Problem(
                    "field_violation",
                    f"{outcome.reason} names no field of the request "
                    f"(violations: {outcome.fields}): {outcome.details}",
                )
            )
    return problems


class Caller:
    """Raw bytes to any RPC, with a request id per case."""

    def __init__(self, channels: dict[str, grpc.aio.Channel]) -> None:
        self.channels = channels
        self._callables: dict[str, Any] = {}

    async def call(self, rpc: Rpc, payload: bytes, metadata: Sequence[tuple[str, str]]) -> Outcome:
        channel = self.channels[PROCESS_OF[rpc.service]]
        started = time.perf_counter()
        if rpc.streaming:
            return await self._stream(channel, rpc, payload, metadata, started)
        callable_ = self._callables.get(rpc.method)
        if callable_ is None:
            callable_ = self._callables[rpc.method] = channel.unary_unary(rpc.method)
        try:
            reply = await callable_(payload, metadata=metadata, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return Outcome(
                error.code(),
                error.details() or "",
                tuple(error.trailing_metadata() or ()),
                b"",
                time.perf_counter() - started,
            )
        return Outcome(C.OK, "", (), reply, time.perf_counter() - started)

    async def _stream(
        self,
        channel: grpc.aio.Channel,
        rpc: Rpc,
        payload: bytes,
        metadata: Sequence[tuple[str, str]],
        started: float,
    ) -> Outcome:
        """The first message or the status; a stream that stays silent is a hang."""
        stream: Any = channel.unary_stream(rpc.method)
        call: Any = stream(payload, metadata=metadata)
        try:
            first = await asyncio.wait_for(call.read(), STREAM_FIRST_MESSAGE)
        except TimeoutError:
            call.cancel()
            return Outcome(
                C.DEADLINE_EXCEEDED,
                f"no message and no status within {STREAM_FIRST_MESSAGE} s",
                (),
                b"",
                time.perf_counter() - started,
                note="(the stream stayed silent)",
            )
        except grpc.aio.AioRpcError as error:
            return Outcome(
                error.code(),
                error.details() or "",
                tuple(error.trailing_metadata() or ()),
                b"",
                time.perf_counter() - started,
            )
        if first is grpc.aio.EOF:
            code = await call.code()
            trailing = await call.trailing_metadata()
            return Outcome(
                code,
                await call.details() or "",
                tuple(trailing or ()),
                b"",
                time.perf_counter() - started,
            )
        call.cancel()
        return Outcome(C.OK, "", (), bytes(first), time.perf_counter() - started)


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts for the report."""

    tried: Counter[str] = field(default_factory=Counter)
    codes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    changed: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def budgets(plan: dict[str, list[mut.Mutation]], total: int) -> dict[str, int]:
    """Cases per seed: in proportion to its deterministic mutations, at least 20 each."""
    size = sum(len(v) for v in plan.values()) or 1
    return {key: max(20, round(total * len(found) / size)) for key, found in plan.items()}


async def health(services: dict[str, ServiceProcess]) -> list[str]:
    """The services that do not answer SERVING (or have exited)."""
    problems = []
    for name, service in services.items():
        if service.process.poll() is not None:
            problems.append(f"{name} exited with {service.process.returncode}")
            continue
        async with grpc.aio.insecure_channel(service.address) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=SERVICES[name][1]), timeout=5
                )
            except grpc.aio.AioRpcError as error:
                problems.append(f"{name}: health {error.code().name}")
                continue
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                problems.append(f"{name}: health {reply.status}")
    return problems


def report(tally: Tally, findings: list[Finding], seconds: float, seed: int) -> str:
    """Counts per RPC, then the findings grouped by cause, one reproducible example each."""
    lines = [
        f"fuzz: {sum(tally.tried.values())} inputs over {len(tally.tried)} RPCs in {seconds:.1f} s "
        f"(CANOPY_FUZZ_SEED={seed}); {sum(tally.changed.values())} were valid requests that "
        f"changed data (undone); {len(findings)} broke a rule",
    ]
    for label in sorted(tally.tried):
        codes = ", ".join(f"{c} {n}" for c, n in tally.codes[label].most_common())
        lines.append(
            f"  {label}: {tally.tried[label]} inputs ({codes}); {tally.changed[label]} changed "
            f"data; {tally.seconds[label]:.1f} s"
        )
    groups: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[finding.cause()].append(finding)
    if groups:
        lines.append(f"{len(groups)} causes:")
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    for number, ((status, rules, key), found) in enumerate(ordered, 1):
        by_rpc = Counter(f.case.rpc.label for f in found)
        inputs = Counter(f"{f.case.mutation.path}:{f.case.mutation.kind}" for f in found)
        lines.append(f"{number}. {status} [{rules}] x{len(found)}: {key}")
        lines.append(f"   rpcs: {', '.join(f'{r} x{n}' for r, n in by_rpc.most_common())}")
        shown = ", ".join(k for k, _ in inputs.most_common(10))
        more = f" (+{len(inputs) - 10} more)" if len(inputs) > 10 else ""
        lines.append(f"   inputs: {shown}{more}")
        example = found[0]
        lines.append(f"   e.g. {example.case.describe()}")
        lines.append(
            f"   answer: {status} {example.outcome.reason} {example.outcome.details[:300]!r}"
        )
        for problem in example.problems:
            if problem.rule != "status":
                lines.append(f"   {problem.rule}: {_tail(problem.evidence)}")
    return "\n".join(lines)


def _tail(evidence: str, lines: int = 6) -> str:
    """The first line of a log entry and the last lines of its traceback."""
    rows = evidence.splitlines()
    if len(rows) <= lines + 1:
        return evidence[:1500]
    return "\n      ".join([rows[0][:300], "...", *(r[:300] for r in rows[-lines:])])


def test_every_rpc_of_the_suite_has_a_seed() -> None:
    labels = {rpc.label for rpc in every_rpc()}
    assert len(labels) == 37
    assert labels == set(SEEDS), (
        f"no seed for {sorted(labels - set(SEEDS))}; stale {sorted(set(SEEDS) - labels)}"
    )


def test_every_mutation_of_every_seed_builds_its_bytes() -> None:
    """The generator alone, on messages shaped like the seeds (no services)."""
    world = World(stubs=Stubs(*[None] * 6), org=None)  # type: ignore[arg-type]
    world.main = ipb.Integration(id="i_main", root_folder_id="f_root")
    world.scratch = ipb.Integration(id="i_scratch", tree_generation=3)
    world.folders = {t: f"f_{t.lower()}" for t in ("Production", "Europe", "Staging")}
    world.connections = {
        n: tree_pb.Connection(id=f"c_{i}", account_id=f"{i:012d}")
        for i, n in enumerate(("Web Prod", "Data Prod", "Web Staging", "Sandbox"))
    }
    world.runs = ["r_1", "r_2"]
    world.scratch_snapshot = tree_pb.OrganizationSnapshot(
        organization_id="o-x", accounts=[tree_pb.Account(id="1", name="a")]
    )
    rpcs = {rpc.label: rpc for rpc in every_rpc()}
    for label, seeds in SEEDS.items():
        for seed in seeds:
            message = seed.build(world)
            assert isinstance(message, rpcs[label].request), f"{label}/{seed.name}"
            found = mut.mutations(message, mut.Context(page_token="eyJhIjogMX0"))
            assert found, label
            for mutation in found:
                if not mutation.expensive:
                    assert isinstance(mutation.payload(message), bytes)


async def test_bad_input_to_every_rpc_gets_a_clean_refusal_and_changes_nothing(
    services: dict[str, ServiceProcess],
    org: Org,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    total = int(os.environ.get("CANOPY_FUZZ_CASES", "2500"))
    rng_seed = int(os.environ.get("CANOPY_FUZZ_SEED", "0"))
    only = {n for n in os.environ.get("CANOPY_FUZZ_ONLY", "").split(",") if n}
    started = time.monotonic()
    channels = {
        name: grpc.aio.insecure_channel(
            service.address,
            options=[
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        for name, service in services.items()
    }
    db = await asyncpg.connect(database_url)
    try:
        stubs = Stubs(
            integrations=igrpc.IntegrationServiceStub(channels["integration"]),
            tree=tgrpc.ConnectionTreeServiceStub(channels["integration"]),
            discovery=dgrpc.DiscoveryServiceStub(channels["discovery"]),
            directory=dirgrpc.DirectoryServiceStub(channels["permissions"]),
            permissions=pgrpc.PermissionServiceStub(channels["permissions"]),
            schemas=wgrpc.WorkspaceSchemaServiceStub(channels["permissions"]),
        )
        world = await build_world(stubs, org, db)
        caller = Caller(channels)
        logs = Logs(services)
        setup_errors = logs.errors()
        assert not setup_errors, "errors in the logs while seeding:\n" + "\n".join(setup_errors)
        rpcs = [r for r in every_rpc() if not only or r.name in only]

        # Each seed's own answer, and the real next-page tokens to forge from.
        for rpc in rpcs:
            for seed in SEEDS[rpc.label]:
                outcome = await caller.call(rpc, mut.encode(seed.build(world)), seed.metadata)
                assert outcome.code == seed.expect, (
                    f"seed {rpc.label}/{seed.name} answered {outcome.code.name} "
                    f"{outcome.details}, not {seed.expect.name}: the seed table is stale"
                )
                if seed.list_page_size:
                    token_value = rpc.response.FromString(outcome.reply).next_page_token  # type: ignore[attr-defined]
                    assert token_value, f"{rpc.label}/{seed.name}: one page only; seed more"
                    world.page_tokens[rpc.label] = token_value
        baseline = await settle(db)

        plan: dict[str, list[mut.Mutation]] = {}
        seeds: dict[str, tuple[Rpc, Seed]] = {}
        for rpc in rpcs:
            for seed in SEEDS[rpc.label]:
                key = f"{rpc.label}/{seed.name}"
                own = world.page_tokens.get(rpc.label)
                foreign = tuple(v for k, v in sorted(world.page_tokens.items()) if k != rpc.label)
                context = mut.Context(own, foreign[:2], rng_seed)
                plan[key] = mut.mutations(seed.build(world), context)
                seeds[key] = (rpc, seed)
        tally = Tally()
        findings: list[Finding] = []
        number = 0
        for key, quota in budgets(plan, total).items():
            rpc, seed = seeds[key]
            rng = random.Random(f"{rng_seed}/{key}")
            chosen = mut.select(plan[key], quota, rng, max_expensive=max(2, quota // 40))
            while len(chosen) < quota:  # long runs: random mutations past the deterministic ones
                chosen.append(mut.random_mutation(seed.build(world), rng))
            for mutation in chosen:
                began = time.perf_counter()
                number += 1
                payload = mutation.payload(seed.build(world))
                case = Case(number, rpc, seed.name, mutation, payload)
                metadata = (*seed.metadata, ("x-request-id", f"fuzz-{number}"))
                outcome = await caller.call(rpc, payload, metadata)
                tally.tried[rpc.label] += 1
                tally.codes[rpc.label][outcome.code.name] += 1
                problems = judge(case, outcome)
                problems += [Problem("log", line) for line in logs.errors()]
                after = await digest(db)
                if after != baseline:
                    if outcome.code != C.OK:
                        changed = sorted(t for t in after if after[t] != baseline.get(t))
                        problems.append(Problem("data_changed", f"tables {changed}"))
                    else:
                        tally.changed[rpc.label] += 1
                        if seed.restore is not None:
                            await seed.restore(world, outcome.reply)
                    baseline = await settle(db)
                    await world.refresh()
                    problems += [Problem("log", f"(after) {line}") for line in logs.errors()]
                if problems:
                    findings.append(Finding(case, outcome, problems))
                tally.seconds[rpc.label] += time.perf_counter() - began
                if number % HEALTH_EVERY == 0:
                    down = await health(services)
                    assert not down, f"after {case.describe()}: {down}"
        down = await health(services)
        text = report(tally, findings, time.monotonic() - started, rng_seed)
        record_property("fuzz_inputs", sum(tally.tried.values()))
        with capsys.disabled():
            print("\n" + text)
        assert not down, f"services no longer serving: {down}"
        assert not findings, text
    finally:
        await db.close()
        for channel in channels.values():
            await channel.close()
