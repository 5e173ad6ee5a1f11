"""The integration service's domain records: integrations, folders, connections, snapshots.

Frozen dataclasses, no I/O; `api.py` translates them to and from protobuf, `store.py` to and
from rows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import NamedTuple

from canopy_core.discovery_filters import NO_FILTERS, DiscoveryFilters
from canopy_core.event_queues import effective_sync_interval


class IntegrationState(enum.Enum):
    """Where an integration stands: created, synced, failing, or paused by its plan."""

    PENDING = "PENDING"
    ENABLED = "ENABLED"
    ERROR = "ERROR"
    SUSPENDED = "SUSPENDED"


class EventQueueState(enum.Enum):
    """Whether discovery follows an integration's event queue."""

    NOT_CONFIGURED = "NOT_CONFIGURED"
    PENDING = "PENDING"
    FOLLOWING = "FOLLOWING"
    FAILING = "FAILING"


class FolderKind(enum.Enum):
    """What a folder mirrors."""

    ROOT = "ROOT"
    ORGANIZATIONAL_UNIT = "ORGANIZATIONAL_UNIT"


class DeletionReason(enum.Enum):
    """Why a folder or connection was deleted."""

    REMOVED_FROM_ORGANIZATION = "REMOVED_FROM_ORGANIZATION"
    ACCOUNT_NOT_ACTIVE = "ACCOUNT_NOT_ACTIVE"
    ORGANIZATION_CHANGED = "ORGANIZATION_CHANGED"
    INTEGRATION_DELETED = "INTEGRATION_DELETED"


class PermissionsMode(enum.Enum):
    """The grants an integration's root folder starts with."""

    NONE = "NONE"
    ALL_WORKSPACES = "ALL_WORKSPACES"
    ALL_ORGS = "ALL_ORGS"
    SPECIFIC = "SPECIFIC"


@dataclass(frozen=True)
class Scope:
    """The owner of an integration: a tenant, or one of its orgs (`org_id` set)."""

    tenant_id: str
    org_id: str | None = None

    @property
    def owner_id(self) -> str:
        """The org for org-scoped integrations, else the tenant."""
        return self.org_id or self.tenant_id

    @property
    def chain(self) -> tuple[str, str | None]:
        """Ids whose roles apply to the scope (a tenant role covers its orgs)."""
        return (self.tenant_id, self.org_id)


@dataclass(frozen=True)
class Grantee:
    """Who a grant is for: exactly one of a tenant, an org or a workspace."""

    tenant_id: str | None = None
    org_id: str | None = None
    workspace_id: str | None = None


@dataclass(frozen=True)
class RootFolderPermissions:
    """The grants requested for a new integration's root folder."""

    mode: PermissionsMode = PermissionsMode.NONE
    grantees: tuple[Grantee, ...] = ()


@dataclass(frozen=True)
class ConnectionConfig:
    """Connection settings, every one optional: on an integration, unset means the default;
    on a connection, set means it overrides the integration's."""

    regions: tuple[str, ...] | None = None
    default_region: str | None = None
    max_error_retry_attempts: int | None = None
    min_error_retry_delay_ms: int | None = None
    ignore_error_codes: tuple[str, ...] | None = None
    ignore_error_messages: tuple[str, ...] | None = None
    endpoint_url: str | None = None
    s3_force_path_style: bool | None = None

    def set_fields(self) -> tuple[str, ...]:
        """Names of the fields that are set, in declaration order."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name) is not None)


CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ConnectionConfig))

DEFAULT_CONFIG = ConnectionConfig(
    regions=("*",),
    default_region=None,
    max_error_retry_attempts=9,
    min_error_retry_delay_ms=25,
    ignore_error_codes=(),
    ignore_error_messages=(),
    endpoint_url=None,
    s3_force_path_style=False,
)


@dataclass(frozen=True)
class EffectiveConfig:
    """The settings and credentials a connection ends up with."""

    regions: tuple[str, ...]
    default_region: str
    max_error_retry_attempts: int
    min_error_retry_delay_ms: int
    ignore_error_codes: tuple[str, ...]
    ignore_error_messages: tuple[str, ...]
    endpoint_url: str
    s3_force_path_style: bool
    role_arn: str
    external_id: str
    overridden_fields: tuple[str, ...]


@dataclass(frozen=True)
class CrawlLimits:
    """Per-integration crawl limits; unset fields take discovery's defaults."""

    max_concurrency: int | None = None
    max_requests_per_second: float | None = None
    crawl_timeout: timedelta | None = None


@dataclass(frozen=True)
class EventQueueStatus:
    """What discovery last reported of an integration's event queue (NOT_CONFIGURED without
    one, PENDING until discovery reports on a new one)."""

    state: EventQueueState = EventQueueState.NOT_CONFIGURED
    reason: str = ""
    message: str = ""
    update_time: datetime | None = None


@dataclass(frozen=True)
class EventQueueReport:
    """What discovery says of an integration's queue (an ApplyDiscoverySnapshot outcome)."""

    state: EventQueueState | None  # None: a state discovery may not report
    reason: str
    message: str


@dataclass(frozen=True)
class Integration:
    """An AWS Organization linked at tenant or org scope."""

    id: str
    scope: Scope
    handle: str
    discovery_role_arn: str
    discovery_external_id: str
    member_role_name: str
    member_external_id: str = ""
    handle_prefix: str = ""
    connection_config: ConnectionConfig = field(default_factory=ConnectionConfig)
    sync_interval: timedelta | None = None  # None: the default (see effective_sync_interval)
    max_delete_fraction: float = 0.5
    crawl_limits: CrawlLimits = field(default_factory=CrawlLimits)
    state: IntegrationState = IntegrationState.PENDING
    state_reason: str = ""
    state_message: str = ""
    root_folder_id: str = ""
    organization_id: str = ""
    management_account_id: str = ""
    tree_generation: int = 0
    event_queue: str = ""  # the queue's URL; empty: none
    event_queue_status: EventQueueStatus = field(default_factory=EventQueueStatus)
    filters: DiscoveryFilters = NO_FILTERS
    exclude_management_account: bool = False
    unmatched_filters: DiscoveryFilters = NO_FILTERS  # what the last full crawl did not find
    etag: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None

    @property
    def effective_sync_interval(self) -> timedelta:
        """The interval of scheduled crawls in effect: the one set, else the default."""
        return effective_sync_interval(self.sync_interval, bool(self.event_queue))


@dataclass(frozen=True)
class Folder:
    """The root folder or one organizational unit of an integration's tree."""

    id: str
    integration_id: str
    parent_id: str | None
    kind: FolderKind
    aws_id: str
    title: str
    handle: str
    handle_static: bool = False
    etag: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class Connection:
    """One ACTIVE member account; its handle is its schema name in workspaces."""

    id: str
    integration_id: str
    tenant_id: str
    folder_id: str
    account_id: str
    account_name: str
    account_email: str
    handle: str
    handle_static: bool = False
    account_joined_time: datetime | None = None
    # What the last snapshot said of the account; a sync skips it while this is unchanged.
    source_fingerprint: str = ""
    config_overrides: ConnectionConfig = field(default_factory=ConnectionConfig)
    etag: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class ConnectionRead:
    """A connection with its integration, as one statement read them, and the version of each
    row (PostgreSQL's `xmin`: every update of a row writes it anew)."""

    connection: Connection
    integration: Integration
    version: tuple[int, int]


class OrganizationalUnit(NamedTuple):
    """One OU of a snapshot (a tuple: snapshots carry thousands)."""

    id: str
    parent_id: str
    name: str


class Account(NamedTuple):
    """One account of a snapshot, whatever its state (a tuple: snapshots carry 10,000s)."""

    id: str
    name: str
    email: str
    parent_id: str
    state: str
    joined_time: datetime | None = None


@dataclass(frozen=True)
class Snapshot:
    """The complete organization one crawl saw."""

    organization_id: str
    management_account_id: str
    root_id: str
    units: tuple[OrganizationalUnit, ...]
    accounts: tuple[Account, ...]
    # The filter ids the crawl found nowhere; None: not looked for (a targeted refresh).
    unmatched_filters: DiscoveryFilters | None = None
