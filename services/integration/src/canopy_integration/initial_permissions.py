"""The grants a new integration's root folder starts with (`initial_permissions`): which modes
each scope allows, and that every grantee is inside the integration's scope."""

from __future__ import annotations

from canopy_core.directory import Directory
from canopy_core.errors import FieldViolation, InvalidArgument, NotFound
from canopy_integration.model import PermissionsMode, RootFolderPermissions, Scope


async def check(directory: Directory, scope: Scope, permissions: RootFolderPermissions) -> None:
    """Initial grants must stay inside the integration's scope."""
    found: list[FieldViolation] = []
    path = "initial_permissions"
    if permissions.mode is PermissionsMode.ALL_ORGS and scope.org_id:
        found.append(FieldViolation(f"{path}.mode", "ALL_ORGS is for tenant-scoped integrations"))
    if permissions.mode is PermissionsMode.SPECIFIC and not permissions.grantees:
        found.append(FieldViolation(f"{path}.grantees", "SPECIFIC needs at least one grantee"))
    if permissions.mode is not PermissionsMode.SPECIFIC and permissions.grantees:
        found.append(FieldViolation(f"{path}.grantees", "grantees are only for mode SPECIFIC"))
    for i, grantee in enumerate(permissions.grantees):
        where = f"{path}.grantees[{i}]"
        if grantee.tenant_id:
            if scope.org_id or grantee.tenant_id != scope.tenant_id:
                found.append(
                    FieldViolation(
                        where, "a tenant grant must name this integration's tenant, at tenant scope"
                    )
                )
        elif grantee.org_id:
            if scope.org_id and grantee.org_id != scope.org_id:
                found.append(FieldViolation(where, "must be this integration's org"))
            elif not scope.org_id:
                try:
                    org = await directory.org(grantee.org_id)
                except NotFound:
                    found.append(FieldViolation(where, f"org {grantee.org_id!r} does not exist"))
                else:
                    if org.tenant_id != scope.tenant_id:
                        found.append(
                            FieldViolation(where, "must be an org of this integration's tenant")
                        )
        elif grantee.workspace_id:
            try:
                ws = await directory.workspace(grantee.workspace_id)
            except NotFound:
                found.append(
                    FieldViolation(where, f"workspace {grantee.workspace_id!r} does not exist")
                )
            else:
                inside = (
                    ws.org_id == scope.org_id if scope.org_id else ws.tenant_id == scope.tenant_id
                )
                if not inside:
                    found.append(
                        FieldViolation(where, "must be a workspace inside this integration's scope")
                    )
        else:
            found.append(FieldViolation(where, "name a tenant, an org or a workspace"))
    if found:
        raise InvalidArgument(found, reason="GRANTEE_OUTSIDE_SCOPE")
