"""Grants on folders and connections: reading and replacing them (owners of the item's scope),
and what a workspace may attach."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from canopy.permissions.v1 import permission_service_pb2 as rpc
from canopy_core import requests
from canopy_core.auth import Principal
from canopy_core.db import Database
from canopy_core.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    StaleEtag,
)
from canopy_core.eventlog import EventLog
from canopy_core.pagination import PagePosition, PageTokens, page_size
from canopy_core.validation import Violations
from canopy_permissions import schemas, store
from canopy_permissions.convert import permissions_to_proto
from canopy_permissions.model import GrantView, Permissions
from canopy_permissions.sharing import (
    Member,
    Tree,
    desired_schemas,
    granted_items,
    grants_in_scope,
    visible_connections,
)

ID_FOR_KIND = {"tenant": "t", "org": "o", "workspace": "w"}


def check_item(field: str | None, item_id: str) -> None:
    """A folder id in `folder_id` or a connection id in `connection_id`."""
    if field is None or not item_id:
        raise InvalidArgument.field("item", "name a folder_id or a connection_id")
    with Violations() as v:
        v.resource_id(field, item_id, "f" if field == "folder_id" else "c")


async def _scoped_item(
    conn: asyncpg.Connection, principal: Principal, item_id: str
) -> tuple[Tree, str, str | None]:
    integration_id = await store.item_integration(conn, item_id)
    scope = await store.integration_scope(conn, integration_id) if integration_id else None
    if integration_id is None or scope is None:
        if principal.system:
            raise NotFound("folder" if item_id.startswith("f_") else "connection", item_id)
        raise PermissionDenied(
            f"{principal.subject!r} may not read {item_id}", metadata={"resource": item_id}
        )
    tenant_id, org_id = scope
    if not principal.is_member(tenant_id, org_id):
        raise PermissionDenied(
            f"{principal.subject!r} may not read {item_id}", metadata={"resource": item_id}
        )
    tree = await store.load_tree(conn, integration_id)
    assert tree is not None
    return tree, tenant_id, org_id


async def _permissions(conn: asyncpg.Connection, tree: Tree, item_id: str) -> Permissions:
    chain = tree.ancestors(item_id)
    above = [f for f in chain if f != item_id]
    rows = await store.item_grants(conn, [item_id, *above])
    direct = [GrantView(r[1], r[2], r[3]) for r in rows if r[0] == item_id]
    order = {folder: i for i, folder in enumerate(above)}
    inherited = sorted(
        (GrantView(r[1], r[2], r[3], from_folder_id=r[0]) for r in rows if r[0] != item_id),
        key=lambda g: order[g.from_folder_id],
    )
    version = await store.grant_version(conn, item_id)
    return Permissions(
        item_id,
        tree.tenant_id,
        tree.org_id,
        direct,
        inherited,
        version["etag"] if version else "",
        version["updated_at"] if version else None,
    )


async def get_permissions(
    db: Database, principal: Principal, field: str | None, item_id: str
) -> Permissions:
    """An item's grants (members of its scope)."""
    check_item(field, item_id)
    async with db.connection() as conn:
        tree, _, _ = await _scoped_item(conn, principal, item_id)
        return await _permissions(conn, tree, item_id)


async def set_permissions(
    db: Database,
    log: EventLog,
    principal: Principal,
    field: str | None,
    item_id: str,
    grantees: list[tuple[str, str]],
    etag: str,
    request: rpc.SetPermissionsRequest,
) -> Permissions:
    """Replace an item's direct grants (owners of its scope); workspaces that lose access lose
    the schemas, in the same transaction."""
    check_item(field, item_id)
    found: list[FieldViolation] = []
    for i, (kind, grantee_id) in enumerate(grantees):
        prefix = ID_FOR_KIND.get(kind)
        if prefix is None:
            found.append(FieldViolation(f"grantees[{i}]", "name a tenant, an org or a workspace"))
            continue
        with_problem = Violations()
        with_problem.resource_id(f"grantees[{i}].{kind}_id", grantee_id, prefix)
        found.extend(with_problem.found)
    if found:
        raise InvalidArgument(found)
    unique = list(dict.fromkeys(grantees))
    async with db.transaction() as conn:
        if request.request_id:
            earlier = await requests.replay(
                conn,
                "SetPermissions",
                request.request_id,
                principal.subject,
                request,
                rpc.SetPermissionsResponse,
            )
            if earlier is not None:
                tree, _, _ = await _scoped_item(conn, principal, item_id)
                return await _permissions(conn, tree, item_id)
        integration_id = await store.item_integration(conn, item_id)
        if integration_id:
            await store.lock_sharing(conn, [integration_id])
        tree, tenant_id, org_id = await _scoped_item(conn, principal, item_id)
        principal.require_owner(tenant_id, org_id, resource=f"grants of {item_id}")
        version = await store.grant_version(conn, item_id)
        if etag and etag != (version["etag"] if version else ""):
            raise StaleEtag("permissions", item_id)
        org_tenants = dict(
            await conn.fetch(
                "SELECT id, tenant_id FROM orgs WHERE id = ANY($1::text[])",
                [g for k, g in unique if k == "org"],
            )
        )
        places = {
            r[0]: (r[1], r[2])
            for r in await conn.fetch(
                "SELECT id, org_id, tenant_id FROM workspaces WHERE id = ANY($1::text[])",
                [g for k, g in unique if k == "workspace"],
            )
        }
        outside = grants_in_scope(tenant_id, org_id, unique, org_tenants, places)
        if outside:
            raise InvalidArgument(
                [
                    FieldViolation(f"grantees[{grantees.index(unique[i])}]", description)
                    for i, description in outside
                ],
                reason="GRANTEE_OUTSIDE_SCOPE",
            )
        await store.replace_grants(conn, item_id, tree.integration_id, unique)
        await store.bump_grant_version(conn, item_id)
        await schemas.refresh(conn, log, tree.integration_id)
        result = await _permissions(conn, tree, item_id)
        if request.request_id:
            await requests.remember(
                conn,
                "SetPermissions",
                request.request_id,
                principal.subject,
                request,
                rpc.SetPermissionsResponse(permissions=permissions_to_proto(result)),
            )
        return result


@dataclass(frozen=True)
class Available:
    """A connection a workspace may attach."""

    connection_id: str
    handle: str
    integration_id: str
    folder_id: str
    account_id: str
    title: str
    attached: bool


AVAILABLE_PAGE = PagePosition("available_connections", (str, str))  # handle, connection id


async def list_available(
    db: Database,
    page_tokens: PageTokens,
    principal: Principal,
    workspace_id: str,
    requested_size: int,
    page_token: str,
) -> tuple[list[Available], str]:
    """Connections the workspace sees, by handle."""
    with Violations() as v:
        v.resource_id("workspace_id", workspace_id, "w")
    size = page_size(requested_size)
    arguments = {"workspace_id": workspace_id}
    after = page_tokens.open(page_token, AVAILABLE_PAGE, arguments)
    async with db.connection() as conn:
        member = await workspace_member(conn, principal, workspace_id)
        integration_ids = [
            r[0]
            for r in await conn.fetch(
                "SELECT id FROM tree_integrations WHERE tenant_id = $1 "
                "AND (org_id IS NULL OR org_id = $2)",
                member.tenant_id,
                member.org_id,
            )
        ]
        found: list[Available] = []
        for integration_id in integration_ids:
            tree = await store.load_tree(conn, integration_id)
            if tree is None:
                continue
            granted = granted_items(member, await store.grants_of(conn, integration_id))
            attached = (await store.attachments_of(conn, integration_id, [workspace_id])).get(
                workspace_id, set()
            )
            used = desired_schemas(tree, granted, attached)
            for c in visible_connections(tree, granted):
                found.append(
                    Available(
                        c.id,
                        c.handle,
                        integration_id,
                        c.folder_id,
                        c.account_id,
                        c.account_name,
                        c.id in used,
                    )
                )
    found.sort(key=lambda a: (a.handle, a.connection_id))
    if after is not None:
        found = [a for a in found if (a.handle, a.connection_id) > after]
    page = found[:size]
    more = len(found) > size
    next_token = (
        page_tokens.seal(AVAILABLE_PAGE, [page[-1].handle, page[-1].connection_id], arguments)
        if more
        else ""
    )
    return page, next_token


async def workspace_member(
    conn: asyncpg.Connection, principal: Principal, workspace_id: str
) -> Member:
    """The workspace, if the caller may use it: its members, owners of its org or tenant, or
    system callers."""
    row = await conn.fetchrow(
        "SELECT id, org_id, tenant_id FROM workspaces WHERE id = $1", workspace_id
    )
    allowed = row is not None and (
        principal.system
        or principal.role_on(workspace_id) is not None
        or principal.is_owner(row["tenant_id"], row["org_id"])
    )
    if not allowed:
        if principal.system or principal.role_on(workspace_id) is not None:
            raise NotFound("workspace", workspace_id)
        raise PermissionDenied(
            f"{principal.subject!r} may not use workspace {workspace_id!r}",
            metadata={"resource": f"workspace {workspace_id}"},
        )
    assert row is not None
    return Member(row["id"], row["org_id"], row["tenant_id"])
