"""Dry runs (SyncIntegration `validate_only`) and previews of new discovery settings, over real
gRPC, PostgreSQL and a moto server behind the fault proxy: the organization is crawled, what
applying would do is reported, and nothing is applied or stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.type.v1 import impact_pb2
from canopy_core.errors import Aborted
from canopy_discovery.integration_client import IntegrationClient
from tests.awsfaults import FaultProxy, Rule
from tests.discovery.conftest import Org
from tests.discovery.stack import (
    EXTERNAL_ID,
    Stack,
    create,
    first_run,
    handles,
    runs_of,
    start_stack,
    sync,
)
from tests.helpers import error_details
from tests.integration.conftest import OWNER, SYSTEM

OTHER_ROLE = "arn:aws:iam::123456789012:role/canopy-discovery-narrow"


@pytest.fixture
async def stack(service_env: dict[str, Any], proxy: FaultProxy) -> AsyncIterator[Stack]:
    built = await start_stack(service_env, proxy)
    yield built
    await built.close()


async def dry_run(stack: Stack, integration_id: str, **kw: Any) -> dpb.SyncRun:
    reply = await stack.discovery.SyncIntegration(
        drpc.SyncIntegrationRequest(integration_id=integration_id, validate_only=True, **kw),
        metadata=OWNER,
    )
    run: dpb.SyncRun = reply.run
    return run


def changes(impact: impact_pb2.ChangeImpact) -> list[tuple[str, str, str]]:
    """(change, old handle, handle) of each connection in the impact."""
    return sorted(
        (
            impact_pb2.TreeChangeKind.Name(i.change).removeprefix("TREE_CHANGE_KIND_"),
            i.old_handle,
            i.handle,
        )
        for i in impact.tree_items
        if i.item_type == impact_pb2.TREE_ITEM_TYPE_CONNECTION
    )


async def test_a_dry_run_reports_what_a_sync_would_do_and_applies_nothing(
    stack: Stack, org: Org
) -> None:
    web = org.account("Web Prod", org.ou("Production"))
    old = org.account("Old")
    created = await create(stack)
    await first_run(stack, created.id)
    before = await handles(stack, created.id)
    runs_before = await runs_of(stack, created.id)
    org.rename_account(web, "Website")
    org.remove(old)
    audit = org.account("Audit")

    run = await dry_run(stack, created.id)
    assert run.dry_run
    assert run.id == ""
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert run.progress.accounts_found == 3  # management, Website, Audit
    assert changes(run.impact) == [
        ("CREATED", "", "audit"),
        ("DELETED", "", "old"),
        ("UPDATED", "web_prod", "website"),
    ]
    assert run.impact.totals.connections_renamed == 1
    assert await handles(stack, created.id) == before
    assert len(await runs_of(stack, created.id)) == len(runs_before)

    real = await sync(stack, created.id)
    assert real.summary.connections_created == run.summary.connections_created == 1
    assert real.summary.connections_deleted == run.summary.connections_deleted == 1
    assert real.summary.connections_renamed == run.summary.connections_renamed == 1
    assert (await handles(stack, created.id))[audit] == "audit"


async def test_a_dry_run_that_cannot_crawl_reports_the_failure_and_leaves_the_state(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    created = await create(stack)
    await first_run(stack, created.id)
    proxy.add(Rule(service="sts", operation="AssumeRole", error="AccessDenied", status=403))
    run = await dry_run(stack, created.id)
    assert run.dry_run
    assert run.state == dpb.SYNC_RUN_STATE_FAILED
    assert run.failure_reason == "ASSUME_ROLE_DENIED"
    integration = await stack.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=created.id), metadata=OWNER
    )
    assert integration.integration.state == pb.INTEGRATION_STATE_ENABLED


async def test_a_dry_run_shows_the_guards_verdict(stack: Stack, org: Org) -> None:
    doomed = [org.account(f"gone {i}") for i in range(4)]
    created = await create(stack)
    await first_run(stack, created.id)
    for account_id in doomed:
        org.remove(account_id)
    run = await dry_run(stack, created.id)
    assert run.state == dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION
    assert run.impact.deletion_guard.would_stop
    assert run.impact.deletion_guard.connections_to_delete == 4
    assert run.impact.totals.connections_deleted == 4  # what confirming would do
    assert len(await handles(stack, created.id)) == 5


def role_update(integration_id: str, role_arn: str) -> rpc.UpdateIntegrationRequest:
    return rpc.UpdateIntegrationRequest(
        integration=pb.Integration(
            id=integration_id,
            discovery_access=pb.AwsDiscoveryAccess(role_arn=role_arn, external_id=EXTERNAL_ID),
        ),
        update_mask=FieldMask(paths=["discovery_access"]),
        validate_only=True,
    )


async def test_new_discovery_credentials_are_previewed_with_a_crawl_and_not_saved(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    org.account("Web Prod")
    created = await create(stack)
    await first_run(stack, created.id)
    assumed = Rule(service="sts", operation="AssumeRole", role_arn=OTHER_ROLE)
    proxy.add(assumed)
    reply = await stack.integrations.UpdateIntegration(
        role_update(created.id, OTHER_ROLE), metadata=OWNER
    )
    assert assumed.matched == 1, "the preview did not crawl with the new role"
    assert reply.integration.discovery_access.role_arn == OTHER_ROLE
    assert not reply.impact.crawl_failure_reason
    assert reply.impact.totals.connections_deleted == 0  # the new role sees the same
    stored = await stack.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=created.id), metadata=OWNER
    )
    assert stored.integration.discovery_access.role_arn != OTHER_ROLE


async def test_new_credentials_that_cannot_be_assumed_are_previewed_as_a_crawl_failure(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    created = await create(stack)
    await first_run(stack, created.id)
    proxy.add(
        Rule(
            service="sts",
            operation="AssumeRole",
            role_arn=OTHER_ROLE,
            error="AccessDenied",
            status=403,
        )
    )
    reply = await stack.integrations.UpdateIntegration(
        role_update(created.id, OTHER_ROLE), metadata=OWNER
    )
    assert reply.impact.crawl_failure_reason == "ASSUME_ROLE_DENIED"
    assert reply.impact.totals.connections_deleted == 0


async def test_preview_update_is_for_the_integration_service_and_only_a_preview(
    stack: Stack, org: Org
) -> None:
    created = await create(stack)
    await first_run(stack, created.id)
    update = role_update(created.id, OTHER_ROLE)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await dry_run(stack, created.id, preview_update=update)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stack.discovery.SyncIntegration(
            drpc.SyncIntegrationRequest(integration_id=created.id, preview_update=update),
            metadata=SYSTEM,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(bad.value).fields == ["preview_update"]


async def test_a_filter_change_is_previewed_with_a_crawl_under_the_new_filters(
    stack: Stack, org: Org
) -> None:
    sandbox = org.ou("Sandbox")
    org.account("Toy", sandbox)
    org.account("Web Prod")
    created = await create(stack)
    await first_run(stack, created.id)
    before = await handles(stack, created.id)
    reply = await stack.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(
                id=created.id,
                filters=pb.AwsDiscoveryFilters(exclude_organizational_unit_ids=[sandbox]),
                exclude_management_account=True,
            ),
            update_mask=FieldMask(paths=["filters", "exclude_management_account"]),
            validate_only=True,
        ),
        metadata=OWNER,
    )
    deleted = {
        (i.item_type, i.handle)
        for i in reply.impact.tree_items
        if i.change == impact_pb2.TREE_CHANGE_KIND_DELETED
    }
    assert (impact_pb2.TREE_ITEM_TYPE_CONNECTION, "toy") in deleted
    assert (impact_pb2.TREE_ITEM_TYPE_FOLDER, "sandbox") in deleted
    assert reply.impact.totals.connections_deleted == 2  # Toy and the management account
    assert await handles(stack, created.id) == before
    stored = await stack.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=created.id), metadata=OWNER
    )
    assert not stored.integration.filters.exclude_organizational_unit_ids


async def test_an_apply_another_came_before_goes_on_top_of_the_tree_as_it_is_now(
    stack: Stack, org: Org
) -> None:
    created = await create(stack)
    run = await first_run(stack, created.id)
    runtime = stack.services["discovery"].runtime  # its channels present the system token
    channel = runtime.channel(f"127.0.0.1:{stack.services['integration'].port}")
    client = IntegrationClient(channel)
    current = await client.get_integration(created.id)
    assert current.tree_generation >= 1
    tree = await stack.tree.GetConnectionTree(
        tree_rpc.GetConnectionTreeRequest(integration_id=created.id), metadata=SYSTEM
    )

    def stale() -> tree_rpc.ApplyDiscoverySnapshotRequest:
        return tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=created.id,
            expected_generation=current.tree_generation - 1,
            snapshot=tree_pb.OrganizationSnapshot(
                organization_id=run.organization_id,
                management_account_id=current.management_account_id,
                root_id=tree.tree.root.folder.aws_id,
            ),
            validate_only=True,
        )

    with pytest.raises(Aborted):
        await client.apply_to_latest(stale(), attempts=1)
    request = stale()
    reply = await client.apply_to_latest(request)
    assert request.expected_generation == current.tree_generation
    assert reply.outcome == tree_pb.APPLY_OUTCOME_NEEDS_CONFIRMATION  # it would delete all
    await channel.close()
