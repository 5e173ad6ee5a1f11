"""What makes an integration's settings valid: its roles and external ids, handle, prefix,
connection settings, interval, deletion guard, crawl limits and discovery filters.

Pure functions: each appends the problems it finds, naming the field under `path`, so a
request's every problem is reported at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from canopy_core.discovery_filters import validate_filters
from canopy_core.errors import FieldViolation
from canopy_core.validation import HANDLE, HANDLE_RULE, Violations
from canopy_integration import aws, event_queue, handles
from canopy_integration.config import validate_config
from canopy_integration.model import Integration

MIN_SYNC_INTERVAL = timedelta(minutes=1)
MAX_SYNC_INTERVAL = timedelta(hours=24)


def validate_access(
    integration: Integration, owner_id: str, partition: str, path: str, found: list[FieldViolation]
) -> str | None:
    """Role ARN (in the deployment's partition), role name, external ids and event queue;
    returns a reason code for an owner mismatch, another partition or another account.

    With no owner (the scope itself is missing) external ids are checked for form only.
    """

    def owner_of(external_id: str) -> str:
        return owner_id or external_id.partition(":")[0]

    reason = None
    problem = aws.role_arn_problem(integration.discovery_role_arn)
    if problem is None:
        problem = aws.partition_problem(integration.discovery_role_arn, partition)
        reason = aws.UNSUPPORTED_PARTITION if problem else None
    if problem:
        found.append(FieldViolation(f"{path}.discovery_access.role_arn", problem))
    description, why = aws.external_id_problem(
        integration.discovery_external_id, owner_of(integration.discovery_external_id)
    )
    if description:
        found.append(FieldViolation(f"{path}.discovery_access.external_id", description))
        reason = why if why == "EXTERNAL_ID_OWNER_MISMATCH" else reason
    problem = aws.role_name_problem(integration.member_role_name)
    if problem:
        found.append(FieldViolation(f"{path}.member_access.role_name", problem))
    if integration.member_external_id:
        description, why = aws.external_id_problem(
            integration.member_external_id, owner_of(integration.member_external_id)
        )
        if description:
            found.append(FieldViolation(f"{path}.member_access.external_id", description))
            reason = why if why == "EXTERNAL_ID_OWNER_MISMATCH" else reason
    queue_reason = event_queue.validate(integration, partition, path, found)
    return reason or queue_reason


def validate_settings(
    integration: Integration,
    path: str,
    found: list[FieldViolation],
    partition: str,
    only: Sequence[str] = (),
) -> None:
    """Handle, prefix, connection settings (regions of `partition`), interval, guard, crawl
    limits and discovery filters."""

    def checking(name: str) -> bool:
        return not only or any(p == name or p.startswith(f"{name}.") for p in only)

    if checking("filters"):
        # Every list, even when the mask names one: an OU may not be both included and
        # excluded, whichever list names it second (the stored lists are valid anyway).
        collected = Violations()
        validate_filters(integration.filters, f"{path}.filters", collected)
        found.extend(collected.found)
    if checking("handle") and not HANDLE.match(integration.handle):
        found.append(FieldViolation(f"{path}.handle", HANDLE_RULE))
    if checking("handle_prefix"):
        problem = handles.prefix_problem(integration.handle_prefix)
        if problem:
            found.append(FieldViolation(f"{path}.handle_prefix", problem))
    if checking("connection_config"):
        collected = Violations()
        validate_config(
            integration.connection_config,
            f"{path}.connection_config",
            collected,
            overrides=False,
            partition=partition,
        )
        found.extend(collected.found)
    interval = integration.sync_interval  # None: the default
    if (
        checking("sync_interval")
        and interval is not None
        and not (MIN_SYNC_INTERVAL <= interval <= MAX_SYNC_INTERVAL)
    ):
        found.append(
            FieldViolation(f"{path}.sync_interval", "must be between 1 minute and 24 hours")
        )
    if checking("max_delete_fraction") and not 0 <= integration.max_delete_fraction <= 1:
        found.append(
            FieldViolation(f"{path}.max_delete_fraction", "must be between 0 (guard off) and 1")
        )
    if checking("crawl_limits"):
        limits = integration.crawl_limits
        if limits.max_concurrency is not None and not 1 <= limits.max_concurrency <= 64:
            found.append(
                FieldViolation(f"{path}.crawl_limits.max_concurrency", "must be between 1 and 64")
            )
        if limits.max_requests_per_second is not None and not (
            0 < limits.max_requests_per_second <= 10_000
        ):
            found.append(
                FieldViolation(
                    f"{path}.crawl_limits.max_requests_per_second",
                    "must be above 0 and at most 10000",
                )
            )
        if limits.crawl_timeout is not None and not (
            timedelta(seconds=10) <= limits.crawl_timeout <= timedelta(hours=1)
        ):
            found.append(
                FieldViolation(
                    f"{path}.crawl_limits.crawl_timeout", "must be between 10 seconds and 1 hour"
                )
            )
