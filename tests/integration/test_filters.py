"""Discovery filters and `exclude_management_account` on the integration resource, over real gRPC
and PostgreSQL: set on create, changed through update masks (an IntegrationUpdated naming them,
which discovery takes as a settings change), validated with the field named, and the filter ids
the last crawl did not find shown on the integration without leaving ENABLED."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy_core.discovery_filters import MAX_FILTER_IDS
from tests.helpers import error_details
from tests.integration.conftest import (
    OWNER,
    ROOT,
    SYSTEM,
    Suite,
    account,
    create,
    new_integration,
    ou,
    snapshot,
)
from tests.integration.test_apply import events_after, head

FILTERS = pb.AwsDiscoveryFilters(
    include_organizational_unit_ids=[ou(1), ROOT],
    exclude_organizational_unit_ids=[ou(2)],
    exclude_account_ids=[account(7)],
)


def with_filters(
    filters: pb.AwsDiscoveryFilters, exclude_management: bool = False
) -> pb.Integration:
    message = new_integration()
    message.filters.CopyFrom(filters)
    message.exclude_management_account = exclude_management
    return message


async def get(suite: Suite, integration_id: str) -> pb.Integration:
    reply = await suite.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=integration_id), metadata=OWNER
    )
    return reply.integration


async def update(suite: Suite, given: pb.Integration, *paths: str) -> pb.Integration:
    reply = await suite.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(integration=given, update_mask=FieldMask(paths=list(paths))),
        metadata=OWNER,
    )
    return reply.integration


async def test_filters_and_exclude_management_account_are_kept_from_create(suite: Suite) -> None:
    created = await create(suite, with_filters(FILTERS, exclude_management=True))
    stored = await get(suite, created.id)
    assert stored.filters == FILTERS
    assert stored.exclude_management_account is True
    assert stored.unmatched_filters == pb.AwsDiscoveryFilters()


async def test_a_masked_filter_list_changes_alone_and_is_announced_as_a_filters_change(
    suite: Suite,
) -> None:
    created = await create(suite, with_filters(FILTERS))
    start = await head(suite, created.id)
    updated = await update(
        suite,
        pb.Integration(
            id=created.id, filters=pb.AwsDiscoveryFilters(exclude_account_ids=[account(8)])
        ),
        "filters.exclude_account_ids",
    )
    assert list(updated.filters.exclude_account_ids) == [account(8)]
    assert list(updated.filters.include_organizational_unit_ids) == [ou(1), ROOT]
    assert list(updated.filters.exclude_organizational_unit_ids) == [ou(2)]
    (event,) = await events_after(suite, start, created.id)
    assert list(event.integration_updated.changed_fields) == ["filters"]
    assert event.integration_updated.after.filters == updated.filters


async def test_the_whole_filters_path_replaces_every_list(suite: Suite) -> None:
    created = await create(suite, with_filters(FILTERS))
    updated = await update(suite, pb.Integration(id=created.id), "filters")
    assert updated.filters == pb.AwsDiscoveryFilters()


async def test_exclude_management_account_change_is_announced(suite: Suite) -> None:
    created = await create(suite)
    start = await head(suite, created.id)
    updated = await update(
        suite,
        pb.Integration(id=created.id, exclude_management_account=True),
        "exclude_management_account",
    )
    assert updated.exclude_management_account is True
    (event,) = await events_after(suite, start, created.id)
    assert list(event.integration_updated.changed_fields) == ["exclude_management_account"]


async def test_the_same_filters_again_change_nothing(suite: Suite) -> None:
    created = await create(suite, with_filters(FILTERS))
    start = await head(suite, created.id)
    again = await update(suite, pb.Integration(id=created.id, filters=FILTERS), "filters")
    assert again.etag == created.etag
    assert await events_after(suite, start, created.id) == []


def _ids(count: int) -> list[str]:
    return [f"{n:012d}" for n in range(1, count + 1)]


@pytest.mark.parametrize(
    ("filters", "field", "says"),
    [
        (
            pb.AwsDiscoveryFilters(
                include_organizational_unit_ids=[ou(1), ou(2), ROOT, "ou-nope", ou(3)]
            ),
            "integration.filters.include_organizational_unit_ids[3]",
            "must be an OU id",
        ),
        (
            pb.AwsDiscoveryFilters(exclude_organizational_unit_ids=[ROOT]),
            "integration.filters.exclude_organizational_unit_ids[0]",
            "the root cannot be excluded",
        ),
        (
            pb.AwsDiscoveryFilters(exclude_account_ids=[account(1), "12345678901"]),
            "integration.filters.exclude_account_ids[1]",
            "12 digits",
        ),
        (
            pb.AwsDiscoveryFilters(exclude_account_ids=[account(1), account(1)]),
            "integration.filters.exclude_account_ids[1]",
            "duplicates integration.filters.exclude_account_ids[0]",
        ),
        (
            pb.AwsDiscoveryFilters(
                include_organizational_unit_ids=[ou(1)], exclude_organizational_unit_ids=[ou(1)]
            ),
            "integration.filters.exclude_organizational_unit_ids[0]",
            "is also in integration.filters.include_organizational_unit_ids",
        ),
        (
            pb.AwsDiscoveryFilters(exclude_account_ids=_ids(MAX_FILTER_IDS + 1)),
            "integration.filters.exclude_account_ids",
            f"must have at most {MAX_FILTER_IDS} ids, has {MAX_FILTER_IDS + 1}",
        ),
    ],
)
async def test_bad_filters_are_refused_on_create_and_update_naming_the_field(
    suite: Suite, filters: pb.AwsDiscoveryFilters, field: str, says: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(suite, with_filters(filters))
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == [field]
    assert says in (caught.value.details() or "")

    created = await create(suite)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await update(suite, pb.Integration(id=created.id, filters=filters), "filters")
    assert error_details(caught.value).fields == [field]


async def test_a_thousand_ids_are_allowed(suite: Suite) -> None:
    created = await create(
        suite, with_filters(pb.AwsDiscoveryFilters(exclude_account_ids=_ids(MAX_FILTER_IDS)))
    )
    assert len((await get(suite, created.id)).filters.exclude_account_ids) == MAX_FILTER_IDS


async def test_an_include_list_set_alone_is_checked_against_the_stored_exclusions(
    suite: Suite,
) -> None:
    created = await create(
        suite, with_filters(pb.AwsDiscoveryFilters(exclude_organizational_unit_ids=[ou(4)]))
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await update(
            suite,
            pb.Integration(
                id=created.id,
                filters=pb.AwsDiscoveryFilters(include_organizational_unit_ids=[ou(4)]),
            ),
            "filters.include_organizational_unit_ids",
        )
    assert error_details(caught.value).fields == [
        "integration.filters.exclude_organizational_unit_ids[0]"
    ]


async def test_unmatched_filter_ids_from_a_crawl_show_on_the_integration_which_stays_enabled(
    suite: Suite,
) -> None:
    created = await create(suite, with_filters(FILTERS))
    missing = pb.AwsDiscoveryFilters(exclude_account_ids=[account(7)])
    snap = snapshot([(ou(1), ROOT, "Production")], [(account(2), ou(1), "Web")])
    start = await head(suite, created.id)
    reply = await suite.tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=created.id, snapshot=snap, unmatched_filters=missing
        ),
        metadata=SYSTEM,
    )
    assert reply.outcome == tree_pb.APPLY_OUTCOME_APPLIED
    stored = await get(suite, created.id)
    assert stored.state == pb.INTEGRATION_STATE_ENABLED
    assert stored.unmatched_filters == missing
    updates = [
        e.integration_updated
        for e in await events_after(suite, start, created.id)
        if e.WhichOneof("event") == "integration_updated"
    ]
    assert "unmatched_filters" in updates[0].changed_fields

    # A targeted refresh (no unmatched_filters) leaves them; the next full crawl's report
    # replaces them.
    await suite.tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=created.id, snapshot=snap, expected_generation=stored.tree_generation
        ),
        metadata=SYSTEM,
    )
    assert (await get(suite, created.id)).unmatched_filters == missing
    await suite.tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=created.id,
            snapshot=snap,
            expected_generation=stored.tree_generation,
            unmatched_filters=pb.AwsDiscoveryFilters(),
        ),
        metadata=SYSTEM,
    )
    assert (await get(suite, created.id)).unmatched_filters == pb.AwsDiscoveryFilters()


async def test_unmatched_filters_that_are_not_ids_are_refused(suite: Suite) -> None:
    created = await create(suite)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.tree.ApplyDiscoverySnapshot(
            tree_rpc.ApplyDiscoverySnapshotRequest(
                integration_id=created.id,
                snapshot=snapshot([], []),
                unmatched_filters=pb.AwsDiscoveryFilters(exclude_account_ids=["x"]),
            ),
            metadata=SYSTEM,
        )
    assert error_details(caught.value).fields == ["unmatched_filters.exclude_account_ids[0]"]


async def test_unmatched_filters_are_output_only(suite: Suite) -> None:
    created = await create(suite)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await update(suite, pb.Integration(id=created.id), "unmatched_filters")
    assert error_details(caught.value).code == grpc.StatusCode.INVALID_ARGUMENT
