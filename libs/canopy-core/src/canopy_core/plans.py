"""Which plans allow integrations: a tenant-scoped one needs its tenant on ENTERPRISE, an
org-scoped one its org on TEAM or ENTERPRISE. The integration service checks it at create, and
discovery before every sync (a plan can change afterwards)."""

from __future__ import annotations

TENANT_PLANS: tuple[str, ...] = ("ENTERPRISE",)
ORG_PLANS: tuple[str, ...] = ("TEAM", "ENTERPRISE")


def eligible_plans(org_scoped: bool) -> tuple[str, ...]:
    """The plans that allow an integration at org scope, or at tenant scope."""
    return ORG_PLANS if org_scoped else TENANT_PLANS


def plan_allows(plan: str, org_scoped: bool) -> bool:
    """Whether a scope on `plan` may have integrations."""
    return plan in eligible_plans(org_scoped)


def eligible_plans_text(org_scoped: bool) -> str:
    """`TEAM or ENTERPRISE`, or `ENTERPRISE`: for messages."""
    return " or ".join(eligible_plans(org_scoped))
