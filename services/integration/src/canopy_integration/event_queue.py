"""An integration's event queue: checking and normalising the queue a user gives, keeping its
status in step with it, and recording what discovery reports of it.

The queue is stored as its URL whatever form was given (URL, legacy URL or ARN), so that one
queue has one value: a change of form is no change, and discovery reads one form. Its status is
NOT_CONFIGURED without a queue and PENDING from when one is set or changed until discovery
reports FOLLOWING or FAILING; a database constraint keeps the first half true.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg

from canopy_core.errors import FieldViolation, InvalidArgument
from canopy_core.event_queues import event_queue_problem, parse_event_queue
from canopy_core.eventlog import EventLog
from canopy_integration import aws, store
from canopy_integration.events import TreeEvents
from canopy_integration.model import (
    EventQueueReport,
    EventQueueState,
    EventQueueStatus,
    Integration,
)

ACCOUNT_MISMATCH = "EVENT_QUEUE_ACCOUNT_MISMATCH"
REPORT_REASON = re.compile(r"^[A-Z][A-Z0-9_]{0,63}\Z", re.ASCII)
MAX_MESSAGE = 2000
# The states discovery reports; the other two are the integration's own.
REPORTED_STATES = frozenset({EventQueueState.FOLLOWING, EventQueueState.FAILING})


def validate(
    integration: Integration, partition: str, path: str, found: list[FieldViolation]
) -> str | None:
    """Problems of the integration's event queue, if it has one; returns
    `EVENT_QUEUE_ACCOUNT_MISMATCH` when it is well-formed but not in the discovery role's
    account (the rule must be where the organization's calls are recorded)."""
    if not integration.event_queue:
        return None
    field = f"{path}.discovery_access.event_queue"
    problem = event_queue_problem(integration.event_queue, partition)
    if problem is not None:
        found.append(FieldViolation(field, problem.description))
        return aws.UNSUPPORTED_PARTITION if problem.wrong_partition else None
    if aws.role_arn_problem(integration.discovery_role_arn) is not None:
        return None  # reported on the role; nothing to compare with
    queue = parse_event_queue(integration.event_queue, partition)
    role_account = aws.parse_role_arn(integration.discovery_role_arn).account_id
    if queue.account_id == role_account:
        return None
    found.append(
        FieldViolation(
            field,
            f"is in account {queue.account_id}, but the discovery role is in account "
            f"{role_account}: AWS Organizations records its calls in the account that makes "
            "them (the management or delegated administrator account), so the EventBridge "
            "rule and its queue go in the discovery role's account, in us-east-1 "
            "(RenderRoleTemplate's event_queue option creates them there)",
        )
    )
    return ACCOUNT_MISMATCH


def normalized(before: Integration | None, after: Integration, partition: str) -> Integration:
    """`after` with its queue as a URL, and its status reset if the queue was set, changed or
    removed since `before` (None: a new integration). Call once `validate` found nothing."""
    if before is not None and after.event_queue == before.event_queue:
        return after  # as stored: not parsed again
    url = parse_event_queue(after.event_queue, partition).url if after.event_queue else ""
    after = replace(after, event_queue=url)
    if before is not None and before.event_queue == url:
        return after  # the same queue, in another form
    state = EventQueueState.PENDING if url else EventQueueState.NOT_CONFIGURED
    return replace(after, event_queue_status=EventQueueStatus(state=state))


def check_report(report: EventQueueReport) -> None:
    """INVALID_ARGUMENT naming what is wrong with a report from discovery."""
    field = "event_queue_status"
    if report.state not in REPORTED_STATES:
        raise InvalidArgument.field(
            f"{field}.state", "must be EVENT_QUEUE_STATE_FOLLOWING or EVENT_QUEUE_STATE_FAILING"
        )
    if report.state is EventQueueState.FAILING and not REPORT_REASON.match(report.reason):
        raise InvalidArgument.field(f"{field}.reason", "must be an UPPER_SNAKE code")
    if report.state is EventQueueState.FOLLOWING:
        for name in ("reason", "message"):
            if getattr(report, name):
                raise InvalidArgument.field(f"{field}.{name}", "must be empty unless FAILING")


async def record_report(
    log: EventLog, conn: asyncpg.Connection, integration: Integration, report: EventQueueReport
) -> Integration | None:
    """Store a checked report as the integration's status, with an IntegrationUpdated event if
    it differs; the integration afterwards, or None when it has no queue (the report is about
    one removed meanwhile, and ignored)."""
    if not integration.event_queue:
        return None
    assert report.state is not None
    current = integration.event_queue_status
    message = report.message[:MAX_MESSAGE]
    if (current.state, current.reason, current.message) == (report.state, report.reason, message):
        return integration
    status = EventQueueStatus(report.state, report.reason, message, datetime.now(UTC))
    saved = await store.save_integration(conn, replace(integration, event_queue_status=status))
    events = TreeEvents(saved)
    events.integration_updated(integration, saved, ("event_queue_status",))
    await log.append(conn, events.events)
    return saved
