"""The discovery service's records: sync runs and their progress."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

# The events a run lists (it counts them all).
MAX_COVERED_EVENTS = 100
# The refused OUs a run lists (it counts them all).
MAX_REFUSED_UNITS = 100


class RunState(enum.Enum):
    """Where a sync run stands."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    NEEDS_CONFIRMATION = "NEEDS_CONFIRMATION"
    CANCELLED = "CANCELLED"

    @property
    def active(self) -> bool:
        """Queued or running: the integration's one live run."""
        return self in (RunState.QUEUED, RunState.RUNNING)


class Trigger(enum.Enum):
    """Why a run was started."""

    CREATED = "CREATED"
    SCHEDULE = "SCHEDULE"
    SETTINGS_CHANGED = "SETTINGS_CHANGED"
    MANUAL = "MANUAL"
    RECONCILED = "RECONCILED"
    ORGANIZATION_EVENTS = "ORGANIZATION_EVENTS"


@dataclass(frozen=True)
class Progress:
    """What a crawl has done so far."""

    organizational_units_found: int = 0
    accounts_found: int = 0
    api_calls: int = 0
    throttled_calls: int = 0
    elapsed_seconds: float = 0.0
    # The outermost OUs the credentials were refused on (their subtrees are not visible): how
    # many, and the first MAX_REFUSED_UNITS of their ids.
    organizational_units_refused: int = 0
    refused_organizational_unit_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CoveredEvent:
    """One organization change event a run covered."""

    event_id: str
    event_name: str
    entity_id: str
    event_time: datetime


@dataclass(frozen=True)
class SyncRun:
    """One crawl and apply of one integration."""

    id: str
    integration_id: str
    tenant_id: str
    org_id: str | None
    state: RunState
    trigger: Trigger
    confirm_deletions: bool = False
    attempt: int = 0
    progress: Progress = field(default_factory=Progress)
    summary: bytes | None = None  # an ApplySummary message
    apply_outcome: str = ""
    failure_reason: str = ""
    failure_message: str = ""
    organization_id: str = ""
    etag: str = ""
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    update_time: datetime | None = None
    events: tuple[CoveredEvent, ...] = ()  # at most MAX_COVERED_EVENTS of `event_count`
    event_count: int = 0
    full_crawl_reason: str = ""  # a refresh fell back to this full crawl, why

    @property
    def chain(self) -> tuple[str, str | None]:
        """Ids whose roles apply to the run's integration."""
        return (self.tenant_id, self.org_id)


@dataclass(frozen=True)
class Schedule:
    """An integration's place in the schedule."""

    integration_id: str
    tenant_id: str
    org_id: str | None
    interval_seconds: int
    next_run_at: datetime
    active_run_id: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None


@dataclass(frozen=True)
class FollowedQueue:
    """An integration's event queue, as the replica that follows it holds it."""

    integration_id: str
    queue_url: str
    role_arn: str
    external_id: str
    version: int


@dataclass(frozen=True)
class AppliedSnapshot:
    """The last snapshot applied to an integration's tree, and the generation it produced."""

    integration_id: str
    generation: int
    run_id: str
    snapshot: bytes  # a serialized OrganizationSnapshot
