"""Diff a complete organization snapshot against an integration's stored tree.

Pure: given the stored folders and connections, the snapshot and the handles the rest of the
tenant holds, `plan_snapshot` returns every change to make — folders and connections to create,
update (rename, move, re-handle) and delete — in the order their events should be emitted, and
whether the deletion guard stops the apply. Nothing here touches the database.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from canopy_core.errors import FieldViolation, InvalidArgument
from canopy_integration import handles
from canopy_integration.aws import ACCOUNT_ID, ORGANIZATION_ID, OU_ID, ROOT_ID
from canopy_integration.model import (
    Account,
    Connection,
    DeletionReason,
    Folder,
    FolderKind,
    Integration,
    OrganizationalUnit,
    Snapshot,
)

ACTIVE = "ACTIVE"
MAX_NAME = 1024
MAX_SNAPSHOT_ITEMS = 200_000

IdFactory = Callable[[str], str]
T = TypeVar("T")


@dataclass(frozen=True)
class Update(Generic[T]):
    """One changed item: before, after, and the names of the fields that differ."""

    before: T
    after: T
    changed_fields: tuple[str, ...]


@dataclass(frozen=True)
class Deletion(Generic[T]):
    """One deleted item and why."""

    item: T
    reason: DeletionReason


@dataclass
class TreePlan:
    """Everything one snapshot changes, in event order."""

    folder_creates: list[Folder] = field(default_factory=list)
    folder_updates: list[Update[Folder]] = field(default_factory=list)
    connection_creates: list[Connection] = field(default_factory=list)
    connection_updates: list[Update[Connection]] = field(default_factory=list)
    connection_deletes: list[Deletion[Connection]] = field(default_factory=list)
    folder_deletes: list[Deletion[Folder]] = field(default_factory=list)
    fingerprint_refreshes: list[Connection] = field(default_factory=list)
    accounts_skipped_inactive: int = 0
    connections_total: int = 0
    organization_changed: bool = False
    needs_confirmation: bool = False

    @property
    def empty(self) -> bool:
        """Whether the snapshot changes nothing in the tree."""
        return not (
            self.folder_creates
            or self.folder_updates
            or self.connection_creates
            or self.connection_updates
            or self.connection_deletes
            or self.folder_deletes
        )

    @property
    def connections_to_delete(self) -> int:
        """How many connections the snapshot deletes."""
        return len(self.connection_deletes)


def validate_snapshot(snapshot: Snapshot, path: str = "snapshot") -> None:
    """Structural checks: ids well formed and unique, every parent known, no cycles."""
    problems: list[FieldViolation] = []

    def bad(field_path: str, description: str) -> None:
        if len(problems) < 50:
            problems.append(FieldViolation(field_path, description))

    if not ORGANIZATION_ID.match(snapshot.organization_id):
        bad(f"{path}.organization_id", "must look like 'o-' and 10-32 of [a-z0-9]")
    if not ACCOUNT_ID.match(snapshot.management_account_id):
        bad(f"{path}.management_account_id", "must be 12 digits")
    if not ROOT_ID.match(snapshot.root_id):
        bad(f"{path}.root_id", "must look like 'r-' and 4-32 of [0-9a-z]")
    if len(snapshot.units) + len(snapshot.accounts) > MAX_SNAPSHOT_ITEMS:
        bad(path, f"holds more than {MAX_SNAPSHOT_ITEMS} OUs and accounts")
    # Field paths are only built for an item found wrong: a snapshot has 10,000s of items.
    parents_of: dict[str, str] = {}
    for i, unit in enumerate(snapshot.units):
        if not OU_ID.match(unit.id):
            bad(f"{path}.organizational_units[{i}].id", "must look like 'ou-xxxx-xxxxxxxx'")
        elif unit.id in parents_of:
            bad(f"{path}.organizational_units[{i}].id", f"{unit.id} appears twice")
        parents_of[unit.id] = unit.parent_id
        if not unit.name or len(unit.name) > MAX_NAME:
            _check_name(unit.name, f"{path}.organizational_units[{i}].name", bad)
    root_id = snapshot.root_id
    for i, unit in enumerate(snapshot.units):
        if unit.parent_id != root_id and unit.parent_id not in parents_of:
            bad(
                f"{path}.organizational_units[{i}].parent_id",
                f"{unit.parent_id!r} is not in the snapshot",
            )
    seen_accounts: set[str] = set()
    for i, account in enumerate(snapshot.accounts):
        account_id, parent_id = account.id, account.parent_id
        if not (len(account_id) == 12 and account_id.isascii() and account_id.isdigit()):
            bad(f"{path}.accounts[{i}].id", "must be 12 digits")
        elif account_id in seen_accounts:
            bad(f"{path}.accounts[{i}].id", f"{account_id} appears twice")
        seen_accounts.add(account_id)
        if parent_id != root_id and parent_id not in parents_of:
            bad(f"{path}.accounts[{i}].parent_id", f"{parent_id!r} is not in the snapshot")
        if len(account.name) > MAX_NAME:
            _check_name(account.name, f"{path}.accounts[{i}].name", bad, allow_empty=True)
        if not account.state:
            bad(f"{path}.accounts[{i}].state", "is required (ACTIVE, SUSPENDED, …)")
        if len(account.email) > 320:
            bad(f"{path}.accounts[{i}].email", "must be at most 320 characters")
    # Every OU must reach the root: walk up with a bound on the depth.
    for i, unit in enumerate(snapshot.units):
        current, steps = unit.parent_id, 0
        while current != snapshot.root_id and current in parents_of and steps <= len(parents_of):
            current, steps = parents_of[current], steps + 1
        if steps > len(parents_of):
            bad(f"{path}.organizational_units[{i}].parent_id", "forms a cycle")
            break
    if problems:
        raise InvalidArgument(problems, reason="INVALID_SNAPSHOT")


def _check_name(
    name: str, field_path: str, bad: Callable[[str, str], None], *, allow_empty: bool = False
) -> None:
    if not name and not allow_empty:
        bad(field_path, "is required")
    elif len(name) > MAX_NAME:
        bad(field_path, f"must be at most {MAX_NAME} characters")


def account_fingerprint(account: Account) -> str:
    """What a connection mirrors of its account (name, email, parent, joined), as one string:
    a sync compares it with the stored one to skip accounts that did not change."""
    joined = account.joined_time.timestamp() if account.joined_time else ""
    return f"{account.name}\x1f{account.email}\x1f{account.parent_id}\x1f{joined}"


def unchanged_accounts(snapshot: Snapshot, stored: Mapping[str, str]) -> set[str]:
    """ACTIVE accounts whose stored connection already mirrors them exactly."""
    return {
        a.id
        for a in snapshot.accounts
        if a.state == ACTIVE and stored.get(a.id) == account_fingerprint(a)
    }


def plan_snapshot(
    integration: Integration,
    folders: Sequence[Folder],
    connections: Sequence[Connection],
    snapshot: Snapshot,
    taken_elsewhere: AbstractSet[str],
    *,
    new_id: IdFactory,
    confirm_deletions: bool = False,
    unchanged: AbstractSet[str] = frozenset(),
) -> TreePlan:
    """The changes that make the stored tree mirror `snapshot` (validated beforehand).

    `connections` may leave out the connections of `unchanged` accounts (whose stored fingerprint
    matches the snapshot): they cannot change, so they are skipped; their handles must then be
    in `taken_elsewhere`. `folders` must be complete.
    """
    if (
        unchanged
        and integration.organization_id
        and integration.organization_id != snapshot.organization_id
    ):
        # Fingerprints say nothing of the organization: a different one replaces everything,
        # so the caller must pass every connection.
        raise ValueError("cannot skip unchanged accounts of a different organization")
    plan = TreePlan(connections_total=len(connections) + len(unchanged))
    root = next(f for f in folders if f.kind is FolderKind.ROOT)
    plan.organization_changed = bool(
        integration.organization_id and integration.organization_id != snapshot.organization_id
    )
    # A different organization replaces everything: nothing stored matches the new snapshot.
    gone_reason = (
        DeletionReason.ORGANIZATION_CHANGED
        if plan.organization_changed
        else DeletionReason.REMOVED_FROM_ORGANIZATION
    )
    stored_units = (
        {}
        if plan.organization_changed
        else {f.aws_id: f for f in folders if f.kind is FolderKind.ORGANIZATIONAL_UNIT}
    )
    stored_accounts = {} if plan.organization_changed else {c.account_id: c for c in connections}

    # -- folders ------------------------------------------------------------------------------
    folder_for_aws_id: dict[str, Folder] = {snapshot.root_id: root}
    final_root = replace(root, aws_id=snapshot.root_id)
    if root.aws_id != snapshot.root_id:
        plan.folder_updates.append(Update(root, final_root, ("aws_id",)))
    folder_for_aws_id[snapshot.root_id] = final_root

    units = _parents_first(snapshot)
    new_folders: dict[str, Folder] = {}
    # Parents come first, so each parent's folder id is known when its children are built.
    for unit in units:
        stored = stored_units.get(unit.id)
        parent_id = folder_for_aws_id[unit.parent_id].id
        if stored is not None and stored.parent_id == parent_id and stored.title == unit.name:
            folder_for_aws_id[unit.id] = stored  # the common case: reuse, build nothing
            continue
        folder_for_aws_id[unit.id] = Folder(
            id=stored.id if stored else new_id("f"),
            integration_id=integration.id,
            parent_id=parent_id,
            kind=FolderKind.ORGANIZATIONAL_UNIT,
            aws_id=unit.id,
            title=unit.name,
            handle=stored.handle if stored else "",
            handle_static=stored.handle_static if stored else False,
            etag=stored.etag if stored else "",
            create_time=stored.create_time if stored else None,
            update_time=stored.update_time if stored else None,
        )

    # Folder handles, sibling by sibling.
    by_parent: dict[str, list[str]] = defaultdict(list)
    for unit in units:
        by_parent[folder_for_aws_id[unit.id].parent_id or ""].append(unit.id)
    for siblings in by_parent.values():
        if all(
            a in stored_units
            and stored_units[a].parent_id == folder_for_aws_id[a].parent_id
            and stored_units[a].title == folder_for_aws_id[a].title
            for a in siblings
        ):
            continue  # nothing that decides these siblings' handles changed
        staying = {
            folder_for_aws_id[a].handle
            for a in siblings
            if a in stored_units and stored_units[a].parent_id == folder_for_aws_id[a].parent_id
        }
        claimed: set[str] = set()
        folder_requests = []
        for aws_id in siblings:
            folder = folder_for_aws_id[aws_id]
            stored = stored_units.get(aws_id)
            current: str | None = None
            static = False
            if stored is not None and stored.parent_id == folder.parent_id:
                current, static = folder.handle, folder.handle_static
            elif (
                stored is not None
                and folder.handle_static
                and folder.handle not in staying | claimed
            ):
                # A user-set handle moves with its folder unless the new siblings hold it.
                current, static = folder.handle, True
                claimed.add(folder.handle)
            folder_requests.append(
                handles.FolderHandleRequest(
                    key=aws_id, ou_id=aws_id, name=folder.title, current=current, static=static
                )
            )
        assigned = handles.assign_folder_handles(folder_requests, frozenset())
        for request in folder_requests:
            folder = folder_for_aws_id[request.key]
            folder_for_aws_id[request.key] = replace(
                folder, handle=assigned[request.key], handle_static=request.static
            )

    for unit in units:
        after = folder_for_aws_id[unit.id]
        stored = stored_units.get(unit.id)
        if stored is None:
            plan.folder_creates.append(after)
            new_folders[unit.id] = after
        elif after is not stored:
            changed = _changed(stored, after, ("title", "handle", "handle_static", "parent_id"))
            if changed:
                plan.folder_updates.append(Update(stored, after, changed))

    # -- connections --------------------------------------------------------------------------
    active: list[Account] = []
    snapshot_ids: set[str] = set()
    for account in snapshot.accounts:
        snapshot_ids.add(account.id)
        if account.state != ACTIVE:
            plan.accounts_skipped_inactive += 1
        elif account.id not in unchanged:
            active.append(account)
    active.sort(key=lambda a: a.id)

    requests = []
    for account in active:
        stored_conn = stored_accounts.get(account.id)
        requests.append(
            handles.HandleRequest(
                key=account.id,
                account_id=account.id,
                account_name=account.name,
                current=stored_conn.handle if stored_conn else None,
                static=stored_conn.handle_static if stored_conn else False,
            )
        )
    assigned_handles = handles.assign_connection_handles(
        integration.handle_prefix, requests, taken_elsewhere
    )
    for account in active:
        stored_conn = stored_accounts.get(account.id)
        folder = folder_for_aws_id[account.parent_id]
        if stored_conn is None:
            plan.connection_creates.append(
                Connection(
                    id=new_id("c"),
                    integration_id=integration.id,
                    tenant_id=integration.scope.tenant_id,
                    folder_id=folder.id,
                    account_id=account.id,
                    account_name=account.name,
                    account_email=account.email,
                    account_joined_time=account.joined_time,
                    handle=assigned_handles[account.id],
                    source_fingerprint=account_fingerprint(account),
                )
            )
            continue
        handle = assigned_handles[account.id]
        fingerprint = account_fingerprint(account)
        if (
            stored_conn.folder_id == folder.id
            and stored_conn.account_name == account.name
            and stored_conn.account_email == account.email
            and stored_conn.account_joined_time == account.joined_time
            and stored_conn.handle == handle
        ):
            if stored_conn.source_fingerprint != fingerprint:
                # Only the recorded fingerprint is stale (nothing a workspace sees): fix it quietly.
                plan.fingerprint_refreshes.append(
                    replace(stored_conn, source_fingerprint=fingerprint)
                )
            continue
        after_conn = replace(
            stored_conn,
            folder_id=folder.id,
            account_name=account.name,
            account_email=account.email,
            account_joined_time=account.joined_time,
            handle=handle,
            source_fingerprint=fingerprint,
        )
        changed = _changed(
            stored_conn,
            after_conn,
            ("handle", "folder_id", "account_name", "account_email", "account_joined_time"),
        )
        plan.connection_updates.append(Update(stored_conn, after_conn, changed))

    active_ids = {a.id for a in active}
    for stored_conn in sorted(connections, key=lambda c: c.account_id):
        if plan.organization_changed:
            plan.connection_deletes.append(Deletion(stored_conn, gone_reason))
        elif stored_conn.account_id not in active_ids:
            reason = (
                DeletionReason.ACCOUNT_NOT_ACTIVE
                if stored_conn.account_id in snapshot_ids
                else gone_reason
            )
            plan.connection_deletes.append(Deletion(stored_conn, reason))

    # -- folder deletions, deepest first --------------------------------------------------------
    snapshot_units = {u.id for u in snapshot.units}
    depth = _depths(folders)
    doomed = [
        f
        for f in folders
        if f.kind is FolderKind.ORGANIZATIONAL_UNIT
        and (plan.organization_changed or f.aws_id not in snapshot_units)
    ]
    doomed.sort(key=lambda f: (-depth.get(f.id, 0), f.id))
    plan.folder_deletes = [Deletion(f, gone_reason) for f in doomed]

    # -- the guard ------------------------------------------------------------------------------
    fraction = integration.max_delete_fraction
    if (
        fraction > 0
        and plan.connections_total > 0
        and plan.connections_to_delete / plan.connections_total > fraction
        and not confirm_deletions
    ):
        plan.needs_confirmation = True
    return plan


def _changed(before: T, after: T, names: Sequence[str]) -> tuple[str, ...]:
    return tuple(n for n in names if getattr(before, n) != getattr(after, n))


def _parents_first(snapshot: Snapshot) -> list[OrganizationalUnit]:
    """The snapshot's OUs ordered so that every parent precedes its children."""
    children: dict[str, list[OrganizationalUnit]] = defaultdict(list)
    for unit in snapshot.units:
        children[unit.parent_id].append(unit)
    ordered: list[OrganizationalUnit] = []
    frontier = [snapshot.root_id]
    while frontier:
        next_frontier = []
        for parent in frontier:
            for unit in sorted(children.get(parent, ()), key=lambda u: u.id):
                ordered.append(unit)
                next_frontier.append(unit.id)
        frontier = next_frontier
    return ordered


def _depths(folders: Sequence[Folder]) -> dict[str, int]:
    parent_of = {f.id: f.parent_id for f in folders}
    depth: dict[str, int] = {}
    for folder in folders:
        current, steps = folder.parent_id, 0
        while current is not None and steps <= len(folders):
            current, steps = parent_of.get(current), steps + 1
        depth[folder.id] = steps
    return depth
