"""SQL of the permissions service. Every function takes the caller's connection, so a use case
decides its own transaction."""

from __future__ import annotations

import asyncpg

from canopy_core.ids import new_etag
from canopy_permissions.errors import HandleTaken
from canopy_permissions.model import Org, Plan, Tenant, Workspace

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
