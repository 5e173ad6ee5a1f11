"""The discovery service over real gRPC, PostgreSQL and a moto server (through the fault
proxy): syncs triggered by creation, settings and SyncIntegration; progress streamed by
WatchSyncRun; organizations that change between syncs; failures that apply nothing; the
deletion guard; replicas sharing the work; a dead worker's lease taken over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.discovery.v1 import discovery_service_pb2_grpc as dgrpc
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.type.v1 import types_pb2
from tests.awsfaults import FaultProxy, Rule
from tests.discovery.conftest import DISCOVERY_ROLE, Org
from tests.discovery.stack import (
    EXTERNAL_ID,
    TERMINAL,
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
from tests.integration.conftest import MEMBER, OUTSIDER, OWNER, SYSTEM


@pytest.fixture
async def stack(service_env: dict[str, Any], proxy: FaultProxy) -> AsyncIterator[Stack]:
    built = await start_stack(service_env, proxy)
    yield built
    await built.close()


async def test_creating_an_integration_syncs_it_at_once(stack: Stack, org: Org) -> None:
    prod = org.ou("Production")
    web = org.account("Web Prod", prod)
    created = await create(stack)
    run = await first_run(stack, created.id)
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert run.trigger == dpb.SYNC_TRIGGER_CREATED
    assert run.apply_outcome == tree_pb.APPLY_OUTCOME_APPLIED
    assert run.progress.accounts_found == 2  # the management account and Web Prod
    assert run.progress.organizational_units_found == 1
    assert run.progress.api_calls > 0
    assert run.organization_id == org.id
    assert (await handles(stack, created.id))[web] == "web_prod"
    integration = await stack.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=created.id), metadata=OWNER
    )
    assert integration.integration.state == pb.INTEGRATION_STATE_ENABLED


async def test_changes_between_syncs_reach_the_tree_with_their_events(
    stack: Stack, org: Org
) -> None:
    prod = org.ou("Production")
    sandbox = org.ou("Sandbox")
    web = org.account("Web Prod", prod)
    data = org.account("Data", prod)
    old = org.account("Old", sandbox)
    created = await create(stack)
    await first_run(stack, created.id)
    tree = await stack.tree.GetConnectionTree(
        tree_rpc.GetConnectionTreeRequest(integration_id=created.id), metadata=SYSTEM
    )
    start = tree.tree.revision

    org.rename_account(web, "Website")
    org.move(data, sandbox)
    org.rename_ou(prod, "Prod")
    org.suspend(old)
    audit = org.account("Audit", org.ou("Security"))
    run = await sync(stack, created.id)
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert run.trigger == dpb.SYNC_TRIGGER_MANUAL
    assert run.summary.connections_renamed == 1
    assert run.summary.connections_moved == 1
    assert run.summary.connections_deleted == 1
    assert run.summary.connections_created == 1
    assert run.summary.folders_created == 1
    now = await handles(stack, created.id)
    assert now[web] == "website"
    assert now[audit] == "audit"
    assert old not in now

    stream = stack.tree.WatchTreeEvents(
        tree_rpc.WatchTreeEventsRequest(after_revision=start, integration_id=created.id),
        metadata=SYSTEM,
    )
    kinds: list[str | None] = []
    async for reply in stream:
        if not reply.events:
            break
        kinds.extend(e.WhichOneof("event") for e in reply.events)
    stream.cancel()
    assert kinds.count("connection_created") == 1
    assert kinds.count("connection_deleted") == 1
    assert kinds.count("folder_created") == 1
    assert kinds.count("folder_updated") == 1  # Production → Prod
    assert kinds.count("connection_updated") == 2  # renamed, moved

    org.remove(audit)
    again = await sync(stack, created.id)
    assert again.summary.connections_deleted == 1
    unchanged = await sync(stack, created.id)
    assert unchanged.apply_outcome == tree_pb.APPLY_OUTCOME_UNCHANGED


async def test_watch_sync_run_streams_progress_then_the_outcome(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    units = org.ou_chain(5)
    for unit in units:
        org.account(f"acct in {unit}", unit)
    created = await create(stack)
    await first_run(stack, created.id)
    # Slow enough that the crawl outlasts several progress reports (every half second).
    proxy.add(Rule(service="organizations", latency=0.25))
    reply = await stack.discovery.SyncIntegration(
        drpc.SyncIntegrationRequest(integration_id=created.id), metadata=OWNER
    )
    states: list[int] = []
    calls: list[int] = []
    async for update in stack.discovery.WatchSyncRun(
        drpc.WatchSyncRunRequest(id=reply.run.id), metadata=MEMBER
    ):
        states.append(update.run.state)
        calls.append(update.run.progress.api_calls)
        if update.run.state in TERMINAL:
            break
    assert states[-1] == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert dpb.SYNC_RUN_STATE_RUNNING in states
    assert calls == sorted(calls)  # progress only grows
    assert len(set(calls)) > 2  # and is reported while the crawl runs


async def test_throttling_and_latency_still_give_the_same_tree(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    for unit in org.ou_chain(3):
        for i in range(3):
            org.account(f"t {unit} {i}", unit)
    created = await create(stack)
    await first_run(stack, created.id)
    before = await handles(stack, created.id)
    proxy.add(Rule(service="organizations", error="TooManyRequestsException", fraction=0.3))
    proxy.add(Rule(service="organizations", latency=0.02))
    run = await sync(stack, created.id)
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert run.apply_outcome == tree_pb.APPLY_OUTCOME_UNCHANGED
    assert run.progress.throttled_calls > 0
    assert await handles(stack, created.id) == before


async def test_access_denied_fails_the_run_and_changes_nothing(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    org.account("Web Prod")
    created = await create(stack)
    await first_run(stack, created.id)
    before = await handles(stack, created.id)
    proxy.add(Rule(service="sts", operation="AssumeRole", error="AccessDenied", status=403))
    run = await sync(stack, created.id)
    assert run.state == dpb.SYNC_RUN_STATE_FAILED
    assert run.failure_reason == "ASSUME_ROLE_DENIED"
    assert await handles(stack, created.id) == before
    integration = await stack.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=created.id), metadata=OWNER
    )
    assert integration.integration.state == pb.INTEGRATION_STATE_ERROR
    assert integration.integration.state_reason == "ASSUME_ROLE_DENIED"


async def test_an_endpoint_that_disappears_mid_crawl_applies_nothing(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    for unit in org.ou_chain(3):
        org.account(f"d {unit}", unit)
    created = await create(stack)
    await first_run(stack, created.id)
    before = await handles(stack, created.id)
    proxy.disappear(after=4)
    run = await sync(stack, created.id)
    assert run.state == dpb.SYNC_RUN_STATE_FAILED
    assert run.failure_reason in {"UNREACHABLE", "CALL_TIMEOUT"}
    proxy.clear()
    assert await handles(stack, created.id) == before


async def test_the_deletion_guard_stops_the_run_until_confirmed(stack: Stack, org: Org) -> None:
    doomed = [org.account(f"gone {i}") for i in range(4)]
    created = await create(stack)
    await first_run(stack, created.id)
    for account_id in doomed:
        org.remove(account_id)
    guarded = await sync(stack, created.id)
    assert guarded.state == dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION
    assert guarded.summary.connections_to_delete == 4
    assert len(await handles(stack, created.id)) == 5
    confirmed = await sync(stack, created.id, confirm_deletions=True)
    assert confirmed.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert confirmed.confirm_deletions
    assert len(await handles(stack, created.id)) == 1


async def test_a_credentials_change_syncs_again(stack: Stack, org: Org) -> None:
    created = await create(stack)
    await first_run(stack, created.id)
    await stack.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(
                id=created.id,
                member_access=pb.AwsMemberAccess(role_name="another-member-role"),
            ),
            update_mask=FieldMask(paths=["member_access"]),
        ),
        metadata=OWNER,
    )
    for _ in range(100):
        found = await runs_of(stack, created.id)
        if any(r.trigger == dpb.SYNC_TRIGGER_SETTINGS_CHANGED for r in found):
            break
        await asyncio.sleep(0.1)
    settings_run = next(r for r in found if r.trigger == dpb.SYNC_TRIGGER_SETTINGS_CHANGED)
    assert (await finished(stack, settings_run.id)).state == dpb.SYNC_RUN_STATE_SUCCEEDED


async def test_a_sync_while_one_is_live_returns_the_live_run(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    created = await create(stack)
    await first_run(stack, created.id)
    proxy.add(Rule(service="organizations", latency=0.3))
    first = await stack.discovery.SyncIntegration(
        drpc.SyncIntegrationRequest(integration_id=created.id), metadata=OWNER
    )
    second = await stack.discovery.SyncIntegration(
        drpc.SyncIntegrationRequest(integration_id=created.id), metadata=OWNER
    )
    assert second.run.id == first.run.id
    await finished(stack, first.run.id)


async def test_two_replicas_crawl_each_trigger_once(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    await stack.add_discovery_replica()
    created = [await create(stack, f"aws-{i}") for i in range(4)]
    for integration in created:
        run = await first_run(stack, integration.id)
        assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    await asyncio.sleep(1)  # any duplicate crawl would have started by now
    for integration in created:
        runs = await runs_of(stack, integration.id)
        assert len(runs) == 1
        assert runs[0].attempt == 1
    assert proxy.counts["DescribeOrganization"] == 4


async def test_a_dead_workers_lease_is_taken_over(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    for unit in org.ou_chain(2):
        org.account(f"l {unit}", unit)
    created = await create(stack)
    await first_run(stack, created.id)
    # Slow the crawl down, start a run, and kill the replica that is crawling it.
    proxy.add(Rule(service="organizations", latency=0.4))
    primary = stack.services["discovery"]
    reply = await stack.discovery.SyncIntegration(
        drpc.SyncIntegrationRequest(integration_id=created.id), metadata=OWNER
    )
    for _ in range(100):
        run = await stack.discovery.GetSyncRun(
            drpc.GetSyncRunRequest(id=reply.run.id), metadata=SYSTEM
        )
        if run.run.state == dpb.SYNC_RUN_STATE_RUNNING:
            break
        await asyncio.sleep(0.05)
    for task in primary.runtime.tasks:  # a crash: no lease is released
        task.cancel()
    proxy.clear()
    replica = await stack.add_discovery_replica()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
        stub: Any = dgrpc.DiscoveryServiceStub(channel)
        final = None
        for _ in range(200):
            final = (
                await stub.GetSyncRun(drpc.GetSyncRunRequest(id=reply.run.id), metadata=SYSTEM)
            ).run
            if final.state in TERMINAL:
                break
            await asyncio.sleep(0.1)
    assert final is not None
    assert final.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert final.attempt == 2


async def test_deleting_an_integration_cancels_its_live_run(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    created = await create(stack)
    await first_run(stack, created.id)
    proxy.add(Rule(service="organizations", latency=0.5))
    reply = await stack.discovery.SyncIntegration(
        drpc.SyncIntegrationRequest(integration_id=created.id), metadata=OWNER
    )
    await stack.integrations.DeleteIntegration(
        rpc.DeleteIntegrationRequest(id=created.id, confirm_handle="aws-prod"), metadata=OWNER
    )
    final = await finished(stack, reply.run.id)
    assert final.state == dpb.SYNC_RUN_STATE_CANCELLED
    assert final.failure_reason == "INTEGRATION_DELETED"


async def test_a_deleted_integration_is_not_found_for_its_scope_and_hidden_from_others(
    stack: Stack, org: Org
) -> None:
    created = await create(stack)
    run = await first_run(stack, created.id)
    await stack.integrations.DeleteIntegration(
        rpc.DeleteIntegrationRequest(id=created.id, confirm_handle="aws-prod"), metadata=OWNER
    )
    made_up = "i_0000000000zzzzzzzzzzzzzzzz"

    def naming(integration_id: str) -> dict[str, Callable[[Any], Awaitable[Any]]]:
        d = stack.discovery
        return {
            "SyncIntegration": lambda md: d.SyncIntegration(
                drpc.SyncIntegrationRequest(integration_id=integration_id), metadata=md
            ),
            "ListSyncRuns": lambda md: d.ListSyncRuns(
                drpc.ListSyncRunsRequest(integration_id=integration_id), metadata=md
            ),
            "TestDiscoveryAccess": lambda md: d.TestDiscoveryAccess(
                drpc.TestDiscoveryAccessRequest(integration_id=integration_id), metadata=md
            ),
            "TestMemberAccess": lambda md: d.TestMemberAccess(
                drpc.TestMemberAccessRequest(integration_id=integration_id), metadata=md
            ),
        }

    async def codes(integration_id: str, metadata: Any) -> dict[str, grpc.StatusCode]:
        found = {}
        for name, call in naming(integration_id).items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(metadata)
            found[name] = caught.value.code()
        return found

    for metadata in (OWNER, MEMBER):
        answers = await codes(created.id, metadata)
        assert answers == dict.fromkeys(answers, grpc.StatusCode.NOT_FOUND)
    hidden = await codes(created.id, OUTSIDER)
    assert hidden == dict.fromkeys(hidden, grpc.StatusCode.PERMISSION_DENIED)
    assert await codes(made_up, OUTSIDER) == hidden
    # The run itself is named by its own id and kept.
    kept = await stack.discovery.GetSyncRun(drpc.GetSyncRunRequest(id=run.id), metadata=OWNER)
    assert kept.run.state == dpb.SYNC_RUN_STATE_SUCCEEDED


async def test_a_due_integration_syncs_on_its_schedule(stack: Stack, org: Org) -> None:
    created = await create(stack)
    await first_run(stack, created.id)
    db = stack.services["discovery"].runtime.db
    async with db.transaction() as conn:
        row = await conn.fetchrow(
            "SELECT next_run_at - now() AS wait FROM schedules WHERE integration_id = $1",
            created.id,
        )
        # The next sync is an interval away (15 minutes, ±10%).
        assert 13 * 60 < row["wait"].total_seconds() < 17 * 60
        await conn.execute(
            "UPDATE schedules SET next_run_at = now() WHERE integration_id = $1", created.id
        )
    for _ in range(100):
        found = await runs_of(stack, created.id)
        if any(r.trigger == dpb.SYNC_TRIGGER_SCHEDULE for r in found):
            break
        await asyncio.sleep(0.1)
    scheduled = next(r for r in found if r.trigger == dpb.SYNC_TRIGGER_SCHEDULE)
    assert (await finished(stack, scheduled.id)).state == dpb.SYNC_RUN_STATE_SUCCEEDED


async def schedule_of(stack: Stack, integration_id: str) -> tuple[int, float]:
    """The schedule's interval, and the seconds until the next run."""
    db = stack.services["discovery"].runtime.db
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT interval_seconds, extract(epoch FROM next_run_at - now()) AS wait "
            "FROM schedules WHERE integration_id = $1",
            integration_id,
        )
    return row["interval_seconds"], float(row["wait"])


async def test_an_event_queue_spaces_full_crawls_a_day_apart_without_crawling_for_it(
    stack: Stack, org: Org
) -> None:
    created = await create(stack)
    await first_run(stack, created.id)
    assert (await schedule_of(stack, created.id))[0] == 15 * 60

    async def set_queue(queue: str) -> None:
        await stack.integrations.UpdateIntegration(
            rpc.UpdateIntegrationRequest(
                integration=pb.Integration(
                    id=created.id, discovery_access=pb.AwsDiscoveryAccess(event_queue=queue)
                ),
                update_mask=FieldMask(paths=["discovery_access.event_queue"]),
            ),
            metadata=OWNER,
        )

    async def interval_becomes(seconds: int) -> float:
        for _ in range(100):
            interval, wait = await schedule_of(stack, created.id)
            if interval == seconds:
                return wait
            await asyncio.sleep(0.1)
        raise AssertionError(f"the schedule's interval never became {seconds}")

    await set_queue(f"https://sqs.us-east-1.amazonaws.com/{org.management_account_id}/events")
    await interval_becomes(24 * 3600)
    async with stack.services["discovery"].runtime.db.transaction() as conn:
        # As a crawl would leave it with a queue: the next one a day away.
        await conn.execute(
            "UPDATE schedules SET next_run_at = now() + interval '1 day' WHERE integration_id = $1",
            created.id,
        )
    # Removing the queue brings the next crawl within 15 minutes.
    await set_queue("")
    assert await interval_becomes(15 * 60) <= 15 * 60
    # Neither change started a crawl: the organization did not change.
    assert [r.trigger for r in await runs_of(stack, created.id)] == [dpb.SYNC_TRIGGER_CREATED]


async def test_an_integration_created_with_a_queue_is_scheduled_a_day_apart(
    stack: Stack, org: Org
) -> None:
    queue = f"arn:aws:sqs:us-east-1:{org.management_account_id}:events"
    reply = await stack.integrations.CreateIntegration(
        rpc.CreateIntegrationRequest(
            integration=pb.Integration(
                handle="aws-queued",
                scope=types_pb2.Scope(tenant_id="t_acme"),
                discovery_access=pb.AwsDiscoveryAccess(
                    role_arn=DISCOVERY_ROLE, external_id=EXTERNAL_ID, event_queue=queue
                ),
                member_access=pb.AwsMemberAccess(role_name="canopy-member"),
            )
        ),
        metadata=OWNER,
    )
    integration_id = reply.integration.id
    await first_run(stack, integration_id)
    interval, wait = await schedule_of(stack, integration_id)
    assert interval == 24 * 3600
    assert wait > 20 * 3600  # jittered around a day


async def test_access_tests_report_the_organization_or_the_reason(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    web = org.account("Web Prod")
    created = await create(stack)
    await first_run(stack, created.id)
    ok = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(integration_id=created.id), metadata=MEMBER
    )
    assert ok.ok
    assert (ok.organization_id, ok.root_id) == (org.id, org.root_id)
    by_role = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(
            access=pb.AwsDiscoveryAccess(role_arn=DISCOVERY_ROLE, external_id=EXTERNAL_ID)
        ),
        metadata=OWNER,
    )
    assert by_role.ok
    members = await stack.discovery.TestMemberAccess(
        drpc.TestMemberAccessRequest(integration_id=created.id, account_ids=[web]),
        metadata=MEMBER,
    )
    assert [(r.account_id, r.ok) for r in members.results] == [(web, True)]
    assert members.results[0].role_arn == f"arn:aws:iam::{web}:role/canopy-member"
    proxy.add(Rule(service="sts", operation="AssumeRole", error="AccessDenied", status=403))
    denied = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(integration_id=created.id), metadata=MEMBER
    )
    assert not denied.ok
    assert denied.reason == dpb.ACCESS_FAILURE_REASON_ASSUME_ROLE_DENIED


async def test_callers_need_a_role_on_the_integrations_scope(stack: Stack, org: Org) -> None:
    created = await create(stack)
    run = await first_run(stack, created.id)
    for call in (
        stack.discovery.GetSyncRun(drpc.GetSyncRunRequest(id=run.id), metadata=OUTSIDER),
        stack.discovery.ListSyncRuns(
            drpc.ListSyncRunsRequest(integration_id=created.id), metadata=OUTSIDER
        ),
        stack.discovery.SyncIntegration(
            drpc.SyncIntegrationRequest(integration_id=created.id), metadata=MEMBER
        ),
        stack.discovery.TestDiscoveryAccess(
            drpc.TestDiscoveryAccessRequest(
                access=pb.AwsDiscoveryAccess(
                    role_arn=DISCOVERY_ROLE, external_id="t_other:abcd1234"
                )
            ),
            metadata=OWNER,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (
            lambda d: d.SyncIntegration(
                drpc.SyncIntegrationRequest(integration_id="x"), metadata=SYSTEM
            ),
            "integration_id",
        ),
        (lambda d: d.GetSyncRun(drpc.GetSyncRunRequest(id="i_abc"), metadata=SYSTEM), "id"),
        (
            lambda d: d.ListSyncRuns(drpc.ListSyncRunsRequest(integration_id=""), metadata=SYSTEM),
            "integration_id",
        ),
        (
            lambda d: d.ListSyncRuns(
                drpc.ListSyncRunsRequest(integration_id="i_abc", page_size=-1), metadata=SYSTEM
            ),
            "page_size",
        ),
        (
            lambda d: d.TestDiscoveryAccess(drpc.TestDiscoveryAccessRequest(), metadata=SYSTEM),
            "target",
        ),
        (
            lambda d: d.TestDiscoveryAccess(
                drpc.TestDiscoveryAccessRequest(
                    access=pb.AwsDiscoveryAccess(role_arn="nope", external_id=EXTERNAL_ID)
                ),
                metadata=SYSTEM,
            ),
            "access.role_arn",
        ),
        (
            lambda d: d.TestDiscoveryAccess(
                drpc.TestDiscoveryAccessRequest(
                    access=pb.AwsDiscoveryAccess(role_arn=DISCOVERY_ROLE, external_id="bad")
                ),
                metadata=SYSTEM,
            ),
            "access.external_id",
        ),
        (
            lambda d: d.TestMemberAccess(
                drpc.TestMemberAccessRequest(integration_id="i_abc", account_ids=["12"]),
                metadata=SYSTEM,
            ),
            "account_ids[0]",
        ),
        (
            lambda d: d.TestMemberAccess(
                drpc.TestMemberAccessRequest(integration_id="i_abc", sample_size=500),
                metadata=SYSTEM,
            ),
            "sample_size",
        ),
        (lambda d: _drain(d.WatchSyncRun(drpc.WatchSyncRunRequest(id=""), metadata=SYSTEM)), "id"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    stack: Stack, call: Any, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(stack.discovery)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details.fields


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass
