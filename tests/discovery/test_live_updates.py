"""Live updates: discovery following an integration's event queue, over real gRPC, PostgreSQL and
a moto server (SQS and Organizations; the fault proxy where moto cannot fail as AWS does).

moto's Organizations never emits events, so each test changes the organization in moto and puts
the EventBridge events AWS would deliver for that change on the queue itself (built from the real
samples in `event_samples/`). Discovery must bring the tree to exactly what a full crawl gives,
with the same workspace events, whatever the order, the duplicates and the poison among them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import boto3  # type: ignore[import-untyped]
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from prometheus_client import REGISTRY

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2
from tests.awsfaults import FaultProxy, Rule, organizations_refusal
from tests.discovery import org_events as ev
from tests.discovery.conftest import CREDENTIALS, DISCOVERY_ROLE, Org
from tests.discovery.stack import Stack, first_run, handles, runs_of, start_stack, sync
from tests.integration.conftest import ORG_OWNER, SYSTEM

FAST = {
    "event_coalesce_window": 0.3,
    "event_queue_wait": 1,
    "event_visibility_timeout": 2,
    "event_queue_retry_max": 0.5,
}


@pytest.fixture
async def stack(service_env: dict[str, Any], proxy: FaultProxy) -> AsyncIterator[Stack]:
    built = await start_stack(service_env, proxy, discovery=FAST)
    yield built
    await built.close()


def sqs_client(proxy: FaultProxy) -> Any:
    """boto3 SQS on moto itself (the test's own calls skip the proxy's faults)."""
    return boto3.client("sqs", endpoint_url=proxy.upstream, region_name="us-east-1", **CREDENTIALS)


def make_queue(proxy: FaultProxy, name: str = "canopy-events", max_receives: int = 3) -> str:
    """A queue with a dead-letter queue in moto; its URL as the integration stores it."""
    client = sqs_client(proxy)
    dead = client.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = client.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])
    policy = {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": max_receives}
    client.create_queue(QueueName=name, Attributes={"RedrivePolicy": json.dumps(policy)})
    return f"https://sqs.us-east-1.amazonaws.com/{ev.MANAGEMENT_ACCOUNT}/{name}"


async def create_followed(
    stack: Stack, queue_url: str, handle: str = "aws-live", prefix: str = ""
) -> pb.Integration:
    """An org-scoped integration (every workspace of o_ops may use it) with an event queue,
    once its first crawl is applied."""
    created = (
        await stack.integrations.CreateIntegration(
            rpc.CreateIntegrationRequest(
                integration=pb.Integration(
                    handle=handle,
                    scope=types_pb2.Scope(org_id="o_ops"),
                    discovery_access=pb.AwsDiscoveryAccess(
                        role_arn=DISCOVERY_ROLE,
                        external_id="o_ops:k3j9x0ab",
                        event_queue=queue_url,
                    ),
                    member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                    handle_prefix=prefix,
                ),
                initial_permissions=pb.RootFolderPermissions(
                    mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
                ),
            ),
            metadata=ORG_OWNER,
        )
    ).integration
    assert (await first_run(stack, created.id)).state == dpb.SYNC_RUN_STATE_SUCCEEDED
    return created


async def integration_of(stack: Stack, integration_id: str) -> pb.Integration:
    reply = await stack.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=integration_id), metadata=SYSTEM
    )
    return reply.integration


async def queue_state(
    stack: Stack, integration_id: str, state: int, timeout: float = 20
) -> pb.EventQueueStatus:
    """The integration's event_queue_status, once it is `state`."""
    status = pb.EventQueueStatus()
    for _ in range(int(timeout * 10)):
        status = (await integration_of(stack, integration_id)).event_queue_status
        if status.state == state:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"event queue still {pb.EventQueueState.Name(status.state)}")


async def event_runs(
    stack: Stack, integration_id: str, event_ids: set[str], timeout: float = 30
) -> list[dpb.SyncRun]:
    """The finished runs of trigger ORGANIZATION_EVENTS that cover some of `event_ids`, oldest
    first, once they cover them all."""
    covered: set[str] = set()
    for _ in range(int(timeout * 10)):
        runs = [
            r
            for r in reversed(await runs_of(stack, integration_id))
            if r.trigger == dpb.SYNC_TRIGGER_ORGANIZATION_EVENTS
            and r.state not in (dpb.SYNC_RUN_STATE_QUEUED, dpb.SYNC_RUN_STATE_RUNNING)
            and event_ids & {e.event_id for e in r.events}
        ]
        covered = {e.event_id for r in runs for e in r.events}
        if event_ids <= covered:
            return runs
        await asyncio.sleep(0.1)
    raise AssertionError(f"events never covered: {sorted(event_ids - covered)}")


def ids(*events: dict[str, Any]) -> set[str]:
    return {e["id"] for e in events}


async def crawl_agrees(stack: Stack, integration_id: str) -> None:
    """A full crawl now finds nothing to change: the tree is what a crawl makes of the org."""
    run = await sync(stack, integration_id)
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert run.apply_outcome == tree_pb.APPLY_OUTCOME_UNCHANGED, run.summary


async def attach_root(stack: Stack, workspace_id: str, folder_id: str) -> None:
    schemas = wgrpc.WorkspaceSchemaServiceStub(stack.channels[2])
    for _ in range(100):  # the permissions service learns the tree from the tree log
        try:
            await schemas.AttachSchema(
                wrpc.AttachSchemaRequest(workspace_id=workspace_id, folder_id=folder_id),
                metadata=SYSTEM,
            )
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    raise AssertionError("the root folder never reached the permissions service")


async def schema_revision(stack: Stack, workspace_id: str) -> int:
    schemas = wgrpc.WorkspaceSchemaServiceStub(stack.channels[2])
    reply = await schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(workspace_id=workspace_id, page_size=100),
        metadata=SYSTEM,
    )
    return int(reply.revision)


async def schema_events(
    stack: Stack, workspace_id: str, after: int, count: int, timeout: float = 20
) -> list[tuple[str, ...]]:
    """The workspace's next `count` schema events, as (kind, names…)."""
    schemas = wgrpc.WorkspaceSchemaServiceStub(stack.channels[2])
    found: list[tuple[str, ...]] = []

    async def watch() -> None:
        call = schemas.WatchWorkspaceSchemas(
            wrpc.WatchWorkspaceSchemasRequest(workspace_id=workspace_id, after_revision=after),
            metadata=SYSTEM,
        )
        async for reply in call:
            for event in reply.events:
                kind = event.WhichOneof("event")
                if kind == "schema_added":
                    found.append((kind, event.schema_added.schema.name))
                elif kind == "schema_renamed":
                    renamed = event.schema_renamed
                    found.append((kind, renamed.old_name, renamed.new_name))
                elif kind == "schema_removed":
                    removed = event.schema_removed
                    found.append((kind, removed.name, str(removed.reason)))
                else:
                    found.append((str(kind),))
            if len(found) >= count:
                call.cancel()
                return

    await asyncio.wait_for(watch(), timeout)
    return found


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# Each kind of change


async def test_each_kind_of_change_gives_the_tree_and_workspace_events_of_a_full_crawl(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    prod = org.ou("Production")
    sandbox = org.ou("Sandbox")
    empty = org.ou("Empty")
    web = org.account("Web", prod)
    data = org.account("Data", prod)
    old = org.account("Old", sandbox)
    gone = org.account("Gone", sandbox)
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url, "aws-live", prefix="a_")
    # The same organization without a queue: the full crawl's view of the same changes.
    crawled = await create_followed(stack, "", "aws-crawled", prefix="b_")
    await attach_root(stack, "w_ops1", live.root_folder_id)
    await attach_root(stack, "w_ops2", crawled.root_folder_id)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    await asyncio.sleep(0.5)  # the attachments' schema events
    after = {w: await schema_revision(stack, w) for w in ("w_ops1", "w_ops2")}

    org.move(web, sandbox)
    new = org.account("New Service")
    org.move(new, prod)
    org.suspend(old)
    org.remove(gone)
    org.rename_account(data, "Data Lake")
    staging = org.ou("Staging")
    org.rename_ou(sandbox, "Playground")
    org.delete_ou(empty)
    sent = [
        ev.moved(web, prod, sandbox),
        ev.created(new),
        ev.moved(new, org.root_id, prod),
        ev.closed(old),
        ev.removed(gone),
        ev.renamed(data),
        ev.unit_created(staging, org.root_id, "Staging", org.id),
        ev.unit_renamed(sandbox, "Playground", org.id),
        ev.unit_deleted(empty),
    ]
    ev.send(sqs_client(proxy), queue_url, *sent)
    runs = await event_runs(stack, live.id, ids(*sent))
    assert all(r.state == dpb.SYNC_RUN_STATE_SUCCEEDED for r in runs)
    assert all(not r.full_crawl_reason for r in runs)
    assert sum(r.event_count for r in runs) == len(sent)
    # Each account read once: five, of which Gone is no longer in the organization.
    assert sum(r.progress.accounts_found for r in runs) == 4
    refreshed = await sync(stack, crawled.id)
    assert refreshed.apply_outcome == tree_pb.APPLY_OUTCOME_APPLIED

    # New Service added, Data renamed, Old and Gone removed: the same in both workspaces.
    live_events = await schema_events(stack, "w_ops1", after["w_ops1"], 4)
    crawl_events = await schema_events(stack, "w_ops2", after["w_ops2"], 4)
    assert sorted(live_events) == sorted(
        tuple(part.replace("b_", "a_") for part in event) for event in crawl_events
    )
    assert ("schema_renamed", "a_data", "a_data_lake") in live_events
    assert ("schema_added", "a_new_service") in live_events
    await crawl_agrees(stack, live.id)
    tree = await stack.tree.ListFolders(
        tree_rpc.ListFoldersRequest(integration_id=live.id, page_size=100), metadata=SYSTEM
    )
    assert sorted(f.title for f in tree.folders) == [
        "Playground",
        "Production",
        "Staging",
        "aws-live",
    ]


async def test_the_queue_is_reported_following_once_discovery_reads_it(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    status = await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    assert (status.reason, status.message) == ("", "")
    assert status.HasField("update_time")


# Order, duplicates, poison


async def test_reordered_and_repeated_events_converge_to_the_organization_as_it_is(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    a = org.ou("A")
    b = org.ou("B")
    c = org.ou("C")
    mover = org.account("Mover", a)
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)

    org.move(mover, b)
    org.move(mover, c)
    new = org.account("Late Create")
    org.move(new, b)
    first_move = ev.moved(mover, a, b)
    second_move = ev.moved(mover, b, c)
    create = ev.created(new)
    move_new = ev.moved(new, org.root_id, b)
    sqs = sqs_client(proxy)
    # B→C before A→B; the new account's move before its creation; one event twice.
    ev.send(sqs, queue_url, second_move, move_new)
    await event_runs(stack, live.id, ids(second_move, move_new))
    ev.send(sqs, queue_url, first_move, create, first_move)
    await event_runs(stack, live.id, ids(first_move, create))

    tree = await stack.tree.ListConnections(
        tree_rpc.ListConnectionsRequest(integration_id=live.id, page_size=100), metadata=SYSTEM
    )
    folders = await stack.tree.ListFolders(
        tree_rpc.ListFoldersRequest(integration_id=live.id, page_size=100), metadata=SYSTEM
    )
    title = {f.id: f.title for f in folders.folders}
    where = {c.account_id: title[c.folder_id] for c in tree.connections}
    assert (where[mover], where[new]) == ("C", "B")
    await crawl_agrees(stack, live.id)


async def test_poison_messages_are_counted_and_dropped_and_the_next_event_still_applies(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    prod = org.ou("Production")
    web = org.account("Web")
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    tree_before = await stack.tree.GetConnectionTree(
        tree_rpc.GetConnectionTreeRequest(integration_id=live.id), metadata=SYSTEM
    )
    reasons = (
        "NOT_JSON",
        "WRONG_SOURCE",
        "OTHER_ORGANIZATION",
        "MISSING_FIELDS",
        "TOO_LARGE",
        "FAILED_CALL",
        "UNKNOWN_EVENT",
    )
    before = {r: metric("canopy_discovery_events_ignored_total", reason=r) for r in reasons}

    wrong_source = ev.moved(web, org.root_id, prod)
    wrong_source["source"] = "aws.ec2"
    other_organization = ev.unit_renamed("ou-abcd-11111111", "Theirs", "o-someoneelse")
    missing = ev.moved(web, org.root_id, prod)
    del missing["detail"]["requestParameters"]["accountId"]
    failed = ev.moved(web, org.root_id, prod)
    failed["detail"]["errorCode"] = "AccessDeniedException"
    unknown = ev.moved(web, org.root_id, prod)
    unknown["detail"]["eventName"] = "TagResource"
    huge = ev.moved(web, org.root_id, prod)
    huge["detail"]["padding"] = "x" * 300_000
    sqs = sqs_client(proxy)
    ev.send(sqs, queue_url, "{not json", wrong_source, other_organization, missing)
    ev.send(sqs, queue_url, failed, unknown, huge)
    for _ in range(100):
        after = {r: metric("canopy_discovery_events_ignored_total", reason=r) for r in reasons}
        if all(after[r] > before[r] for r in reasons):
            break
        await asyncio.sleep(0.1)
    assert {r: after[r] - before[r] for r in reasons} == dict.fromkeys(reasons, 1.0)
    tree_after = await stack.tree.GetConnectionTree(
        tree_rpc.GetConnectionTreeRequest(integration_id=live.id), metadata=SYSTEM
    )
    assert tree_after.tree.generation == tree_before.tree.generation
    assert not [
        r
        for r in await runs_of(stack, live.id)
        if r.trigger == dpb.SYNC_TRIGGER_ORGANIZATION_EVENTS
    ]

    org.move(web, prod)
    move = ev.moved(web, org.root_id, prod)
    ev.send(sqs, queue_url, move)
    (run,) = await event_runs(stack, live.id, ids(move))
    assert run.apply_outcome == tree_pb.APPLY_OUTCOME_APPLIED
    await crawl_agrees(stack, live.id)
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"  # every message deleted


# Falling back to a full crawl


async def test_an_ou_deleted_before_its_accounts_moves_arrive_falls_back_to_a_full_crawl(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    doomed = org.ou("Doomed")
    keeper = org.ou("Keeper")
    tenant = org.account("Tenant", doomed)
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)

    org.move(tenant, keeper)
    org.delete_ou(doomed)
    deleted = ev.unit_deleted(doomed)  # the MoveAccount event is late
    ev.send(sqs_client(proxy), queue_url, deleted)
    (run,) = await event_runs(stack, live.id, ids(deleted))
    assert run.full_crawl_reason == "REMOVED_OU_HAS_CHILDREN"
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert run.progress.accounts_found == 2  # a full crawl: every account
    assert [(e.event_name, e.entity_id) for e in run.events] == [
        ("DeleteOrganizationalUnit", doomed)
    ]
    await crawl_agrees(stack, live.id)


async def test_an_account_moved_under_new_ous_walks_up_to_a_known_folder(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    web = org.account("Web")
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)

    _outer, inner = org.ou_chain(2)
    org.move(web, inner)
    move = ev.moved(web, org.root_id, inner)  # the two CreateOrganizationalUnit events are lost
    ev.send(sqs_client(proxy), queue_url, move)
    (run,) = await event_runs(stack, live.id, ids(move))
    assert run.full_crawl_reason == ""
    assert run.progress.organizational_units_found == 2
    assert run.summary.folders_created == 2
    await crawl_agrees(stack, live.id)


async def test_a_stored_snapshot_behind_the_tree_falls_back_to_a_full_crawl(
    stack: Stack, org: Org, proxy: FaultProxy, database_url: str
) -> None:
    web = org.account("Web")
    prod = org.ou("Production")
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    connection = await asyncpg.connect(database_url)
    try:  # as if an older replica had applied a crawl without keeping its snapshot
        await connection.execute(
            "UPDATE discovery.applied_snapshots SET generation = generation - 1"
        )
    finally:
        await connection.close()

    org.move(web, prod)
    move = ev.moved(web, org.root_id, prod)
    ev.send(sqs_client(proxy), queue_url, move)
    (run,) = await event_runs(stack, live.id, ids(move))
    assert run.full_crawl_reason == "STORED_SNAPSHOT_OUT_OF_DATE"
    assert run.apply_outcome == tree_pb.APPLY_OUTCOME_APPLIED
    # The crawl kept its snapshot: the next event is a targeted refresh again.
    org.rename_account(web, "Web Two")
    rename = ev.renamed(web)
    ev.send(sqs_client(proxy), queue_url, rename)
    (again,) = await event_runs(stack, live.id, ids(rename))
    assert again.full_crawl_reason == ""
    assert again.progress.api_calls == 2
    assert (await handles(stack, live.id))[web] == "web_two"


async def test_a_refresh_refused_on_an_ou_falls_back_to_a_crawl_that_prunes_it(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    secret = org.ou("Secret")
    spy = org.account("Spy", secret)
    web = org.account("Web")
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    # The discovery role's policy now denies every call naming the OU.
    refused = proxy.add(organizations_refusal(role_arn=DISCOVERY_ROLE, entity=secret))
    org.rename_ou(secret, "Top Secret")
    renamed = ev.unit_renamed(secret, "Top Secret", org.id)
    ev.send(sqs_client(proxy), queue_url, renamed)
    (run,) = await event_runs(stack, live.id, ids(renamed))
    assert run.full_crawl_reason == "ACCESS_DENIED"
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert list(run.progress.refused_organizational_unit_ids) == [secret]
    assert (run.summary.folders_deleted, run.summary.connections_deleted) == (1, 1)
    assert set(await handles(stack, live.id)) == {web, org.management_account_id}
    assert refused.injected > 0
    assert spy not in await handles(stack, live.id)


async def test_a_refresh_refused_describing_an_account_falls_back_to_a_crawl_that_still_sees_it(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    prod = org.ou("Production")
    web = org.account("Web")
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    # A policy that lets the role list the organization but not describe this account.
    proxy.add(organizations_refusal(operation="DescribeAccount", entity=web))
    org.move(web, prod)
    move = ev.moved(web, org.root_id, prod)
    ev.send(sqs_client(proxy), queue_url, move)
    (run,) = await event_runs(stack, live.id, ids(move))
    assert run.full_crawl_reason == "ACCESS_DENIED"
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert run.progress.organizational_units_refused == 0
    assert run.summary.connections_moved == 1
    assert run.summary.connections_deleted == 0
    await crawl_agrees(stack, live.id)


async def test_a_burst_naming_too_much_of_the_tree_is_a_full_crawl(
    service_env: dict[str, Any], org: Org, proxy: FaultProxy
) -> None:
    settings = {**FAST, "event_refresh_max_share": 0.1, "event_refresh_min_entities": 1}
    stack = await start_stack(service_env, proxy, discovery=settings)
    try:
        prod = org.ou("Production")
        accounts = [org.account(f"Team {i}") for i in range(3)]
        queue_url = make_queue(proxy)
        live = await create_followed(stack, queue_url)
        await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
        for account in accounts:
            org.move(account, prod)
        moves = [ev.moved(a, org.root_id, prod) for a in accounts]
        ev.send(sqs_client(proxy), queue_url, *moves)
        runs = await event_runs(stack, live.id, ids(*moves))
        assert [r.full_crawl_reason for r in runs] == ["TOO_MUCH_OF_THE_TREE"]
        assert runs[0].event_count == 3
        await crawl_agrees(stack, live.id)
    finally:
        await stack.close()


# Replicas, failures, throttling


async def test_a_replica_stopped_mid_burst_leaves_its_messages_to_the_next_applied_once(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    prod = org.ou("Production")
    web = org.account("Web")
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await attach_root(stack, "w_ops1", live.root_folder_id)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    await asyncio.sleep(0.5)
    after = await schema_revision(stack, "w_ops1")

    slow = proxy.add(Rule(service="organizations", operation="DescribeAccount", latency=5))
    org.move(web, prod)
    org.rename_account(web, "Web Renamed")
    sent = [ev.moved(web, org.root_id, prod), ev.renamed(web)]
    ev.send(sqs_client(proxy), queue_url, *sent)
    for _ in range(100):  # the burst is being refreshed
        if slow.matched:
            break
        await asyncio.sleep(0.1)
    assert slow.matched
    await stack.stop_discovery()  # mid-refresh: nothing applied, nothing deleted
    proxy.rules.remove(slow)
    await stack.start_discovery()

    runs = await event_runs(stack, live.id, ids(*sent))
    assert [r.event_count for r in runs] == [2]  # one refresh covers both, once
    events = await schema_events(stack, "w_ops1", after, 1)
    await asyncio.sleep(1.0)  # a second apply would have renamed the schema again by now
    assert events == [("schema_renamed", "web", "web_renamed")]
    assert await schema_events(stack, "w_ops1", after, 1) == events
    await crawl_agrees(stack, live.id)


async def test_a_deleted_queue_is_reported_failing_while_the_schedule_goes_on(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    web = org.account("Web")
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    sqs = sqs_client(proxy)
    generation = (await integration_of(stack, live.id)).tree_generation

    sqs.delete_queue(QueueUrl=queue_url)
    status = await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FAILING)
    assert status.reason == "EVENT_QUEUE_NOT_FOUND"
    assert "does not exist" in status.message
    assert (await integration_of(stack, live.id)).tree_generation == generation
    org.rename_account(web, "Web Crawled")
    run = await sync(stack, live.id)  # crawls go on without the queue
    assert run.apply_outcome == tree_pb.APPLY_OUTCOME_APPLIED
    assert (await handles(stack, live.id))[web] == "web_crawled"

    make_queue(proxy)  # created again: followed again
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)


async def test_a_queue_the_role_may_no_longer_read_is_reported_and_followed_again_once_allowed(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    # moto does not enforce IAM: the proxy answers as SQS does to a role without the permission.
    denied = proxy.add(
        Rule(
            service="sqs",
            operation="ReceiveMessage",
            role_arn=DISCOVERY_ROLE,
            error="com.amazon.coral.service#AccessDeniedException",
            query_error="AccessDenied",
            status=403,
            message="not authorized to perform: sqs:receivemessage",
        )
    )
    status = await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FAILING)
    assert status.reason == "EVENT_QUEUE_ACCESS_DENIED"
    assert "sqs:ReceiveMessage" in status.message
    proxy.rules.remove(denied)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)


async def test_throttling_by_sqs_and_organizations_is_waited_out_and_nothing_is_lost(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    prod = org.ou("Production")
    web = org.account("Web")
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)

    following = await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    throttled_reads = metric(
        "canopy_discovery_event_queue_failures_total", reason="EVENT_QUEUE_ERROR"
    )
    receives = proxy.add(
        Rule(
            service="sqs",
            operation="ReceiveMessage",
            error="com.amazonaws.sqs#RequestThrottled",
            query_error="RequestThrottled",
            first=2,
        )
    )
    describes = proxy.add(
        Rule(
            service="organizations",
            operation="DescribeAccount",
            error="TooManyRequestsException",
            message="You have sent too many requests in too short a period of time.",
            first=3,
        )
    )
    org.move(web, prod)
    move = ev.moved(web, org.root_id, prod)
    ev.send(sqs_client(proxy), queue_url, move)
    (run,) = await event_runs(stack, live.id, ids(move))
    assert run.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    assert describes.injected == 3
    assert run.progress.throttled_calls == 3
    assert run.progress.api_calls == 5  # DescribeAccount four times, ListParents once
    for _ in range(50):  # the follower has met both throttled receives, and read again
        if receives.injected == 2 and receives.matched > 2:
            break
        await asyncio.sleep(0.1)
    assert (receives.injected, receives.matched > 2) == (2, True)
    assert metric("canopy_discovery_event_queue_failures_total", reason="EVENT_QUEUE_ERROR") == (
        throttled_reads + 2
    )
    # Throttled reads are waited out: the queue was never reported failing (nor anything else).
    assert (await integration_of(stack, live.id)).event_queue_status == following
    await crawl_agrees(stack, live.id)


async def test_a_message_whose_refresh_keeps_failing_goes_to_the_dead_letter_queue(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    prod = org.ou("Production")
    web = org.account("Web")
    queue_url = make_queue(proxy, max_receives=2)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    failures = metric("canopy_discovery_refresh_failures_total", reason="OTHER")
    # A failure neither transient nor a refusal (a refusal falls back to a full crawl).
    proxy.add(
        Rule(
            service="organizations",
            operation="DescribeAccount",
            error="InvalidInputException",
            message="You provided a value that does not match the required pattern.",
        )
    )
    generation = (await integration_of(stack, live.id)).tree_generation
    org.move(web, prod)
    move = ev.moved(web, org.root_id, prod)
    sqs = sqs_client(proxy)
    ev.send(sqs, queue_url, move)
    dead_letters = sqs.get_queue_url(QueueName="canopy-events-dlq")["QueueUrl"]
    moved_there: list[dict[str, Any]] = []
    for _ in range(150):
        moved_there = sqs.receive_message(QueueUrl=dead_letters, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if moved_there:
            break
        await asyncio.sleep(0.1)
    assert [json.loads(m["Body"])["id"] for m in moved_there] == [move["id"]]
    assert metric("canopy_discovery_refresh_failures_total", reason="OTHER") >= failures + 2
    assert (await integration_of(stack, live.id)).tree_generation == generation
    assert not [
        r
        for r in await runs_of(stack, live.id)
        if r.trigger == dpb.SYNC_TRIGGER_ORGANIZATION_EVENTS
    ]


async def test_removing_the_queue_from_the_integration_stops_following_it(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    prod = org.ou("Production")
    web = org.account("Web")
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    await stack.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=live.id, discovery_access=pb.AwsDiscoveryAccess()),
            update_mask=FieldMask(paths=["discovery_access.event_queue"]),
        ),
        metadata=ORG_OWNER,
    )
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_NOT_CONFIGURED)
    await asyncio.sleep(1.0)  # the tree log reaches discovery, which stops polling
    org.move(web, prod)
    move = ev.moved(web, org.root_id, prod)
    sqs = sqs_client(proxy)
    ev.send(sqs, queue_url, move)
    await asyncio.sleep(2.0)
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "1"  # nobody reads it any more
    status = (await integration_of(stack, live.id)).event_queue_status
    assert status.state == pb.EVENT_QUEUE_STATE_NOT_CONFIGURED


async def test_an_event_delivered_by_an_eventbridge_rule_is_applied(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    prod = org.ou("Production")
    web = org.account("Web")
    queue_url = make_queue(proxy)
    live = await create_followed(stack, queue_url)
    await queue_state(stack, live.id, pb.EVENT_QUEUE_STATE_FOLLOWING)
    events = boto3.client(
        "events", endpoint_url=proxy.upstream, region_name="us-east-1", **CREDENTIALS
    )
    events.put_rule(
        Name="canopy-organization-events",
        EventPattern=json.dumps(
            {
                "source": ["aws.organizations"],
                "detail-type": ["AWS API Call via CloudTrail", "AWS Service Event via CloudTrail"],
                "detail": {"errorCode": [{"exists": False}]},
            }
        ),
    )
    arn = f"arn:aws:sqs:us-east-1:{ev.MANAGEMENT_ACCOUNT}:canopy-events"
    events.put_targets(Rule="canopy-organization-events", Targets=[{"Id": "queue", "Arn": arn}])

    org.move(web, prod)
    move = ev.moved(web, org.root_id, prod)
    # moto accepts an aws.* source from PutEvents (AWS would not) and delivers the event to the
    # queue in its own envelope: a new id, and no `account`.
    answer = events.put_events(
        Entries=[
            {
                "Source": move["source"],
                "DetailType": move["detail-type"],
                "Detail": json.dumps(move["detail"]),
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0
    delivered = answer["Entries"][0]["EventId"]
    (run,) = await event_runs(stack, live.id, {delivered})
    assert [(e.event_name, e.entity_id) for e in run.events] == [("MoveAccount", web)]
    assert run.apply_outcome == tree_pb.APPLY_OUTCOME_APPLIED
    await crawl_agrees(stack, live.id)
