"""The directory of tenants, orgs and workspaces: validation, access rules and use cases.

The platform owns these records and pushes them with upserts (system callers only); members
read them. A read of something the caller has no role on fails PERMISSION_DENIED whether or not
it exists, so that ids cannot be probed (AIP-211).
"""

from __future__ import annotations

from dataclasses import replace

from canopy_core.auth import Principal
from canopy_core.db import Database
from canopy_core.errors import Aborted, NotFound, PermissionDenied, StaleEtag
from canopy_core.eventlog import EventLog
from canopy_core.pagination import PagePosition, PageTokens, page_size
from canopy_core.validation import Violations
from canopy_permissions import store
from canopy_permissions.attachments import end_workspace
from canopy_permissions.errors import ImmutableField
from canopy_permissions.model import Org, Tenant, Workspace, WorkspacePage

MAX_DISPLAY_NAME = 100


# -- validation (pure) -------------------------------------------------------------------


def validate_tenant(tenant: Tenant, path: str = "tenant") -> None:
    """Every bad field of a tenant upsert, at once."""
    with Violations() as v:
        v.resource_id(f"{path}.id", tenant.id, "t")
        v.handle(f"{path}.handle", tenant.handle)
        v.text(f"{path}.display_name", tenant.display_name, max_length=MAX_DISPLAY_NAME)
        if tenant.plan is None:
            v.add(f"{path}.plan", "is required (PLAN_FREE, PLAN_TEAM or PLAN_ENTERPRISE)")


def validate_org(org: Org, path: str = "org") -> None:
    """Every bad field of an org upsert, at once."""
    with Violations() as v:
        v.resource_id(f"{path}.id", org.id, "o")
        v.resource_id(f"{path}.tenant_id", org.tenant_id, "t")
        v.handle(f"{path}.handle", org.handle)
        v.text(f"{path}.display_name", org.display_name, max_length=MAX_DISPLAY_NAME)
        if org.plan is None:
            v.add(f"{path}.plan", "is required (PLAN_FREE, PLAN_TEAM or PLAN_ENTERPRISE)")


def validate_workspace(workspace: Workspace, path: str = "workspace") -> None:
    """Every bad field of a workspace upsert, at once."""
    with Violations() as v:
        v.resource_id(f"{path}.id", workspace.id, "w")
        v.resource_id(f"{path}.org_id", workspace.org_id, "o")
        v.handle(f"{path}.handle", workspace.handle)
        v.text(f"{path}.display_name", workspace.display_name, max_length=MAX_DISPLAY_NAME)


def validate_id(field: str, value: str, prefix: str) -> None:
    """A single id argument."""
    with Violations() as v:
        v.resource_id(field, value, prefix)


def check_etag(kind: str, resource_id: str, given: str, stored: str | None) -> None:
    """An etag precondition: empty passes; otherwise it must match the stored resource."""
    if not given:
        return
    if stored is None:
        raise Aborted(
            f"{kind} {resource_id!r} does not exist, so an etag cannot match",
            reason="ETAG_MISMATCH",
            metadata={"resource": kind, "id": resource_id},
        )
    if given != stored:
        raise StaleEtag(kind, resource_id)


def hidden(principal: Principal, kind: str, resource_id: str) -> Exception:
    """NOT_FOUND for callers entitled to know; PERMISSION_DENIED for everyone else."""
    if principal.system or principal.role_on(resource_id) is not None:
        return NotFound(kind, resource_id)
    return PermissionDenied(
        f"{principal.subject!r} may not read {kind} {resource_id!r}",
        metadata={"subject": principal.subject, "resource": f"{kind} {resource_id}"},
    )


# -- use cases -------------------------------------------------------------------------------


async def upsert_tenant(db: Database, principal: Principal, tenant: Tenant) -> tuple[Tenant, bool]:
    """Create or replace a tenant by id; returns it and whether it was created."""
    principal.require_system()
    validate_tenant(tenant)
    async with db.transaction() as conn:
        stored = await store.lock_tenant(conn, tenant.id)
        check_etag("tenant", tenant.id, tenant.etag, stored.etag if stored else None)
        if stored is None:
            return await store.insert_tenant(conn, tenant), True
        if (stored.handle, stored.display_name, stored.plan) == (
            tenant.handle,
            tenant.display_name,
            tenant.plan,
        ):
            return stored, False
        return await store.update_tenant(conn, tenant), False


async def get_tenant(db: Database, principal: Principal, tenant_id: str) -> Tenant:
    """One tenant, for its members."""
    validate_id("id", tenant_id, "t")
    async with db.connection() as conn:
        tenant = await store.get_tenant(conn, tenant_id)
    if tenant is None or not principal.is_member(tenant.id):
        raise hidden(principal, "tenant", tenant_id)
    return tenant


async def upsert_org(db: Database, principal: Principal, org: Org) -> tuple[Org, bool]:
    """Create or replace an org by id; its tenant must exist and cannot change."""
    principal.require_system()
    validate_org(org)
    async with db.transaction() as conn:
        stored = await store.lock_org(conn, org.id)
        check_etag("org", org.id, org.etag, stored.etag if stored else None)
        if stored is None:
            if await store.get_tenant(conn, org.tenant_id) is None:
                raise NotFound("tenant", org.tenant_id)
            return await store.insert_org(conn, org), True
        if stored.tenant_id != org.tenant_id:
            raise ImmutableField("org.tenant_id", stored.tenant_id)
        if (stored.handle, stored.display_name, stored.plan) == (
            org.handle,
            org.display_name,
            org.plan,
        ):
            return stored, False
        return await store.update_org(conn, org), False


async def get_org(db: Database, principal: Principal, org_id: str) -> Org:
    """One org, for members of it or of its tenant."""
    validate_id("id", org_id, "o")
    async with db.connection() as conn:
        org = await store.get_org(conn, org_id)
    if org is None or not principal.is_member(org.tenant_id, org.id):
        raise hidden(principal, "org", org_id)
    return org


async def upsert_workspace(
    db: Database, principal: Principal, workspace: Workspace
) -> tuple[Workspace, bool]:
    """Create or replace a workspace by id; its org must exist and cannot change."""
    principal.require_system()
    validate_workspace(workspace)
    async with db.transaction() as conn:
        stored = await store.lock_workspace(conn, workspace.id)
        check_etag("workspace", workspace.id, workspace.etag, stored.etag if stored else None)
        if stored is None:
            org = await store.get_org(conn, workspace.org_id)
            if org is None:
                raise NotFound("org", workspace.org_id)
            created = replace(workspace, tenant_id=org.tenant_id)
            return await store.insert_workspace(conn, created), True
        if stored.org_id != workspace.org_id:
            raise ImmutableField("workspace.org_id", stored.org_id)
        if (stored.handle, stored.display_name) == (workspace.handle, workspace.display_name):
            return stored, False
        return await store.update_workspace(conn, workspace), False


async def get_workspace(db: Database, principal: Principal, workspace_id: str) -> Workspace:
    """One workspace, for members of it, its org or its tenant."""
    validate_id("id", workspace_id, "w")
    async with db.connection() as conn:
        workspace = await store.get_workspace(conn, workspace_id)
    if workspace is None or not principal.is_member(
        workspace.tenant_id, workspace.org_id, workspace.id
    ):
        raise hidden(principal, "workspace", workspace_id)
    return workspace


WORKSPACES_PAGE = PagePosition("workspaces", (str,))


async def list_workspaces(
    db: Database,
    page_tokens: PageTokens,
    principal: Principal,
    org_id: str,
    requested_size: int,
    page_token: str,
) -> WorkspacePage:
    """The workspaces of an org by id, for members of the org or its tenant."""
    with Violations() as v:
        v.resource_id("org_id", org_id, "o")
    size = page_size(requested_size)
    arguments = {"org_id": org_id}
    position = page_tokens.open(page_token, WORKSPACES_PAGE, arguments)
    after: str = position[0] if position else ""
    async with db.connection() as conn:
        org = await store.get_org(conn, org_id)
        if org is None or not principal.is_member(org.tenant_id, org.id):
            raise hidden(principal, "org", org_id)
        rows = await store.list_workspaces(conn, org_id, after, size + 1)
    more = len(rows) > size
    rows = rows[:size]
    next_token = page_tokens.seal(WORKSPACES_PAGE, [rows[-1].id], arguments) if more else ""
    return WorkspacePage(rows, next_token)


async def delete_workspace(
    db: Database, principal: Principal, workspace_id: str, etag: str, log: EventLog
) -> None:
    """Delete a workspace (system callers only): its schemas go, and its stream ends."""
    principal.require_system()
    validate_id("id", workspace_id, "w")
    async with db.transaction() as conn:
        stored = await store.lock_workspace(conn, workspace_id)
        if stored is None:
            raise NotFound("workspace", workspace_id)
        check_etag("workspace", workspace_id, etag, stored.etag)
        await end_workspace(conn, log, workspace_id)
        await store.delete_workspace(conn, workspace_id)
