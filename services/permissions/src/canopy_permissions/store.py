"""SQL of the permissions service. Every function takes the caller's connection, so a use case
decides its own transaction."""

from __future__ import annotations

import asyncpg

from canopy_core.ids import new_etag
from canopy_permissions.errors import HandleTaken
from canopy_permissions.model import Org, Plan, Tenant, Workspace
from canopy_permissions.sharing import Member, Schema, SchemaChange, Tree, TreeConnection

_TENANT = "id, handle, display_name, plan, etag, created_at, updated_at"
_ORG = "id, tenant_id, handle, display_name, plan, etag, created_at, updated_at"
_WORKSPACE = "id, org_id, tenant_id, handle, display_name, etag, created_at, updated_at"


def _tenant(row: asyncpg.Record) -> Tenant:
    return Tenant(
        id=row["id"],
        handle=row["handle"],
        display_name=row["display_name"],
        plan=Plan(row["plan"]),
        etag=row["etag"],
        create_time=row["created_at"],
        update_time=row["updated_at"],
    )


def _org(row: asyncpg.Record) -> Org:
    return Org(
        id=row["id"],
        tenant_id=row["tenant_id"],
        handle=row["handle"],
        display_name=row["display_name"],
        plan=Plan(row["plan"]),
        etag=row["etag"],
        create_time=row["created_at"],
        update_time=row["updated_at"],
    )


def _workspace(row: asyncpg.Record) -> Workspace:
    return Workspace(
        id=row["id"],
        org_id=row["org_id"],
        tenant_id=row["tenant_id"],
        handle=row["handle"],
        display_name=row["display_name"],
        etag=row["etag"],
        create_time=row["created_at"],
        update_time=row["updated_at"],
    )


class _HandleGuard:
    """Turns a unique violation on a handle constraint into `HandleTaken`."""

    def __init__(self, kind: str, handle: str, field: str) -> None:
        self.error = HandleTaken(kind, handle, field)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, asyncpg.UniqueViolationError) and "handle" in (
            exc.constraint_name or ""
        ):
            raise self.error from exc


async def lock_tenant(conn: asyncpg.Connection, tenant_id: str) -> Tenant | None:
    row = await conn.fetchrow(f"SELECT {_TENANT} FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)
    return _tenant(row) if row else None


async def get_tenant(conn: asyncpg.Connection, tenant_id: str) -> Tenant | None:
    row = await conn.fetchrow(f"SELECT {_TENANT} FROM tenants WHERE id = $1", tenant_id)
    return _tenant(row) if row else None


async def insert_tenant(conn: asyncpg.Connection, tenant: Tenant) -> Tenant:
    assert tenant.plan is not None
    with _HandleGuard("tenant", tenant.handle, "tenant.handle"):
        row = await conn.fetchrow(
            f"INSERT INTO tenants (id, handle, display_name, plan, etag) "
            f"VALUES ($1, $2, $3, $4, $5) RETURNING {_TENANT}",
            tenant.id,
            tenant.handle,
            tenant.display_name,
            tenant.plan.value,
            new_etag(),
        )
    return _tenant(row)


async def update_tenant(conn: asyncpg.Connection, tenant: Tenant) -> Tenant:
    assert tenant.plan is not None
    with _HandleGuard("tenant", tenant.handle, "tenant.handle"):
        row = await conn.fetchrow(
            f"UPDATE tenants SET handle = $2, display_name = $3, plan = $4, etag = $5, "
            f"updated_at = now() WHERE id = $1 RETURNING {_TENANT}",
            tenant.id,
            tenant.handle,
            tenant.display_name,
            tenant.plan.value,
            new_etag(),
        )
    return _tenant(row)


async def lock_org(conn: asyncpg.Connection, org_id: str) -> Org | None:
    row = await conn.fetchrow(f"SELECT {_ORG} FROM orgs WHERE id = $1 FOR UPDATE", org_id)
    return _org(row) if row else None


async def get_org(conn: asyncpg.Connection, org_id: str) -> Org | None:
    row = await conn.fetchrow(f"SELECT {_ORG} FROM orgs WHERE id = $1", org_id)
    return _org(row) if row else None


async def insert_org(conn: asyncpg.Connection, org: Org) -> Org:
    assert org.plan is not None
    with _HandleGuard("org", org.handle, "org.handle"):
        row = await conn.fetchrow(
            f"INSERT INTO orgs (id, tenant_id, handle, display_name, plan, etag) "
            f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_ORG}",
            org.id,
            org.tenant_id,
            org.handle,
            org.display_name,
            org.plan.value,
            new_etag(),
        )
    return _org(row)


async def update_org(conn: asyncpg.Connection, org: Org) -> Org:
    assert org.plan is not None
    with _HandleGuard("org", org.handle, "org.handle"):
        row = await conn.fetchrow(
            f"UPDATE orgs SET handle = $2, display_name = $3, plan = $4, etag = $5, "
            f"updated_at = now() WHERE id = $1 RETURNING {_ORG}",
            org.id,
            org.handle,
            org.display_name,
            org.plan.value,
            new_etag(),
        )
    return _org(row)


async def lock_workspace(conn: asyncpg.Connection, workspace_id: str) -> Workspace | None:
    row = await conn.fetchrow(
        f"SELECT {_WORKSPACE} FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id
    )
    return _workspace(row) if row else None


async def get_workspace(conn: asyncpg.Connection, workspace_id: str) -> Workspace | None:
    row = await conn.fetchrow(f"SELECT {_WORKSPACE} FROM workspaces WHERE id = $1", workspace_id)
    return _workspace(row) if row else None


async def insert_workspace(conn: asyncpg.Connection, workspace: Workspace) -> Workspace:
    with _HandleGuard("workspace", workspace.handle, "workspace.handle"):
        row = await conn.fetchrow(
            f"INSERT INTO workspaces (id, org_id, tenant_id, handle, display_name, etag) "
            f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_WORKSPACE}",
            workspace.id,
            workspace.org_id,
            workspace.tenant_id,
            workspace.handle,
            workspace.display_name,
            new_etag(),
        )
    return _workspace(row)


async def update_workspace(conn: asyncpg.Connection, workspace: Workspace) -> Workspace:
    with _HandleGuard("workspace", workspace.handle, "workspace.handle"):
        row = await conn.fetchrow(
            f"UPDATE workspaces SET handle = $2, display_name = $3, etag = $4, "
            f"updated_at = now() WHERE id = $1 RETURNING {_WORKSPACE}",
            workspace.id,
            workspace.handle,
            workspace.display_name,
            new_etag(),
        )
    return _workspace(row)


async def list_workspaces(
    conn: asyncpg.Connection, org_id: str, after_id: str, limit: int
) -> list[Workspace]:
    rows = await conn.fetch(
        f"SELECT {_WORKSPACE} FROM workspaces WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        org_id,
        after_id,
        limit,
    )
    return [_workspace(r) for r in rows]


async def delete_workspace(conn: asyncpg.Connection, workspace_id: str) -> None:
    await conn.execute("DELETE FROM workspaces WHERE id = $1", workspace_id)


# -- locks ---------------------------------------------------------------------------------------


async def lock_sharing(conn: asyncpg.Connection, integration_ids: list[str]) -> None:
    """Serialise everything that reads an integration's tree, grants and attachments to change
    schemas, until commit: without it, an attach and a concurrent sync could each miss the
    other's uncommitted rows and leave a workspace short of schemas for good."""
    for integration_id in sorted(set(integration_ids)):
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"sharing:{integration_id}"
        )


# -- the tree projection -------------------------------------------------------------------------


async def project_integration(
    conn: asyncpg.Connection, integration_id: str, tenant_id: str, org_id: str | None, handle: str
) -> None:
    await conn.execute(
        "INSERT INTO tree_integrations (id, tenant_id, org_id, handle) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (id) DO UPDATE SET handle = EXCLUDED.handle",
        integration_id,
        tenant_id,
        org_id,
        handle,
    )


async def forget_integration(conn: asyncpg.Connection, integration_id: str) -> None:
    """Drop an integration's projection, grants and attachments."""
    for table in ("grants", "attachments", "tree_connections", "tree_folders"):
        await conn.execute(f"DELETE FROM {table} WHERE integration_id = $1", integration_id)
    await conn.execute("DELETE FROM tree_integrations WHERE id = $1", integration_id)


async def tenant_ids(conn: asyncpg.Connection) -> list[str]:
    """Every tenant of the directory."""
    return [r[0] for r in await conn.fetch("SELECT id FROM tenants ORDER BY id")]


async def projected_integrations(conn: asyncpg.Connection) -> list[str]:
    """Every integration the projection knows."""
    return [r[0] for r in await conn.fetch("SELECT id FROM tree_integrations ORDER BY id")]


async def projected_items(
    conn: asyncpg.Connection, integration_id: str
) -> tuple[set[str], set[str]]:
    """The ids of an integration's projected folders and connections."""
    folders = await conn.fetch(
        "SELECT id FROM tree_folders WHERE integration_id = $1", integration_id
    )
    connections = await conn.fetch(
        "SELECT id FROM tree_connections WHERE integration_id = $1", integration_id
    )
    return {r[0] for r in folders}, {r[0] for r in connections}


async def project_folder(
    conn: asyncpg.Connection, folder_id: str, integration_id: str, parent_id: str | None
) -> None:
    await conn.execute(
        "INSERT INTO tree_folders (id, integration_id, parent_id) VALUES ($1, $2, $3) "
        "ON CONFLICT (id) DO UPDATE SET parent_id = EXCLUDED.parent_id",
        folder_id,
        integration_id,
        parent_id,
    )


async def forget_item(conn: asyncpg.Connection, item_id: str, table: str) -> None:
    """Drop a folder or connection with its grants and attachments."""
    await conn.execute(f"DELETE FROM {table} WHERE id = $1", item_id)
    await conn.execute("DELETE FROM grants WHERE item_id = $1", item_id)
    await conn.execute("DELETE FROM attachments WHERE item_id = $1", item_id)
    await conn.execute("DELETE FROM grant_versions WHERE item_id = $1", item_id)


async def project_connections(conn: asyncpg.Connection, rows: list[TreeConnection]) -> None:
    """Insert or replace projected connections."""
    if not rows:
        return
    await conn.execute(
        """INSERT INTO tree_connections (id, integration_id, folder_id, handle, account_id,
               account_name, config)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::text[], $7::bytea[])
           ON CONFLICT (id) DO UPDATE SET folder_id = EXCLUDED.folder_id,
               handle = EXCLUDED.handle, account_id = EXCLUDED.account_id,
               account_name = EXCLUDED.account_name, config = EXCLUDED.config""",
        [r.id for r in rows],
        [r.integration_id for r in rows],
        [r.folder_id for r in rows],
        [r.handle for r in rows],
        [r.account_id for r in rows],
        [r.account_name for r in rows],
        [r.config for r in rows],
    )


async def load_tree(conn: asyncpg.Connection, integration_id: str) -> Tree | None:
    """One integration's projected tree; None if it is not (or no longer) known."""
    integration = await conn.fetchrow(
        "SELECT tenant_id, org_id FROM tree_integrations WHERE id = $1", integration_id
    )
    if integration is None:
        return None
    folders = await conn.fetch(
        "SELECT id, parent_id FROM tree_folders WHERE integration_id = $1", integration_id
    )
    connections = await conn.fetch(
        "SELECT id, integration_id, folder_id, handle, account_id, account_name, config "
        "FROM tree_connections WHERE integration_id = $1",
        integration_id,
    )
    return Tree(
        integration_id=integration_id,
        tenant_id=integration["tenant_id"],
        org_id=integration["org_id"],
        parents={r["id"]: r["parent_id"] for r in folders},
        connections={r["id"]: TreeConnection(*r) for r in connections},
    )


async def item_integration(conn: asyncpg.Connection, item_id: str) -> str | None:
    """The integration of a projected folder or connection."""
    found: str | None = await conn.fetchval(
        "SELECT integration_id FROM tree_folders WHERE id = $1 "
        "UNION ALL SELECT integration_id FROM tree_connections WHERE id = $1 LIMIT 1",
        item_id,
    )
    return found


async def integration_scope(
    conn: asyncpg.Connection, integration_id: str
) -> tuple[str, str | None] | None:
    row = await conn.fetchrow(
        "SELECT tenant_id, org_id FROM tree_integrations WHERE id = $1", integration_id
    )
    return (row[0], row[1]) if row else None


# -- grants and attachments ----------------------------------------------------------------------


async def grants_of(conn: asyncpg.Connection, integration_id: str) -> list[tuple[str, str, str]]:
    """(item, grantee kind, grantee id) of every grant in an integration."""
    rows = await conn.fetch(
        "SELECT item_id, grantee_kind, grantee_id FROM grants WHERE integration_id = $1",
        integration_id,
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def item_grants(conn: asyncpg.Connection, item_ids: list[str]) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT item_id, grantee_kind, grantee_id, created_at FROM grants "
        "WHERE item_id = ANY($1::text[]) ORDER BY created_at, grantee_kind, grantee_id",
        item_ids,
    )
    return rows


async def replace_grants(
    conn: asyncpg.Connection,
    item_id: str,
    integration_id: str,
    grantees: list[tuple[str, str]],
) -> None:
    """Make these the item's direct grants (keeping the time of those that stay)."""
    await conn.execute(
        "DELETE FROM grants WHERE item_id = $1 AND (grantee_kind, grantee_id) NOT IN "
        "(SELECT * FROM unnest($2::text[], $3::text[]))",
        item_id,
        [g[0] for g in grantees],
        [g[1] for g in grantees],
    )
    await conn.execute(
        "INSERT INTO grants (item_id, integration_id, grantee_kind, grantee_id) "
        "SELECT $1, $2, k, g FROM unnest($3::text[], $4::text[]) AS u(k, g) "
        "ON CONFLICT DO NOTHING",
        item_id,
        integration_id,
        [g[0] for g in grantees],
        [g[1] for g in grantees],
    )


async def grant_version(conn: asyncpg.Connection, item_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT etag, updated_at FROM grant_versions WHERE item_id = $1", item_id
    )


async def bump_grant_version(conn: asyncpg.Connection, item_id: str) -> None:
    await conn.execute(
        "INSERT INTO grant_versions (item_id, etag) VALUES ($1, $2) "
        "ON CONFLICT (item_id) DO UPDATE SET etag = EXCLUDED.etag, updated_at = now()",
        item_id,
        new_etag(),
    )


async def attachments_of(
    conn: asyncpg.Connection, integration_id: str, workspace_ids: list[str]
) -> dict[str, set[str]]:
    rows = await conn.fetch(
        "SELECT workspace_id, item_id FROM attachments WHERE integration_id = $1 "
        "AND workspace_id = ANY($2::text[])",
        integration_id,
        workspace_ids,
    )
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row[0], set()).add(row[1])
    return found


async def workspaces_using(conn: asyncpg.Connection, integration_id: str) -> list[str]:
    """Workspaces with an attachment in, or a schema from, an integration."""
    rows = await conn.fetch(
        "SELECT workspace_id FROM attachments WHERE integration_id = $1 "
        "UNION SELECT workspace_id FROM workspace_schemas WHERE integration_id = $1",
        integration_id,
    )
    return [r[0] for r in rows]


async def members(conn: asyncpg.Connection, workspace_ids: list[str]) -> dict[str, Member]:
    rows = await conn.fetch(
        "SELECT id, org_id, tenant_id FROM workspaces WHERE id = ANY($1::text[])", workspace_ids
    )
    return {r[0]: Member(r[0], r[1], r[2]) for r in rows}


async def insert_attachment(
    conn: asyncpg.Connection,
    attachment_id: str,
    workspace_id: str,
    integration_id: str,
    kind: str,
    item_id: str,
) -> asyncpg.Record | None:
    """Record an attachment; None if the item is already attached to the workspace."""
    return await conn.fetchrow(
        "INSERT INTO attachments (id, workspace_id, integration_id, item_kind, item_id, etag) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workspace_id, item_id) DO NOTHING "
        "RETURNING id, workspace_id, item_kind, item_id, etag, created_at",
        attachment_id,
        workspace_id,
        integration_id,
        kind,
        item_id,
        new_etag(),
    )


async def delete_attachment(
    conn: asyncpg.Connection, workspace_id: str, item_id: str
) -> str | None:
    """Remove an attachment; the integration it was in, or None if there was none."""
    found: str | None = await conn.fetchval(
        "DELETE FROM attachments WHERE workspace_id = $1 AND item_id = $2 RETURNING integration_id",
        workspace_id,
        item_id,
    )
    return found


# -- schemas -------------------------------------------------------------------------------------

# A workspace's schema is its row in workspace_schemas (how it is attached) joined with the
# connection's row in published_schemas (name, account and settings, shared by every holder).
_SCHEMA = (
    "s.workspace_id, s.connection_id, s.integration_id, p.name, p.account_id, "
    "s.attachment_kind, s.via_folder_id, p.config"
)
_SCHEMAS = "workspace_schemas s JOIN published_schemas p ON p.connection_id = s.connection_id"


def _schema(row: asyncpg.Record) -> Schema:
    return Schema(
        connection_id=row["connection_id"],
        integration_id=row["integration_id"],
        name=row["name"],
        account_id=row["account_id"],
        attachment_kind=row["attachment_kind"],
        via_folder_id=row["via_folder_id"],
        config=bytes(row["config"]),
    )


async def schemas_of(
    conn: asyncpg.Connection, integration_id: str, workspace_ids: list[str]
) -> dict[str, dict[str, Schema]]:
    """Workspace → connection → schema, for one integration."""
    rows = await conn.fetch(
        f"SELECT {_SCHEMA} FROM {_SCHEMAS} WHERE s.integration_id = $1 "
        "AND s.workspace_id = ANY($2::text[])",
        integration_id,
        workspace_ids,
    )
    found: dict[str, dict[str, Schema]] = {}
    for row in rows:
        found.setdefault(row["workspace_id"], {})[row["connection_id"]] = _schema(row)
    return found


async def holders(conn: asyncpg.Connection, connection_ids: list[str]) -> list[tuple[str, Schema]]:
    """(workspace, schema) for every workspace that uses one of these connections."""
    rows = await conn.fetch(
        f"SELECT {_SCHEMA} FROM {_SCHEMAS} WHERE s.connection_id = ANY($1::text[])",
        connection_ids,
    )
    return [(r["workspace_id"], _schema(r)) for r in rows]


async def published_names(conn: asyncpg.Connection, connection_ids: list[str]) -> dict[str, str]:
    """Connection → the schema name its holders were last told."""
    rows = await conn.fetch(
        "SELECT connection_id, name FROM published_schemas WHERE connection_id = ANY($1::text[])",
        connection_ids,
    )
    return {r[0]: r[1] for r in rows}


async def holder_counts(
    conn: asyncpg.Connection, connection_ids: list[str]
) -> list[tuple[str, int]]:
    """(workspace, how many of these connections it uses), in the order of RENAME_RANGES."""
    rows = await conn.fetch(
        "SELECT workspace_id, count(*) FROM workspace_schemas "
        "WHERE connection_id = ANY($1::text[]) "
        'GROUP BY workspace_id ORDER BY workspace_id COLLATE "C"',
        connection_ids,
    )
    return [(r[0], r[1]) for r in rows]


# One schema event per use of a renamed connection, numbered by workspace then connection, as
# one range per workspace (EventLog.append_ranges): $1/$2 each connection's encoded
# SchemaRenamed, $3/$4 each workspace's encoded id; an event is the two joined (see
# schemas.follow_renames).
RENAME_RANGES = """
    SELECT (sum(count(*)) OVER (ORDER BY s.workspace_id COLLATE "C") - count(*))::bigint
               AS position,
           'renamed' AS kind, ARRAY['workspace:' || s.workspace_id] AS keys,
           array_agg(h.head || t.tail ORDER BY s.connection_id COLLATE "C") AS payloads
    FROM workspace_schemas s
    JOIN unnest($1::text[], $2::bytea[]) AS t(connection_id, tail)
      ON t.connection_id = s.connection_id
    JOIN unnest($3::text[], $4::bytea[]) AS h(workspace_id, head)
      ON h.workspace_id = s.workspace_id
    GROUP BY s.workspace_id, h.head
"""


async def rename_schemas(
    conn: asyncpg.Connection, connections: dict[str, tuple[str, bytes]]
) -> None:
    """These connections' schemas take the new names and settings, in every workspace."""
    await conn.execute(
        "UPDATE published_schemas AS p SET name = u.name, config = u.config "
        "FROM unnest($1::text[], $2::text[], $3::bytea[]) AS u(id, name, config) "
        "WHERE p.connection_id = u.id AND (p.name <> u.name OR p.config <> u.config)",
        list(connections),
        [v[0] for v in connections.values()],
        [v[1] for v in connections.values()],
    )


async def workspace_schemas(conn: asyncpg.Connection, workspace_id: str) -> list[Schema]:
    rows = await conn.fetch(
        f"SELECT {_SCHEMA} FROM {_SCHEMAS} WHERE s.workspace_id = $1 ORDER BY p.name",
        workspace_id,
    )
    return [_schema(r) for r in rows]


async def schema_folders(conn: asyncpg.Connection, workspace_id: str) -> dict[str, str]:
    """Connection → the folder that holds it, for each schema of the workspace."""
    rows = await conn.fetch(
        "SELECT s.connection_id, t.folder_id FROM workspace_schemas s "
        "JOIN tree_connections t ON t.id = s.connection_id WHERE s.workspace_id = $1",
        workspace_id,
    )
    return {r[0]: r[1] for r in rows}


async def attached_folders(conn: asyncpg.Connection, workspace_id: str) -> dict[str, str]:
    """Folder → its integration, for each folder attached to the workspace."""
    rows = await conn.fetch(
        "SELECT item_id, integration_id FROM attachments "
        "WHERE workspace_id = $1 AND item_kind = 'folder'",
        workspace_id,
    )
    return {r[0]: r[1] for r in rows}


async def folder_parents(
    conn: asyncpg.Connection, integration_ids: list[str]
) -> dict[str, str | None]:
    """Folder → parent folder (None for a root), for every folder of these integrations."""
    rows = await conn.fetch(
        "SELECT id, parent_id FROM tree_folders WHERE integration_id = ANY($1::text[])",
        integration_ids,
    )
    return {r[0]: r[1] for r in rows}


async def workspace_schema_page(
    conn: asyncpg.Connection, workspace_id: str, after_connection_id: str, limit: int
) -> list[Schema]:
    """Up to `limit` of a workspace's schemas with a connection id after the given one, in
    connection id order (the primary key's)."""
    rows = await conn.fetch(
        f"SELECT {_SCHEMA} FROM {_SCHEMAS} WHERE s.workspace_id = $1 AND s.connection_id > $2 "
        "ORDER BY s.connection_id LIMIT $3",
        workspace_id,
        after_connection_id,
        limit,
    )
    return [_schema(r) for r in rows]


async def _drop_unheld(conn: asyncpg.Connection, connection_ids: list[str]) -> None:
    """Forget the published form of connections no workspace holds any more."""
    await conn.execute(
        "DELETE FROM published_schemas AS p WHERE p.connection_id = ANY($1::text[]) AND NOT "
        "EXISTS (SELECT 1 FROM workspace_schemas s WHERE s.connection_id = p.connection_id)",
        connection_ids,
    )


async def write_schema_changes(
    conn: asyncpg.Connection, changes: list[tuple[str, SchemaChange]]
) -> None:
    """Apply (workspace, change) pairs to the stored schemas in a few statements."""
    removed = [(w, c.schema.connection_id) for w, c in changes if c.kind == "removed"]
    if removed:
        await conn.execute(
            "DELETE FROM workspace_schemas AS s USING unnest($1::text[], $2::text[]) AS u(w, c) "
            "WHERE s.workspace_id = u.w AND s.connection_id = u.c",
            [r[0] for r in removed],
            [r[1] for r in removed],
        )
    upserts: dict[tuple[str, str], Schema] = {}
    for workspace_id, change in changes:
        if change.kind != "removed":
            upserts[(workspace_id, change.schema.connection_id)] = change.schema
    if upserts:
        # Every holder is told the same name and settings: one published row per connection.
        published = {schema.connection_id: schema for schema in upserts.values()}
        await conn.execute(
            """INSERT INTO published_schemas (connection_id, integration_id, name, account_id,
                                              config)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[])
               ON CONFLICT (connection_id) DO UPDATE SET name = EXCLUDED.name,
                   account_id = EXCLUDED.account_id, config = EXCLUDED.config""",
            list(published),
            [p.integration_id for p in published.values()],
            [p.name for p in published.values()],
            [p.account_id for p in published.values()],
            [p.config for p in published.values()],
        )
        keys = list(upserts)
        values = [upserts[k] for k in keys]
        await conn.execute(
            """INSERT INTO workspace_schemas (workspace_id, connection_id, integration_id,
                                              attachment_kind, via_folder_id)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
               ON CONFLICT (workspace_id, connection_id) DO UPDATE
               SET attachment_kind = EXCLUDED.attachment_kind,
                   via_folder_id = EXCLUDED.via_folder_id""",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [v.integration_id for v in values],
            [v.attachment_kind for v in values],
            [v.via_folder_id for v in values],
        )
    if removed:
        await _drop_unheld(conn, sorted({c for _, c in removed}))


async def set_workspace_heads(conn: asyncpg.Connection, heads: dict[str, int]) -> None:
    """Each workspace's latest schema event. Nothing here reads it any more: it is kept written
    for replicas of the previous release during a rolling upgrade, whose listings compare it
    between pages (`LISTING_CHANGED`); a later release drops it."""
    if not heads:
        return
    await conn.execute(
        "INSERT INTO workspace_heads (workspace_id, revision) "
        "SELECT * FROM unnest($1::text[], $2::bigint[]) "
        "ON CONFLICT (workspace_id) DO UPDATE SET revision = EXCLUDED.revision",
        list(heads),
        list(heads.values()),
    )


async def forget_workspace(conn: asyncpg.Connection, workspace_id: str) -> None:
    """Drop a deleted workspace's attachments, grants and schemas."""
    await conn.execute("DELETE FROM attachments WHERE workspace_id = $1", workspace_id)
    await conn.execute(
        "DELETE FROM grants WHERE grantee_kind = 'workspace' AND grantee_id = $1", workspace_id
    )
    held = await conn.fetch(
        "DELETE FROM workspace_schemas WHERE workspace_id = $1 RETURNING connection_id",
        workspace_id,
    )
    await _drop_unheld(conn, [r[0] for r in held])
