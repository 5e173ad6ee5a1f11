"""SQL of the integration service. Every function takes the caller's connection, so each use
case decides its transaction; bulk writes use COPY and unnest arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from canopy_core.ids import new_etag
from canopy_integration.convert import (
    config_from_dict,
    config_to_dict,
    filters_from_dict,
    filters_to_dict,
    limits_from_dict,
    limits_to_dict,
)
from canopy_integration.model import (
    Connection,
    ConnectionRead,
    EventQueueState,
    EventQueueStatus,
    Folder,
    FolderKind,
    Integration,
    IntegrationState,
    Scope,
)

_INTEGRATION = """id, tenant_id, org_id, handle, state, state_reason, state_message,
    discovery_role_arn, discovery_external_id, member_role_name, member_external_id,
    handle_prefix, connection_config, sync_interval_seconds, max_delete_fraction, crawl_limits,
    root_folder_id, organization_id, management_account_id, tree_generation, event_queue,
    event_queue_state, event_queue_reason, event_queue_message, event_queue_reported_at, etag,
    created_at, updated_at, filters, exclude_management_account, unmatched_filters"""
_FOLDER = """id, integration_id, parent_id, kind, aws_id, title, handle, handle_static, etag,
    created_at, updated_at"""
_CONNECTION = """id, integration_id, tenant_id, folder_id, account_id, account_name,
    account_email, account_joined_at, handle, handle_static, config_overrides, source_fingerprint,
    etag, created_at, updated_at"""


def _integration(row: Mapping[str, Any]) -> Integration:
    return Integration(
        id=row["id"],
        scope=Scope(tenant_id=row["tenant_id"], org_id=row["org_id"]),
        handle=row["handle"],
        state=IntegrationState(row["state"]),
        state_reason=row["state_reason"],
        state_message=row["state_message"],
        discovery_role_arn=row["discovery_role_arn"],
        discovery_external_id=row["discovery_external_id"],
        member_role_name=row["member_role_name"],
        member_external_id=row["member_external_id"],
        handle_prefix=row["handle_prefix"],
        connection_config=config_from_dict(row["connection_config"]),
        sync_interval=(
            timedelta(seconds=row["sync_interval_seconds"])
            if row["sync_interval_seconds"]
            else None
        ),
        max_delete_fraction=row["max_delete_fraction"],
        crawl_limits=limits_from_dict(row["crawl_limits"]),
        root_folder_id=row["root_folder_id"],
        organization_id=row["organization_id"],
        management_account_id=row["management_account_id"],
        tree_generation=row["tree_generation"],
        event_queue=row["event_queue"],
        event_queue_status=EventQueueStatus(
            state=EventQueueState(row["event_queue_state"]),
            reason=row["event_queue_reason"],
            message=row["event_queue_message"],
            update_time=row["event_queue_reported_at"],
        ),
        filters=filters_from_dict(row["filters"]),
        exclude_management_account=row["exclude_management_account"],
        unmatched_filters=filters_from_dict(row["unmatched_filters"]),
        etag=row["etag"],
        create_time=row["created_at"],
        update_time=row["updated_at"],
    )


def _seconds(interval: timedelta | None) -> int:
    """A sync interval as stored: 0 for unset (the default applies; never a valid interval)."""
    return int(interval.total_seconds()) if interval is not None else 0


def _folder(row: asyncpg.Record) -> Folder:
    return Folder(
        id=row["id"],
        integration_id=row["integration_id"],
        parent_id=row["parent_id"],
        kind=FolderKind(row["kind"]),
        aws_id=row["aws_id"],
        title=row["title"],
        handle=row["handle"],
        handle_static=row["handle_static"],
        etag=row["etag"],
        create_time=row["created_at"],
        update_time=row["updated_at"],
    )


def _connection(row: asyncpg.Record) -> Connection:
    return Connection(
        id=row["id"],
        integration_id=row["integration_id"],
        tenant_id=row["tenant_id"],
        folder_id=row["folder_id"],
        account_id=row["account_id"],
        account_name=row["account_name"],
        account_email=row["account_email"],
        account_joined_time=row["account_joined_at"],
        handle=row["handle"],
        handle_static=row["handle_static"],
        config_overrides=config_from_dict(row["config_overrides"]),
        source_fingerprint=row["source_fingerprint"],
        etag=row["etag"],
        create_time=row["created_at"],
        update_time=row["updated_at"],
    )


# -- locks ---------------------------------------------------------------------------------------


async def lock_tenant_handles(conn: asyncpg.Connection, tenant_id: str) -> None:
    """Serialise handle assignment within a tenant until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"handles:{tenant_id}")


# -- integrations --------------------------------------------------------------------------------


async def insert_integration(conn: asyncpg.Connection, i: Integration) -> Integration:
    row = await conn.fetchrow(
        f"""INSERT INTO integrations (id, tenant_id, org_id, handle, state, state_reason,
                state_message, discovery_role_arn, discovery_external_id, member_role_name,
                member_external_id, handle_prefix, connection_config, sync_interval_seconds,
                max_delete_fraction, crawl_limits, root_folder_id, event_queue,
                event_queue_state, etag, filters, exclude_management_account)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $19, $20, $21, $22)
            RETURNING {_INTEGRATION}""",
        i.id,
        i.scope.tenant_id,
        i.scope.org_id,
        i.handle,
        i.state.value,
        i.state_reason,
        i.state_message,
        i.discovery_role_arn,
        i.discovery_external_id,
        i.member_role_name,
        i.member_external_id,
        i.handle_prefix,
        config_to_dict(i.connection_config),
        _seconds(i.sync_interval),
        i.max_delete_fraction,
        limits_to_dict(i.crawl_limits),
        i.root_folder_id,
        i.event_queue,
        i.event_queue_status.state.value,
        new_etag(),
        filters_to_dict(i.filters),
        i.exclude_management_account,
    )
    return _integration(row)


async def get_integration(
    conn: asyncpg.Connection, integration_id: str, *, for_update: bool = False
) -> Integration | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_INTEGRATION} FROM integrations WHERE id = $1{lock}", integration_id
    )
    return _integration(row) if row else None


async def handle_holder(conn: asyncpg.Connection, tenant_id: str, handle: str) -> str | None:
    """The id of the tenant's integration with this handle, if any."""
    holder: str | None = await conn.fetchval(
        "SELECT id FROM integrations WHERE tenant_id = $1 AND handle = $2", tenant_id, handle
    )
    return holder


async def list_integrations(
    conn: asyncpg.Connection,
    tenant_id: str,
    org_id: str | None,
    include_orgs: bool,
    after_id: str,
    limit: int,
) -> list[Integration]:
    """A scope's integrations by id (ids are time-sortable: oldest first)."""
    args: list[str | None]
    if org_id is not None:
        condition, args = "tenant_id = $1 AND org_id = $2", [tenant_id, org_id]
    elif include_orgs:
        condition, args = "tenant_id = $1 AND $2::text IS NULL", [tenant_id, None]
    else:
        condition, args = (
            "tenant_id = $1 AND org_id IS NULL AND $2::text IS NULL",
            [tenant_id, None],
        )
    rows = await conn.fetch(
        f"SELECT {_INTEGRATION} FROM integrations WHERE {condition} AND id > $3 "
        "ORDER BY id LIMIT $4",
        *args,
        after_id,
        limit,
    )
    return [_integration(r) for r in rows]


async def list_every_integration(
    conn: asyncpg.Connection, after_id: str, limit: int
) -> list[Integration]:
    """Every tenant's and org's integrations by id (oldest first)."""
    rows = await conn.fetch(
        f"SELECT {_INTEGRATION} FROM integrations WHERE id > $1 ORDER BY id LIMIT $2",
        after_id,
        limit,
    )
    return [_integration(r) for r in rows]


async def save_integration(conn: asyncpg.Connection, i: Integration) -> Integration:
    """Write every mutable field; a new etag and update time."""
    row = await conn.fetchrow(
        f"""UPDATE integrations SET handle = $2, state = $3, state_reason = $4,
                state_message = $5, discovery_role_arn = $6, discovery_external_id = $7,
                member_role_name = $8, member_external_id = $9, handle_prefix = $10,
                connection_config = $11, sync_interval_seconds = $12, max_delete_fraction = $13,
                crawl_limits = $14, organization_id = $15, management_account_id = $16,
                tree_generation = $17, event_queue = $18, event_queue_state = $19,
                event_queue_reason = $20, event_queue_message = $21,
                event_queue_reported_at = $22, etag = $23, filters = $24,
                exclude_management_account = $25, unmatched_filters = $26, updated_at = now()
            WHERE id = $1 RETURNING {_INTEGRATION}""",
        i.id,
        i.handle,
        i.state.value,
        i.state_reason,
        i.state_message,
        i.discovery_role_arn,
        i.discovery_external_id,
        i.member_role_name,
        i.member_external_id,
        i.handle_prefix,
        config_to_dict(i.connection_config),
        _seconds(i.sync_interval),
        i.max_delete_fraction,
        limits_to_dict(i.crawl_limits),
        i.organization_id,
        i.management_account_id,
        i.tree_generation,
        i.event_queue,
        i.event_queue_status.state.value,
        i.event_queue_status.reason,
        i.event_queue_status.message,
        i.event_queue_status.update_time,
        new_etag(),
        filters_to_dict(i.filters),
        i.exclude_management_account,
        filters_to_dict(i.unmatched_filters),
    )
    return _integration(row)


async def delete_integration(conn: asyncpg.Connection, integration_id: str) -> None:
    """Delete the integration; its folders and connections go with it."""
    await conn.execute("DELETE FROM connections WHERE integration_id = $1", integration_id)
    await conn.execute("DELETE FROM folders WHERE integration_id = $1", integration_id)
    await conn.execute("DELETE FROM integrations WHERE id = $1", integration_id)


# -- folders -------------------------------------------------------------------------------------


async def insert_folders(conn: asyncpg.Connection, folders: Sequence[Folder]) -> int:
    """Create folders (one COPY); returns the rows written."""
    if not folders:
        return 0
    await conn.copy_records_to_table(
        "folders",
        records=[
            (
                f.id,
                f.integration_id,
                f.parent_id,
                f.kind.value,
                f.aws_id,
                f.title,
                f.handle,
                f.handle_static,
                f.etag or new_etag(),
            )
            for f in folders
        ],
        columns=[
            "id",
            "integration_id",
            "parent_id",
            "kind",
            "aws_id",
            "title",
            "handle",
            "handle_static",
            "etag",
        ],
    )
    return len(folders)


async def update_folders(conn: asyncpg.Connection, folders: Sequence[Folder]) -> int:
    """Write parent, AWS id, title and handle of each folder; a new etag each."""
    if not folders:
        return 0
    await conn.execute(
        """UPDATE folders AS f SET parent_id = u.parent_id, aws_id = u.aws_id, title = u.title,
               handle = u.handle, handle_static = u.handle_static, etag = u.etag,
               updated_at = now()
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                       $6::boolean[], $7::text[])
                AS u(id, parent_id, aws_id, title, handle, handle_static, etag)
           WHERE f.id = u.id""",
        [f.id for f in folders],
        [f.parent_id for f in folders],
        [f.aws_id for f in folders],
        [f.title for f in folders],
        [f.handle for f in folders],
        [f.handle_static for f in folders],
        [new_etag() for _ in folders],
    )
    return len(folders)


async def delete_folders(conn: asyncpg.Connection, folder_ids: Sequence[str]) -> int:
    if not folder_ids:
        return 0
    await conn.execute("DELETE FROM folders WHERE id = ANY($1::text[])", list(folder_ids))
    return len(folder_ids)


async def get_folder(
    conn: asyncpg.Connection, folder_id: str, *, for_update: bool = False
) -> Folder | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_FOLDER} FROM folders WHERE id = $1{lock}", folder_id)
    return _folder(row) if row else None


async def list_folders(
    conn: asyncpg.Connection,
    *,
    integration_id: str | None,
    parent_id: str | None,
    after_id: str,
    limit: int,
) -> list[Folder]:
    column, value = (
        ("integration_id", integration_id) if integration_id else ("parent_id", parent_id)
    )
    rows = await conn.fetch(
        f"SELECT {_FOLDER} FROM folders WHERE {column} = $1 AND id > $2 ORDER BY id LIMIT $3",
        value,
        after_id,
        limit,
    )
    return [_folder(r) for r in rows]


async def sibling_handles(
    conn: asyncpg.Connection, integration_id: str, parent_id: str | None, exclude_id: str
) -> set[str]:
    rows = await conn.fetch(
        "SELECT handle FROM folders WHERE integration_id = $1 "
        "AND parent_id IS NOT DISTINCT FROM $2 AND id <> $3",
        integration_id,
        parent_id,
        exclude_id,
    )
    return {r["handle"] for r in rows}


# -- connections ---------------------------------------------------------------------------------


async def insert_connections(conn: asyncpg.Connection, connections: Sequence[Connection]) -> int:
    """Create connections (one COPY); returns the rows written."""
    if not connections:
        return 0
    await conn.copy_records_to_table(
        "connections",
        records=[
            (
                c.id,
                c.integration_id,
                c.tenant_id,
                c.folder_id,
                c.account_id,
                c.account_name,
                c.account_email,
                c.account_joined_time,
                c.handle,
                c.handle_static,
                config_to_dict(c.config_overrides),
                c.source_fingerprint,
                c.etag or new_etag(),
            )
            for c in connections
        ],
        columns=[
            "id",
            "integration_id",
            "tenant_id",
            "folder_id",
            "account_id",
            "account_name",
            "account_email",
            "account_joined_at",
            "handle",
            "handle_static",
            "config_overrides",
            "source_fingerprint",
            "etag",
        ],
    )
    return len(connections)


async def update_connections(conn: asyncpg.Connection, connections: Sequence[Connection]) -> int:
    """Write the mutable fields of each connection; a new etag each."""
    if not connections:
        return 0
    await conn.execute(
        """UPDATE connections AS c SET folder_id = u.folder_id, account_name = u.account_name,
               account_email = u.account_email, account_joined_at = u.account_joined_at,
               handle = u.handle, handle_static = u.handle_static,
               config_overrides = u.config_overrides, source_fingerprint = u.source_fingerprint,
               etag = u.etag, updated_at = now()
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                       $6::text[], $7::boolean[], $8::jsonb[], $9::text[], $10::text[])
                AS u(id, folder_id, account_name, account_email, account_joined_at, handle,
                     handle_static, config_overrides, source_fingerprint, etag)
           WHERE c.id = u.id""",
        [c.id for c in connections],
        [c.folder_id for c in connections],
        [c.account_name for c in connections],
        [c.account_email for c in connections],
        [c.account_joined_time for c in connections],
        [c.handle for c in connections],
        [c.handle_static for c in connections],
        [config_to_dict(c.config_overrides) for c in connections],
        [c.source_fingerprint for c in connections],
        [new_etag() for _ in connections],
    )
    return len(connections)


async def refresh_fingerprints(conn: asyncpg.Connection, connections: Sequence[Connection]) -> int:
    """Record new source fingerprints; nothing a client sees changes, so no etag or time either."""
    if not connections:
        return 0
    await conn.execute(
        "UPDATE connections AS c SET source_fingerprint = u.fingerprint "
        "FROM unnest($1::text[], $2::text[]) AS u(id, fingerprint) WHERE c.id = u.id",
        [c.id for c in connections],
        [c.source_fingerprint for c in connections],
    )
    return len(connections)


async def load_fingerprints(
    conn: asyncpg.Connection, integration_id: str
) -> dict[str, tuple[str, str]]:
    """Account id → (source fingerprint, handle) of every connection of an integration."""
    rows = await conn.fetch(
        "SELECT account_id, source_fingerprint, handle FROM connections WHERE integration_id = $1",
        integration_id,
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def load_connections_of(
    conn: asyncpg.Connection, integration_id: str, account_ids: Sequence[str]
) -> list[Connection]:
    """The integration's connections of these accounts."""
    rows = await conn.fetch(
        f"SELECT {_CONNECTION} FROM connections "
        "WHERE integration_id = $1 AND account_id = ANY($2::text[])",
        integration_id,
        list(account_ids),
    )
    return [_connection(r) for r in rows]


async def touch_connections(conn: asyncpg.Connection, connection_ids: Sequence[str]) -> int:
    """A new etag and update time for connections whose effective settings changed."""
    if not connection_ids:
        return 0
    await conn.execute(
        "UPDATE connections SET etag = substr(md5(random()::text || id), 1, 16), "
        "updated_at = now() WHERE id = ANY($1::text[])",
        list(connection_ids),
    )
    return len(connection_ids)


async def delete_connections(conn: asyncpg.Connection, connection_ids: Sequence[str]) -> int:
    if not connection_ids:
        return 0
    await conn.execute("DELETE FROM connections WHERE id = ANY($1::text[])", list(connection_ids))
    return len(connection_ids)


async def get_connection(
    conn: asyncpg.Connection, connection_id: str, *, for_update: bool = False
) -> Connection | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_CONNECTION} FROM connections WHERE id = $1{lock}", connection_id
    )
    return _connection(row) if row else None


async def list_connections(
    conn: asyncpg.Connection,
    *,
    integration_id: str | None,
    folder_id: str | None,
    after_id: str,
    limit: int,
) -> list[Connection]:
    column, value = (
        ("integration_id", integration_id) if integration_id else ("folder_id", folder_id)
    )
    rows = await conn.fetch(
        f"SELECT {_CONNECTION} FROM connections WHERE {column} = $1 AND id > $2 "
        "ORDER BY id LIMIT $3",
        value,
        after_id,
        limit,
    )
    return [_connection(r) for r in rows]


async def connection_handle_holder(
    conn: asyncpg.Connection, tenant_id: str, handle: str
) -> str | None:
    holder: str | None = await conn.fetchval(
        "SELECT id FROM connections WHERE tenant_id = $1 AND handle = $2", tenant_id, handle
    )
    return holder


async def handles_elsewhere(
    conn: asyncpg.Connection, tenant_id: str, integration_id: str
) -> set[str]:
    """Connection handles the tenant's other integrations hold."""
    rows = await conn.fetch(
        "SELECT handle FROM connections WHERE tenant_id = $1 AND integration_id <> $2",
        tenant_id,
        integration_id,
    )
    return {r["handle"] for r in rows}


# -- whole trees -----------------------------------------------------------------------------


async def load_tree(
    conn: asyncpg.Connection, integration_id: str
) -> tuple[list[Folder], list[Connection]]:
    """Every folder and connection of an integration."""
    folders = await conn.fetch(
        f"SELECT {_FOLDER} FROM folders WHERE integration_id = $1", integration_id
    )
    connections = await conn.fetch(
        f"SELECT {_CONNECTION} FROM connections WHERE integration_id = $1", integration_id
    )
    return [_folder(r) for r in folders], [_connection(r) for r in connections]


async def load_folders(conn: asyncpg.Connection, integration_id: str) -> list[Folder]:
    """Every folder of an integration."""
    rows = await conn.fetch(
        f"SELECT {_FOLDER} FROM folders WHERE integration_id = $1", integration_id
    )
    return [_folder(r) for r in rows]


_INTEGRATION_NAMES = [c.strip() for c in _INTEGRATION.split(",")]
_CONNECTION_READS = (
    "SELECT c.xmin AS c_xmin, i.xmin AS i_xmin, "
    + ", ".join(f"c.{c.strip()}" for c in _CONNECTION.split(","))
    + ", "
    + ", ".join(f"i.{c} AS i_{c}" for c in _INTEGRATION_NAMES)
    + " FROM connections c JOIN integrations i ON i.id = c.integration_id"
    + " WHERE c.id = ANY($1::text[])"
)


async def read_connections(
    conn: asyncpg.Connection, connection_ids: Sequence[str]
) -> dict[str, ConnectionRead]:
    """Connections by id, each with its integration and both rows' versions, in one statement
    (ids with no row are left out)."""
    rows = await conn.fetch(_CONNECTION_READS, list(connection_ids))
    integrations: dict[tuple[str, int], Integration] = {}  # one object per integration version
    found: dict[str, ConnectionRead] = {}
    for row in rows:
        key = (row["integration_id"], row["i_xmin"])
        integration = integrations.get(key)
        if integration is None:
            integration = integrations[key] = _integration(
                {c: row[f"i_{c}"] for c in _INTEGRATION_NAMES}
            )
        found[row["id"]] = ConnectionRead(
            _connection(row), integration, (row["c_xmin"], row["i_xmin"])
        )
    return found


async def connection_versions(
    conn: asyncpg.Connection, connection_ids: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """The version of each connection's row and of its integration's row, as `read_connections`
    gives them, in one statement (ids with no row are left out)."""
    rows = await conn.fetch(
        "SELECT c.id, c.xmin, i.xmin FROM connections c "
        "JOIN integrations i ON i.id = c.integration_id WHERE c.id = ANY($1::text[])",
        list(connection_ids),
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def handles_in_tenant(
    conn: asyncpg.Connection, tenant_id: str, *, exclude_id: str
) -> set[str]:
    """Every connection handle of the tenant but one connection's."""
    rows = await conn.fetch(
        "SELECT handle FROM connections WHERE tenant_id = $1 AND id <> $2", tenant_id, exclude_id
    )
    return {r["handle"] for r in rows}


async def add_tombstones(conn: asyncpg.Connection, ids: Sequence[str], scope: Scope) -> int:
    """Remember deleted ids with their scope."""
    if not ids:
        return 0
    await conn.execute(
        "INSERT INTO tombstones (id, tenant_id, org_id) SELECT unnest($1::text[]), $2, $3 "
        "ON CONFLICT (id) DO NOTHING",
        list(ids),
        scope.tenant_id,
        scope.org_id,
    )
    return len(ids)


async def purge_tombstones(conn: asyncpg.Connection, retention: timedelta) -> int:
    """Forget the ids deleted longer than `retention` ago; how many were forgotten."""
    status: str = await conn.execute(
        "DELETE FROM tombstones WHERE deleted_at < now() - $1::interval", retention
    )
    return int(status.rpartition(" ")[2])


async def tombstone(conn: asyncpg.Connection, item_id: str) -> Scope | None:
    """The scope a deleted item had, if it existed."""
    row = await conn.fetchrow("SELECT tenant_id, org_id FROM tombstones WHERE id = $1", item_id)
    return Scope(tenant_id=row[0], org_id=row[1]) if row else None
