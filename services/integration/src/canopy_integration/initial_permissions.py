"""The grants a new integration's root folder starts with (`initial_permissions`): which modes
each scope allows, and that every grantee is inside the integration's scope.

A request without `initial_permissions` gives no grants (mode NONE); one with it must say which
mode: UNSPECIFIED is refused, never guessed. ALL_WORKSPACES (a grant to the org) is for
org-scoped integrations, ALL_ORGS (a grant to the tenant) for tenant-scoped ones; SPECIFIC names
its grantees, the other modes none.
"""

from __future__ import annotations

from canopy_core.directory import Directory
from canopy_core.errors import FieldViolation, InvalidArgument, NotFound
from canopy_core.ids import id_pattern
from canopy_integration.model import Grantee, PermissionsMode, RootFolderPermissions, Scope

PATH = "initial_permissions"


def _named(grantee: Grantee) -> tuple[str, str] | None:
    """The grantee's kind (`tenant`, `org`, `workspace`) and id; None if it names nothing."""
    for kind in ("tenant", "org", "workspace"):
        value = getattr(grantee, f"{kind}_id")
        if value:
            return kind, value
    return None


MODES = (
    "must be NONE, ALL_WORKSPACES (org scope), ALL_ORGS (tenant scope) or SPECIFIC; "
    "leave initial_permissions unset for no grants"
)


def form_problems(
    permissions: RootFolderPermissions | None, *, org_scoped: bool
) -> list[FieldViolation]:
    """What is wrong with the request on its face (`None`: given without a known mode): a mode
    the scope does not allow, grantees missing or not wanted, a grantee naming nothing or an id
    of the wrong shape."""
    if permissions is None:
        return [FieldViolation(f"{PATH}.mode", MODES)]
    found: list[FieldViolation] = []
    if permissions.mode is PermissionsMode.ALL_ORGS and org_scoped:
        found.append(
            FieldViolation(
                f"{PATH}.mode",
                "ALL_ORGS (a grant to the tenant) is for tenant-scoped integrations; "
                "ALL_WORKSPACES gives every workspace of the org",
            )
        )
    if permissions.mode is PermissionsMode.ALL_WORKSPACES and not org_scoped:
        found.append(
            FieldViolation(
                f"{PATH}.mode",
                "ALL_WORKSPACES (a grant to the org) is for org-scoped integrations; ALL_ORGS "
                "gives every org and workspace of the tenant, SPECIFIC names some",
            )
        )
    if permissions.mode is PermissionsMode.SPECIFIC and not permissions.grantees:
        found.append(FieldViolation(f"{PATH}.grantees", "SPECIFIC needs at least one grantee"))
    if permissions.mode is not PermissionsMode.SPECIFIC and permissions.grantees:
        found.append(FieldViolation(f"{PATH}.grantees", "grantees are only for mode SPECIFIC"))
    for i, grantee in enumerate(permissions.grantees):
        where = f"{PATH}.grantees[{i}]"
        named = _named(grantee)
        if named is None:
            found.append(FieldViolation(where, "name a tenant, an org or a workspace"))
        elif not id_pattern(named[0][0]).match(named[1]):
            found.append(
                FieldViolation(
                    f"{where}.{named[0]}_id",
                    f"must look like '{named[0][0]}_' followed by 1-60 of [a-z0-9]",
                )
            )
    return found


async def check(directory: Directory, scope: Scope, permissions: RootFolderPermissions) -> None:
    """The initial grants are well-formed (checked before the directory is asked anything) and
    stay inside the integration's scope."""
    found = form_problems(permissions, org_scoped=bool(scope.org_id))
    if found:
        raise InvalidArgument(found)
    for i, grantee in enumerate(permissions.grantees):
        where = f"{PATH}.grantees[{i}]"
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
                    org = await directory.org(grantee.org_id, field=f"{where}.org_id")
                except NotFound:
                    found.append(FieldViolation(where, f"org {grantee.org_id!r} does not exist"))
                else:
                    if org.tenant_id != scope.tenant_id:
                        found.append(
                            FieldViolation(where, "must be an org of this integration's tenant")
                        )
        elif grantee.workspace_id:
            try:
                ws = await directory.workspace(grantee.workspace_id, field=f"{where}.workspace_id")
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
    if found:
        raise InvalidArgument(found, reason="GRANTEE_OUTSIDE_SCOPE")
