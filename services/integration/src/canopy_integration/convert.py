"""Protobuf ⇄ domain for the integration service (no grpc here: events use it too)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from google.protobuf.duration_pb2 import Duration

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import integration_pb2 as pb
from canopy.type.v1 import types_pb2
from canopy_core.convert import timestamp, to_datetime, to_timedelta
from canopy_core.discovery_filters import FILTER_LISTS, DiscoveryFilters, filters_to_proto
from canopy_integration.config import effective_config
from canopy_integration.model import (
    Account,
    Connection,
    ConnectionConfig,
    CrawlLimits,
    DeletionReason,
    EffectiveConfig,
    EventQueueReport,
    EventQueueState,
    EventQueueStatus,
    Folder,
    FolderKind,
    Grantee,
    Integration,
    IntegrationState,
    OrganizationalUnit,
    PermissionsMode,
    RootFolderPermissions,
    Scope,
    Snapshot,
)

# -- small values -----------------------------------------------------------------------------


def duration(value: timedelta | None) -> Duration | None:
    """A Duration for a timedelta (None stays unset)."""
    if value is None:
        return None
    message = Duration()
    message.FromTimedelta(value)
    return message


def scope_to_proto(scope: Scope) -> types_pb2.Scope:
    """The proto scope names the owner: the org for org-scoped integrations."""
    if scope.org_id:
        return types_pb2.Scope(org_id=scope.org_id)
    return types_pb2.Scope(tenant_id=scope.tenant_id)


def grantee_from_proto(message: types_pb2.Grantee) -> Grantee:
    """A grantee (unset fields stay None)."""
    which = message.WhichOneof("grantee")
    return Grantee(
        tenant_id=message.tenant_id if which == "tenant_id" else None,
        org_id=message.org_id if which == "org_id" else None,
        workspace_id=message.workspace_id if which == "workspace_id" else None,
    )


def grantee_to_proto(grantee: Grantee) -> types_pb2.Grantee:
    """The proto of a grantee."""
    if grantee.tenant_id:
        return types_pb2.Grantee(tenant_id=grantee.tenant_id)
    if grantee.org_id:
        return types_pb2.Grantee(org_id=grantee.org_id)
    return types_pb2.Grantee(workspace_id=grantee.workspace_id or "")


def permissions_from_proto(message: pb.RootFolderPermissions) -> RootFolderPermissions | None:
    """Initial root-folder permissions as given; None when the mode is unspecified or unknown
    (the caller reports it: a mode is never guessed)."""
    try:
        name = pb.RootFolderPermissionsMode.Name(message.mode)
    except ValueError:
        return None
    mode = name.removeprefix("ROOT_FOLDER_PERMISSIONS_MODE_")
    if mode == "UNSPECIFIED":
        return None
    return RootFolderPermissions(
        mode=PermissionsMode(mode),
        grantees=tuple(grantee_from_proto(g) for g in message.grantees),
    )


def permissions_to_proto(permissions: RootFolderPermissions) -> pb.RootFolderPermissions:
    """The proto of initial root-folder permissions."""
    return pb.RootFolderPermissions(
        mode=pb.RootFolderPermissionsMode.Value(
            f"ROOT_FOLDER_PERMISSIONS_MODE_{permissions.mode.value}"
        ),
        grantees=[grantee_to_proto(g) for g in permissions.grantees],
    )


# -- connection settings ------------------------------------------------------------------------


def config_from_proto(message: pb.ConnectionConfig) -> ConnectionConfig:
    """Settings with presence: unset fields stay None."""

    def strings(name: str) -> tuple[str, ...] | None:
        return tuple(getattr(message, name).values) if message.HasField(name) else None  # type: ignore[arg-type]

    return ConnectionConfig(
        regions=strings("regions"),
        default_region=message.default_region if message.HasField("default_region") else None,
        max_error_retry_attempts=(
            message.max_error_retry_attempts
            if message.HasField("max_error_retry_attempts")
            else None
        ),
        min_error_retry_delay_ms=(
            message.min_error_retry_delay_ms
            if message.HasField("min_error_retry_delay_ms")
            else None
        ),
        ignore_error_codes=strings("ignore_error_codes"),
        ignore_error_messages=strings("ignore_error_messages"),
        endpoint_url=message.endpoint_url if message.HasField("endpoint_url") else None,
        s3_force_path_style=(
            message.s3_force_path_style if message.HasField("s3_force_path_style") else None
        ),
    )


def config_to_proto(config: ConnectionConfig) -> pb.ConnectionConfig:
    """The proto of settings; None fields stay unset."""
    message = pb.ConnectionConfig()
    for name in ("regions", "ignore_error_codes", "ignore_error_messages"):
        values = getattr(config, name)
        if values is not None:
            getattr(message, name).SetInParent()
            getattr(message, name).values.extend(values)
    for name in (
        "default_region",
        "max_error_retry_attempts",
        "min_error_retry_delay_ms",
        "endpoint_url",
        "s3_force_path_style",
    ):
        value = getattr(config, name)
        if value is not None:
            setattr(message, name, value)
    return message


def config_to_dict(config: ConnectionConfig) -> dict[str, object]:
    """The set fields, for a jsonb column."""
    result: dict[str, object] = {}
    for name in config.set_fields():
        value = getattr(config, name)
        result[name] = list(value) if isinstance(value, tuple) else value
    return result


def config_from_dict(data: Mapping[str, object]) -> ConnectionConfig:
    """Settings from a jsonb column."""
    values: dict[str, object] = {}
    for name, value in data.items():
        values[name] = tuple(value) if isinstance(value, list) else value
    return ConnectionConfig(**values)  # type: ignore[arg-type]


def effective_to_proto(config: EffectiveConfig) -> pb.EffectiveConnectionConfig:
    """The proto of resolved settings."""
    return pb.EffectiveConnectionConfig(
        regions=config.regions,
        default_region=config.default_region,
        max_error_retry_attempts=config.max_error_retry_attempts,
        min_error_retry_delay_ms=config.min_error_retry_delay_ms,
        ignore_error_codes=config.ignore_error_codes,
        ignore_error_messages=config.ignore_error_messages,
        endpoint_url=config.endpoint_url,
        s3_force_path_style=config.s3_force_path_style,
        role_arn=config.role_arn,
        external_id=config.external_id,
        overridden_fields=config.overridden_fields,
    )


def limits_from_proto(message: pb.CrawlLimits, path: str = "crawl_limits") -> CrawlLimits:
    """Crawl limits with presence; errors name fields under `path`."""
    return CrawlLimits(
        max_concurrency=message.max_concurrency if message.HasField("max_concurrency") else None,
        max_requests_per_second=(
            message.max_requests_per_second if message.HasField("max_requests_per_second") else None
        ),
        crawl_timeout=(
            to_timedelta(message.crawl_timeout, f"{path}.crawl_timeout")
            if message.HasField("crawl_timeout")
            else None
        ),
    )


def limits_to_proto(limits: CrawlLimits) -> pb.CrawlLimits:
    """The proto of crawl limits."""
    message = pb.CrawlLimits(crawl_timeout=duration(limits.crawl_timeout))
    if limits.max_concurrency is not None:
        message.max_concurrency = limits.max_concurrency
    if limits.max_requests_per_second is not None:
        message.max_requests_per_second = limits.max_requests_per_second
    return message


def limits_to_dict(limits: CrawlLimits) -> dict[str, object]:
    """Crawl limits for a jsonb column."""
    result: dict[str, object] = {}
    if limits.max_concurrency is not None:
        result["max_concurrency"] = limits.max_concurrency
    if limits.max_requests_per_second is not None:
        result["max_requests_per_second"] = limits.max_requests_per_second
    if limits.crawl_timeout is not None:
        result["crawl_timeout_seconds"] = limits.crawl_timeout.total_seconds()
    return result


def limits_from_dict(data: Mapping[str, object]) -> CrawlLimits:
    """Crawl limits from a jsonb column."""
    timeout = data.get("crawl_timeout_seconds")
    return CrawlLimits(
        max_concurrency=data.get("max_concurrency"),  # type: ignore[arg-type]
        max_requests_per_second=data.get("max_requests_per_second"),  # type: ignore[arg-type]
        crawl_timeout=timedelta(seconds=float(timeout)) if timeout is not None else None,  # type: ignore[arg-type]
    )


def filters_to_dict(filters: DiscoveryFilters) -> dict[str, list[str]]:
    """Discovery filters for a jsonb column (only the lists that hold ids)."""
    return {name: list(getattr(filters, name)) for name in FILTER_LISTS if getattr(filters, name)}


def filters_from_dict(data: Mapping[str, Sequence[str]]) -> DiscoveryFilters:
    """Discovery filters from a jsonb column."""
    return DiscoveryFilters(**{name: tuple(data.get(name, ())) for name in FILTER_LISTS})


# -- resources ----------------------------------------------------------------------------------


def integration_to_proto(integration: Integration) -> pb.Integration:
    """The proto of an integration."""
    message = pb.Integration(
        id=integration.id,
        handle=integration.handle,
        scope=scope_to_proto(integration.scope),
        tenant_id=integration.scope.tenant_id,
        kind=pb.INTEGRATION_KIND_AWS_ORGANIZATION,
        state=pb.IntegrationState.Value(f"INTEGRATION_STATE_{integration.state.value}"),
        state_reason=integration.state_reason,
        state_message=integration.state_message,
        discovery_access=pb.AwsDiscoveryAccess(
            role_arn=integration.discovery_role_arn,
            external_id=integration.discovery_external_id,
            event_queue=integration.event_queue,
        ),
        member_access=pb.AwsMemberAccess(
            role_name=integration.member_role_name,
            external_id=integration.member_external_id,
        ),
        handle_prefix=integration.handle_prefix,
        connection_config=config_to_proto(integration.connection_config),
        sync_interval=duration(integration.effective_sync_interval),
        max_delete_fraction=integration.max_delete_fraction,
        crawl_limits=limits_to_proto(integration.crawl_limits),
        root_folder_id=integration.root_folder_id,
        organization_id=integration.organization_id,
        management_account_id=integration.management_account_id,
        tree_generation=integration.tree_generation,
        create_time=timestamp(integration.create_time),
        update_time=timestamp(integration.update_time),
        etag=integration.etag,
        event_queue_status=event_queue_status_to_proto(integration.event_queue_status),
        filters=filters_to_proto(integration.filters),
        exclude_management_account=integration.exclude_management_account,
        unmatched_filters=filters_to_proto(integration.unmatched_filters),
    )
    return message


def report_from_proto(message: pb.EventQueueStatus) -> EventQueueReport:
    """Discovery's report on an event queue; a state it may not report (or unknown) is None."""
    try:
        name = pb.EventQueueState.Name(message.state).removeprefix("EVENT_QUEUE_STATE_")
        state: EventQueueState | None = EventQueueState(name)
    except ValueError:
        state = None
    return EventQueueReport(state, message.reason, message.message)


def event_queue_status_to_proto(status: EventQueueStatus) -> pb.EventQueueStatus:
    """The proto of an event queue's status."""
    return pb.EventQueueStatus(
        state=pb.EventQueueState.Value(f"EVENT_QUEUE_STATE_{status.state.value}"),
        reason=status.reason,
        message=status.message,
        update_time=timestamp(status.update_time),
    )


def folder_to_proto(folder: Folder, path: Sequence[str] = ()) -> tree_pb.Folder:
    """The proto of a folder; `path` is the handles from the root down to it."""
    return tree_pb.Folder(
        id=folder.id,
        integration_id=folder.integration_id,
        parent_folder_id=folder.parent_id or "",
        kind=tree_pb.FolderKind.Value(f"FOLDER_KIND_{folder.kind.value}"),
        aws_id=folder.aws_id,
        title=folder.title,
        handle=folder.handle,
        handle_mode=tree_pb.HANDLE_MODE_STATIC
        if folder.handle_static
        else tree_pb.HANDLE_MODE_DYNAMIC,
        path=list(path),
        create_time=timestamp(folder.create_time),
        update_time=timestamp(folder.update_time),
        etag=folder.etag,
    )


def connection_to_proto(connection: Connection, integration: Integration) -> tree_pb.Connection:
    """The proto of a connection, with its effective configuration."""
    return tree_pb.Connection(
        id=connection.id,
        integration_id=connection.integration_id,
        folder_id=connection.folder_id,
        account_id=connection.account_id,
        account_name=connection.account_name,
        account_email=connection.account_email,
        account_joined_time=timestamp(connection.account_joined_time),
        plugin="aws",
        handle=connection.handle,
        handle_mode=(
            tree_pb.HANDLE_MODE_STATIC if connection.handle_static else tree_pb.HANDLE_MODE_DYNAMIC
        ),
        config_overrides=config_to_proto(connection.config_overrides),
        effective_config=effective_to_proto(
            effective_config(integration, connection.config_overrides, connection.account_id)
        ),
        create_time=timestamp(connection.create_time),
        update_time=timestamp(connection.update_time),
        etag=connection.etag,
    )


def deletion_reason_to_proto(reason: DeletionReason) -> tree_pb.DeletionReason.ValueType:
    """The proto enum of a deletion reason."""
    return tree_pb.DeletionReason.Value(f"DELETION_REASON_{reason.value}")


def state_from_name(name: str) -> IntegrationState:
    """A stored state."""
    return IntegrationState(name)


def folder_kind(name: str) -> FolderKind:
    """A stored folder kind."""
    return FolderKind(name)


# -- snapshots ------------------------------------------------------------------------------


def _joined(account: tree_pb.Account, index: int) -> datetime | None:
    if not account.HasField("joined_time"):
        return None
    return to_datetime(account.joined_time, f"snapshot.accounts[{index}].joined_time")


def snapshot_from_proto(message: tree_pb.OrganizationSnapshot) -> Snapshot:
    """A snapshot, flat as sent; a join time out of protobuf's range is INVALID_ARGUMENT."""
    return Snapshot(
        organization_id=message.organization_id,
        management_account_id=message.management_account_id,
        root_id=message.root_id,
        units=tuple(
            OrganizationalUnit(u.id, u.parent_id, u.name) for u in message.organizational_units
        ),
        accounts=tuple(
            Account(a.id, a.name, a.email, a.parent_id, a.state, _joined(a, i))
            for i, a in enumerate(message.accounts)
        ),
    )
