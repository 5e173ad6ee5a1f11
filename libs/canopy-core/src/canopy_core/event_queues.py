"""Event queues: the SQS queue an integration's organization sends its change events to, as
both services read it, and the sync interval a queue lengthens.

AWS Organizations records its calls in CloudTrail in us-east-1 only, on the bus of the account
the call was made in, so the EventBridge rule and its queue live in us-east-1 of the discovery
role's account. Pure functions; patterns are ASCII-only and anchored with `\\Z`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from canopy.integration.v1 import integration_pb2 as pb

EVENTS_REGION = "us-east-1"
# The partitions whose Organizations events Canopy knows where to find.
EVENT_PARTITIONS = ("aws",)

QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}\Z", re.ASCII)
_URL = re.compile(
    r"^https://(?:sqs\.([a-z0-9-]{1,32})\.amazonaws\.com|(queue)\.amazonaws\.com)"
    r"/(\d{12})/([^/]{1,200})\Z",
    re.ASCII,
)
_ARN = re.compile(r"^arn:([a-z-]{1,16}):sqs:([a-z0-9-]{1,32}):(\d{12}):([^:]{1,200})\Z", re.ASCII)

FORM_RULE = (
    f"must be an SQS queue URL (https://sqs.{EVENTS_REGION}.amazonaws.com/<12-digit account>/"
    f"<name>) or ARN (arn:aws:sqs:{EVENTS_REGION}:<12-digit account>:<name>)"
)
NAME_RULE = "must name the queue with 1-80 characters of letters, digits, '-' and '_'"
FIFO_RULE = (
    "names a FIFO queue (.fifo): EventBridge sends to one only with a message group id, which "
    "would also deliver the events one at a time; use a standard queue (RenderRoleTemplate's "
    "event_queue option creates one)"
)

# Scheduled full crawls: the reconciliation of the tree with the organization. Events keep an
# integration with a queue current between them, so its crawls can be far apart.
DEFAULT_SYNC_INTERVAL = timedelta(minutes=15)
DEFAULT_SYNC_INTERVAL_WITH_EVENT_QUEUE = timedelta(hours=24)


@dataclass(frozen=True)
class EventQueue:
    """A parsed event queue: its account and name (region us-east-1, partition `aws`)."""

    account_id: str
    name: str
    partition: str = "aws"

    @property
    def url(self) -> str:
        """The queue's URL, the one form Canopy stores."""
        return f"https://sqs.{EVENTS_REGION}.amazonaws.com/{self.account_id}/{self.name}"

    @property
    def arn(self) -> str:
        """The queue's ARN."""
        return f"arn:{self.partition}:sqs:{EVENTS_REGION}:{self.account_id}:{self.name}"


@dataclass(frozen=True)
class QueueProblem:
    """What is wrong with an event queue; `wrong_partition` when it is the partition."""

    description: str
    wrong_partition: bool = False


def event_queue_problem(value: str, partition: str) -> QueueProblem | None:
    """What is wrong with an event queue's URL or ARN for a deployment serving `partition`, or
    None if it is usable (the account is checked by the caller, against the role's)."""
    if partition not in EVENT_PARTITIONS:
        return QueueProblem(
            f"cannot be followed in partition {partition!r}: Canopy follows AWS Organizations "
            f"events in partition 'aws' ({EVENTS_REGION}) only",
            wrong_partition=True,
        )
    url = _URL.match(value)
    arn = _ARN.match(value)
    if url is not None:
        region = EVENTS_REGION if url.group(2) else url.group(1)
        name = url.group(4)
    elif arn is not None:
        if arn.group(1) != partition:
            return QueueProblem(
                f"is in partition {arn.group(1)!r}; this deployment serves partition "
                f"{partition!r} only (CANOPY_AWS_PARTITION)",
                wrong_partition=True,
            )
        region, name = arn.group(2), arn.group(4)
    else:
        return QueueProblem(FORM_RULE)
    if region != EVENTS_REGION:
        return QueueProblem(
            f"is in region {region!r}: AWS Organizations delivers its events in "
            f"{EVENTS_REGION} only, so the rule and its queue must be there"
        )
    if name.endswith(".fifo"):
        return QueueProblem(FIFO_RULE)
    if not QUEUE_NAME.match(name):
        return QueueProblem(NAME_RULE)
    return None


def parse_event_queue(value: str, partition: str) -> EventQueue:
    """The queue a URL or ARN names; raises ValueError when `event_queue_problem` finds one."""
    problem = event_queue_problem(value, partition)
    if problem is not None:
        raise ValueError(f"event queue {value!r} {problem.description}")
    found = _URL.match(value)
    if found is not None:
        return EventQueue(found.group(3), found.group(4), partition)
    found = _ARN.match(value)
    assert found is not None
    return EventQueue(found.group(3), found.group(4), partition)


def effective_sync_interval(configured: timedelta | None, has_event_queue: bool) -> timedelta:
    """The interval of scheduled full crawls: the configured one, else the default (longer
    with an event queue)."""
    if configured is not None:
        return configured
    return DEFAULT_SYNC_INTERVAL_WITH_EVENT_QUEUE if has_event_queue else DEFAULT_SYNC_INTERVAL


def sync_interval_seconds(integration: pb.Integration) -> int:
    """The seconds between an integration's scheduled crawls, from its message (which carries
    the interval in effect; one without it, the default)."""
    configured = (
        integration.sync_interval.ToTimedelta() if integration.HasField("sync_interval") else None
    )
    interval = effective_sync_interval(
        configured or None, bool(integration.discovery_access.event_queue)
    )
    return int(interval.total_seconds())
