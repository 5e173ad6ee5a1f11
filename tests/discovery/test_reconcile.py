"""The schedule reconciled with the integration service's list of integrations, over real gRPC,
PostgreSQL and moto: integrations created or deleted while discovery was away longer than the
tree log keeps events (and event queues set meanwhile), and entries lost while it ran."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy_discovery import store as discovery_store
from tests.awsfaults import FaultProxy
from tests.discovery.conftest import Org
from tests.discovery.stack import Stack, create, finished, first_run, runs_of, start_stack
from tests.integration.conftest import OWNER


@pytest.fixture
async def stack(service_env: dict[str, Any], proxy: FaultProxy) -> AsyncIterator[Stack]:
    # Passes only at start and after a gap (an hour apart otherwise).
    built = await start_stack(service_env, proxy, discovery={"schedule_reconcile_interval": 3600})
    yield built
    await built.close()


async def away_past_the_retention(stack: Stack, meanwhile: Any) -> None:
    """Stop discovery, do `meanwhile()`, compact the whole tree log, start discovery again."""
    await stack.stop_discovery()
    await meanwhile()
    await stack.services["integration"].runtime.event_log.compact(timedelta(0))
    await stack.start_discovery()


async def schedule_of(stack: Stack, integration_id: str) -> datetime | None:
    """When the integration is next due, or None if it is not on the schedule."""
    async with stack.services["discovery"].runtime.db.connection() as conn:
        due: datetime | None = await conn.fetchval(
            "SELECT next_run_at FROM schedules WHERE integration_id = $1", integration_id
        )
        return due


async def test_an_integration_created_while_discovery_was_away_past_the_retention_is_synced(
    stack: Stack, org: Org
) -> None:
    org.account("Web Prod")
    earlier = await create(stack, "aws-earlier")
    await first_run(stack, earlier.id)  # discovery's cursor is past its creation
    created: list[pb.Integration] = []

    async def create_one() -> None:
        created.append(await create(stack, "aws-unseen"))

    await away_past_the_retention(stack, create_one)
    run = await first_run(stack, created[0].id)
    assert run.trigger == dpb.SYNC_TRIGGER_RECONCILED
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    integration = await stack.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=created[0].id), metadata=OWNER
    )
    assert integration.integration.state == pb.INTEGRATION_STATE_ENABLED
    assert await schedule_of(stack, created[0].id) is not None
    # The integration discovery already knew keeps its place: no extra sync of it.
    assert len(await runs_of(stack, earlier.id)) == 1


async def test_an_integration_deleted_while_discovery_was_away_past_the_retention_is_unscheduled(
    stack: Stack, org: Org
) -> None:
    doomed = await create(stack, "aws-doomed")
    kept = await create(stack, "aws-kept")
    for integration in (doomed, kept):
        await first_run(stack, integration.id)
    kept_due = await schedule_of(stack, kept.id)
    assert await schedule_of(stack, doomed.id) is not None

    async def delete() -> None:
        await stack.integrations.DeleteIntegration(
            rpc.DeleteIntegrationRequest(id=doomed.id, confirm_handle="aws-doomed"), metadata=OWNER
        )

    await away_past_the_retention(stack, delete)
    for _ in range(100):
        if await schedule_of(stack, doomed.id) is None:
            break
        await asyncio.sleep(0.1)
    assert await schedule_of(stack, doomed.id) is None
    # Taken off, not synced (its runs are read from the store: ListSyncRuns answers NOT_FOUND
    # for a deleted integration).
    async with stack.services["discovery"].runtime.db.connection() as conn:
        assert len(await discovery_store.list_runs(conn, doomed.id, None, 100)) == 1
    assert await schedule_of(stack, kept.id) == kept_due


async def test_periodic_passes_restore_a_lost_entry_and_leave_the_others_timing_alone(
    service_env: dict[str, Any], proxy: FaultProxy, org: Org
) -> None:
    stack = await start_stack(service_env, proxy, discovery={"schedule_reconcile_interval": 0.5})
    try:
        lost = await create(stack, "aws-lost")
        kept = await create(stack, "aws-kept")
        for integration in (lost, kept):
            await first_run(stack, integration.id)
        kept_due = await schedule_of(stack, kept.id)
        async with stack.services["discovery"].runtime.db.connection() as conn:
            await conn.execute("DELETE FROM schedules WHERE integration_id = $1", lost.id)
        for _ in range(100):
            runs = await runs_of(stack, lost.id)
            if len(runs) == 2:
                break
            await asyncio.sleep(0.1)
        assert runs[0].trigger == dpb.SYNC_TRIGGER_RECONCILED
        assert (await finished(stack, runs[0].id)).state == dpb.SYNC_RUN_STATE_SUCCEEDED
        assert await schedule_of(stack, lost.id) is not None
        await asyncio.sleep(1.5)  # three more passes
        assert await schedule_of(stack, kept.id) == kept_due
        assert len(await runs_of(stack, kept.id)) == 1
        assert len(await runs_of(stack, lost.id)) == 2
    finally:
        await stack.close()


async def test_a_queue_set_while_discovery_was_away_past_the_retention_is_followed(
    stack: Stack, org: Org
) -> None:
    integration = await create(stack, "aws-queued")
    await first_run(stack, integration.id)
    queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/canopy-events"

    async def set_queue() -> None:
        await stack.integrations.UpdateIntegration(
            rpc.UpdateIntegrationRequest(
                integration=pb.Integration(
                    id=integration.id,
                    discovery_access=pb.AwsDiscoveryAccess(event_queue=queue_url),
                ),
                update_mask=FieldMask(paths=["discovery_access.event_queue"]),
            ),
            metadata=OWNER,
        )

    await away_past_the_retention(stack, set_queue)
    followed: dict[str, Any] = {}
    for _ in range(100):
        async with stack.services["discovery"].runtime.db.connection() as conn:
            followed = await discovery_store.event_queues(conn)
        if followed:
            break
        await asyncio.sleep(0.1)
    assert followed[integration.id].queue_url == queue_url
    assert followed[integration.id].role_arn == integration.discovery_access.role_arn
