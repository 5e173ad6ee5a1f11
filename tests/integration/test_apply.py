"""ApplyDiscoverySnapshot over real gRPC and PostgreSQL: the tree mirrors the organization, every
change has its event, re-applying writes nothing, the deletion guard holds, failures change only
the state, and handles follow the rules (prefix + slug, stable collisions, static handles)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.type.v1 import types_pb2
from tests.helpers import error_details
from tests.integration.conftest import (
    MEMBER,
    OUTSIDER,
    OWNER,
    ROOT,
    SYSTEM,
    Suite,
    account,
    create,
    new_integration,
    ou,
    set_inherited_regions,
    snapshot,
)


async def apply(
    suite: Suite,
    integration_id: str,
    snap: tree_pb.OrganizationSnapshot,
    *,
    confirm: bool = False,
    generation: int | None = None,
) -> tree_rpc.ApplyDiscoverySnapshotResponse:
    if generation is None:
        current = await suite.integrations.GetIntegration(
            rpc.GetIntegrationRequest(id=integration_id), metadata=SYSTEM
        )
        generation = current.integration.tree_generation
    return await suite.tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=integration_id,
            snapshot=snap,
            expected_generation=generation,
            confirm_deletions=confirm,
        ),
        metadata=SYSTEM,
    )


async def connections(suite: Suite, integration_id: str) -> dict[str, tree_pb.Connection]:
    """Account id → connection."""
    found: dict[str, tree_pb.Connection] = {}
    page_token = ""
    while True:
        reply = await suite.tree.ListConnections(
            tree_rpc.ListConnectionsRequest(
                integration_id=integration_id, page_size=100, page_token=page_token
            ),
            metadata=SYSTEM,
        )
        found.update({c.account_id: c for c in reply.connections})
        page_token = reply.next_page_token
        if not page_token:
            return found


async def folders(suite: Suite, integration_id: str) -> dict[str, tree_pb.Folder]:
    """AWS id → folder."""
    reply = await suite.tree.ListFolders(
        tree_rpc.ListFoldersRequest(integration_id=integration_id, page_size=100), metadata=SYSTEM
    )
    return {f.aws_id: f for f in reply.folders}


async def events_after(suite: Suite, revision: int, integration_id: str) -> list[tree_pb.TreeEvent]:
    """Every tree event of an integration after a revision, up to the current head."""
    stream = suite.tree.WatchTreeEvents(
        tree_rpc.WatchTreeEventsRequest(after_revision=revision, integration_id=integration_id),
        metadata=SYSTEM,
    )
    seen: list[tree_pb.TreeEvent] = []
    async for reply in stream:
        seen.extend(reply.events)
        if not reply.events:  # a progress message: caught up
            break
    stream.cancel()
    return seen


async def head(suite: Suite, integration_id: str) -> int:
    tree = await suite.tree.GetConnectionTree(
        tree_rpc.GetConnectionTreeRequest(integration_id=integration_id), metadata=SYSTEM
    )
    return tree.tree.revision


BASE = snapshot(
    [(ou(1), ROOT, "Production"), (ou(2), ou(1), "Web Apps"), (ou(3), ROOT, "Sandbox")],
    [
        (account(1), ROOT, "Management"),
        (account(2), ou(2), "Web Prod"),
        (account(3), ou(1), "Data Prod"),
        (account(4), ou(3), "Sandbox 1"),
        (account(5), ou(3), "Old", "SUSPENDED"),
    ],
)


async def test_a_first_snapshot_builds_the_tree_and_enables_the_integration(suite: Suite) -> None:
    created = await create(suite)
    start = await head(suite, created.id)
    reply = await apply(suite, created.id, BASE)
    assert reply.outcome == tree_pb.APPLY_OUTCOME_APPLIED
    s = reply.summary
    assert (s.folders_created, s.connections_created, s.accounts_skipped_inactive) == (3, 4, 1)
    assert s.events_emitted == 1 + 1 + 3 + 4  # integration updated, root aws id, 3 OUs, 4 accounts
    assert reply.integration.state == pb.INTEGRATION_STATE_ENABLED
    assert reply.integration.organization_id == "o-abcdefghij"
    assert reply.generation == 1

    by_account = await connections(suite, created.id)
    assert {a: c.handle for a, c in by_account.items()} == {
        account(1): "management",
        account(2): "web_prod",
        account(3): "data_prod",
        account(4): "sandbox_1",
    }
    by_aws = await folders(suite, created.id)
    assert by_account[account(2)].folder_id == by_aws[ou(2)].id
    assert by_aws[ou(2)].parent_folder_id == by_aws[ou(1)].id
    assert list(by_aws[ou(2)].path) == ["aws-prod", "production", "web_apps"]
    assert by_aws[ROOT].kind == tree_pb.FOLDER_KIND_ROOT

    events = await events_after(suite, start, created.id)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds.count("folder_created") == 3
    assert kinds.count("connection_created") == 4
    assert kinds.index("folder_created") < kinds.index("connection_created")
    assert [e.revision for e in events] == list(range(start + 1, start + 1 + len(events)))


async def test_reapplying_the_same_snapshot_writes_nothing_and_emits_nothing(suite: Suite) -> None:
    created = await create(suite)
    first = await apply(suite, created.id, BASE)
    before = await head(suite, created.id)
    again = await apply(suite, created.id, BASE)
    assert again.outcome == tree_pb.APPLY_OUTCOME_UNCHANGED
    assert again.summary.rows_written == 0
    assert again.summary.events_emitted == 0
    assert again.generation == first.generation
    assert again.integration.etag == first.integration.etag
    assert await head(suite, created.id) == before


async def test_renames_moves_and_removals_reach_the_tree_with_their_events(suite: Suite) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    start = await head(suite, created.id)
    changed = snapshot(
        [(ou(1), ROOT, "Prod"), (ou(2), ROOT, "Web Apps"), (ou(4), ROOT, "Security")],
        [
            (account(1), ROOT, "Management"),
            (account(2), ou(2), "Web Production"),  # renamed (its OU moved to the root)
            (account(3), ou(4), "Data Prod"),  # moved to a new OU
            (account(4), ou(2), "Sandbox 1", "SUSPENDED"),  # suspended
            (account(6), ou(4), "Audit"),  # new
        ],
    )
    reply = await apply(suite, created.id, changed, confirm=True)
    assert reply.outcome == tree_pb.APPLY_OUTCOME_APPLIED
    s = reply.summary
    assert (s.folders_created, s.folders_deleted, s.folders_moved) == (1, 1, 1)
    assert (s.connections_created, s.connections_deleted, s.connections_renamed) == (1, 1, 1)
    assert s.connections_moved == 1

    by_account = await connections(suite, created.id)
    assert set(by_account) == {account(1), account(2), account(3), account(6)}
    assert by_account[account(2)].handle == "web_production"
    by_aws = await folders(suite, created.id)
    assert ou(3) not in by_aws
    assert by_aws[ou(1)].title == "Prod"
    assert by_aws[ou(1)].handle == "prod"
    assert by_account[account(3)].folder_id == by_aws[ou(4)].id
    assert by_aws[ou(2)].parent_folder_id == by_aws[ROOT].id

    events = await events_after(suite, start, created.id)
    renamed = [
        e.connection_updated
        for e in events
        if e.WhichOneof("event") == "connection_updated"
        and "handle" in e.connection_updated.changed_fields
    ]
    assert [(r.before.handle, r.after.handle) for r in renamed] == [("web_prod", "web_production")]
    deleted = [
        e.connection_deleted for e in events if e.WhichOneof("event") == "connection_deleted"
    ]
    assert [(d.connection.account_id, d.reason) for d in deleted] == [
        (account(4), tree_pb.DELETION_REASON_ACCOUNT_NOT_ACTIVE)
    ]
    folder_deleted = [e.folder_deleted for e in events if e.WhichOneof("event") == "folder_deleted"]
    assert [(f.folder.aws_id, f.reason) for f in folder_deleted] == [
        (ou(3), tree_pb.DELETION_REASON_REMOVED_FROM_ORGANIZATION)
    ]
    moved = [
        e.folder_updated
        for e in events
        if e.WhichOneof("event") == "folder_updated"
        and "parent_id" in e.folder_updated.changed_fields
    ]
    assert [m.after.aws_id for m in moved] == [ou(2)]


async def test_the_deletion_guard_applies_nothing_until_confirmed(suite: Suite) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    before = await head(suite, created.id)
    shrunk = snapshot([], [(account(1), ROOT, "Management")])  # deletes 3 of 4 connections
    guarded = await apply(suite, created.id, shrunk)
    assert guarded.outcome == tree_pb.APPLY_OUTCOME_NEEDS_CONFIRMATION
    assert (guarded.summary.connections_to_delete, guarded.summary.connections_total) == (3, 4)
    assert guarded.summary.rows_written == 0
    assert len(await connections(suite, created.id)) == 4
    assert await head(suite, created.id) == before

    confirmed = await apply(suite, created.id, shrunk, confirm=True)
    assert confirmed.outcome == tree_pb.APPLY_OUTCOME_APPLIED
    assert confirmed.summary.connections_deleted == 3
    assert set(await connections(suite, created.id)) == {account(1)}


async def test_a_guard_of_zero_is_off(suite: Suite) -> None:
    created = await create(suite, new_integration(max_delete_fraction=0.0))
    await apply(suite, created.id, BASE)
    reply = await apply(suite, created.id, snapshot([], []))
    assert reply.outcome == tree_pb.APPLY_OUTCOME_APPLIED
    assert await connections(suite, created.id) == {}


async def test_a_different_organization_counts_as_deleting_everything(suite: Suite) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    old = await connections(suite, created.id)
    other = snapshot(
        [(ou(9), "r-zz99", "Production")],
        [(account(1), "r-zz99", "Management"), (account(9), ou(9), "Web Prod")],
        organization_id="o-zzzzzzzzzz",
        root_id="r-zz99",
    )
    guarded = await apply(suite, created.id, other)
    assert guarded.outcome == tree_pb.APPLY_OUTCOME_NEEDS_CONFIRMATION
    assert guarded.summary.connections_to_delete == 4  # even account 1, present in both
    start = await head(suite, created.id)
    confirmed = await apply(suite, created.id, other, confirm=True)
    assert confirmed.outcome == tree_pb.APPLY_OUTCOME_APPLIED
    assert confirmed.integration.organization_id == "o-zzzzzzzzzz"
    now = await connections(suite, created.id)
    assert set(now) == {account(1), account(9)}
    assert now[account(1)].id != old[account(1)].id
    assert now[account(9)].handle == "web_prod"  # the freed handle is reused
    events = await events_after(suite, start, created.id)
    reasons = {
        e.connection_deleted.reason for e in events if e.WhichOneof("event") == "connection_deleted"
    }
    assert reasons == {tree_pb.DELETION_REASON_ORGANIZATION_CHANGED}
    kinds = [e.WhichOneof("event") for e in events]
    last_delete = max(i for i, k in enumerate(kinds) if k == "connection_deleted")
    first_create = min(i for i, k in enumerate(kinds) if k == "connection_created")
    assert last_delete < first_create  # a workspace sees the old name go before the new one comes


async def test_a_stale_generation_is_aborted(suite: Suite) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE, generation=0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await apply(suite, created.id, snapshot([], []), generation=0, confirm=True)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.ABORTED
    assert details.reason == "TREE_GENERATION_MISMATCH"
    assert len(await connections(suite, created.id)) == 4


async def test_concurrent_applies_of_one_generation_let_exactly_one_win(suite: Suite) -> None:
    created = await create(suite)
    results = await asyncio.gather(
        apply(suite, created.id, BASE, generation=0),
        apply(suite, created.id, BASE, generation=0),
        return_exceptions=True,
    )
    outcomes = sorted(type(r).__name__ for r in results)
    assert outcomes == ["AioRpcError", "ApplyDiscoverySnapshotResponse"]
    assert len(await connections(suite, created.id)) == 4


async def test_a_failure_sets_error_and_leaves_the_tree_as_it_was(suite: Suite) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    before = await connections(suite, created.id)
    current = await suite.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=created.id), metadata=SYSTEM
    )
    reply = await suite.tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=created.id,
            expected_generation=current.integration.tree_generation,
            failure=tree_pb.DiscoveryFailure(reason="ASSUME_ROLE_DENIED", message="denied"),
        ),
        metadata=SYSTEM,
    )
    assert reply.outcome == tree_pb.APPLY_OUTCOME_FAILURE_RECORDED
    assert reply.integration.state == pb.INTEGRATION_STATE_ERROR
    assert reply.integration.state_reason == "ASSUME_ROLE_DENIED"
    assert await connections(suite, created.id) == before
    recovered = await apply(suite, created.id, BASE)
    assert recovered.integration.state == pb.INTEGRATION_STATE_ENABLED
    assert recovered.integration.state_reason == ""


async def test_a_suspension_sets_suspended_keeps_the_tree_and_a_snapshot_ends_it(
    suite: Suite,
) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    before = (await connections(suite, created.id), await folders(suite, created.id))
    start = await head(suite, created.id)

    async def suspend() -> tree_rpc.ApplyDiscoverySnapshotResponse:
        reply: tree_rpc.ApplyDiscoverySnapshotResponse = await suite.tree.ApplyDiscoverySnapshot(
            tree_rpc.ApplyDiscoverySnapshotRequest(
                integration_id=created.id,
                # Not computed against a tree: no generation to match.
                expected_generation=0,
                suspension=tree_pb.DiscoverySuspension(
                    reason="PLAN_NOT_ELIGIBLE", message="tenant 't_acme' is on plan TEAM"
                ),
            ),
            metadata=SYSTEM,
        )
        return reply

    reply = await suspend()
    assert reply.outcome == tree_pb.APPLY_OUTCOME_SUSPENSION_RECORDED
    assert reply.integration.state == pb.INTEGRATION_STATE_SUSPENDED
    assert reply.integration.state_reason == "PLAN_NOT_ELIGIBLE"
    assert reply.integration.state_message == "tenant 't_acme' is on plan TEAM"
    assert reply.summary.events_emitted == 1
    assert (await connections(suite, created.id), await folders(suite, created.id)) == before
    (event,) = await events_after(suite, start, created.id)
    assert event.WhichOneof("event") == "integration_updated"
    assert list(event.integration_updated.changed_fields) == ["state"]
    again = await suspend()  # recorded once
    assert again.summary.events_emitted == 0

    resumed = await apply(suite, created.id, BASE)
    assert resumed.outcome == tree_pb.APPLY_OUTCOME_UNCHANGED
    assert resumed.integration.state == pb.INTEGRATION_STATE_ENABLED
    assert resumed.integration.state_reason == ""
    assert (await connections(suite, created.id), await folders(suite, created.id)) == before


async def test_only_system_callers_apply_snapshots(suite: Suite) -> None:
    created = await create(suite)
    for who in (OWNER, MEMBER, OUTSIDER):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await suite.tree.ApplyDiscoverySnapshot(
                tree_rpc.ApplyDiscoverySnapshotRequest(integration_id=created.id, snapshot=BASE),
                metadata=who,
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: setattr(s, "organization_id", "org-1"), "snapshot.organization_id"),
        (lambda s: setattr(s, "root_id", "root"), "snapshot.root_id"),
        (lambda s: setattr(s, "management_account_id", "12"), "snapshot.management_account_id"),
        (lambda s: setattr(s.accounts[0], "id", "1234"), "snapshot.accounts[0].id"),
        (
            lambda s: setattr(s.accounts[1], "parent_id", "ou-zz99-99999999"),
            "snapshot.accounts[1].parent_id",
        ),
        (
            lambda s: setattr(s.organizational_units[0], "id", "x"),
            "snapshot.organizational_units[0].id",
        ),
        (
            lambda s: setattr(s.organizational_units[0], "name", ""),
            "snapshot.organizational_units[0].name",
        ),
        (lambda s: setattr(s.accounts[0], "state", ""), "snapshot.accounts[0].state"),
        (lambda s: s.accounts.append(s.accounts[0]), "snapshot.accounts[5].id"),
        # Join times past protobuf's Timestamp range (were INTERNAL, and UNAVAILABLE).
        (
            lambda s: setattr(s.accounts[1].joined_time, "seconds", 2**63 - 1),
            "snapshot.accounts[1].joined_time",
        ),
        (
            lambda s: setattr(s.accounts[0].joined_time, "seconds", -(2**63)),
            "snapshot.accounts[0].joined_time",
        ),
        (
            lambda s: setattr(s.accounts[0].joined_time, "nanos", -1),
            "snapshot.accounts[0].joined_time",
        ),
    ],
)
async def test_a_malformed_snapshot_is_invalid_and_names_the_field(
    suite: Suite, mutate: Any, field: str
) -> None:
    created = await create(suite)
    bad = tree_pb.OrganizationSnapshot()
    bad.CopyFrom(BASE)
    mutate(bad)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await apply(suite, created.id, bad)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details.fields


async def test_an_ou_cycle_is_invalid(suite: Suite) -> None:
    created = await create(suite)
    cyclic = snapshot([(ou(1), ou(2), "A"), (ou(2), ou(1), "B")], [])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await apply(suite, created.id, cyclic)
    assert error_details(caught.value).code == grpc.StatusCode.INVALID_ARGUMENT


# -- handles ---------------------------------------------------------------------------------


async def test_colliding_account_names_get_stable_suffixes_from_their_account_ids(
    suite: Suite,
) -> None:
    created = await create(suite)
    colliding = snapshot(
        [],
        [
            (account(11), ROOT, "Prod"),
            (account(22), ROOT, "prod"),
            (account(33), ROOT, "PROD!"),
        ],
    )
    await apply(suite, created.id, colliding)
    first = {a: c.handle for a, c in (await connections(suite, created.id)).items()}
    assert first == {account(11): "prod", account(22): "prod_0022", account(33): "prod_0033"}
    # The holder keeps its handle even when a newcomer sorts before it.
    grown = snapshot(
        [], [*[(a.id, ROOT, a.name) for a in colliding.accounts], (account(5), ROOT, "Prod")]
    )
    await apply(suite, created.id, grown)
    second = {a: c.handle for a, c in (await connections(suite, created.id)).items()}
    assert {k: second[k] for k in first} == first
    assert second[account(5)] == "prod_0005"


async def test_two_accounts_that_swap_names_never_swap_handles(suite: Suite) -> None:
    created = await create(suite)
    await apply(
        suite, created.id, snapshot([], [(account(1), ROOT, "Alpha"), (account(2), ROOT, "Beta")])
    )
    await apply(
        suite, created.id, snapshot([], [(account(1), ROOT, "Beta"), (account(2), ROOT, "Alpha")])
    )
    handles = {a: c.handle for a, c in (await connections(suite, created.id)).items()}
    assert handles[account(1)] != "alpha"
    assert handles[account(2)] != "beta"
    assert handles[account(1)].startswith("beta_")
    assert handles[account(2)].startswith("alpha_")


async def test_handles_are_unique_across_the_tenants_integrations(suite: Suite) -> None:
    first = await create(suite, new_integration("aws-one"))
    second = await create(suite, new_integration("aws-two", org_id="o_ops", tenant_id=None))
    await apply(suite, first.id, snapshot([], [(account(1), ROOT, "Shared")]))
    await apply(suite, second.id, snapshot([], [(account(2), ROOT, "Shared")]))
    assert (await connections(suite, first.id))[account(1)].handle == "shared"
    assert (await connections(suite, second.id))[account(2)].handle == "shared_0002"


async def test_names_that_need_slugging_or_fall_back_to_the_account_id(suite: Suite) -> None:
    created = await create(suite, new_integration(prefix="aws_"))
    await apply(
        suite,
        created.id,
        snapshot(
            [],
            [
                (account(1), ROOT, "Équipe — Données (prod)"),
                (account(2), ROOT, "!!!"),
                (account(3), ROOT, "2024 archive"),
                (account(4), ROOT, "x" * 60),
            ],
        ),
    )
    handles = {a: c.handle for a, c in (await connections(suite, created.id)).items()}
    assert handles[account(1)] == "aws_quipe_donn_es_prod"
    assert handles[account(2)] == f"aws_a{account(2)}"
    assert handles[account(3)] == "aws_2024_archive"
    assert len(handles[account(4)]) == 39


async def test_a_static_handle_survives_renames_and_clearing_it_returns_to_dynamic(
    suite: Suite,
) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    web = (await connections(suite, created.id))[account(2)]
    updated = await suite.tree.UpdateConnection(
        tree_rpc.UpdateConnectionRequest(
            connection=tree_pb.Connection(id=web.id, handle="frontend"),
            update_mask=FieldMask(paths=["handle"]),
        ),
        metadata=OWNER,
    )
    assert updated.connection.handle == "frontend"
    assert updated.connection.handle_mode == tree_pb.HANDLE_MODE_STATIC
    renamed = snapshot(
        [(u.id, u.parent_id, u.name) for u in BASE.organizational_units],
        [
            (a.id, a.parent_id, "Website" if a.id == account(2) else a.name, a.state)
            for a in BASE.accounts
        ],
    )
    await apply(suite, created.id, renamed)
    assert (await connections(suite, created.id))[account(2)].handle == "frontend"
    cleared = await suite.tree.UpdateConnection(
        tree_rpc.UpdateConnectionRequest(
            connection=tree_pb.Connection(id=web.id, handle=""),
            update_mask=FieldMask(paths=["handle"]),
        ),
        metadata=OWNER,
    )
    assert cleared.connection.handle == "website"
    assert cleared.connection.handle_mode == tree_pb.HANDLE_MODE_DYNAMIC


async def test_a_static_handle_taken_in_the_tenant_is_already_exists(suite: Suite) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    by_account = await connections(suite, created.id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.tree.UpdateConnection(
            tree_rpc.UpdateConnectionRequest(
                connection=tree_pb.Connection(id=by_account[account(2)].id, handle="management"),
                update_mask=FieldMask(paths=["handle"]),
            ),
            metadata=OWNER,
        )
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.ALREADY_EXISTS
    assert details.metadata["field"] == "connection.handle"


@pytest.mark.parametrize(
    "handle", ["public", "pg_stats", "steampipe_x", "Prod", "a__b", "a" * 40, "1abc"]
)
async def test_a_reserved_or_malformed_static_handle_is_invalid(suite: Suite, handle: str) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    conn = (await connections(suite, created.id))[account(2)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.tree.UpdateConnection(
            tree_rpc.UpdateConnectionRequest(
                connection=tree_pb.Connection(id=conn.id, handle=handle),
                update_mask=FieldMask(paths=["handle"]),
            ),
            metadata=OWNER,
        )
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["connection.handle"]


@pytest.mark.parametrize(
    ("regions", "default_region", "field"),
    [
        (["us-east-1", "*", "zz-foo"], None, "connection.config_overrides.regions[2]"),
        (["eu-west-10"], None, "connection.config_overrides.regions[0]"),
        (["zz-*"], None, "connection.config_overrides.regions[0]"),
        (None, "eu-west-10", "connection.config_overrides.default_region"),
    ],
)
async def test_an_override_naming_no_region_of_the_partition_is_invalid_naming_it(
    suite: Suite, regions: list[str] | None, default_region: str | None, field: str
) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    conn = (await connections(suite, created.id))[account(2)]
    overrides = pb.ConnectionConfig(default_region=default_region)
    if regions is not None:
        overrides.regions.values.extend(regions)
    path = "config_overrides.regions" if regions is not None else "config_overrides.default_region"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.tree.UpdateConnection(
            tree_rpc.UpdateConnectionRequest(
                connection=tree_pb.Connection(id=conn.id, config_overrides=overrides),
                update_mask=FieldMask(paths=[path]),
            ),
            metadata=OWNER,
        )
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == [field]
    assert "AWS partition 'aws'" in (caught.value.details() or "")


# -- settings that ripple ----------------------------------------------------------------------


async def test_a_prefix_change_renames_every_dynamic_connection_with_one_event_each(
    suite: Suite,
) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    static = (await connections(suite, created.id))[account(1)]
    await suite.tree.UpdateConnection(
        tree_rpc.UpdateConnectionRequest(
            connection=tree_pb.Connection(id=static.id, handle="mgmt"),
            update_mask=FieldMask(paths=["handle"]),
        ),
        metadata=OWNER,
    )
    start = await head(suite, created.id)
    await suite.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=created.id, handle_prefix="aws_"),
            update_mask=FieldMask(paths=["handle_prefix"]),
        ),
        metadata=OWNER,
    )
    handles = {a: c.handle for a, c in (await connections(suite, created.id)).items()}
    assert handles == {
        account(1): "mgmt",
        account(2): "aws_web_prod",
        account(3): "aws_data_prod",
        account(4): "aws_sandbox_1",
    }
    events = await events_after(suite, start, created.id)
    renames = sorted(
        (e.connection_updated.before.handle, e.connection_updated.after.handle)
        for e in events
        if e.WhichOneof("event") == "connection_updated"
    )
    assert renames == [
        ("data_prod", "aws_data_prod"),
        ("sandbox_1", "aws_sandbox_1"),
        ("web_prod", "aws_web_prod"),
    ]
    updated = [e for e in events if e.WhichOneof("event") == "integration_updated"]
    assert list(updated[0].integration_updated.changed_fields) == ["handle_prefix"]


async def test_a_prefix_change_keeps_a_collision_suffix_after_the_base_holder_left(
    suite: Suite,
) -> None:
    created = await create(suite, new_integration(prefix="e2e_"))
    twins = [(account(1), ROOT, "Prod A"), (account(8159), ROOT, "Prod A")]
    await apply(suite, created.id, snapshot([], [*twins, (account(3), ROOT, "Dev")]))
    assert (await connections(suite, created.id))[account(8159)].handle == "e2e_prod_a_8159"
    # The holder of the plain handle leaves; a sync keeps the suffixed handle where it is.
    left = snapshot([], [twins[1], (account(3), ROOT, "Dev")])
    await apply(suite, created.id, left)
    assert (await connections(suite, created.id))[account(8159)].handle == "e2e_prod_a_8159"

    start = await head(suite, created.id)
    await suite.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=created.id, handle_prefix="acc_"),
            update_mask=FieldMask(paths=["handle_prefix"]),
        ),
        metadata=OWNER,
    )
    events = await events_after(suite, start, created.id)
    renames = sorted(
        (e.connection_updated.before.handle, e.connection_updated.after.handle)
        for e in events
        if e.WhichOneof("event") == "connection_updated"
    )
    assert renames == [("e2e_dev", "acc_dev"), ("e2e_prod_a_8159", "acc_prod_a_8159")]
    # Nor does the next sync take the suffix away, though "acc_prod_a" is free.
    after_change = await head(suite, created.id)
    await apply(suite, created.id, left)
    assert (await connections(suite, created.id))[account(8159)].handle == "acc_prod_a_8159"
    assert await events_after(suite, after_change, created.id) == []


async def test_inherited_settings_reach_connections_without_an_override(suite: Suite) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    by_account = await connections(suite, created.id)
    pinned = by_account[account(2)]
    await suite.tree.UpdateConnection(
        tree_rpc.UpdateConnectionRequest(
            connection=tree_pb.Connection(
                id=pinned.id,
                config_overrides=pb.ConnectionConfig(
                    regions=types_pb2.StringList(values=["eu-west-1"])
                ),
            ),
            update_mask=FieldMask(paths=["config_overrides.regions"]),
        ),
        metadata=OWNER,
    )
    start = await head(suite, created.id)
    await set_inherited_regions(suite, created.id, ["us-east-1", "us-west-2"])
    after = await connections(suite, created.id)
    assert list(after[account(2)].effective_config.regions) == ["eu-west-1"]
    assert list(after[account(2)].effective_config.overridden_fields) == ["regions"]
    for other in (account(1), account(3), account(4)):
        assert list(after[other].effective_config.regions) == ["us-east-1", "us-west-2"]
    events = await events_after(suite, start, created.id)
    config_events = [
        e.connection_updated.after.account_id
        for e in events
        if e.WhichOneof("event") == "connection_updated"
    ]
    assert sorted(config_events) == [account(1), account(3), account(4)]
    # Overrides are kept across syncs.
    await apply(suite, created.id, BASE)
    assert list((await connections(suite, created.id))[account(2)].effective_config.regions) == [
        "eu-west-1"
    ]


# -- reads -------------------------------------------------------------------------------------


async def test_the_connection_tree_nests_folders_and_connections_by_handle(suite: Suite) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    reply = await suite.tree.GetConnectionTree(
        tree_rpc.GetConnectionTreeRequest(integration_id=created.id), metadata=MEMBER
    )
    tree = reply.tree
    assert tree.integration_state == pb.INTEGRATION_STATE_ENABLED
    root = tree.root
    assert root.folder.title == "aws-prod"
    assert [f.folder.handle for f in root.folders] == ["production", "sandbox"]
    assert [c.handle for c in root.connections] == ["management"]
    production = root.folders[0]
    assert [c.handle for c in production.connections] == ["data_prod"]
    assert [f.folder.handle for f in production.folders] == ["web_apps"]
    assert [c.handle for c in production.folders[0].connections] == ["web_prod"]
    assert production.folders[0].connections[0].effective_config.role_arn == (
        "arn:aws:iam::000000000002:role/canopy-member"
    )
    assert tree.revision > 0


async def test_outsiders_cannot_read_the_tree(suite: Suite) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    conn = (await connections(suite, created.id))[account(2)]
    for call in (
        suite.tree.GetConnectionTree(
            tree_rpc.GetConnectionTreeRequest(integration_id=created.id), metadata=OUTSIDER
        ),
        suite.tree.GetConnection(tree_rpc.GetConnectionRequest(id=conn.id), metadata=OUTSIDER),
        suite.tree.GetFolder(tree_rpc.GetFolderRequest(id=conn.folder_id), metadata=OUTSIDER),
        suite.tree.ListConnections(
            tree_rpc.ListConnectionsRequest(integration_id=created.id), metadata=OUTSIDER
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_list_connections_by_folder_pages_in_a_stable_order(suite: Suite) -> None:
    created = await create(suite)
    many = snapshot(
        [(ou(1), ROOT, "Team")], [(account(i), ou(1), f"acct {i}") for i in range(1, 8)]
    )
    await apply(suite, created.id, many)
    folder_id = (await folders(suite, created.id))[ou(1)].id
    seen: list[str] = []
    token = ""
    while True:
        reply = await suite.tree.ListConnections(
            tree_rpc.ListConnectionsRequest(folder_id=folder_id, page_size=3, page_token=token),
            metadata=MEMBER,
        )
        seen.extend(c.account_id for c in reply.connections)
        token = reply.next_page_token
        if not token:
            break
    assert sorted(seen) == [account(i) for i in range(1, 8)]
    assert len(seen) == 7


async def test_a_folder_handle_can_be_set_and_must_be_unique_among_siblings(suite: Suite) -> None:
    created = await create(suite)
    await apply(suite, created.id, BASE)
    by_aws = await folders(suite, created.id)
    renamed = await suite.tree.UpdateFolder(
        tree_rpc.UpdateFolderRequest(
            folder=tree_pb.Folder(id=by_aws[ou(1)].id, handle="prod-main"),
            update_mask=FieldMask(paths=["handle"]),
        ),
        metadata=OWNER,
    )
    assert renamed.folder.handle == "prod-main"
    assert renamed.folder.handle_mode == tree_pb.HANDLE_MODE_STATIC
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.tree.UpdateFolder(
            tree_rpc.UpdateFolderRequest(
                folder=tree_pb.Folder(id=by_aws[ou(3)].id, handle="prod-main"),
                update_mask=FieldMask(paths=["handle"]),
            ),
            metadata=OWNER,
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.tree.UpdateFolder(
            tree_rpc.UpdateFolderRequest(
                folder=tree_pb.Folder(id=by_aws[ou(3)].id, title="New title"),
                update_mask=FieldMask(paths=["title"]),
            ),
            metadata=OWNER,
        )
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["update_mask.paths[0]"]


async def test_watch_tree_events_by_scope_sees_only_that_scope(suite: Suite) -> None:
    tenant_level = await create(suite, new_integration("aws-tenant"))
    org_level = await create(suite, new_integration("aws-org", org_id="o_ops", tenant_id=None))
    stream = suite.tree.WatchTreeEvents(
        tree_rpc.WatchTreeEventsRequest(after_revision=0, scope=types_pb2.Scope(org_id="o_ops")),
        metadata=OWNER,
    )
    seen: set[str] = set()
    async for reply in stream:
        seen.update(e.integration_id for e in reply.events)
        if not reply.events:
            break
    stream.cancel()
    assert seen == {org_level.id}
    assert tenant_level.id not in seen
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        outsider = suite.tree.WatchTreeEvents(
            tree_rpc.WatchTreeEventsRequest(
                after_revision=0, scope=types_pb2.Scope(tenant_id="t_acme")
            ),
            metadata=OUTSIDER,
        )
        async for _ in outsider:
            pass
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        everything = suite.tree.WatchTreeEvents(
            tree_rpc.WatchTreeEventsRequest(after_revision=0), metadata=OWNER
        )
        async for _ in everything:
            pass
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_tree_watch_resumed_from_its_first_replys_latest_revision_misses_nothing(
    suite: Suite,
) -> None:
    # More events than one reply of the server's catch-up carries (500).
    created = await create(suite)
    start = await head(suite, created.id)
    await apply(suite, created.id, snapshot([], [(account(n), ROOT, f"A{n}") for n in range(700)]))
    everything = [e.revision for e in await events_after(suite, start, created.id)]
    assert len(everything) > 700
    stream = suite.tree.WatchTreeEvents(
        tree_rpc.WatchTreeEventsRequest(after_revision=start, integration_id=created.id),
        metadata=SYSTEM,
    )
    first = await anext(aiter(stream))
    stream.cancel()
    sent = [e.revision for e in first.events]
    assert 0 < len(sent) < len(everything)
    assert first.latest_revision == sent[-1]
    rest = [e.revision for e in await events_after(suite, first.latest_revision, created.id)]
    assert sent + rest == everything
