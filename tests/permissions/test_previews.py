"""Previews (`validate_only`) over real gRPC and PostgreSQL: a preview is checked like the real
change, stores nothing, and its impact is exactly what the real change then emits on the tree log
and on every workspace's schema stream."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.permissions.v1 import change_impact_service_pb2 as irpc
from canopy.permissions.v1 import change_impact_service_pb2_grpc as igrpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import workspace_schema_pb2 as wpb
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.type.v1 import impact_pb2, types_pb2
from canopy_integration.previews import blank_new_ids, created_ids, tree_impact
from canopy_permissions.impact import schema_impact
from tests.helpers import error_details
from tests.integration.conftest import ORG_OWNER, ROOT, SYSTEM, account, ou, snapshot
from tests.permissions.test_sharing import (
    WS1,
    Sharing,
    apply,
    available,
    create,
    listing,
    projected,
    s,
    setup_attached,
)

__all__ = ["s"]  # the fixture, shared with test_sharing

WORKSPACES = ("w_ops1", "w_ops2")


@pytest.fixture
def service_env(service_env: dict[str, Any]) -> dict[str, Any]:
    """Progress replies every 50 ms: the tests read the logs' heads from them."""
    return {**service_env, "watch_progress_interval": 0.05}


def impact_of(reply: Any) -> impact_pb2.ChangeImpact:
    """A preview reply's impact."""
    found: impact_pb2.ChangeImpact = reply.impact
    return found


async def caught_up(s: Sharing) -> None:
    """Wait until the permissions service has projected the whole tree log as it is now (the
    impact service waits for that before it previews)."""
    stub = igrpc.ChangeImpactServiceStub(s.channels[1])
    await stub.PreviewTreeChange(
        irpc.PreviewTreeChangeRequest(tree_revision=await tree_head(s)), metadata=SYSTEM
    )


async def tree_head(s: Sharing) -> int:
    """The tree log's latest revision, from a watch's first progress reply."""
    call = s.tree.WatchTreeEvents(
        tree_rpc.WatchTreeEventsRequest(after_revision=0), metadata=SYSTEM
    )
    try:
        async for reply in call:
            if not reply.events:
                return int(reply.latest_revision)
    finally:
        call.cancel()
    raise AssertionError("the tree watch ended")


async def tree_events_after(s: Sharing, after: int, integration_id: str) -> list[tree_pb.TreeEvent]:
    """Every tree event of the integration after a revision, up to the log's head now."""
    head = await tree_head(s)
    found: list[tree_pb.TreeEvent] = []
    if head <= after:
        return found
    call = s.tree.WatchTreeEvents(
        tree_rpc.WatchTreeEventsRequest(after_revision=after), metadata=SYSTEM
    )
    try:
        async for reply in call:
            found.extend(e for e in reply.events if e.integration_id == integration_id)
            if reply.latest_revision >= head:
                break
    finally:
        call.cancel()
    return found


async def schema_heads(s: Sharing) -> dict[str, int]:
    return {w: (await listing(s, w))[1] for w in WORKSPACES}


async def schema_events_after(s: Sharing, workspace: str, after: int) -> list[wpb.SchemaEvent]:
    """The workspace's stream after a revision, through the log's head once the permissions
    service has caught up with the tree."""
    await caught_up(s)
    _, head = await listing(s, workspace)
    events: list[wpb.SchemaEvent] = []
    if head <= after:
        return events
    call = s.schemas.WatchWorkspaceSchemas(
        wrpc.WatchWorkspaceSchemasRequest(workspace_id=workspace, after_revision=after),
        metadata=SYSTEM,
    )
    try:
        async for reply in call:
            events.extend(reply.events)
            if reply.latest_revision >= head:
                break
    finally:
        call.cancel()
    return events


def expected_impact(
    tree_events: list[tree_pb.TreeEvent], streams: dict[str, list[wpb.SchemaEvent]]
) -> impact_pb2.ChangeImpact:
    """What a preview should have said, made from what the change really emitted."""
    impact = tree_impact(tree_events)
    counters = {
        impact_pb2.SCHEMA_CHANGE_KIND_ADDED: "schemas_added",
        impact_pb2.SCHEMA_CHANGE_KIND_RENAMED: "schemas_renamed",
        impact_pb2.SCHEMA_CHANGE_KIND_REMOVED: "schemas_removed",
        impact_pb2.SCHEMA_CHANGE_KIND_CONFIG_CHANGED: "schemas_config_changed",
    }
    for workspace_id in sorted(streams):
        events = streams[workspace_id]
        if not events:
            continue
        listed = impact.workspaces.add(workspace_id=workspace_id)
        impact.totals.workspaces_affected += 1
        for event in events:
            schema = listed.schemas.add()
            schema.CopyFrom(schema_impact(event))
            name = counters[schema.change]
            setattr(listed, name, getattr(listed, name) + 1)
            setattr(impact.totals, name, getattr(impact.totals, name) + 1)
    blank_new_ids(impact, created_ids(tree_events))
    return impact


def comparable(impact: impact_pb2.ChangeImpact) -> impact_pb2.ChangeImpact:
    """The parts a real change shows too (the guard's verdict is the preview's own)."""
    found = impact_pb2.ChangeImpact()
    found.CopyFrom(impact)
    found.ClearField("deletion_guard")
    found.totals.SetInParent()
    return found


async def assert_preview_is_the_effect(
    s: Sharing,
    integration_id: str,
    preview: Callable[[], Awaitable[impact_pb2.ChangeImpact]],
    change: Callable[[], Awaitable[Any]],
) -> impact_pb2.ChangeImpact:
    """Preview, check nothing moved, make the change, and compare with what it emitted."""
    before_tree = await tree_head(s)
    before_streams = await schema_heads(s)
    impact = await preview()
    assert await tree_head(s) == before_tree, "a preview appended tree events"
    assert await schema_heads(s) == before_streams, "a preview appended schema events"
    await change()
    tree_events = await tree_events_after(s, before_tree, integration_id)
    streams = {w: await schema_events_after(s, w, before_streams[w]) for w in WORKSPACES}
    assert comparable(impact) == comparable(expected_impact(tree_events, streams))
    return impact


async def attach_second(s: Sharing, folder_id: str) -> None:
    """Attach the folder to w_ops2 too (setup_attached attached it to w_ops1)."""
    await s.schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id="w_ops2", folder_id=folder_id), metadata=SYSTEM
    )


def prefix_update(integration_id: str, prefix: str, *, validate_only: bool) -> Any:
    return rpc.UpdateIntegrationRequest(
        integration=pb.Integration(id=integration_id, handle_prefix=prefix),
        update_mask=FieldMask(paths=["handle_prefix"]),
        validate_only=validate_only,
    )


async def test_a_prefix_change_preview_lists_every_rename_in_every_workspace(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    stream.close()
    await attach_second(s, created.root_folder_id)

    async def preview() -> impact_pb2.ChangeImpact:
        reply = await s.integrations.UpdateIntegration(
            prefix_update(created.id, "aws_", validate_only=True), metadata=ORG_OWNER
        )
        assert reply.integration.handle_prefix == "aws_"
        return impact_of(reply)

    async def change() -> None:
        await s.integrations.UpdateIntegration(
            prefix_update(created.id, "aws_", validate_only=False), metadata=ORG_OWNER
        )

    impact = await assert_preview_is_the_effect(s, created.id, preview, change)
    assert impact.totals.connections_renamed == 3
    assert impact.totals.workspaces_affected == 2
    assert impact.totals.schemas_renamed == 6
    assert sorted((x.old_name, x.name) for x in impact.workspaces[0].schemas) == [
        ("data", "aws_data"),
        ("sandbox", "aws_sandbox"),
        ("web", "aws_web"),
    ]
    assert not impact.truncated


async def test_a_preview_stores_nothing_even_for_a_change_it_accepts(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    stream.close()
    read = rpc.GetIntegrationRequest(id=created.id)
    before = (await s.integrations.GetIntegration(read, metadata=SYSTEM)).integration
    connections = tree_rpc.ListConnectionsRequest(integration_id=created.id, page_size=100)
    handles_before = (await s.tree.ListConnections(connections, metadata=SYSTEM)).connections
    reply = await s.integrations.UpdateIntegration(
        prefix_update(created.id, "aws_", validate_only=True), metadata=ORG_OWNER
    )
    assert reply.impact.totals.connections_renamed == 3  # it would have changed something
    after = (await s.integrations.GetIntegration(read, metadata=SYSTEM)).integration
    assert after == before  # same prefix, etag, update time: nothing stored
    assert (await s.tree.ListConnections(connections, metadata=SYSTEM)).connections == (
        handles_before
    )
    names, _ = await listing(s, "w_ops1")
    assert sorted(names) == ["data", "sandbox", "web"]


async def test_a_preview_fails_exactly_like_the_change(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    stream.close()
    for validate_only in (True, False):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await s.integrations.UpdateIntegration(
                prefix_update(created.id, "Bad Prefix", validate_only=validate_only),
                metadata=ORG_OWNER,
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(bad.value).fields == ["integration.handle_prefix"]
        stale = prefix_update(created.id, "aws_", validate_only=validate_only)
        stale.integration.etag = "stale"
        with pytest.raises(grpc.aio.AioRpcError) as aborted:
            await s.integrations.UpdateIntegration(stale, metadata=ORG_OWNER)
        assert aborted.value.code() == grpc.StatusCode.ABORTED
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await s.integrations.UpdateIntegration(
                prefix_update(created.id, "aws_", validate_only=validate_only), metadata=WS1
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as mismatch:
            await s.integrations.DeleteIntegration(
                rpc.DeleteIntegrationRequest(
                    id=created.id, confirm_handle="wrong", validate_only=validate_only
                ),
                metadata=ORG_OWNER,
            )
        assert mismatch.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_delete_preview_lists_every_removal(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    stream.close()

    async def preview() -> impact_pb2.ChangeImpact:
        reply = await s.integrations.DeleteIntegration(
            rpc.DeleteIntegrationRequest(
                id=created.id, confirm_handle="aws-ops", validate_only=True, request_id="d-1"
            ),
            metadata=ORG_OWNER,
        )
        return impact_of(reply)

    async def change() -> None:
        await s.integrations.DeleteIntegration(
            rpc.DeleteIntegrationRequest(id=created.id, confirm_handle="aws-ops", request_id="d-1"),
            metadata=ORG_OWNER,
        )

    impact = await assert_preview_is_the_effect(s, created.id, preview, change)
    assert impact.totals.connections_deleted == 3
    assert impact.totals.folders_deleted == 3
    assert {x.removed_reason for x in impact.workspaces[0].schemas} == {"INTEGRATION_DELETED"}


async def test_connection_and_folder_handle_previews_are_their_effect(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    stream.close()
    listed = await s.tree.ListConnections(
        tree_rpc.ListConnectionsRequest(integration_id=created.id), metadata=SYSTEM
    )
    web = next(c for c in listed.connections if c.handle == "web")

    def rename(validate_only: bool) -> Any:
        return s.tree.UpdateConnection(
            tree_rpc.UpdateConnectionRequest(
                connection=tree_pb.Connection(
                    id=web.id,
                    handle="frontend",
                    config_overrides=pb.ConnectionConfig(
                        regions=types_pb2.StringList(values=["eu-west-1"])
                    ),
                ),
                update_mask=FieldMask(paths=["handle", "config_overrides.regions"]),
                validate_only=validate_only,
            ),
            metadata=ORG_OWNER,
        )

    async def preview() -> impact_pb2.ChangeImpact:
        reply = await rename(True)
        assert reply.connection.handle == "frontend"
        return impact_of(reply)

    impact = await assert_preview_is_the_effect(s, created.id, preview, lambda: rename(False))
    assert [(x.old_handle, x.handle) for x in impact.tree_items] == [("web", "frontend")]
    assert impact.totals.connections_reconfigured == 1
    folders = await s.tree.ListFolders(
        tree_rpc.ListFoldersRequest(integration_id=created.id), metadata=SYSTEM
    )
    prod = next(f for f in folders.folders if f.title == "Prod")

    def folder(validate_only: bool) -> Any:
        return s.tree.UpdateFolder(
            tree_rpc.UpdateFolderRequest(
                folder=tree_pb.Folder(id=prod.id, handle="production"),
                update_mask=FieldMask(paths=["handle"]),
                validate_only=validate_only,
            ),
            metadata=ORG_OWNER,
        )

    async def folder_preview() -> impact_pb2.ChangeImpact:
        reply = await folder(True)
        assert reply.folder.handle == "production"
        return impact_of(reply)

    impact = await assert_preview_is_the_effect(
        s, created.id, folder_preview, lambda: folder(False)
    )
    assert impact.totals.folders_renamed == 1


async def test_a_permissions_preview_lists_the_schemas_workspaces_would_lose(s: Sharing) -> None:
    created, stream, _ = await setup_attached(s)
    stream.close()

    def revoke(validate_only: bool) -> Any:
        return s.permissions.SetPermissions(
            prpc.SetPermissionsRequest(
                folder_id=created.root_folder_id,
                grantees=[types_pb2.Grantee(workspace_id="w_ops2")],
                validate_only=validate_only,
            ),
            metadata=ORG_OWNER,
        )

    async def preview() -> impact_pb2.ChangeImpact:
        reply = await revoke(True)
        assert [g.grantee.workspace_id for g in reply.permissions.direct_grants] == ["w_ops2"]
        return impact_of(reply)

    impact = await assert_preview_is_the_effect(s, created.id, preview, lambda: revoke(False))
    assert impact.totals.schemas_removed == 3
    assert {x.removed_reason for x in impact.workspaces[0].schemas} == {"ACCESS_REVOKED"}
    assert not impact.tree_items


async def test_a_snapshot_preview_shows_the_guards_verdict_and_what_confirming_would_do(
    s: Sharing,
) -> None:
    created, stream, _ = await setup_attached(s)
    stream.close()
    smaller = snapshot([(ou(2), ROOT, "Dev")], [(account(3), ou(2), "Sandbox")])
    current = await s.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=created.id), metadata=SYSTEM
    )

    def send(validate_only: bool, confirm: bool) -> Any:
        return s.tree.ApplyDiscoverySnapshot(
            tree_rpc.ApplyDiscoverySnapshotRequest(
                integration_id=created.id,
                snapshot=smaller,
                expected_generation=current.integration.tree_generation,
                confirm_deletions=confirm,
                validate_only=validate_only,
            ),
            metadata=SYSTEM,
        )

    guarded = await send(True, False)
    assert guarded.outcome == tree_pb.APPLY_OUTCOME_NEEDS_CONFIRMATION
    assert guarded.impact.deletion_guard.would_stop
    assert guarded.impact.deletion_guard.connections_to_delete == 2
    assert guarded.impact.deletion_guard.connections_total == 3

    async def preview() -> impact_pb2.ChangeImpact:
        reply = await send(True, True)
        assert not reply.impact.deletion_guard.would_stop
        return impact_of(reply)

    impact = await assert_preview_is_the_effect(s, created.id, preview, lambda: send(False, True))
    assert comparable(impact) == comparable(guarded.impact)
    assert sorted(x.name for x in impact.workspaces[0].schemas) == ["data", "web"]


async def test_the_impact_service_is_for_system_callers_only(s: Sharing) -> None:
    stub = igrpc.ChangeImpactServiceStub(s.channels[1])
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.PreviewTreeChange(irpc.PreviewTreeChangeRequest(), metadata=ORG_OWNER)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.PreviewTreeChange(
            irpc.PreviewTreeChangeRequest(tree_revision=-1), metadata=SYSTEM
        )
    assert error_details(bad.value).fields == ["tree_revision"]


# -- the contract: for random trees, grants, attachments and changes, preview == effect -------


def random_snapshot(rng: random.Random, accounts: int) -> tree_pb.OrganizationSnapshot:
    units = [
        (ou(n), ROOT if n < 3 else ou(rng.randint(1, n - 1)), f"Unit {n}") for n in range(1, 6)
    ]
    placed: list[tuple[str, str, str] | tuple[str, str, str, str]] = []
    for n in range(1, accounts + 1):
        parent = rng.choice([ROOT, *(u[0] for u in units)])
        state = "SUSPENDED" if rng.random() < 0.1 else "ACTIVE"
        placed.append((account(n), parent, rng.choice(["Web", "Data", "Ops", f"Acct {n}"]), state))
    return snapshot(units, placed)


async def random_change(
    rng: random.Random, s: Sharing, created: pb.Integration
) -> tuple[Callable[[], Awaitable[impact_pb2.ChangeImpact]], Callable[[], Awaitable[Any]]]:
    """One random change as (preview, apply)."""
    kind = rng.choice(["prefix", "snapshot", "grants", "connection", "delete"])
    if kind == "prefix":
        prefix = rng.choice(["", "aws_", "p_"])

        async def preview() -> impact_pb2.ChangeImpact:
            reply = await s.integrations.UpdateIntegration(
                prefix_update(created.id, prefix, validate_only=True), metadata=ORG_OWNER
            )
            return impact_of(reply)

        return preview, lambda: s.integrations.UpdateIntegration(
            prefix_update(created.id, prefix, validate_only=False), metadata=ORG_OWNER
        )
    if kind == "snapshot":
        snap = random_snapshot(rng, rng.randint(0, 8))
        current = await s.integrations.GetIntegration(
            rpc.GetIntegrationRequest(id=created.id), metadata=SYSTEM
        )

        def send(validate_only: bool) -> Any:
            return s.tree.ApplyDiscoverySnapshot(
                tree_rpc.ApplyDiscoverySnapshotRequest(
                    integration_id=created.id,
                    snapshot=snap,
                    expected_generation=current.integration.tree_generation,
                    confirm_deletions=True,
                    validate_only=validate_only,
                ),
                metadata=SYSTEM,
            )

        async def preview_snapshot() -> impact_pb2.ChangeImpact:
            return impact_of(await send(True))

        return preview_snapshot, lambda: send(False)
    folders = await s.tree.ListFolders(
        tree_rpc.ListFoldersRequest(integration_id=created.id, page_size=100), metadata=SYSTEM
    )
    connections = await s.tree.ListConnections(
        tree_rpc.ListConnectionsRequest(integration_id=created.id, page_size=100), metadata=SYSTEM
    )
    if kind == "grants" or (kind == "connection" and not connections.connections):
        item = rng.choice(list(folders.folders))
        grantees = rng.sample(
            [
                types_pb2.Grantee(org_id="o_ops"),
                *(types_pb2.Grantee(workspace_id=w) for w in WORKSPACES),
            ],
            rng.randint(0, 2),
        )

        def grant(validate_only: bool) -> Any:
            return s.permissions.SetPermissions(
                prpc.SetPermissionsRequest(
                    folder_id=item.id, grantees=grantees, validate_only=validate_only
                ),
                metadata=ORG_OWNER,
            )

        async def preview_grant() -> impact_pb2.ChangeImpact:
            return impact_of(await grant(True))

        return preview_grant, lambda: grant(False)
    if kind == "connection":
        target = rng.choice(list(connections.connections))
        handle = rng.choice(["", "static_one", f"x_{target.account_id}"])

        def update(validate_only: bool) -> Any:
            return s.tree.UpdateConnection(
                tree_rpc.UpdateConnectionRequest(
                    connection=tree_pb.Connection(id=target.id, handle=handle),
                    update_mask=FieldMask(paths=["handle"]),
                    validate_only=validate_only,
                ),
                metadata=ORG_OWNER,
            )

        async def preview_update() -> impact_pb2.ChangeImpact:
            return impact_of(await update(True))

        return preview_update, lambda: update(False)

    def delete(validate_only: bool) -> Any:
        return s.integrations.DeleteIntegration(
            rpc.DeleteIntegrationRequest(
                id=created.id, confirm_handle=created.handle, validate_only=validate_only
            ),
            metadata=ORG_OWNER,
        )

    async def preview_delete() -> impact_pb2.ChangeImpact:
        return impact_of(await delete(True))

    return preview_delete, lambda: delete(False)


@pytest.mark.parametrize("seed", range(10))
async def test_for_random_trees_grants_attachments_and_changes_the_preview_is_the_effect(
    s: Sharing, seed: int
) -> None:
    rng = random.Random(seed)
    created = await create(s, prefix=rng.choice(["", "aws_"]))
    first = random_snapshot(rng, rng.randint(3, 10))
    await apply(s, created.id, first)
    await projected(s, created.root_folder_id)
    folders = await s.tree.ListFolders(
        tree_rpc.ListFoldersRequest(integration_id=created.id, page_size=100), metadata=SYSTEM
    )
    active = sum(1 for a in first.accounts if a.state == "ACTIVE")
    await available(s, "w_ops1", expect=active)
    for workspace in WORKSPACES:
        least = 1 if workspace == "w_ops1" else 0
        for folder in rng.sample(list(folders.folders), rng.randint(least, 2)):
            await s.schemas.AttachSchema(
                wrpc.AttachSchemaRequest(workspace_id=workspace, folder_id=folder.id),
                metadata=SYSTEM,
            )
    await asyncio.sleep(0.1)
    changed = 0
    for _ in range(5):
        preview, change = await random_change(rng, s, created)
        try:
            impact = await assert_preview_is_the_effect(s, created.id, preview, change)
        except grpc.aio.AioRpcError as error:
            # A change the service refuses (a taken handle) is refused by its preview first.
            assert error.code() in (grpc.StatusCode.ALREADY_EXISTS,), error
        else:
            changed += len(impact.workspaces) + len(impact.tree_items)
        gone = await s.integrations.ListIntegrations(
            rpc.ListIntegrationsRequest(scope=types_pb2.Scope(org_id="o_ops")), metadata=SYSTEM
        )
        if not any(i.id == created.id for i in gone.integrations):
            break
    assert changed, "no change of this scenario did anything: the comparison was vacuous"
