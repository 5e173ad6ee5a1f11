"""The permissions service's domain records."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Plan(enum.Enum):
    """A tenant's or org's plan."""

    FREE = "FREE"
    TEAM = "TEAM"
    ENTERPRISE = "ENTERPRISE"


@dataclass(frozen=True)
class Tenant:
    """A tenant as stored."""

    id: str
    handle: str
    display_name: str
    plan: Plan | None
    etag: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class Org:
    """An org as stored."""

    id: str
    tenant_id: str
    handle: str
    display_name: str
    plan: Plan | None
    etag: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class Workspace:
    """A workspace as stored; `tenant_id` is its org's."""

    id: str
    org_id: str
    handle: str
    display_name: str
    tenant_id: str = ""
    etag: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class WorkspacePage:
    """One page of a workspace listing."""

    workspaces: list[Workspace]
    next_page_token: str


@dataclass(frozen=True)
class GrantView:
    """One grant as the API shows it."""

    kind: str
    grantee_id: str
    create_time: datetime
    from_folder_id: str = ""


@dataclass(frozen=True)
class Permissions:
    """An item's direct and inherited grants."""

    item_id: str
    tenant_id: str
    org_id: str | None
    direct: list[GrantView]
    inherited: list[GrantView]
    etag: str
    update_time: datetime | None
