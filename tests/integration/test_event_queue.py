"""An integration's event queue over real gRPC and PostgreSQL: the forms accepted and the one
stored, the rules a queue must follow (us-east-1, the role's account, not FIFO), its status from
PENDING to what discovery reports, the longer default interval it brings, and the tree events
each change makes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import cfnlint.api  # type: ignore[import-untyped]  # cfn-lint ships no type information
import grpc
import pytest
import yaml
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy_core.event_queues import event_queue_problem, parse_event_queue
from tests.helpers import ErrorDetails, error_details
from tests.integration.conftest import (
    MEMBER,
    OWNER,
    SYSTEM,
    TRUSTED_ACCOUNT_ID,
    Suite,
    create,
    new_integration,
)
from tests.integration.test_apply import BASE, apply, connections, events_after, head
from tests.integration.test_templates import CloudFormationLoader

ACCOUNT = "111111111111"  # the discovery role's, in new_integration
QUEUE_URL = f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/canopy-org-events"
QUEUE_ARN = f"arn:aws:sqs:us-east-1:{ACCOUNT}:canopy-org-events"
LEGACY_URL = f"https://queue.amazonaws.com/{ACCOUNT}/canopy-org-events"
OTHER_URL = f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/another-queue"
FIELD = "integration.discovery_access.event_queue"

NOT_CONFIGURED = pb.EVENT_QUEUE_STATE_NOT_CONFIGURED
PENDING = pb.EVENT_QUEUE_STATE_PENDING
FOLLOWING = pb.EVENT_QUEUE_STATE_FOLLOWING
FAILING = pb.EVENT_QUEUE_STATE_FAILING
DAY = 24 * 3600
QUARTER = 15 * 60


def with_queue(queue: str, handle: str = "aws-prod", **extra: Any) -> pb.Integration:
    message = new_integration(handle, **extra)
    message.discovery_access.event_queue = queue
    return message


async def fails(call: Any) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return error_details(caught.value)


async def update(suite: Suite, message: pb.Integration, *paths: str) -> pb.Integration:
    reply = await suite.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(integration=message, update_mask=FieldMask(paths=paths)),
        metadata=OWNER,
    )
    return reply.integration


async def set_queue(suite: Suite, integration_id: str, queue: str) -> pb.Integration:
    return await update(
        suite,
        pb.Integration(
            id=integration_id, discovery_access=pb.AwsDiscoveryAccess(event_queue=queue)
        ),
        "discovery_access.event_queue",
    )


async def get(suite: Suite, integration_id: str) -> pb.Integration:
    reply = await suite.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=integration_id), metadata=MEMBER
    )
    return reply.integration


async def report(
    suite: Suite,
    integration_id: str,
    state: pb.EventQueueState.ValueType,
    reason: str = "",
    message: str = "",
    metadata: Any = SYSTEM,
) -> tree_rpc.ApplyDiscoverySnapshotResponse:
    reply: tree_rpc.ApplyDiscoverySnapshotResponse = await suite.tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=integration_id,
            # A report is computed against no tree: any generation will do.
            expected_generation=12345,
            event_queue_status=pb.EventQueueStatus(state=state, reason=reason, message=message),
        ),
        metadata=metadata,
    )
    return reply


def updates(events: list[tree_pb.TreeEvent]) -> list[list[str]]:
    """The changed fields of each IntegrationUpdated event."""
    return [
        list(e.integration_updated.changed_fields)
        for e in events
        if e.WhichOneof("event") == "integration_updated"
    ]


# -- forms -------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", [QUEUE_URL, QUEUE_ARN, LEGACY_URL])
async def test_a_queue_given_as_url_arn_or_legacy_url_is_stored_and_returned_as_its_url(
    suite: Suite, given: str
) -> None:
    created = await create(suite, with_queue(given))
    assert created.discovery_access.event_queue == QUEUE_URL
    assert await get(suite, created.id) == created


async def test_the_same_queue_in_another_form_is_no_change(suite: Suite) -> None:
    created = await create(suite, with_queue(QUEUE_URL))
    start = await head(suite, created.id)
    again = await set_queue(suite, created.id, QUEUE_ARN)
    assert again.etag == created.etag
    assert await events_after(suite, start, created.id) == []


@pytest.mark.parametrize(
    ("queue", "says"),
    [
        (f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/events", "us-east-1 only"),
        (f"arn:aws:sqs:eu-west-1:{ACCOUNT}:events", "us-east-1 only"),
        (f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/events.fifo", "message group id"),
        (f"arn:aws:sqs:us-east-1:{ACCOUNT}:events.fifo", "FIFO"),
        (f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{'q' * 81}", "1-80 characters"),
        (f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/my.events", "1-80 characters"),
        (f"http://sqs.us-east-1.amazonaws.com/{ACCOUNT}/events", "SQS queue URL"),
        (f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/events/", "SQS queue URL"),
        (f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/events\n", "1-80 characters"),
        ("https://sqs.us-east-1.amazonaws.com/1234/events", "SQS queue URL"),
        (f"https://evil.example/{ACCOUNT}/events", "SQS queue URL"),
        ("canopy-org-events", "SQS queue URL"),
    ],
)
async def test_a_malformed_queue_is_refused_naming_the_field_and_the_rule(
    suite: Suite, queue: str, says: str
) -> None:
    refused = await fails(create(suite, with_queue(queue)))
    assert (refused.code, refused.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [FIELD])
    assert says in refused.message


async def test_a_queue_of_another_partition_is_refused_as_unsupported_partition(
    suite: Suite,
) -> None:
    refused = await fails(create(suite, with_queue(f"arn:aws-cn:sqs:us-east-1:{ACCOUNT}:q")))
    assert (refused.fields, refused.reason) == ([FIELD], "UNSUPPORTED_PARTITION")


async def test_a_queue_in_another_account_than_the_role_is_refused_saying_where_it_goes(
    suite: Suite,
) -> None:
    refused = await fails(
        create(suite, with_queue("https://sqs.us-east-1.amazonaws.com/222222222222/events"))
    )
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.fields, refused.reason) == ([FIELD], "EVENT_QUEUE_ACCOUNT_MISMATCH")
    assert "management or delegated administrator account" in refused.message
    assert ACCOUNT in refused.message


async def test_moving_the_role_to_another_account_away_from_its_queue_is_refused(
    suite: Suite,
) -> None:
    created = await create(suite, with_queue(QUEUE_URL))
    moved = pb.Integration(
        id=created.id,
        discovery_access=pb.AwsDiscoveryAccess(
            role_arn="arn:aws:iam::222222222222:role/canopy-discovery"
        ),
    )
    refused = await fails(update(suite, moved, "discovery_access.role_arn"))
    assert (refused.fields, refused.reason) == ([FIELD], "EVENT_QUEUE_ACCOUNT_MISMATCH")
    assert await get(suite, created.id) == created


def test_a_parsed_queue_gives_its_account_name_url_and_arn() -> None:
    queue = parse_event_queue(LEGACY_URL, "aws")
    assert (queue.account_id, queue.name) == (ACCOUNT, "canopy-org-events")
    assert (queue.url, queue.arn) == (QUEUE_URL, QUEUE_ARN)
    with pytest.raises(ValueError, match="us-east-1"):
        parse_event_queue(f"arn:aws:sqs:us-west-2:{ACCOUNT}:q", "aws")


def test_no_queue_is_followed_in_a_partition_whose_events_canopy_cannot_find() -> None:
    problem = event_queue_problem(f"arn:aws-cn:sqs:cn-northwest-1:{ACCOUNT}:q", "aws-cn")
    assert problem is not None
    assert problem.wrong_partition
    assert "partition 'aws'" in problem.description


# -- status and interval -------------------------------------------------------------------------


async def test_without_a_queue_the_status_is_not_configured_and_crawls_every_15_minutes(
    suite: Suite,
) -> None:
    created = await create(suite)
    assert created.discovery_access.event_queue == ""
    assert created.event_queue_status == pb.EventQueueStatus(state=NOT_CONFIGURED)
    assert created.sync_interval.ToTimedelta() == timedelta(minutes=15)


async def test_with_a_queue_it_is_pending_and_crawls_every_24_hours_by_default(
    suite: Suite,
) -> None:
    created = await create(suite, with_queue(QUEUE_URL))
    assert created.event_queue_status == pb.EventQueueStatus(state=PENDING)
    assert created.sync_interval.seconds == DAY
    stream = suite.tree.WatchTreeEvents(
        tree_rpc.WatchTreeEventsRequest(integration_id=created.id), metadata=OWNER
    )
    try:
        first = (await anext(aiter(stream))).events[0]
    finally:
        stream.cancel()
    announced = first.integration_created.integration
    assert announced.discovery_access.event_queue == QUEUE_URL
    assert announced.sync_interval.seconds == DAY
    assert announced.event_queue_status.state == PENDING


async def test_an_interval_that_is_set_is_kept_with_a_queue_and_unsetting_it_gives_the_default(
    suite: Suite,
) -> None:
    created = await create(suite, with_queue(QUEUE_URL, sync_interval=Duration(seconds=3600)))
    assert created.sync_interval.seconds == 3600
    # 15 minutes set explicitly is not the default: a queue does not lengthen it.
    pinned = await update(
        suite,
        pb.Integration(id=created.id, sync_interval=Duration(seconds=QUARTER)),
        "sync_interval",
    )
    assert pinned.sync_interval.seconds == QUARTER
    unset = await update(suite, pb.Integration(id=created.id), "sync_interval")
    assert unset.sync_interval.seconds == DAY


async def test_setting_a_queue_says_so_with_the_longer_interval_in_one_event_and_no_resync_field(
    suite: Suite,
) -> None:
    created = await create(suite)
    start = await head(suite, created.id)
    queued = await set_queue(suite, created.id, QUEUE_ARN)
    assert queued.discovery_access.event_queue == QUEUE_URL
    assert queued.event_queue_status == pb.EventQueueStatus(state=PENDING)
    assert queued.sync_interval.seconds == DAY
    events = await events_after(suite, start, created.id)
    # Discovery resyncs on `discovery_access` (the role): a queue is named apart.
    assert updates(events) == [
        ["discovery_access.event_queue", "sync_interval", "event_queue_status"]
    ]
    (event,) = events
    assert event.integration_updated.after == queued

    cleared = await set_queue(suite, created.id, "")
    assert cleared.discovery_access.event_queue == ""
    assert cleared.event_queue_status == pb.EventQueueStatus(state=NOT_CONFIGURED)
    assert cleared.sync_interval.seconds == QUARTER


async def test_a_queue_can_be_set_with_the_whole_discovery_access_and_is_cleared_by_leaving_it_out(
    suite: Suite,
) -> None:
    created = await create(suite)
    access = pb.AwsDiscoveryAccess()
    access.CopyFrom(created.discovery_access)
    access.event_queue = QUEUE_URL
    queued = await update(
        suite, pb.Integration(id=created.id, discovery_access=access), "discovery_access"
    )
    assert queued.discovery_access.event_queue == QUEUE_URL
    access.ClearField("event_queue")
    cleared = await update(
        suite, pb.Integration(id=created.id, discovery_access=access), "discovery_access"
    )
    assert cleared.discovery_access.event_queue == ""


async def test_the_status_is_output_only(suite: Suite) -> None:
    created = await create(suite, with_queue(QUEUE_URL))
    given = pb.Integration(id=created.id, event_queue_status=pb.EventQueueStatus(state=FOLLOWING))
    for path in ("event_queue_status", "event_queue_status.state"):
        refused = await fails(update(suite, given, path))
        assert (refused.code, refused.fields) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            ["update_mask.paths[0]"],
        )


# -- discovery's reports ------------------------------------------------------------------------


async def test_a_report_becomes_the_status_once_with_one_event_and_leaves_the_tree_alone(
    suite: Suite,
) -> None:
    created = await create(suite, with_queue(QUEUE_URL))
    applied = await apply(suite, created.id, BASE)
    before = await connections(suite, created.id)
    start = await head(suite, created.id)

    following = await report(suite, created.id, FOLLOWING)
    assert following.outcome == tree_pb.APPLY_OUTCOME_EVENT_QUEUE_STATUS_RECORDED
    status = following.integration.event_queue_status
    assert (status.state, status.reason, status.message) == (FOLLOWING, "", "")
    assert status.update_time.seconds > 0
    assert following.generation == applied.generation
    assert following.summary.events_emitted == 1
    assert await get(suite, created.id) == following.integration

    again = await report(suite, created.id, FOLLOWING)  # recorded once
    assert again.outcome == tree_pb.APPLY_OUTCOME_EVENT_QUEUE_STATUS_RECORDED
    assert again.summary.events_emitted == 0
    assert again.integration == following.integration

    failing = await report(
        suite, created.id, FAILING, "EVENT_QUEUE_ACCESS_DENIED", "the role may not read it"
    )
    status = failing.integration.event_queue_status
    assert (status.state, status.reason, status.message) == (
        FAILING,
        "EVENT_QUEUE_ACCESS_DENIED",
        "the role may not read it",
    )
    assert failing.integration.state == pb.INTEGRATION_STATE_ENABLED  # syncs go on
    events = await events_after(suite, start, created.id)
    assert updates(events) == [["event_queue_status"], ["event_queue_status"]]
    assert await connections(suite, created.id) == before


async def test_a_changed_queue_is_pending_again_and_a_removed_one_not_configured(
    suite: Suite,
) -> None:
    created = await create(suite, with_queue(QUEUE_URL))
    await report(suite, created.id, FAILING, "EVENT_QUEUE_NOT_FOUND", "gone")
    changed = await set_queue(suite, created.id, OTHER_URL)
    assert changed.event_queue_status == pb.EventQueueStatus(state=PENDING)
    await report(suite, created.id, FOLLOWING)
    removed = await set_queue(suite, created.id, "")
    assert removed.event_queue_status == pb.EventQueueStatus(state=NOT_CONFIGURED)


async def test_a_report_for_an_integration_without_a_queue_is_ignored(suite: Suite) -> None:
    created = await create(suite)
    start = await head(suite, created.id)
    ignored = await report(suite, created.id, FAILING, "EVENT_QUEUE_NOT_FOUND", "removed")
    assert ignored.outcome == tree_pb.APPLY_OUTCOME_UNCHANGED
    assert ignored.integration.event_queue_status == pb.EventQueueStatus(state=NOT_CONFIGURED)
    assert await events_after(suite, start, created.id) == []


async def test_only_system_callers_report_on_the_queue(suite: Suite) -> None:
    created = await create(suite, with_queue(QUEUE_URL))
    for who in (OWNER, MEMBER):
        denied = await fails(report(suite, created.id, FOLLOWING, metadata=who))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert (await get(suite, created.id)).event_queue_status.state == PENDING


@pytest.mark.parametrize(
    ("state", "reason", "message", "field"),
    [
        (pb.EVENT_QUEUE_STATE_UNSPECIFIED, "", "", "event_queue_status.state"),
        (PENDING, "", "", "event_queue_status.state"),
        (NOT_CONFIGURED, "", "", "event_queue_status.state"),
        (99, "", "", "event_queue_status.state"),
        (FAILING, "", "no reason", "event_queue_status.reason"),
        (FAILING, "not snake", "", "event_queue_status.reason"),
        (FOLLOWING, "EVENT_QUEUE_NOT_FOUND", "", "event_queue_status.reason"),
        (FOLLOWING, "", "all is well", "event_queue_status.message"),
    ],
)
async def test_a_malformed_report_is_invalid_naming_the_field_and_changes_nothing(
    suite: Suite, state: Any, reason: str, message: str, field: str
) -> None:
    created = await create(suite, with_queue(QUEUE_URL))
    refused = await fails(report(suite, created.id, state, reason, message))
    assert (refused.code, refused.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    assert await get(suite, created.id) == created


# -- the template that creates the rule and queue ---------------------------------------------


async def render(suite: Suite, **kw: Any) -> rpc.RenderRoleTemplateResponse:
    reply: rpc.RenderRoleTemplateResponse = await suite.integrations.RenderRoleTemplate(
        rpc.RenderRoleTemplateRequest(**kw), metadata=OWNER
    )
    return reply


def resource_types(template: str) -> list[str]:
    parsed = yaml.load(template, Loader=CloudFormationLoader)
    return sorted(r["Type"] for r in parsed["Resources"].values())


async def test_the_discovery_template_with_event_queue_adds_the_rule_and_queues_and_lints_clean(
    suite: Suite,
) -> None:
    created = await create(suite)
    plain = await render(
        suite, kind=rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE, integration_id=created.id
    )
    queued = await render(
        suite,
        kind=rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE,
        integration_id=created.id,
        event_queue=True,
    )
    assert resource_types(plain.template_yaml) == ["AWS::IAM::Role"]
    assert resource_types(queued.template_yaml) == [
        "AWS::Events::Rule",
        "AWS::IAM::Role",
        "AWS::SQS::Queue",
        "AWS::SQS::Queue",
        "AWS::SQS::QueuePolicy",
    ]
    assert "discovery_access.event_queue" in queued.template_yaml
    assert [str(m) for m in cfnlint.api.lint(queued.template_yaml, regions=["us-east-1"])] == []


async def test_the_event_queue_option_is_for_the_discovery_role_only(suite: Suite) -> None:
    refused = await fails(
        render(
            suite,
            kind=rpc.ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET,
            role_name="canopy-member",
            external_id="t_acme:abcd1234",
            event_queue=True,
        )
    )
    assert (refused.code, refused.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["event_queue"])
    assert "DISCOVERY_ROLE" in refused.message


@pytest.mark.parametrize(
    "integration_settings",
    [{"trusted_account_id": TRUSTED_ACCOUNT_ID, "aws_partition": "aws-cn"}],
)
async def test_the_event_queue_option_is_refused_where_canopy_cannot_follow_events(
    suite: Suite,
) -> None:
    refused = await fails(
        render(
            suite,
            kind=rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE,
            role_name="canopy-discovery",
            external_id="t_acme:abcd1234",
            event_queue=True,
        )
    )
    assert (refused.fields, refused.reason) == (["event_queue"], "UNSUPPORTED_PARTITION")
