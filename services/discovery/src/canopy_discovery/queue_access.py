"""Can the discovery role follow its event queue? One GetQueueAttributes with the role's
credentials, and what each answer means, as UPPER_SNAKE codes shared with the integration's
`event_queue_status.reason`.

The queue must be in us-east-1 (Organizations delivers its events there only) and in the role's
account (the rule sees the calls recorded in its own account). A queue without a redrive policy
can be followed, but a message that keeps failing is then received again until it expires: a
warning, not a failure.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace
from typing import Any

from canopy_core.event_queues import EVENTS_REGION, EventQueue
from canopy_discovery.aws import (
    UNREACHABLE,
    AwsSettings,
    classify,
    create_client,
    error_code,
    is_access_denied,
)

EVENT_QUEUE_NOT_FOUND = "EVENT_QUEUE_NOT_FOUND"
EVENT_QUEUE_ACCESS_DENIED = "EVENT_QUEUE_ACCESS_DENIED"
EVENT_QUEUE_OTHER_ACCOUNT = "EVENT_QUEUE_OTHER_ACCOUNT"
EVENT_QUEUE_NOT_CHECKED = "EVENT_QUEUE_NOT_CHECKED"
EVENT_QUEUE_UNREACHABLE = "EVENT_QUEUE_UNREACHABLE"
EVENT_QUEUE_ERROR = "EVENT_QUEUE_ERROR"
EVENT_QUEUE_NO_DEAD_LETTER_QUEUE = "EVENT_QUEUE_NO_DEAD_LETTER_QUEUE"  # a warning

# SQS's JSON protocol answers `QueueDoesNotExist`; botocore reports the awsQuery code from the
# x-amzn-query-error header when there is one, and moto speaks the query form.
NOT_FOUND_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
READ_ACTIONS = (
    "sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes and sqs:ChangeMessageVisibility"
)
CALL_TIMEOUT = 15.0


@dataclass(frozen=True)
class QueueCheck:
    """What the discovery role found of its event queue."""

    queue_url: str
    ok: bool
    reason: str = ""  # a failure, or with ok a warning
    message: str = ""
    queue_arn: str = ""
    dead_letter_queue_arn: str = ""
    max_receive_count: int = 0


def queue_failure(error: BaseException, queue: EventQueue) -> tuple[str, str]:
    """The reason code and message of a failed SQS call on the queue."""
    code = error_code(error)
    if code in NOT_FOUND_CODES:
        return EVENT_QUEUE_NOT_FOUND, (
            f"the queue {queue.url} does not exist (or was deleted): create it with "
            "RenderRoleTemplate's event_queue option, or correct discovery_access.event_queue"
        )
    if is_access_denied(error):
        return EVENT_QUEUE_ACCESS_DENIED, (
            f"the discovery role may not read the queue {queue.url}: its policy needs "
            f"{READ_ACTIONS} on {queue.arn} ({classify(error).message})"
        )
    failure = classify(error)
    if failure.reason == UNREACHABLE:
        return EVENT_QUEUE_UNREACHABLE, failure.message
    return EVENT_QUEUE_ERROR, failure.message


def not_checked(queue: EventQueue, why: str) -> QueueCheck:
    """The check of a queue that could not be read: the role itself failed."""
    return QueueCheck(queue.url, ok=False, reason=EVENT_QUEUE_NOT_CHECKED, message=why)


def other_account(queue: EventQueue, role_account: str, seen_in: str | None = None) -> QueueCheck:
    """The check of a queue that is not in the discovery role's account."""
    return QueueCheck(
        queue.url,
        ok=False,
        reason=EVENT_QUEUE_OTHER_ACCOUNT,
        message=(
            f"the queue is in account {seen_in or queue.account_id}, the discovery role in "
            f"account {role_account}: the EventBridge rule only sees the organization's calls "
            "recorded in its own account, so the rule and its queue go in the discovery role's "
            f"account, in {EVENTS_REGION}"
        ),
    )


async def check_event_queue(
    session: Any, aws: AwsSettings, queue: EventQueue, role_account: str
) -> QueueCheck:
    """Read the queue's ARN and redrive policy with the discovery role's `session`."""
    if queue.account_id != role_account:
        return other_account(queue, role_account)
    try:
        async with asyncio.timeout(2 * CALL_TIMEOUT):
            # The queue's own region, whatever region discovery calls other services in.
            where = replace(aws, region=EVENTS_REGION)
            async with create_client(session, "sqs", where, call_timeout=CALL_TIMEOUT) as sqs:
                answer = await sqs.get_queue_attributes(
                    QueueUrl=queue.url, AttributeNames=["QueueArn", "RedrivePolicy"]
                )
    except Exception as error:
        reason, message = queue_failure(error, queue)
        return QueueCheck(queue.url, ok=False, reason=reason, message=message)
    attributes: dict[str, str] = answer.get("Attributes", {})
    arn = attributes.get("QueueArn", "")
    seen_in = arn.split(":")[4] if arn.count(":") == 5 else ""
    if seen_in and seen_in != role_account:
        return replace(other_account(queue, role_account, seen_in), queue_arn=arn)
    dead_letter, receives = _redrive(attributes.get("RedrivePolicy", ""))
    found = QueueCheck(
        queue.url,
        ok=True,
        queue_arn=arn,
        dead_letter_queue_arn=dead_letter,
        max_receive_count=receives,
    )
    if dead_letter:
        return found
    return replace(
        found,
        reason=EVENT_QUEUE_NO_DEAD_LETTER_QUEUE,
        message=(
            "the queue has no redrive policy: a message discovery keeps failing on is received "
            "again and again until it expires; give it a dead-letter queue (maxReceiveCount "
            "about 5), as RenderRoleTemplate's event_queue option does"
        ),
    )


def _redrive(policy: str) -> tuple[str, int]:
    """The dead-letter queue's ARN and the receive count of a RedrivePolicy ("", 0 if none)."""
    try:
        parsed = json.loads(policy) if policy else {}
        return str(parsed.get("deadLetterTargetArn", "")), int(parsed.get("maxReceiveCount", 0))
    except (ValueError, TypeError, AttributeError):
        return "", 0
