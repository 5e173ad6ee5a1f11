"""Who sees and who uses what: pure functions over one integration's tree, grants and
attachments. A workspace *sees* a connection when it (directly, or through its org or tenant)
holds a grant on the connection or a folder above it; it *uses* the connection (a schema) when
it sees it and the connection, or a folder above it, is attached to the workspace."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


class RemovedReason(enum.Enum):
    """Why a schema left a workspace."""

    DETACHED = "DETACHED"
    ACCESS_REVOKED = "ACCESS_REVOKED"
    CONNECTION_DELETED = "CONNECTION_DELETED"
    INTEGRATION_DELETED = "INTEGRATION_DELETED"
    WORKSPACE_DELETED = "WORKSPACE_DELETED"


@dataclass(frozen=True)
class TreeConnection:
    """A connection as projected."""

    id: str
    integration_id: str
    folder_id: str
    handle: str
    account_id: str
    account_name: str
    config: bytes


@dataclass(frozen=True)
class Tree:
    """One integration's folders (id → parent) and connections."""

    integration_id: str
    tenant_id: str
    org_id: str | None
    parents: Mapping[str, str | None]
    connections: Mapping[str, TreeConnection]

    def ancestors(self, item_id: str) -> list[str]:
        """The folders above an item, nearest first (a folder's list starts with itself)."""
        chain: list[str] = []
        current: str | None = (
            self.connections[item_id].folder_id if item_id in self.connections else item_id
        )
        while current is not None and current in self.parents and len(chain) <= len(self.parents):
            chain.append(current)
            current = self.parents[current]
        return chain


@dataclass(frozen=True)
class Member:
    """A workspace and where it belongs."""

    workspace_id: str
    org_id: str
    tenant_id: str

    def matches(self, grantee_kind: str, grantee_id: str) -> bool:
        """Whether a grant to this grantee covers the workspace."""
        return (
            (grantee_kind == "workspace" and grantee_id == self.workspace_id)
            or (grantee_kind == "org" and grantee_id == self.org_id)
            or (grantee_kind == "tenant" and grantee_id == self.tenant_id)
        )


@dataclass(frozen=True)
class Schema:
    """One schema of a workspace."""

    connection_id: str
    integration_id: str
    name: str
    account_id: str
    attachment_kind: str  # DIRECT or FOLDER
    via_folder_id: str
    config: bytes


def granted_items(member: Member, grants: Iterable[tuple[str, str, str]]) -> set[str]:
    """Items (folder or connection ids) with a grant covering the workspace.
    `grants` are (item id, grantee kind, grantee id)."""
    return {item for item, kind, grantee in grants if member.matches(kind, grantee)}


def sees(tree: Tree, item_id: str, granted: set[str]) -> bool:
    """Whether a grant on the item or a folder above it covers the workspace."""
    if item_id in granted:
        return True
    return any(folder in granted for folder in tree.ancestors(item_id))


def visible_connections(tree: Tree, granted: set[str]) -> list[TreeConnection]:
    """Every connection of the tree the workspace sees."""
    return [c for c in tree.connections.values() if sees(tree, c.id, granted)]


def desired_schemas(tree: Tree, granted: set[str], attached: set[str]) -> dict[str, Schema]:
    """The schemas the workspace should have from this tree (connection id → schema)."""
    if not attached:
        return {}
    found: dict[str, Schema] = {}
    for connection in tree.connections.values():
        if connection.id in attached:
            kind, via = "DIRECT", ""
        else:
            via = next((f for f in tree.ancestors(connection.id) if f in attached), "")
            if not via:
                continue
            kind = "FOLDER"
        if not sees(tree, connection.id, granted):
            continue
        found[connection.id] = Schema(
            connection_id=connection.id,
            integration_id=tree.integration_id,
            name=connection.handle,
            account_id=connection.account_id,
            attachment_kind=kind,
            via_folder_id=via,
            config=connection.config,
        )
    return found


@dataclass(frozen=True)
class SchemaChange:
    """One change of a workspace's schema set."""

    kind: str  # added, renamed, removed, config_changed
    schema: Schema  # after (for removed: as it was)
    old_name: str = ""
    reason: RemovedReason | None = None


def diff_schemas(
    current: Mapping[str, Schema],
    desired: Mapping[str, Schema],
    removal_reason: Mapping[str, RemovedReason],
    default_reason: RemovedReason,
) -> list[SchemaChange]:
    """The events that take a workspace from `current` to `desired`: removals first (so a name
    freed by one connection and taken by another reads as a removal, then an addition), then
    renames and configuration changes, then additions; each group by connection id."""
    changes: list[SchemaChange] = []
    for connection_id in sorted(set(current) - set(desired)):
        changes.append(
            SchemaChange(
                "removed",
                current[connection_id],
                reason=removal_reason.get(connection_id, default_reason),
            )
        )
    for connection_id in sorted(set(current) & set(desired)):
        before, after = current[connection_id], desired[connection_id]
        if before.name != after.name:
            changes.append(SchemaChange("renamed", after, old_name=before.name))
            before = Schema(**{**before.__dict__, "name": after.name})
        if before != after:
            changes.append(SchemaChange("config_changed", after))
    for connection_id in sorted(set(desired) - set(current)):
        changes.append(SchemaChange("added", desired[connection_id]))
    return changes


def removal_reasons(
    tree: Tree | None,
    current: Mapping[str, Schema],
    granted: set[str],
    attached: set[str],
) -> dict[str, RemovedReason]:
    """Why each current schema would go: its connection (or integration) is gone, the
    workspace no longer sees it, or nothing attached covers it any more."""
    reasons: dict[str, RemovedReason] = {}
    for connection_id in current:
        if tree is None:
            reasons[connection_id] = RemovedReason.INTEGRATION_DELETED
        elif connection_id not in tree.connections:
            reasons[connection_id] = RemovedReason.CONNECTION_DELETED
        elif not sees(tree, connection_id, granted):
            reasons[connection_id] = RemovedReason.ACCESS_REVOKED
        else:
            reasons[connection_id] = RemovedReason.DETACHED
    return reasons


def grants_in_scope(
    scope_tenant: str,
    scope_org: str | None,
    grantees: Sequence[tuple[str, str]],
    org_tenants: Mapping[str, str],
    workspace_places: Mapping[str, tuple[str, str]],
) -> list[tuple[int, str]]:
    """The grantees (kind, id) outside the item's scope, as (index, description).
    `org_tenants`: org → tenant; `workspace_places`: workspace → (org, tenant)."""
    problems: list[tuple[int, str]] = []
    for i, (kind, grantee_id) in enumerate(grantees):
        if kind == "tenant":
            if scope_org is not None:
                problems.append((i, "a tenant can be granted only tenant-scoped items"))
            elif grantee_id != scope_tenant:
                problems.append((i, f"must be the item's tenant {scope_tenant}"))
        elif kind == "org":
            tenant = org_tenants.get(grantee_id)
            if tenant is None:
                problems.append((i, f"org {grantee_id} does not exist"))
            elif (scope_org is not None and grantee_id != scope_org) or tenant != scope_tenant:
                problems.append((i, "must be inside the item's scope"))
        else:
            place = workspace_places.get(grantee_id)
            if place is None:
                problems.append((i, f"workspace {grantee_id} does not exist"))
            else:
                org, tenant = place
                if tenant != scope_tenant or (scope_org is not None and org != scope_org):
                    problems.append((i, "must be a workspace inside the item's scope"))
    return problems
