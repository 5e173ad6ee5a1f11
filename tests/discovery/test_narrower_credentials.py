"""Credentials that see less, as the guide says: after UpdateIntegration gives discovery a role
that AWS refuses on an OU, the next sync deletes that OU's folders and connections (and their
schemas in workspaces), records the refused OU in the run, and stops at the deletion guard when
that is most of the tree; a role whose failures on the OU are transient deletes nothing. Previewing
the change (UpdateIntegration `validate_only`, a dry-run crawl with the new role) shows exactly
those deletions first.

Over real gRPC, PostgreSQL and a moto server. moto does not enforce IAM: the fault proxy refuses
the narrow role's calls naming the OU, recognising the role by the keys STS issued for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.type.v1 import impact_pb2
from tests.awsfaults import (
    THROTTLED_CODE,
    THROTTLED_MESSAGE,
    FaultProxy,
    Rule,
    organizations_refusal,
)
from tests.discovery.conftest import MANAGEMENT_ACCOUNT, Org
from tests.discovery.stack import Stack, finished, handles, runs_of, start_stack, sync
from tests.discovery.test_live_updates import (
    attach_root,
    create_followed,
    schema_events,
    schema_revision,
)
from tests.integration.conftest import ORG_OWNER, SYSTEM

NARROW_ROLE = f"arn:aws:iam::{MANAGEMENT_ACCOUNT}:role/canopy-narrow"


@pytest.fixture
async def stack(service_env: dict[str, Any], proxy: FaultProxy) -> AsyncIterator[Stack]:
    built = await start_stack(service_env, proxy)
    yield built
    await built.close()


def refuse_for_narrow_role(proxy: FaultProxy, unit_id: str, **fault: Any) -> Rule:
    """The narrow role's Organizations calls naming `unit_id` fail: refused as AWS refuses a
    call its policy denies, unless `fault` says how else."""
    rule = organizations_refusal(role_arn=NARROW_ROLE, entity=unit_id)
    return proxy.add(dataclasses.replace(rule, **fault))


async def change_role(stack: Stack, integration_id: str, role_arn: str) -> dpb.SyncRun:
    """UpdateIntegration with another discovery role; the sync it starts, once it has ended."""
    earlier = {run.id for run in await runs_of(stack, integration_id)}
    await stack.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(
                id=integration_id, discovery_access=pb.AwsDiscoveryAccess(role_arn=role_arn)
            ),
            update_mask=FieldMask(paths=["discovery_access.role_arn"]),
        ),
        metadata=ORG_OWNER,
    )
    for _ in range(100):
        started = [
            run
            for run in await runs_of(stack, integration_id)
            if run.id not in earlier and run.trigger == dpb.SYNC_TRIGGER_SETTINGS_CHANGED
        ]
        if started:
            return await finished(stack, started[0].id)
        await asyncio.sleep(0.1)
    raise AssertionError("changing the discovery role started no sync")


async def tree_revision(stack: Stack, integration_id: str) -> int:
    reply = await stack.tree.GetConnectionTree(
        tree_rpc.GetConnectionTreeRequest(integration_id=integration_id), metadata=SYSTEM
    )
    return int(reply.tree.revision)


async def tree_events(stack: Stack, integration_id: str, after: int) -> list[tuple[str, str]]:
    """The integration's tree events after `after`, as (kind, OU title or account id, or "" for
    the integration's own events)."""
    stream = stack.tree.WatchTreeEvents(
        tree_rpc.WatchTreeEventsRequest(after_revision=after, integration_id=integration_id),
        metadata=SYSTEM,
    )
    found: list[tuple[str, str]] = []
    async for reply in stream:
        if not reply.events:
            break  # the first progress message: caught up
        for event in reply.events:
            kind = str(event.WhichOneof("event"))
            changed = getattr(event, kind)
            if kind.startswith("folder"):
                found.append((kind, changed.folder.title))
            elif kind.startswith("connection"):
                found.append((kind, changed.connection.account_id))
            else:
                found.append((kind, ""))
    stream.cancel()
    return found


async def test_a_role_refused_on_an_ou_deletes_its_folders_and_connections_everywhere(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    prod = org.ou("Production")
    org.account("Web", prod)
    org.account("Payments", org.ou("Payments", prod))
    org.account("Billing")
    secret = org.ou("Secret")
    spy = org.account("Spy", secret)
    vault = org.account("Vault", org.ou("Vault", secret))
    integration = await create_followed(stack, "", "aws-prod")
    await attach_root(stack, "w_ops1", integration.root_folder_id)
    await asyncio.sleep(0.5)  # the attachment's schema events
    schemas_after = await schema_revision(stack, "w_ops1")
    tree_after = await tree_revision(stack, integration.id)
    before = await handles(stack, integration.id)
    refuse_for_narrow_role(proxy, secret)

    run = await change_role(stack, integration.id, NARROW_ROLE)
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert run.progress.organizational_units_refused == 1
    assert list(run.progress.refused_organizational_unit_ids) == [secret]
    assert (run.summary.folders_deleted, run.summary.connections_deleted) == (2, 2)
    assert run.progress.accounts_found == 4  # what the narrow role sees
    assert sorted(await tree_events(stack, integration.id, tree_after)) == sorted(
        [
            ("integration_updated", ""),  # the role change
            ("connection_deleted", spy),
            ("connection_deleted", vault),
            ("folder_deleted", "Secret"),
            ("folder_deleted", "Vault"),
        ]
    )
    removed = await schema_events(stack, "w_ops1", schemas_after, 2)
    assert sorted(removed) == [
        ("schema_removed", "spy", str(3)),  # SCHEMA_REMOVED_REASON_CONNECTION_DELETED
        ("schema_removed", "vault", str(3)),
    ]
    assert await handles(stack, integration.id) == {
        account: handle for account, handle in before.items() if account not in {spy, vault}
    }
    # The run is kept: ListSyncRuns tells the operator why they went.
    (listed,) = [r for r in await runs_of(stack, integration.id) if r.id == run.id]
    assert list(listed.progress.refused_organizational_unit_ids) == [secret]

    # The broad role again: the OU is visible, and its folders and connections come back.
    again = await change_role(stack, integration.id, integration.discovery_access.role_arn)
    assert again.progress.organizational_units_refused == 0
    assert (again.summary.folders_created, again.summary.connections_created) == (2, 2)


async def test_previewing_a_role_refused_on_an_ou_shows_what_changing_it_then_deletes(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    org.account("Web")
    secret = org.ou("Secret")
    vault_ou = org.ou("Vault", secret)
    spy = org.account("Spy", secret)
    vault = org.account("Vault", vault_ou)
    integration = await create_followed(stack, "", "aws-prod")
    await attach_root(stack, "w_ops1", integration.root_folder_id)
    await asyncio.sleep(0.5)  # the attachment's schema events
    before = await handles(stack, integration.id)
    refuse_for_narrow_role(proxy, secret)

    preview = await stack.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(
                id=integration.id, discovery_access=pb.AwsDiscoveryAccess(role_arn=NARROW_ROLE)
            ),
            update_mask=FieldMask(paths=["discovery_access.role_arn"]),
            validate_only=True,
        ),
        metadata=ORG_OWNER,
    )
    impact = preview.impact
    assert impact.crawl_failure_reason == ""
    assert (impact.totals.folders_deleted, impact.totals.connections_deleted) == (2, 2)
    deleted = {
        item.external_id
        for item in impact.tree_items
        if item.change == impact_pb2.TREE_CHANGE_KIND_DELETED
    }
    assert deleted == {secret, vault_ou, spy, vault}
    (workspace,) = impact.workspaces
    assert workspace.workspace_id == "w_ops1"
    assert sorted(schema.name for schema in workspace.schemas) == ["spy", "vault"]
    assert await handles(stack, integration.id) == before  # a preview changes nothing

    run = await change_role(stack, integration.id, NARROW_ROLE)
    assert (run.summary.folders_deleted, run.summary.connections_deleted) == (2, 2)
    assert set(before) - set(await handles(stack, integration.id)) == {spy, vault}


@pytest.mark.parametrize(
    "fault",
    [
        {"error": THROTTLED_CODE, "status": 400, "message": THROTTLED_MESSAGE},
        {"error": "ServiceUnavailableException", "status": 503, "message": "Unavailable."},
    ],
    ids=["throttled", "unavailable"],
)
async def test_a_role_failing_transiently_on_an_ou_fails_the_sync_and_deletes_nothing(
    stack: Stack, org: Org, proxy: FaultProxy, fault: dict[str, Any]
) -> None:
    secret = org.ou("Secret")
    org.account("Spy", secret)
    hidden = org.ou("Hidden")
    org.account("Hider", hidden)
    integration = await create_followed(stack, "", "aws-prod")
    before = await handles(stack, integration.id)
    tree_after = await tree_revision(stack, integration.id)
    refuse_for_narrow_role(proxy, hidden)  # a refusal elsewhere does not make it partial
    refuse_for_narrow_role(proxy, secret, **fault)

    run = await change_role(stack, integration.id, NARROW_ROLE)
    assert run.state == dpb.SYNC_RUN_STATE_FAILED
    assert run.failure_reason in {"THROTTLED", "UNREACHABLE"}
    assert run.apply_outcome == tree_pb.APPLY_OUTCOME_FAILURE_RECORDED
    assert await handles(stack, integration.id) == before
    # The role change, and the integration's ERROR state: nothing deleted, nothing else.
    assert await tree_events(stack, integration.id, tree_after) == [("integration_updated", "")] * 2
    state = await stack.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=integration.id), metadata=SYSTEM
    )
    assert state.integration.state == pb.INTEGRATION_STATE_ERROR


async def test_a_role_that_hides_most_of_the_tree_stops_for_confirmation(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    org.account("Billing")
    secret = org.ou("Secret")
    hidden = [org.account(f"Secret {i}", secret) for i in range(4)]
    integration = await create_followed(stack, "", "aws-prod")
    before = await handles(stack, integration.id)
    refuse_for_narrow_role(proxy, secret)

    guarded = await change_role(stack, integration.id, NARROW_ROLE)
    assert guarded.state == dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION
    assert guarded.summary.connections_to_delete == 4
    assert list(guarded.progress.refused_organizational_unit_ids) == [secret]
    assert await handles(stack, integration.id) == before

    confirmed = await sync(stack, integration.id, confirm_deletions=True)
    assert confirmed.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert confirmed.summary.connections_deleted == 4
    assert list(confirmed.progress.refused_organizational_unit_ids) == [secret]
    assert set(await handles(stack, integration.id)) == set(before) - set(hidden)
