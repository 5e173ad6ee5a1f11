"""Sharing over real gRPC and PostgreSQL, driven from the integration side (snapshots applied
through ApplyDiscoverySnapshot) and observed on the workspace schema streams."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_pb2 as dpb
from canopy.permissions.v1 import directory_service_pb2 as drpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dgrpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import permission_service_pb2_grpc as pgrpc
from canopy.permissions.v1 import workspace_schema_pb2 as wpb
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2
from canopy_core.server import RunningService, serve
from canopy_integration.server import spec as integration_spec
from canopy_integration.settings import IntegrationSettings
from canopy_permissions.attachments import SCHEMAS_PAGE
from canopy_permissions.grants import AVAILABLE_PAGE
from canopy_permissions.projection import not_yet_projected
from canopy_permissions.server import spec as permissions_spec
from canopy_permissions.settings import PermissionsSettings
from tests.helpers import bearer, error_details, free_port, token, unkeyed_page_token
from tests.integration.conftest import (
    ORG_OWNER,
    OUTSIDER,
    OWNER,
    ROOT,
    SYSTEM,
    account,
    ou,
    seed_directory,
    snapshot,
)

WS1 = bearer(token("wendy", w_ops1="member"))


@dataclass
class Sharing:
    """The permissions and integration services, and stubs."""

    integrations: Any
    tree: Any
    directory: Any
    permissions: Any
    schemas: Any
    services: dict[str, RunningService]
    env: dict[str, Any]
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def restart_permissions(self) -> None:
        """Start another permissions service on the same database and port."""
        self.services["permissions"] = await serve(
            permissions_spec(), PermissionsSettings(**self.env)
        )


@pytest.fixture
async def s(service_env: dict[str, Any]) -> AsyncIterator[Sharing]:
    integration_port, permissions_port = free_port(), free_port()
    permissions_env = {
        **service_env,
        "db_schema": "permissions",
        "port": permissions_port,
        "integration_address": f"127.0.0.1:{integration_port}",
    }
    permissions = await serve(permissions_spec(), PermissionsSettings(**permissions_env))
    integration = await serve(
        integration_spec(),
        IntegrationSettings(
            **{
                **service_env,
                "db_schema": "integration",
                "port": integration_port,
                "permissions_address": f"127.0.0.1:{permissions_port}",
            }
        ),
    )
    ichannel = grpc.aio.insecure_channel(f"127.0.0.1:{integration_port}")
    pchannel = grpc.aio.insecure_channel(f"127.0.0.1:{permissions_port}")
    directory = dgrpc.DirectoryServiceStub(pchannel)
    await seed_directory(directory)
    built = Sharing(
        integrations=rpc_grpc.IntegrationServiceStub(ichannel),
        tree=tree_grpc.ConnectionTreeServiceStub(ichannel),
        directory=directory,
        permissions=pgrpc.PermissionServiceStub(pchannel),
        schemas=wgrpc.WorkspaceSchemaServiceStub(pchannel),
        services={"permissions": permissions, "integration": integration},
        env=permissions_env,
        channels=[ichannel, pchannel],
    )
    yield built
    for channel in built.channels:
        await channel.close()
    await integration.stop()
    await built.services["permissions"].stop()


async def create(
    s: Sharing, mode: int = pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES, prefix: str = ""
) -> pb.Integration:
    reply = await s.integrations.CreateIntegration(
        rpc.CreateIntegrationRequest(
            integration=pb.Integration(
                handle="aws-ops",
                scope=types_pb2.Scope(org_id="o_ops"),
                discovery_access=pb.AwsDiscoveryAccess(
                    role_arn="arn:aws:iam::111111111111:role/d", external_id="o_ops:abcd1234"
                ),
                member_access=pb.AwsMemberAccess(role_name="m"),
                handle_prefix=prefix,
            ),
            initial_permissions=pb.RootFolderPermissions(mode=mode),  # type: ignore[arg-type]
        ),
        metadata=ORG_OWNER,
    )
    created: pb.Integration = reply.integration
    await projected(s, created.root_folder_id)
    return created


async def projected(s: Sharing, folder_id: str) -> None:
    """Wait until the permissions service has projected a folder (it learns the tree from the
    integration service's log, asynchronously)."""
    for _ in range(200):
        try:
            await s.permissions.GetPermissions(
                prpc.GetPermissionsRequest(folder_id=folder_id), metadata=SYSTEM
            )
            return
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
            await asyncio.sleep(0.05)
    raise AssertionError(f"{folder_id} was never projected")


async def apply(s: Sharing, integration_id: str, snap: tree_pb.OrganizationSnapshot) -> None:
    current = await s.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=integration_id), metadata=SYSTEM
    )
    await s.tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=integration_id,
            snapshot=snap,
            expected_generation=current.integration.tree_generation,
            confirm_deletions=True,
        ),
        metadata=SYSTEM,
    )


async def available(s: Sharing, workspace: str, *, expect: int | None = None) -> list[Any]:
    """The workspace's available connections, waiting for the projection to show `expect`."""
    for _ in range(100):
        reply = await s.permissions.ListAvailableConnections(
            prpc.ListAvailableConnectionsRequest(workspace_id=workspace, page_size=100),
            metadata=SYSTEM,
        )
        if expect is None or len(reply.connections) == expect:
            return list(reply.connections)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{workspace} never saw {expect} connections: {reply.connections}")


async def listing(s: Sharing, workspace: str) -> tuple[dict[str, wpb.WorkspaceSchema], int]:
    reply = await s.schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(workspace_id=workspace, page_size=100), metadata=SYSTEM
    )
    return {x.name: x for x in reply.schemas}, reply.revision


class Stream:
    """A WatchWorkspaceSchemas call collecting events in the background."""

    def __init__(self, s: Sharing, workspace: str, after: int, metadata: Any = SYSTEM) -> None:
        self.events: list[wpb.SchemaEvent] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.ended = asyncio.Event()
        self.call = s.schemas.WatchWorkspaceSchemas(
            wrpc.WatchWorkspaceSchemasRequest(workspace_id=workspace, after_revision=after),
            metadata=metadata,
        )
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for reply in self.call:
                self.events.extend(reply.events)
        except grpc.aio.AioRpcError as error:
            self.error = error  # cancelled by close(), or the service went away
        self.ended.set()

    async def wait_for(self, count: int, timeout: float = 15) -> list[wpb.SchemaEvent]:
        for _ in range(int(timeout * 20)):
            if len(self.events) >= count:
                return self.events
            if self.task.done() and self.error is not None:
                raise self.error
            await asyncio.sleep(0.05)
        raise AssertionError(f"expected {count} events, got {self.events}")

    def kinds(self) -> list[str | None]:
        return [e.WhichOneof("event") for e in self.events]

    def close(self) -> None:
        self.call.cancel()


BASE = snapshot(
    [(ou(1), ROOT, "Prod"), (ou(2), ROOT, "Dev")],
    [(account(1), ou(1), "Web"), (account(2), ou(1), "Data"), (account(3), ou(2), "Sandbox")],
)


async def setup_attached(s: Sharing, **kw: Any) -> tuple[pb.Integration, Stream, int]:
    """An integration shared with o_ops, synced, its root folder attached to w_ops1; a stream
    from before the attachment."""
    created = await create(s, **kw)
    await apply(s, created.id, BASE)
    await available(s, "w_ops1", expect=3)
    _, revision = await listing(s, "w_ops1")
    stream = Stream(s, "w_ops1", revision)
    await s.schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id="w_ops1", folder_id=created.root_folder_id),
        metadata=WS1,
    )
    await stream.wait_for(3)
    return created, stream, revision


async def test_an_org_wide_grant_makes_connections_available_but_not_attached(s: Sharing) -> None:
    created = await create(s)
    await apply(s, created.id, BASE)
    first = await available(s, "w_ops1", expect=3)
    assert sorted(c.handle for c in first) == ["data", "sandbox", "web"]
    assert not any(c.attached for c in first)
    assert len(await available(s, "w_ops2", expect=3)) == 3
    assert await available(s, "w_other") == []  # another tenant's workspace
    schemas, _ = await listing(s, "w_ops1")
    assert schemas == {}
    # A workspace created later is covered by the org-wide grant too.
    await s.directory.UpsertWorkspace(
        drpc.UpsertWorkspaceRequest(
            workspace=dpb.Workspace(id="w_new", org_id="o_ops", handle="new")
        ),
        metadata=SYSTEM,
    )
    assert len(await available(s, "w_new", expect=3)) == 3


async def test_attaching_the_root_folder_adds_every_connection(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    added = [e.schema_added.schema for e in stream.events]
    assert sorted(x.name for x in added) == ["data", "sandbox", "web"]
    assert all(x.attachment_kind == wpb.ATTACHMENT_KIND_FOLDER for x in added)
    assert {x.via_folder_id for x in added} == {created.root_folder_id}
    assert all(x.config.role_arn.endswith(":role/m") for x in added)
    schemas, revision = await listing(s, "w_ops1")
    assert sorted(schemas) == ["data", "sandbox", "web"]
    assert revision == stream.events[-1].revision
    stream.close()


async def test_list_then_watch_loses_nothing_and_repeats_nothing(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    stream.close()
    schemas, revision = await listing(s, "w_ops1")
    follower = Stream(s, "w_ops1", revision)
    grown = snapshot(
        [(u.id, u.parent_id, u.name) for u in BASE.organizational_units],
        [*((a.id, a.parent_id, a.name) for a in BASE.accounts), (account(4), ou(2), "Audit")],
    )
    await apply(s, created.id, grown)
    events = await follower.wait_for(1)
    assert [e.schema_added.schema.name for e in events] == ["audit"]
    assert all(e.revision > revision for e in events)
    assert set(schemas) | {"audit"} == set((await listing(s, "w_ops1"))[0])
    follower.close()


async def test_discovered_renamed_moved_and_removed_accounts_reach_the_stream(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    changed = snapshot(
        [(ou(1), ROOT, "Prod"), (ou(2), ou(1), "Dev")],  # Dev moves under Prod
        [
            (account(1), ou(1), "Website"),  # renamed
            (account(3), ou(2), "Sandbox"),
            (account(4), ou(2), "Audit"),  # new
        ],  # Data removed
    )
    await apply(s, created.id, changed)
    events = (await stream.wait_for(6))[3:]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "schema_removed"
    assert events[0].schema_removed.name == "data"
    assert events[0].schema_removed.reason == wpb.SCHEMA_REMOVED_REASON_CONNECTION_DELETED
    renamed = [e.schema_renamed for e in events if e.WhichOneof("event") == "schema_renamed"]
    assert [(r.old_name, r.new_name) for r in renamed] == [("web", "website")]
    assert [
        e.schema_added.schema.name for e in events if e.WhichOneof("event") == "schema_added"
    ] == ["audit"]
    stream.close()


async def test_a_prefix_change_renames_each_schema_in_each_workspace_that_uses_it(
    s: Sharing,
) -> None:
    created, stream1, _ = await setup_attached(s)
    _, revision = await listing(s, "w_ops2")
    stream2 = Stream(s, "w_ops2", revision)
    await s.schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id="w_ops2", folder_id=created.root_folder_id),
        metadata=SYSTEM,
    )
    await stream2.wait_for(3)
    await s.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=created.id, handle_prefix="aws_"),
            update_mask=FieldMask(paths=["handle_prefix"]),
        ),
        metadata=ORG_OWNER,
    )
    for stream in (stream1, stream2):
        renames = [e.schema_renamed for e in (await stream.wait_for(6))[3:]]
        assert sorted((r.old_name, r.new_name) for r in renames) == [
            ("data", "aws_data"),
            ("sandbox", "aws_sandbox"),
            ("web", "aws_web"),
        ]
        stream.close()


async def test_a_per_connection_handle_change_renames_the_schema(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    listed = await s.tree.ListConnections(
        tree_rpc.ListConnectionsRequest(integration_id=created.id), metadata=SYSTEM
    )
    web = next(c for c in listed.connections if c.handle == "web")
    await s.tree.UpdateConnection(
        tree_rpc.UpdateConnectionRequest(
            connection=tree_pb.Connection(id=web.id, handle="frontend"),
            update_mask=FieldMask(paths=["handle"]),
        ),
        metadata=ORG_OWNER,
    )
    event = (await stream.wait_for(4))[3]
    assert (event.schema_renamed.old_name, event.schema_renamed.new_name) == ("web", "frontend")
    await s.tree.UpdateConnection(
        tree_rpc.UpdateConnectionRequest(
            connection=tree_pb.Connection(
                id=web.id,
                config_overrides=pb.ConnectionConfig(
                    regions=types_pb2.StringList(values=["eu-west-1"])
                ),
            ),
            update_mask=FieldMask(paths=["config_overrides.regions"]),
        ),
        metadata=ORG_OWNER,
    )
    changed = (await stream.wait_for(5))[4]
    assert list(changed.schema_config_changed.schema.config.regions) == ["eu-west-1"]
    stream.close()


async def test_credentials_that_lose_access_remove_the_schemas(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    await apply(s, created.id, snapshot([(ou(2), ROOT, "Dev")], [(account(3), ou(2), "Sandbox")]))
    removed = [e.schema_removed for e in (await stream.wait_for(5))[3:]]
    assert sorted(r.name for r in removed) == ["data", "web"]
    assert {r.reason for r in removed} == {wpb.SCHEMA_REMOVED_REASON_CONNECTION_DELETED}
    stream.close()


async def test_deleting_the_integration_removes_its_schemas_everywhere(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    await s.integrations.DeleteIntegration(
        rpc.DeleteIntegrationRequest(id=created.id, confirm_handle="aws-ops"), metadata=ORG_OWNER
    )
    removed = [e.schema_removed for e in (await stream.wait_for(6))[3:]]
    assert sorted(r.name for r in removed) == ["data", "sandbox", "web"]
    assert {r.reason for r in removed} == {wpb.SCHEMA_REMOVED_REASON_INTEGRATION_DELETED}
    assert (await listing(s, "w_ops1"))[0] == {}
    stream.close()


async def test_revoking_the_grant_removes_schemas_and_a_narrower_grant_shares_less(
    s: Sharing,
) -> None:
    created, stream, _ = await setup_attached(s)
    folders = await s.tree.ListFolders(
        tree_rpc.ListFoldersRequest(integration_id=created.id), metadata=SYSTEM
    )
    prod = next(f for f in folders.folders if f.aws_id == ou(1))
    await projected(s, prod.id)
    await s.permissions.SetPermissions(
        prpc.SetPermissionsRequest(
            folder_id=prod.id, grantees=[types_pb2.Grantee(workspace_id="w_ops1")]
        ),
        metadata=ORG_OWNER,
    )
    await s.permissions.SetPermissions(
        prpc.SetPermissionsRequest(folder_id=created.root_folder_id, grantees=[]),
        metadata=ORG_OWNER,
    )
    removed = [e.schema_removed for e in (await stream.wait_for(4))[3:]]
    assert [(r.name, r.reason) for r in removed] == [
        ("sandbox", wpb.SCHEMA_REMOVED_REASON_ACCESS_REVOKED)
    ]
    assert sorted((await listing(s, "w_ops1"))[0]) == ["data", "web"]
    assert await available(s, "w_ops2") == []
    permissions = await s.permissions.GetPermissions(
        prpc.GetPermissionsRequest(
            connection_id=next(iter((await listing(s, "w_ops1"))[0].values())).connection_id
        ),
        metadata=ORG_OWNER,
    )
    assert permissions.permissions.direct_grants == []
    assert [g.from_folder_id for g in permissions.permissions.inherited_grants] == [prod.id]
    stream.close()


async def test_a_grant_on_a_child_adds_to_what_it_inherits(s: Sharing) -> None:
    created = await create(s, mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_NONE)
    await apply(s, created.id, BASE)
    folders = await s.tree.ListFolders(
        tree_rpc.ListFoldersRequest(integration_id=created.id), metadata=SYSTEM
    )
    dev = next(f for f in folders.folders if f.aws_id == ou(2))
    await projected(s, dev.id)
    await s.permissions.SetPermissions(
        prpc.SetPermissionsRequest(
            folder_id=dev.id, grantees=[types_pb2.Grantee(workspace_id="w_ops2")]
        ),
        metadata=ORG_OWNER,
    )
    assert [c.handle for c in await available(s, "w_ops2", expect=1)] == ["sandbox"]
    assert await available(s, "w_ops1") == []


async def published(s: Sharing) -> int:
    """How many connections have a stored schema name (kept only while a workspace holds them)."""
    async with s.services["permissions"].runtime.db.connection() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM published_schemas")
        return count


async def test_detaching_removes_schemas_and_attach_needs_a_grant(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    assert await published(s) == 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await s.schemas.AttachSchema(
            wrpc.AttachSchemaRequest(workspace_id="w_ops1", folder_id=created.root_folder_id),
            metadata=WS1,
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    await s.schemas.DetachSchema(
        wrpc.DetachSchemaRequest(workspace_id="w_ops1", folder_id=created.root_folder_id),
        metadata=WS1,
    )
    removed = [e.schema_removed for e in (await stream.wait_for(6))[3:]]
    assert {r.reason for r in removed} == {wpb.SCHEMA_REMOVED_REASON_DETACHED}
    assert await published(s) == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await s.schemas.DetachSchema(
            wrpc.DetachSchemaRequest(workspace_id="w_ops1", folder_id=created.root_folder_id),
            metadata=WS1,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await s.permissions.SetPermissions(
        prpc.SetPermissionsRequest(folder_id=created.root_folder_id, grantees=[]),
        metadata=ORG_OWNER,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await s.schemas.AttachSchema(
            wrpc.AttachSchemaRequest(workspace_id="w_ops1", folder_id=created.root_folder_id),
            metadata=WS1,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    stream.close()


async def test_deleting_a_workspace_ends_its_stream_cleanly(s: Sharing) -> None:
    _, stream, _ = await setup_attached(s)
    await s.directory.DeleteWorkspace(drpc.DeleteWorkspaceRequest(id="w_ops1"), metadata=SYSTEM)
    await asyncio.wait_for(stream.ended.wait(), 10)
    assert stream.error is None  # the stream ended cleanly, not with an error
    kinds = stream.kinds()[3:]
    assert kinds == ["schema_removed"] * 3 + ["workspace_deleted"]
    assert {e.schema_removed.reason for e in stream.events[3:6]} == {
        wpb.SCHEMA_REMOVED_REASON_WORKSPACE_DELETED
    }
    assert await published(s) == 0


async def test_a_watcher_resuming_after_its_workspace_was_deleted_gets_the_rest_of_it(
    s: Sharing,
) -> None:
    _, stream, _ = await setup_attached(s)
    stream.close()
    away = stream.events[-1].revision  # the client had everything up to the attachment
    await s.directory.DeleteWorkspace(drpc.DeleteWorkspaceRequest(id="w_ops1"), metadata=SYSTEM)
    for caller in (WS1, SYSTEM):
        resumed = Stream(s, "w_ops1", away, metadata=caller)
        await asyncio.wait_for(resumed.ended.wait(), 10)
        assert resumed.error is None
        assert resumed.kinds() == ["schema_removed"] * 3 + ["workspace_deleted"]
    ended = resumed.events[-1].revision
    # After its last event, or for a caller who may not know of it, the workspace is gone.
    for after, caller, code in (
        (ended, WS1, grpc.StatusCode.NOT_FOUND),
        (away, OUTSIDER, grpc.StatusCode.PERMISSION_DENIED),
    ):
        refused = Stream(s, "w_ops1", after, metadata=caller)
        await asyncio.wait_for(refused.ended.wait(), 10)
        assert refused.error is not None
        assert refused.error.code() == code


async def test_a_reconnecting_watcher_resumes_exactly(s: Sharing) -> None:
    _, stream, _ = await setup_attached(s)
    stream.close()
    last = stream.events[1].revision  # the client had processed two events
    resumed = Stream(s, "w_ops1", last)
    events = await resumed.wait_for(1)
    assert [e.revision for e in events] == [stream.events[2].revision]
    resumed.close()


async def test_outsiders_see_no_stream_list_or_grant(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    stream.close()
    for call in (
        s.schemas.ListWorkspaceSchemas(
            wrpc.ListWorkspaceSchemasRequest(workspace_id="w_ops1"), metadata=OUTSIDER
        ),
        s.permissions.ListAvailableConnections(
            prpc.ListAvailableConnectionsRequest(workspace_id="w_ops1"), metadata=OUTSIDER
        ),
        s.permissions.GetPermissions(
            prpc.GetPermissionsRequest(folder_id=created.root_folder_id), metadata=OUTSIDER
        ),
        s.schemas.AttachSchema(
            wrpc.AttachSchemaRequest(workspace_id="w_other", folder_id=created.root_folder_id),
            metadata=SYSTEM,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in s.schemas.WatchWorkspaceSchemas(
            wrpc.WatchWorkspaceSchemasRequest(workspace_id="w_ops1"), metadata=OUTSIDER
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await s.permissions.SetPermissions(
            prpc.SetPermissionsRequest(folder_id=created.root_folder_id, grantees=[]),
            metadata=WS1,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("grantee", "field"),
    [
        (types_pb2.Grantee(tenant_id="t_acme"), "grantees[0]"),  # org-scoped item
        (types_pb2.Grantee(org_id="o_free"), "grantees[0]"),  # another org
        (types_pb2.Grantee(workspace_id="w_other"), "grantees[0]"),  # another tenant
        (types_pb2.Grantee(workspace_id="w_nope"), "grantees[0]"),
        (types_pb2.Grantee(workspace_id="x"), "grantees[0].workspace_id"),
        (types_pb2.Grantee(), "grantees[0]"),
    ],
)
async def test_grantees_outside_the_items_scope_are_invalid(
    s: Sharing, grantee: types_pb2.Grantee, field: str
) -> None:
    created = await create(s)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await s.permissions.SetPermissions(
            prpc.SetPermissionsRequest(folder_id=created.root_folder_id, grantees=[grantee]),
            metadata=ORG_OWNER,
        )
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == [field]


async def test_a_stale_permissions_etag_is_aborted(s: Sharing) -> None:
    created = await create(s)
    current = await s.permissions.GetPermissions(
        prpc.GetPermissionsRequest(folder_id=created.root_folder_id), metadata=OWNER
    )
    assert [g.grantee.org_id for g in current.permissions.direct_grants] == ["o_ops"]
    await s.permissions.SetPermissions(
        prpc.SetPermissionsRequest(
            folder_id=created.root_folder_id, grantees=[], etag=current.permissions.etag
        ),
        metadata=ORG_OWNER,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await s.permissions.SetPermissions(
            prpc.SetPermissionsRequest(
                folder_id=created.root_folder_id, grantees=[], etag=current.permissions.etag
            ),
            metadata=ORG_OWNER,
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (
            lambda x: x.schemas.AttachSchema(
                wrpc.AttachSchemaRequest(workspace_id="w_ops1"), metadata=SYSTEM
            ),
            "item",
        ),
        (
            lambda x: x.schemas.AttachSchema(
                wrpc.AttachSchemaRequest(workspace_id="nope", folder_id="f_a"), metadata=SYSTEM
            ),
            "workspace_id",
        ),
        (
            lambda x: x.schemas.AttachSchema(
                wrpc.AttachSchemaRequest(workspace_id="w_ops1", folder_id="c_a"), metadata=SYSTEM
            ),
            "folder_id",
        ),
        (
            lambda x: x.schemas.DetachSchema(
                wrpc.DetachSchemaRequest(workspace_id="w_ops1", connection_id="f_a"),
                metadata=SYSTEM,
            ),
            "connection_id",
        ),
        (
            lambda x: x.schemas.ListWorkspaceSchemas(
                wrpc.ListWorkspaceSchemasRequest(workspace_id="w_ops1", page_size=-1),
                metadata=SYSTEM,
            ),
            "page_size",
        ),
        (
            lambda x: x.permissions.GetPermissions(prpc.GetPermissionsRequest(), metadata=SYSTEM),
            "item",
        ),
        (
            lambda x: x.permissions.ListAvailableConnections(
                prpc.ListAvailableConnectionsRequest(workspace_id=""), metadata=SYSTEM
            ),
            "workspace_id",
        ),
        (
            lambda x: _drain(
                x.schemas.WatchWorkspaceSchemas(
                    wrpc.WatchWorkspaceSchemasRequest(workspace_id="w_ops1", after_revision=-1),
                    metadata=SYSTEM,
                )
            ),
            "after_revision",
        ),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    s: Sharing, call: Any, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(s)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == [field]


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def test_a_permissions_crash_mid_batch_loses_and_doubles_nothing(
    s: Sharing, monkeypatch: pytest.MonkeyPatch
) -> None:
    created, stream, _ = await setup_attached(s)
    from canopy_permissions import projection

    original = projection.apply_tree_events
    entered = asyncio.Event()

    async def crashing(conn: Any, log: Any, events: Any) -> None:
        await original(conn, log, events)  # the schema events are written…
        entered.set()
        await asyncio.sleep(3600)  # …and the process dies before the commit

    monkeypatch.setattr(projection, "apply_tree_events", crashing)
    grown = snapshot(
        [(u.id, u.parent_id, u.name) for u in BASE.organizational_units],
        [*((a.id, a.parent_id, a.name) for a in BASE.accounts), (account(4), ou(2), "Audit")],
    )
    await apply(s, created.id, grown)
    await asyncio.wait_for(entered.wait(), 10)
    await s.services["permissions"].stop()  # cancels the consumer mid-transaction
    monkeypatch.setattr(projection, "apply_tree_events", original)
    await s.restart_permissions()
    # The old stream ended with the service; a client reconnects after its last revision.
    stream.close()
    last = stream.events[-1].revision
    resumed = Stream(s, "w_ops1", last)
    events = await resumed.wait_for(1)
    await asyncio.sleep(1)
    assert [e.schema_added.schema.name for e in resumed.events] == ["audit"]
    assert len(events) == 1
    resumed.close()


async def test_a_projection_behind_the_tree_logs_retention_is_rebuilt_and_loses_nothing(
    s: Sharing, caplog: pytest.LogCaptureFixture
) -> None:
    # The permissions service is away while the tree changes and the tree log compacts the
    # changes away: back, it rebuilds its projection from the current trees, tells the workspaces
    # what changed in the gap, and follows the log again without applying anything twice.
    created, stream, _ = await setup_attached(s)
    await s.services["permissions"].stop()
    stream.close()
    last = stream.events[-1].revision
    units = [(u.id, u.parent_id, u.name) for u in BASE.organizational_units]
    in_gap: list[tuple[str, str, str] | tuple[str, str, str, str]] = [
        (account(1), ou(1), "Website"),  # renamed
        (account(3), ou(2), "Sandbox"),
        (account(4), ou(2), "Audit"),  # new
    ]  # Data removed
    await apply(s, created.id, snapshot(units, in_gap))
    integration_log = s.services["integration"].runtime.event_log
    assert await integration_log.compact(timedelta(0)) > last
    # Two more renames stay in the log, and the rebuilt tree already has the second: replayed
    # over it, they would rename the schema back and forth.
    for name in ("Portal", "Gateway"):
        in_gap[0] = (account(1), ou(1), name)
        await apply(s, created.id, snapshot(units, in_gap))
    with caplog.at_level(logging.INFO, logger="canopy_permissions.projection"):
        await s.restart_permissions()
        resumed = Stream(s, "w_ops1", last)
        gap_events = await resumed.wait_for(3)
        await apply(s, created.id, snapshot(units, [*in_gap, (account(5), ou(1), "Billing")]))
        await resumed.wait_for(4)
        await asyncio.sleep(0.5)
        resumed.close()
    assert "projection rebuilt from the current trees" in caplog.text
    kinds = sorted(str(e.WhichOneof("event")) for e in gap_events[:3])
    assert kinds == ["schema_added", "schema_removed", "schema_renamed"]
    by_kind = {e.WhichOneof("event"): e for e in resumed.events[:3]}
    assert by_kind["schema_added"].schema_added.schema.name == "audit"
    assert by_kind["schema_removed"].schema_removed.name == "data"
    assert (
        by_kind["schema_removed"].schema_removed.reason
        == wpb.SCHEMA_REMOVED_REASON_CONNECTION_DELETED
    )
    renamed = by_kind["schema_renamed"].schema_renamed
    assert (renamed.old_name, renamed.new_name) == ("web", "gateway")
    # After the gap, the log again, once each.
    assert len(resumed.events) == 4
    assert resumed.events[3].schema_added.schema.name == "billing"
    schemas, _ = await listing(s, "w_ops1")
    assert sorted(schema.name for schema in schemas.values()) == [
        "audit",
        "billing",
        "gateway",
        "sandbox",
    ]


async def test_an_integration_deleted_while_the_projection_was_behind_is_removed_on_rebuild(
    s: Sharing,
) -> None:
    created, stream, _ = await setup_attached(s)
    await s.services["permissions"].stop()
    stream.close()
    last = stream.events[-1].revision
    await s.integrations.DeleteIntegration(
        rpc.DeleteIntegrationRequest(id=created.id, confirm_handle="aws-ops"), metadata=ORG_OWNER
    )
    await s.services["integration"].runtime.event_log.compact(timedelta(0))
    await s.restart_permissions()
    resumed = Stream(s, "w_ops1", last)
    removed = [e.schema_removed for e in await resumed.wait_for(3)]
    await asyncio.sleep(0.5)
    resumed.close()
    assert len(resumed.events) == 3
    assert sorted(r.name for r in removed) == ["data", "sandbox", "web"]
    assert {r.reason for r in removed} == {wpb.SCHEMA_REMOVED_REASON_INTEGRATION_DELETED}
    assert (await listing(s, "w_ops1"))[0] == {}


def test_after_a_rebuild_only_events_newer_than_each_integrations_tree_apply() -> None:
    events = [
        tree_pb.TreeEvent(revision=revision, integration_id=integration)
        for revision, integration in [(5, "i_a"), (6, "i_b"), (7, "i_a"), (8, "i_c"), (9, "i_b")]
    ]
    fresh = not_yet_projected(events, {"i_a": 6, "i_b": 9})
    assert [(e.revision, e.integration_id) for e in fresh] == [(7, "i_a"), (8, "i_c")]
    assert not_yet_projected(events, {}) == events


async def list_pages(
    s: Sharing, workspace: str, page_size: int = 100, between: Any = None
) -> list[wrpc.ListWorkspaceSchemasResponse]:
    """Every page of one listing; `between(i)` is awaited after page i, before the next."""
    pages: list[wrpc.ListWorkspaceSchemasResponse] = []
    request = wrpc.ListWorkspaceSchemasRequest(workspace_id=workspace, page_size=page_size)
    while True:
        page = await s.schemas.ListWorkspaceSchemas(request, metadata=SYSTEM)
        pages.append(page)
        if not page.next_page_token:
            return pages
        if between is not None:
            await between(len(pages) - 1)
        request.page_token = page.next_page_token


def apply_events(schemas: dict[str, wpb.WorkspaceSchema], events: list[wpb.SchemaEvent]) -> None:
    """The client's rule of ListWorkspaceSchemasResponse: events applied by connection id."""
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "schema_added":
            schemas[event.schema_added.schema.connection_id] = event.schema_added.schema
        elif kind == "schema_config_changed":
            changed = event.schema_config_changed.schema
            schemas[changed.connection_id] = changed
        elif kind == "schema_renamed":
            held = schemas.get(event.schema_renamed.connection_id)
            if held is not None:
                renamed = wpb.WorkspaceSchema()
                renamed.CopyFrom(held)
                renamed.name = event.schema_renamed.new_name
                schemas[renamed.connection_id] = renamed
        elif kind == "schema_removed":
            schemas.pop(event.schema_removed.connection_id, None)


async def watched_through(
    s: Sharing, workspace: str, after: int, through: int
) -> list[wpb.SchemaEvent]:
    """The workspace's events after `after`, read until the stream has covered `through`."""
    events: list[wpb.SchemaEvent] = []
    if through <= after:
        return events
    call = s.schemas.WatchWorkspaceSchemas(
        wrpc.WatchWorkspaceSchemasRequest(workspace_id=workspace, after_revision=after),
        metadata=SYSTEM,
    )
    async with asyncio.timeout(60):
        async for reply in call:
            events.extend(reply.events)
            if reply.latest_revision >= through:
                break
    call.cancel()
    return events


async def test_a_listings_pages_share_its_revision_and_a_page_after_a_change_completes_it(
    s: Sharing,
) -> None:
    created, stream, _ = await setup_attached(s)
    first = await s.schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(workspace_id="w_ops1", page_size=2), metadata=SYSTEM
    )
    assert first.page_revision == first.revision
    second = await s.schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(
            workspace_id="w_ops1", page_size=2, page_token=first.next_page_token
        ),
        metadata=SYSTEM,
    )
    assert (second.revision, second.page_revision) == (first.revision, first.revision)
    listed = [*first.schemas, *second.schemas]
    assert [x.connection_id for x in listed] == sorted(x.connection_id for x in listed)
    assert sorted(x.name for x in listed) == ["data", "sandbox", "web"]
    await s.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=created.id, handle_prefix="aws_"),
            update_mask=FieldMask(paths=["handle_prefix"]),
        ),
        metadata=ORG_OWNER,
    )
    await stream.wait_for(6)  # the renames reached the workspace
    stream.close()
    # The workspace changed between pages: the second page is still served, as it is now, and
    # still names the first page's revision to watch after.
    late = await s.schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(
            workspace_id="w_ops1", page_size=2, page_token=first.next_page_token
        ),
        metadata=SYSTEM,
    )
    assert late.revision == first.revision
    assert late.page_revision > first.revision
    assert [x.connection_id for x in late.schemas] == [x.connection_id for x in second.schemas]
    assert [x.name for x in late.schemas] == [f"aws_{x.name}" for x in second.schemas]
    held = {x.connection_id: x for x in [*first.schemas, *late.schemas]}
    apply_events(held, await watched_through(s, "w_ops1", first.revision, late.page_revision))
    now = await list_pages(s, "w_ops1")
    assert held == {x.connection_id: x for page in now for x in page.schemas}
    assert sorted(x.name for x in held.values()) == ["aws_data", "aws_sandbox", "aws_web"]


async def test_a_later_page_of_a_listing_whose_revision_was_compacted_is_out_of_range(
    s: Sharing,
) -> None:
    created, stream, _ = await setup_attached(s)
    stream.close()
    first = await s.schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(workspace_id="w_ops1", page_size=2), metadata=SYSTEM
    )
    await s.integrations.UpdateIntegration(  # events after the listing's revision …
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=created.id, handle_prefix="aws_"),
            update_mask=FieldMask(paths=["handle_prefix"]),
        ),
        metadata=ORG_OWNER,
    )
    log = s.services["permissions"].runtime.event_log
    for _ in range(100):  # … that the log then compacts away, with the listing's revision
        if await log.compact(timedelta(0)) > first.revision:
            break
        await asyncio.sleep(0.05)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await s.schemas.ListWorkspaceSchemas(
            wrpc.ListWorkspaceSchemasRequest(
                workspace_id="w_ops1", page_size=2, page_token=first.next_page_token
            ),
            metadata=SYSTEM,
        )
    details = error_details(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.OUT_OF_RANGE, "REVISION_COMPACTED")
    assert details.metadata["after_revision"] == str(first.revision)


CHURN_ACCOUNTS = 5_000


def churn_snapshot(step: int) -> tree_pb.OrganizationSnapshot:
    """Step `step` of the organization under churn: every step renames 300 accounts (and some
    back), removes 20 and adds 20 new ones (accounts past CHURN_ACCOUNTS)."""
    accounts: list[tuple[str, str, str] | tuple[str, str, str, str]] = []
    for n in range(CHURN_ACCOUNTS + 20 * step):
        if step and n % 250 == step % 250:
            continue  # removed in this step
        name = f"A{n}"
        if step and (n * 7 + step) % 17 == 0:
            name = f"Z{step} {n}"  # renamed in this step: sorts elsewhere by name
        accounts.append((account(n + 1), ROOT if n % 2 else ou(1 + n % 10), name))
    return snapshot([(ou(i), ROOT, f"Unit {i}") for i in range(1, 11)], accounts)


async def test_a_listing_paged_under_churn_then_watched_from_its_revision_is_the_servers_set(
    s: Sharing,
) -> None:
    created = await create(s)
    await apply(s, created.id, churn_snapshot(0))
    await s.schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id="w_ops1", folder_id=created.root_folder_id),
        metadata=WS1,
    )
    for _ in range(200):
        pages = await list_pages(s, "w_ops1")
        if sum(len(p.schemas) for p in pages) == CHURN_ACCOUNTS:
            break
        await asyncio.sleep(0.1)
    changes = 0
    stop, changed = asyncio.Event(), asyncio.Event()

    async def churn() -> None:
        """Renames, removals and additions (snapshots), and prefix changes (every schema
        renamed), one after another until told to stop."""
        nonlocal changes
        prefixes = ["p_", "q_", ""]
        step = 1
        while not stop.is_set():
            if step % 3 == 0:
                await s.integrations.UpdateIntegration(
                    rpc.UpdateIntegrationRequest(
                        integration=pb.Integration(
                            id=created.id, handle_prefix=prefixes[step // 3 % 3]
                        ),
                        update_mask=FieldMask(paths=["handle_prefix"]),
                    ),
                    metadata=ORG_OWNER,
                )
            else:
                await apply(s, created.id, churn_snapshot(step))
            changes += 1
            changed.set()
            step += 1

    async def a_change_between(page: int) -> None:
        # Every fifth page boundary waits for another change to commit: renames run between
        # pages for sure, not only by chance.
        if page % 5:
            return
        changed.clear()
        await changed.wait()

    churning = asyncio.create_task(churn())
    try:
        pages = await list_pages(s, "w_ops1", between=a_change_between)
    finally:
        stop.set()
        await churning
    assert changes >= 10
    revision = pages[0].revision
    assert {p.revision for p in pages} == {revision}
    page_revisions = [p.page_revision for p in pages]
    assert page_revisions == sorted(page_revisions)
    assert page_revisions[-1] > revision
    held = {x.connection_id: x for p in pages for x in p.schemas}
    assert len(held) == sum(len(p.schemas) for p in pages)  # no schema twice
    # Settle: one last prefix change, projected after everything the churn committed.
    await s.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=created.id, handle_prefix="settled_"),
            update_mask=FieldMask(paths=["handle_prefix"]),
        ),
        metadata=ORG_OWNER,
    )
    for _ in range(300):
        final_pages = await list_pages(s, "w_ops1")
        names = [x.name for p in final_pages for x in p.schemas]
        unchanged = {p.page_revision for p in final_pages} == {final_pages[0].revision}
        if unchanged and all(name.startswith("settled_") for name in names):
            break  # one revision throughout, after the last change: the server's set
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the last prefix change never reached the workspace")
    final = {x.connection_id: x for p in final_pages for x in p.schemas}
    assert held != final  # the pages alone are not the workspace's set …
    events = await watched_through(s, "w_ops1", revision, final_pages[0].revision)
    assert any(e.WhichOneof("event") == "schema_renamed" for e in events)
    apply_events(held, events)
    assert held == final  # … the pages, then the watch from the first page's revision, are.
    assert len({x.name for x in final.values()}) == len(final)


# Positions the outside test forged, which once reached `int(token.after[0])` or compared a str
# with an int: an int, null, an object, lists of the wrong length or types, numbers past int64
# (and past float), a NUL byte.
BAD_POSITIONS: list[Any] = [
    7,
    None,
    {"revision": 7, "name": "web"},
    "web",
    [],
    [7],
    [1, 2],
    ["web", 2],
    [7, None],
    [10**30, "web"],
    [float("inf"), "web"],
    [7, "w\x00eb"],
    ["w\x00eb", "c_01"],
]


async def refused_page_token(call: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    details = error_details(caught.value)
    assert (details.code, details.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"])
    assert details.reason in {"PAGE_TOKEN_INVALID", "PAGE_TOKEN_MISMATCH"}


async def test_list_workspace_schemas_refuses_forged_and_wrong_shaped_page_tokens(
    s: Sharing,
) -> None:
    await setup_attached(s)
    arguments = {"workspace_id": "w_ops1"}
    keys = s.services["permissions"].runtime.page_tokens
    bad = [*BAD_POSITIONS, ["x", "y"]]
    tokens = [unkeyed_page_token(p, arguments) for p in bad]
    tokens += [keys.seal(SCHEMAS_PAGE, p, arguments) for p in bad]
    tokens.append(keys.seal(AVAILABLE_PAGE, ["data", "c_01"], arguments))  # another list's
    for page_token in tokens:
        await refused_page_token(
            s.schemas.ListWorkspaceSchemas(
                wrpc.ListWorkspaceSchemasRequest(
                    workspace_id="w_ops1", page_size=1, page_token=page_token
                ),
                metadata=SYSTEM,
            )
        )
    # The service's own tokens still page.
    first = await s.schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(workspace_id="w_ops1", page_size=2), metadata=SYSTEM
    )
    second = await s.schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(
            workspace_id="w_ops1", page_size=2, page_token=first.next_page_token
        ),
        metadata=SYSTEM,
    )
    listed = [*first.schemas, *second.schemas]
    assert [x.connection_id for x in listed] == sorted(x.connection_id for x in listed)
    assert sorted(x.name for x in listed) == ["data", "sandbox", "web"]


async def test_list_available_connections_refuses_forged_and_wrong_shaped_page_tokens(
    s: Sharing,
) -> None:
    created = await create(s)
    await apply(s, created.id, BASE)
    await available(s, "w_ops1", expect=3)
    arguments = {"workspace_id": "w_ops1"}
    keys = s.services["permissions"].runtime.page_tokens
    bad = [*BAD_POSITIONS, [7, "web"]]
    tokens = [unkeyed_page_token(p, arguments) for p in bad]
    tokens += [keys.seal(AVAILABLE_PAGE, p, arguments) for p in bad]
    tokens.append(keys.seal(SCHEMAS_PAGE, [1, "data"], arguments))  # another list's
    for page_token in tokens:
        await refused_page_token(
            s.permissions.ListAvailableConnections(
                prpc.ListAvailableConnectionsRequest(
                    workspace_id="w_ops1", page_size=1, page_token=page_token
                ),
                metadata=SYSTEM,
            )
        )
    handles: list[str] = []
    page_token = ""
    while True:
        reply = await s.permissions.ListAvailableConnections(
            prpc.ListAvailableConnectionsRequest(
                workspace_id="w_ops1", page_size=2, page_token=page_token
            ),
            metadata=SYSTEM,
        )
        handles.extend(c.handle for c in reply.connections)
        page_token = reply.next_page_token
        if not page_token:
            break
    assert handles == ["data", "sandbox", "web"]


async def test_a_schema_watch_resumed_from_its_first_replys_latest_revision_misses_nothing(
    s: Sharing,
) -> None:
    # More schemas than one reply of the server's catch-up carries (500).
    created = await create(s)
    await apply(s, created.id, snapshot([], [(account(n), ROOT, f"A{n}") for n in range(600)]))
    _, before = await listing(s, "w_ops1")
    everything = Stream(s, "w_ops1", before)
    await s.schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id="w_ops1", folder_id=created.root_folder_id),
        metadata=WS1,
    )
    await everything.wait_for(600)
    everything.close()
    call = s.schemas.WatchWorkspaceSchemas(
        wrpc.WatchWorkspaceSchemasRequest(workspace_id="w_ops1", after_revision=before),
        metadata=SYSTEM,
    )
    first = await call.read()
    call.cancel()
    assert 0 < len(first.events) < 600
    assert first.latest_revision == first.events[-1].revision
    resumed = Stream(s, "w_ops1", first.latest_revision)
    rest = await resumed.wait_for(600 - len(first.events))
    resumed.close()
    assert [e.revision for e in [*first.events, *rest]] == [e.revision for e in everything.events]
