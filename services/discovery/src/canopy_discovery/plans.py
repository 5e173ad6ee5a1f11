"""Whether an integration's plan still allows it to be synced.

Plans are checked at create by the integration service, but a tenant or org can be moved to a
plan that no longer allows its integrations afterwards. Discovery asks the directory (the
permissions service, which owns tenants and orgs) before every sync, under the integration's
lease: an integration whose plan no longer allows it is not crawled, and is reported to the
integration service as SUSPENDED (its tree, grants and workspace schemas stay as they are);
once the plan allows it again, the next sync makes it ENABLED. The reconciler asks too, so that
both changes take effect sooner than the next due time.
"""

from __future__ import annotations

from dataclasses import dataclass

from canopy_core.directory import Directory
from canopy_core.errors import NotFound
from canopy_core.plans import eligible_plans_text, plan_allows

PLAN_NOT_ELIGIBLE = "PLAN_NOT_ELIGIBLE"


@dataclass(frozen=True)
class Suspension:
    """Why an integration is not synced for now: an UPPER_SNAKE reason and a message."""

    reason: str
    message: str


async def plan_suspension(
    directory: Directory, tenant_id: str, org_id: str | None
) -> Suspension | None:
    """The suspension of an integration of this scope, or None if its plan allows syncing. A
    scope the directory no longer has is not eligible.

    Raises the directory's error (a CanopyError) when it cannot answer: callers then leave the
    integration as it is, suspended or not, so that an outage of the permissions service
    neither stops every sync nor resumes what was suspended.
    """
    kind, scope_id = ("org", org_id) if org_id else ("tenant", tenant_id)
    org_scoped = org_id is not None
    try:
        info = await (
            directory.org(org_id, field="scope.org_id")
            if org_id
            else directory.tenant(tenant_id, field="scope.tenant_id")
        )
    except NotFound:
        return Suspension(
            PLAN_NOT_ELIGIBLE,
            f"{kind} {scope_id!r} is not in the directory: its integrations are not synced",
        )
    if plan_allows(info.plan, org_scoped):
        return None
    return Suspension(
        PLAN_NOT_ELIGIBLE,
        f"{kind} {scope_id!r} is on plan {info.plan}; {kind}-scoped integrations need "
        f"{eligible_plans_text(org_scoped)}. Syncing is paused: its folders, connections, "
        "grants and workspace schemas are kept, and it syncs again once the plan allows it",
    )
