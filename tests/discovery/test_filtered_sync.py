"""Discovery filters end to end over real gRPC, PostgreSQL and moto (through the fault proxy):
a filter change is a settings change that syncs at once, prunes what the filters now leave out
under the deletion guard, fewer calls for an excluded subtree, the management account left out
on request, and filter ids that name nothing shown on the integration, which stays ENABLED."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from tests.awsfaults import FaultProxy
from tests.discovery.conftest import DISCOVERY_ROLE, Org
from tests.discovery.stack import (
    EXTERNAL_ID,
    Stack,
    create,
    finished,
    first_run,
    handles,
    runs_of,
    start_stack,
    sync,
)
from tests.helpers import error_details
from tests.integration.conftest import OWNER


@pytest.fixture
async def stack(service_env: dict[str, Any], proxy: FaultProxy) -> AsyncIterator[Stack]:
    built = await start_stack(service_env, proxy)
    yield built
    await built.close()


async def update(stack: Stack, given: pb.Integration, *paths: str) -> None:
    await stack.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(integration=given, update_mask=FieldMask(paths=list(paths))),
        metadata=OWNER,
    )


async def settings_run(stack: Stack, integration_id: str, before: int) -> dpb.SyncRun:
    """The run the settings change started (after `before` runs), once it has ended."""
    for _ in range(100):
        found = [
            r
            for r in await runs_of(stack, integration_id)
            if r.trigger == dpb.SYNC_TRIGGER_SETTINGS_CHANGED
        ]
        if len(found) > before:
            return await finished(stack, found[0].id)
        await asyncio.sleep(0.1)
    raise AssertionError("the settings change started no run")


async def get(stack: Stack, integration_id: str) -> pb.Integration:
    reply = await stack.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=integration_id), metadata=OWNER
    )
    return reply.integration


async def test_excluding_an_ou_syncs_at_once_and_prunes_it_under_the_guard(
    stack: Stack, org: Org
) -> None:
    sandbox = org.ou("Sandbox")
    inner = org.ou("Inner", sandbox)
    doomed = [org.account(f"sandbox {n}", sandbox if n % 2 else inner) for n in range(3)]
    prod = org.account("prod", org.ou("Production"))
    created = await create(stack)
    first = await first_run(stack, created.id)
    assert set(doomed) <= set(await handles(stack, created.id))

    await update(
        stack,
        pb.Integration(
            id=created.id,
            filters=pb.AwsDiscoveryFilters(exclude_organizational_unit_ids=[sandbox]),
        ),
        "filters.exclude_organizational_unit_ids",
    )
    guarded = await settings_run(stack, created.id, 0)
    # 3 of the 5 connections would go: more than the default guard of half.
    assert guarded.state == dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION
    assert guarded.summary.connections_to_delete == 3
    # The two OUs below the excluded one were not listed: four calls fewer.
    assert first.progress.api_calls - guarded.progress.api_calls == 4
    assert set(doomed) <= set(await handles(stack, created.id))

    confirmed = await sync(stack, created.id, confirm_deletions=True)
    assert confirmed.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert set(await handles(stack, created.id)) == {org.management_account_id, prod}
    integration = await get(stack, created.id)
    assert integration.state == pb.INTEGRATION_STATE_ENABLED
    assert integration.unmatched_filters == pb.AwsDiscoveryFilters()

    # Clearing the filter brings the subtree back.
    await update(stack, pb.Integration(id=created.id), "filters")
    back = await settings_run(stack, created.id, 1)
    assert back.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert set(doomed) <= set(await handles(stack, created.id))


async def test_the_management_account_is_left_out_on_request(stack: Stack, org: Org) -> None:
    member = org.account("member")
    created = await create(stack, exclude_management_account=True)
    assert (await first_run(stack, created.id)).state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert set(await handles(stack, created.id)) == {member}
    await update(
        stack,
        pb.Integration(id=created.id, exclude_management_account=False),
        "exclude_management_account",
    )
    assert (await settings_run(stack, created.id, 0)).state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert set(await handles(stack, created.id)) == {member, org.management_account_id}


async def test_filter_ids_naming_nothing_show_on_the_integration_which_stays_enabled(
    stack: Stack, org: Org
) -> None:
    prod = org.ou("Production")
    web = org.account("web", prod)
    org.account("elsewhere")
    filters = pb.AwsDiscoveryFilters(
        include_organizational_unit_ids=[prod, "ou-nope-nonexist"],
        exclude_account_ids=["999999999999"],
    )
    created = await create(stack, filters=filters)
    run = await first_run(stack, created.id)
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert set(await handles(stack, created.id)) == {web}
    integration = await get(stack, created.id)
    assert integration.state == pb.INTEGRATION_STATE_ENABLED
    assert integration.unmatched_filters == pb.AwsDiscoveryFilters(
        include_organizational_unit_ids=["ou-nope-nonexist"],
        exclude_account_ids=["999999999999"],
    )


async def test_test_discovery_access_names_filter_ids_that_match_nothing(
    stack: Stack, org: Org
) -> None:
    prod = org.ou("Production")
    inner = org.ou("Inner", prod)
    web = org.account("web", inner)
    access = pb.AwsDiscoveryAccess(role_arn=DISCOVERY_ROLE, external_id=EXTERNAL_ID)
    found = pb.AwsDiscoveryFilters(
        include_organizational_unit_ids=[org.root_id, inner],
        exclude_organizational_unit_ids=[prod],
        exclude_account_ids=[web],
    )
    good = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(access=access, filters=found), metadata=OWNER
    )
    assert good.ok
    assert good.filters.ok
    assert good.filters.unmatched == pb.AwsDiscoveryFilters()

    missing = pb.AwsDiscoveryFilters(
        include_organizational_unit_ids=[inner, "ou-nope-nonexist", "r-zzzz"],
        exclude_account_ids=[web, "999999999999"],
    )
    bad = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(access=access, filters=missing), metadata=OWNER
    )
    assert not bad.ok
    assert bad.reason == dpb.ACCESS_FAILURE_REASON_FILTERS_UNMATCHED
    assert bad.filters.unmatched == pb.AwsDiscoveryFilters(
        include_organizational_unit_ids=["ou-nope-nonexist", "r-zzzz"],
        exclude_account_ids=["999999999999"],
    )
    assert "ou-nope-nonexist" in bad.message
    assert "999999999999" in bad.message

    # An integration's own filters are checked.
    created = await create(stack, filters=missing)
    await first_run(stack, created.id)
    saved = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(integration_id=created.id), metadata=OWNER
    )
    assert saved.reason == dpb.ACCESS_FAILURE_REASON_FILTERS_UNMATCHED
    assert saved.filters.unmatched == bad.filters.unmatched


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            drpc.TestDiscoveryAccessRequest(
                access=pb.AwsDiscoveryAccess(role_arn=DISCOVERY_ROLE, external_id=EXTERNAL_ID),
                filters=pb.AwsDiscoveryFilters(exclude_account_ids=["1", "2"]),
            ),
            "filters.exclude_account_ids[0]",
        ),
        (
            drpc.TestDiscoveryAccessRequest(
                integration_id="i_abc", filters=pb.AwsDiscoveryFilters()
            ),
            "filters",
        ),
    ],
)
async def test_test_discovery_access_refuses_bad_filters_naming_the_field(
    stack: Stack, request_: drpc.TestDiscoveryAccessRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.discovery.TestDiscoveryAccess(request_, metadata=OWNER)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields[0] == field
