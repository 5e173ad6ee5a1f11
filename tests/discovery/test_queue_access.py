"""TestDiscoveryAccess and its event queue: what the discovery role finds of the queue, with a
real moto server (SQS, EventBridge and CloudFormation) and the fault proxy for what moto does not
enforce (IAM: a role that may not read the queue)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import boto3  # type: ignore[import-untyped]
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy_core.event_queues import parse_event_queue
from canopy_discovery import access
from canopy_discovery.aws import AwsSettings
from canopy_discovery.queue_access import QueueCheck
from tests.awsfaults import FaultProxy, Rule
from tests.discovery.conftest import CREDENTIALS, DISCOVERY_ROLE, EXTERNAL_ID, Org
from tests.discovery.stack import Stack, create, start_stack
from tests.helpers import error_details
from tests.integration.conftest import MEMBER, OWNER

ACCOUNT = "123456789012"  # moto's, where DISCOVERY_ROLE is


def sqs(url: str) -> Any:
    return boto3.client("sqs", endpoint_url=url, region_name="us-east-1", **CREDENTIALS)


def make_queue(url: str, name: str = "canopy-org-events", *, dead_letter: bool = True) -> str:
    """A queue in moto (with a dead-letter queue after 5 receives); its canonical URL."""
    client = sqs(url)
    attributes = {}
    if dead_letter:
        made = client.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        arn = client.get_queue_attributes(QueueUrl=made, AttributeNames=["QueueArn"])
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": 5}
        )
    client.create_queue(QueueName=name, Attributes=attributes)
    return f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{name}"


async def check(
    aws: AwsSettings, queue_url: str, role: str = DISCOVERY_ROLE
) -> access.AccessResult:
    return access.with_queue_check(
        await access.test_discovery_access(aws, role, EXTERNAL_ID, queue_url)
    )


# The check itself


async def test_a_readable_queue_with_a_dead_letter_queue_is_ok(aws: AwsSettings, org: Org) -> None:
    url = make_queue(aws.endpoint_url or "")
    result = await check(aws, url)
    assert result.ok
    assert result.event_queue == QueueCheck(
        queue_url=url,
        ok=True,
        queue_arn=f"arn:aws:sqs:us-east-1:{ACCOUNT}:canopy-org-events",
        dead_letter_queue_arn=f"arn:aws:sqs:us-east-1:{ACCOUNT}:canopy-org-events-dlq",
        max_receive_count=5,
    )


async def test_a_queue_without_a_dead_letter_queue_is_ok_with_a_warning(
    aws: AwsSettings, org: Org
) -> None:
    url = make_queue(aws.endpoint_url or "", dead_letter=False)
    result = await check(aws, url)
    assert result.ok
    assert result.event_queue is not None
    assert (result.event_queue.ok, result.event_queue.reason) == (
        True,
        "EVENT_QUEUE_NO_DEAD_LETTER_QUEUE",
    )
    assert "redrive policy" in result.event_queue.message


async def test_a_missing_queue_fails_the_test_saying_it_does_not_exist(
    aws: AwsSettings, org: Org
) -> None:
    url = f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/never-made"
    result = await check(aws, url)
    assert (result.ok, result.reason) == (False, "EVENT_QUEUE")
    assert result.organization_id == org.id  # the role itself works
    assert result.event_queue is not None
    assert (result.event_queue.ok, result.event_queue.reason) == (False, "EVENT_QUEUE_NOT_FOUND")
    assert "does not exist" in result.message


async def test_a_queue_the_role_may_not_read_says_access_denied_and_what_the_role_needs(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    url = make_queue(proxy.upstream)
    # moto does not enforce IAM: the proxy answers as SQS does to a role without the permission.
    proxy.add(
        Rule(
            service="sqs",
            operation="GetQueueAttributes",
            role_arn=DISCOVERY_ROLE,
            error="com.amazon.coral.service#AccessDeniedException",
            query_error="AccessDenied",
            status=403,
            message=(
                f"User: arn:aws:sts::{ACCOUNT}:assumed-role/canopy-discovery/canopy-discovery is "
                "not authorized to perform: sqs:getqueueattributes on resource: "
                f"arn:aws:sqs:us-east-1:{ACCOUNT}:canopy-org-events because no identity-based "
                "policy allows the sqs:getqueueattributes action"
            ),
        )
    )
    result = await check(proxied, url)
    assert (result.ok, result.reason) == (False, "EVENT_QUEUE")
    queue = result.event_queue
    assert queue is not None
    assert (queue.ok, queue.reason) == (False, "EVENT_QUEUE_ACCESS_DENIED")
    assert "sqs:ReceiveMessage" in queue.message
    assert f"arn:aws:sqs:us-east-1:{ACCOUNT}:canopy-org-events" in queue.message
    assert "not authorized" in queue.message  # AWS's own words


async def test_a_queue_in_another_account_than_the_role_is_named_without_asking_sqs(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    result = await check(proxied, "https://sqs.us-east-1.amazonaws.com/222222222222/events")
    assert (result.ok, result.reason) == (False, "EVENT_QUEUE")
    assert result.event_queue is not None
    assert result.event_queue.reason == "EVENT_QUEUE_OTHER_ACCOUNT"
    assert "222222222222" in result.event_queue.message
    assert ACCOUNT in result.event_queue.message
    assert proxy.counts["GetQueueAttributes"] == 0


async def test_with_a_role_that_cannot_be_assumed_the_queue_is_not_checked(
    proxy: FaultProxy, proxied: AwsSettings, org: Org
) -> None:
    url = make_queue(proxy.upstream)
    proxy.add(Rule(operation="AssumeRole", role_arn=DISCOVERY_ROLE, error="AccessDenied"))
    result = await check(proxied, url)
    assert (result.ok, result.reason) == (False, "ASSUME_ROLE_DENIED")  # the first problem
    assert result.event_queue is not None
    assert result.event_queue.reason == "EVENT_QUEUE_NOT_CHECKED"
    assert proxy.counts["GetQueueAttributes"] == 0


async def test_a_queue_stored_before_the_deployment_changed_partition_is_named_not_followed(
    aws: AwsSettings, org: Org
) -> None:
    china = replace(aws, partition="aws-cn")
    role = "arn:aws-cn:iam::123456789012:role/canopy-discovery"
    result = await access.test_discovery_access(
        china, role, EXTERNAL_ID, f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/events"
    )
    assert result.event_queue is not None
    assert (result.event_queue.ok, result.event_queue.reason) == (False, "EVENT_QUEUE_ERROR")
    assert "partition 'aws'" in result.event_queue.message


# Over gRPC, for an integration and for access not saved yet


@pytest.fixture
async def stack(service_env: dict[str, Any], proxy: FaultProxy) -> AsyncIterator[Stack]:
    built = await start_stack(service_env, proxy)
    yield built
    await built.close()


async def test_an_integrations_queue_is_checked_and_reported(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    plain = await create(stack, "aws-plain")
    reply = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(integration_id=plain.id), metadata=MEMBER
    )
    assert reply.ok
    assert not reply.HasField("event_queue")

    url = make_queue(proxy.upstream)
    queued = await create(stack, "aws-queued")
    await stack.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(
                id=queued.id, discovery_access=pb.AwsDiscoveryAccess(event_queue=url)
            ),
            update_mask=FieldMask(paths=["discovery_access.event_queue"]),
        ),
        metadata=OWNER,
    )
    reply = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(integration_id=queued.id), metadata=MEMBER
    )
    assert reply.ok
    assert reply.event_queue == drpc.EventQueueCheck(
        queue_url=url,
        ok=True,
        queue_arn=f"arn:aws:sqs:us-east-1:{ACCOUNT}:canopy-org-events",
        dead_letter_queue_arn=f"arn:aws:sqs:us-east-1:{ACCOUNT}:canopy-org-events-dlq",
        max_receive_count=5,
    )

    sqs(proxy.upstream).delete_queue(QueueUrl=url)
    gone = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(integration_id=queued.id), metadata=MEMBER
    )
    assert not gone.ok
    assert gone.reason == dpb.ACCESS_FAILURE_REASON_EVENT_QUEUE
    assert (gone.event_queue.ok, gone.event_queue.reason) == (False, "EVENT_QUEUE_NOT_FOUND")
    assert gone.organization_id == org.id


async def test_access_not_saved_yet_checks_its_queue_and_refuses_a_malformed_one(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    url = make_queue(proxy.upstream, dead_letter=False)
    arn = parse_event_queue(url, "aws").arn
    reply = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(
            access=pb.AwsDiscoveryAccess(
                role_arn=DISCOVERY_ROLE, external_id=EXTERNAL_ID, event_queue=arn
            )
        ),
        metadata=OWNER,
    )
    assert reply.ok
    assert reply.event_queue.queue_url == url
    assert reply.event_queue.reason == "EVENT_QUEUE_NO_DEAD_LETTER_QUEUE"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.discovery.TestDiscoveryAccess(
            drpc.TestDiscoveryAccessRequest(
                access=pb.AwsDiscoveryAccess(
                    role_arn=DISCOVERY_ROLE,
                    external_id=EXTERNAL_ID,
                    event_queue=f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/events",
                )
            ),
            metadata=OWNER,
        )
    refused = error_details(caught.value)
    assert (refused.code, refused.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["access.event_queue"],
    )
    assert proxy.counts["AssumeRole"] == 1  # only the first call reached AWS


# The template's stack, deployed in moto's CloudFormation


@pytest.mark.filterwarnings(
    # moto's CloudFormation creates every resource of the template but the queue policy.
    "ignore:Tried to parse AWS..SQS..QueuePolicy:UserWarning"
)
async def test_the_templates_stack_sends_organization_changes_to_a_queue_the_role_can_follow(
    stack: Stack, org: Org, proxy: FaultProxy
) -> None:
    rendered = await stack.integrations.RenderRoleTemplate(
        rpc.RenderRoleTemplateRequest(
            kind=rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE,
            role_name="canopy-discovery",
            external_id=EXTERNAL_ID,
            event_queue=True,
        ),
        metadata=OWNER,
    )
    endpoint = {"endpoint_url": proxy.upstream, "region_name": "us-east-1", **CREDENTIALS}
    cloudformation = boto3.client("cloudformation", **endpoint)
    cloudformation.create_stack(
        StackName="canopy",
        TemplateBody=rendered.template_yaml,
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    (deployed,) = cloudformation.describe_stacks(StackName="canopy")["Stacks"]
    assert deployed["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in deployed["Outputs"]}
    assert outputs["RoleArn"] == DISCOVERY_ROLE

    queued = await create(stack, "aws-queued")
    updated = await stack.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(
                id=queued.id,
                discovery_access=pb.AwsDiscoveryAccess(event_queue=outputs["QueueUrl"]),
            ),
            update_mask=FieldMask(paths=["discovery_access.event_queue"]),
        ),
        metadata=OWNER,
    )
    assert updated.integration.discovery_access.event_queue == outputs["QueueUrl"]
    reply = await stack.discovery.TestDiscoveryAccess(
        drpc.TestDiscoveryAccessRequest(integration_id=queued.id), metadata=MEMBER
    )
    assert reply.ok
    assert (reply.event_queue.ok, reply.event_queue.reason) == (True, "")
    assert reply.event_queue.max_receive_count == 5

    # moto accepts `aws.*` sources from PutEvents (AWS does not), so it can play CloudTrail.
    events = boto3.client("events", **endpoint)
    for name, failed in (("MoveAccount", False), ("ListAccounts", False), ("MoveAccount", True)):
        detail = {"eventSource": "organizations.amazonaws.com", "eventName": name}
        if failed:
            detail["errorCode"] = "AccessDenied"
        events.put_events(
            Entries=[
                {
                    "Source": "aws.organizations",
                    "DetailType": "AWS API Call via CloudTrail",
                    "Detail": json.dumps(detail),
                }
            ]
        )
    received = sqs(proxy.upstream).receive_message(
        QueueUrl=outputs["QueueUrl"], MaxNumberOfMessages=10, WaitTimeSeconds=1
    )
    bodies = [json.loads(m["Body"]) for m in received.get("Messages", [])]
    assert [(b["source"], b["detail"]["eventName"]) for b in bodies] == [
        ("aws.organizations", "MoveAccount")
    ]
