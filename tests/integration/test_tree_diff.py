"""Property tests of the snapshot diff (`tree_diff`): applied to a tiny in-memory store, a plan
makes the tree mirror the snapshot, keeps ids and handles stable, never swaps handles, stays
clear of handles held elsewhere, skips unchanged accounts without changing the outcome, and
stops at the deletion guard exactly when it should."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from canopy_core.errors import InvalidArgument
from canopy_integration import handles
from canopy_integration.model import (
    Account,
    Connection,
    DeletionReason,
    Folder,
    FolderKind,
    Integration,
    OrganizationalUnit,
    Scope,
    Snapshot,
)
from canopy_integration.tree_diff import (
    TreePlan,
    account_fingerprint,
    plan_snapshot,
    unchanged_accounts,
    validate_snapshot,
)

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

T_ = TypeVar("T_")

ORG_ID = "o-abcdef1234"
OTHER_ORG_ID = "o-zyxwvu9876"
MANAGEMENT = "111111111111"
ROOT_ID = "r-ab12"
ROOT_FOLDER = "f_root"

# A small alphabet, so that slugs collide and fall back to the account id: `Prod`/`prod`/`PROD`
# share a slug, `!!!` and `` slug to nothing, `2024` starts with a digit, `public` and `pg_x`
# are reserved, `Équipe` loses its first letter, `a000000000001` is the fallback handle of
# account 000000000001, `prod_0001` the first collision suffix of `prod` for ids ending 0001,
# and the long names must be cut.
NAMES = [
    "Prod",
    "prod",
    "PROD",
    "Dev",
    "Data Prod",
    "data-prod",
    "!!!",
    "",
    "2024",
    "Équipe",
    "public",
    "pg_x",
    "a" * 50,
    "a" * 38 + " b",
    "a000000000001",
    "prod_0001",
    "Prod 010001",
]
OU_NAMES = [n for n in NAMES if n]
# Ids sharing their last 4 or 6 digits, so that the collision suffixes collide too.
ID_POOL = [
    "000000000001",
    "000000010001",
    "000001010001",
    "100001010001",
    "000000000002",
    "123456789012",
    "999999999999",
]
EMAILS = ["", "ops@example.com", "root@example.com"]
JOINED = [None, datetime(2020, 1, 1, tzinfo=UTC), datetime(2024, 2, 29, 12, tzinfo=UTC)]
INACTIVE = ["SUSPENDED", "CLOSED", "PENDING_CLOSURE"]
PREFIXES = ["", "aws_", "pg"]
# Handles the rest of the tenant may hold: the ones the alphabet above asks for most.
ELSEWHERE = [
    "prod",
    "dev",
    "data_prod",
    "quipe",
    "aws_prod",
    "prod_0001",
    "a000000000001",
    "a000000000002",
    "pgprod",
    "a" * 39,
]

account_ids = st.one_of(
    st.sampled_from(ID_POOL), st.integers(0, 10**12 - 1).map(lambda n: f"{n:012d}")
)
names = st.sampled_from(NAMES)
ou_names = st.sampled_from(OU_NAMES)
states = st.sampled_from(["ACTIVE"] * 6 + INACTIVE)
emails = st.sampled_from(EMAILS)
joined_times = st.sampled_from(JOINED)
taken_sets = st.frozensets(st.sampled_from(ELSEWHERE), max_size=4)
prefixes = st.sampled_from(PREFIXES)


def ou_id(n: int) -> str:
    return f"ou-ab12-{n:08d}"


def ou_number(unit_id: str) -> int:
    return int(unit_id.rsplit("-", 1)[1])


# -- strategies ---------------------------------------------------------------------------------


@st.composite
def snapshots(
    draw: st.DrawFn, *, max_units: int = 30, max_accounts: int = 60, organization_id: str = ORG_ID
) -> Snapshot:
    """A valid snapshot: OUs forming a forest under the root, accounts anywhere in it."""
    units: list[OrganizationalUnit] = []
    for n in range(draw(st.integers(0, max_units))):
        parent = draw(st.sampled_from([ROOT_ID, *(u.id for u in units)]))
        units.append(OrganizationalUnit(ou_id(n), parent, draw(ou_names)))
    parents = [ROOT_ID, *(u.id for u in units)]
    size = draw(st.integers(0, max_accounts))
    accounts = [
        Account(
            id=account_id,
            name=draw(names),
            email=draw(emails),
            parent_id=draw(st.sampled_from(parents)),
            state=draw(states),
            joined_time=draw(joined_times),
        )
        for account_id in draw(st.lists(account_ids, unique=True, min_size=size, max_size=size))
    ]
    # The order of a snapshot means nothing.
    return Snapshot(
        organization_id=organization_id,
        management_account_id=MANAGEMENT,
        root_id=ROOT_ID,
        units=tuple(draw(st.permutations(units))),
        accounts=tuple(accounts),
    )


def _descendants(units: Mapping[str, OrganizationalUnit], top: str) -> set[str]:
    children: dict[str, list[str]] = defaultdict(list)
    for unit in units.values():
        children[unit.parent_id].append(unit.id)
    found, frontier = {top}, [top]
    while frontier:
        frontier = [c for p in frontier for c in children[p] if c not in found]
        found.update(frontier)
    return found


MUTATIONS = [
    "rename_account",
    "rename_ou",
    "move_account",
    "move_ou",
    "remove_account",
    "remove_many",
    "remove_ou_reparent",
    "remove_ou_subtree",
    "add_account",
    "add_ou",
    "suspend",
    "activate",
    "email",
    "joined",
    "swap_account_names",
    "swap_account_names",
    "swap_ou_names",
]


@st.composite
def mutated(
    draw: st.DrawFn, snapshot: Snapshot, *, min_steps: int = 1, max_steps: int = 6
) -> Snapshot:
    """The next snapshot of the same organization: 1-6 renames, moves, removals, additions,
    suspensions, each keeping the snapshot valid (moves never create a cycle)."""
    units = {u.id: u for u in snapshot.units}
    accounts = {a.id: a for a in snapshot.accounts}
    for _ in range(draw(st.integers(min_steps, max_steps))):
        op = draw(st.sampled_from(MUTATIONS))
        parents = [ROOT_ID, *units]
        if op == "add_ou":
            new = ou_id(max((ou_number(u) for u in units), default=-1) + 1)
            units[new] = OrganizationalUnit(new, draw(st.sampled_from(parents)), draw(ou_names))
        elif op == "add_account":
            new = draw(account_ids)
            if new not in accounts:
                accounts[new] = Account(
                    new,
                    draw(names),
                    draw(emails),
                    draw(st.sampled_from(parents)),
                    draw(states),
                    draw(joined_times),
                )
        elif op in ("rename_ou", "move_ou", "remove_ou_reparent", "remove_ou_subtree"):
            if not units:
                continue
            unit = units[draw(st.sampled_from(sorted(units)))]
            if op == "rename_ou":
                units[unit.id] = unit._replace(name=draw(ou_names))
            elif op == "move_ou":
                below = _descendants(units, unit.id)
                target = draw(st.sampled_from([p for p in parents if p not in below]))
                units[unit.id] = unit._replace(parent_id=target)
            elif op == "remove_ou_reparent":
                del units[unit.id]
                for other in list(units.values()):
                    if other.parent_id == unit.id:
                        units[other.id] = other._replace(parent_id=unit.parent_id)
                for account in list(accounts.values()):
                    if account.parent_id == unit.id:
                        accounts[account.id] = account._replace(parent_id=unit.parent_id)
            else:
                doomed = _descendants(units, unit.id)
                for gone in doomed:
                    del units[gone]
                for account in list(accounts.values()):
                    if account.parent_id in doomed:
                        del accounts[account.id]
        elif op == "swap_account_names":
            # Names passed around a few accounts: what a sync must not answer with a swap.
            if len(accounts) < 2:
                continue
            pool = sorted(accounts)
            chosen = draw(st.lists(st.sampled_from(pool), unique=True, min_size=2, max_size=4))
            rotated = chosen[1:] + chosen[:1]
            renamed = {a: accounts[b].name for a, b in zip(chosen, rotated, strict=True)}
            for a, name in renamed.items():
                accounts[a] = accounts[a]._replace(name=name)
        elif op == "swap_ou_names":
            if len(units) < 2:
                continue
            pool = sorted(units)
            chosen = draw(st.lists(st.sampled_from(pool), unique=True, min_size=2, max_size=4))
            rotated = chosen[1:] + chosen[:1]
            retitled = {a: units[b].name for a, b in zip(chosen, rotated, strict=True)}
            for a, name in retitled.items():
                units[a] = units[a]._replace(name=name)
        elif op == "remove_many":
            if accounts:
                for gone in draw(st.lists(st.sampled_from(sorted(accounts)), unique=True)):
                    del accounts[gone]
        else:
            if not accounts:
                continue
            account = accounts[draw(st.sampled_from(sorted(accounts)))]
            if op == "rename_account":
                accounts[account.id] = account._replace(name=draw(names))
            elif op == "move_account":
                accounts[account.id] = account._replace(parent_id=draw(st.sampled_from(parents)))
            elif op == "remove_account":
                del accounts[account.id]
            elif op == "suspend":
                accounts[account.id] = account._replace(state=draw(st.sampled_from(INACTIVE)))
            elif op == "activate":
                accounts[account.id] = account._replace(state="ACTIVE")
            elif op == "email":
                accounts[account.id] = account._replace(email=draw(emails))
            else:
                accounts[account.id] = account._replace(joined_time=draw(joined_times))
    result = replace(snapshot, units=tuple(units.values()), accounts=tuple(accounts.values()))
    validate_snapshot(result)
    return result


# -- the tiny store -----------------------------------------------------------------------------


def make_integration(
    *, prefix: str = "", fraction: float = 0.5, organization_id: str = ""
) -> Integration:
    return Integration(
        id="i_t",
        scope=Scope(tenant_id="t_t"),
        handle="aws",
        discovery_role_arn="arn:aws:iam::111111111111:role/x",
        discovery_external_id="t_t:abcd1234",
        member_role_name="m",
        handle_prefix=prefix,
        root_folder_id=ROOT_FOLDER,
        max_delete_fraction=fraction,
        organization_id=organization_id,
    )


def empty_tree() -> list[Folder]:
    """What a new integration has: its root folder, not yet bound to an organization root."""
    return [
        Folder(
            id=ROOT_FOLDER,
            integration_id="i_t",
            parent_id=None,
            kind=FolderKind.ROOT,
            aws_id="",
            title="aws",
            handle="aws",
        )
    ]


def id_factory() -> Callable[[str], str]:
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}_{next(counter):06d}"


def check_integrity(folders: Mapping[str, Folder], connections: Mapping[str, Connection]) -> None:
    """What the database's constraints check at commit."""
    roots = [f for f in folders.values() if f.kind is FolderKind.ROOT]
    assert [r.id for r in roots] == [ROOT_FOLDER]
    siblings = Counter((f.parent_id, f.handle) for f in folders.values())
    assert not [k for k, n in siblings.items() if n > 1], "sibling folder handles repeat"
    for folder in folders.values():
        assert folder.integration_id == "i_t"
        if folder.kind is FolderKind.ORGANIZATIONAL_UNIT:
            assert folder.parent_id in folders, f"{folder.id} hangs from a missing folder"
            assert handles.FOLDER_HANDLE.match(folder.handle), folder.handle
        # No cycles: every folder reaches the root.
        current: str | None = folder.id
        for _ in range(len(folders) + 1):
            if current is None:
                break
            current = folders[current].parent_id
        assert current is None, f"{folder.id} does not reach the root"
    assert len({c.handle for c in connections.values()}) == len(connections), "handles repeat"
    assert len({c.account_id for c in connections.values()}) == len(connections)
    for connection in connections.values():
        assert connection.folder_id in folders, f"{connection.id} is in a missing folder"
        assert connection.integration_id == "i_t"
        assert connection.tenant_id == "t_t"


def apply_plan(
    folders: Iterable[Folder], connections: Iterable[Connection], plan: TreePlan
) -> tuple[list[Folder], list[Connection]]:
    """What `apply._apply_snapshot` does to the rows, by id, in its order."""
    assert not plan.needs_confirmation
    by_id = {f.id: f for f in folders}
    conns = {c.id: c for c in connections}
    for refreshed in plan.fingerprint_refreshes:
        stored = conns[refreshed.id]
        assert replace(stored, source_fingerprint=refreshed.source_fingerprint) == refreshed
        conns[refreshed.id] = refreshed
    for created in plan.folder_creates:
        assert created.id not in by_id
        by_id[created.id] = created
    for update in plan.folder_updates:
        assert by_id[update.before.id] == update.before
        assert update.after.id == update.before.id
        by_id[update.after.id] = update.after
    for deletion in plan.connection_deletes:
        assert conns.pop(deletion.item.id) == deletion.item
    for changed in plan.connection_updates:
        assert conns[changed.before.id] == changed.before
        assert changed.after.id == changed.before.id
        conns[changed.after.id] = changed.after
    for new in plan.connection_creates:
        assert new.id not in conns
        conns[new.id] = new
    for removed in plan.folder_deletes:
        assert by_id.pop(removed.item.id) == removed.item
    check_integrity(by_id, conns)
    return list(by_id.values()), list(conns.values())


def active(snapshot: Snapshot) -> dict[str, Account]:
    return {a.id: a for a in snapshot.accounts if a.state == "ACTIVE"}


def mirrors(
    folders: Iterable[Folder], connections: Iterable[Connection], snapshot: Snapshot
) -> None:
    """The tree is exactly the snapshot: the root, one folder per OU, one connection per ACTIVE
    account, each in the right place with the right name."""
    by_id = {f.id: f for f in folders}
    root = by_id[ROOT_FOLDER]
    assert root.kind is FolderKind.ROOT
    assert root.aws_id == snapshot.root_id
    ou_folders = {f.aws_id: f for f in by_id.values() if f.kind is FolderKind.ORGANIZATIONAL_UNIT}
    assert len(ou_folders) == len(by_id) - 1, "two folders mirror one OU"
    assert set(ou_folders) == {u.id for u in snapshot.units}
    folder_of = {snapshot.root_id: root, **ou_folders}
    for unit in snapshot.units:
        folder = ou_folders[unit.id]
        assert folder.title == unit.name
        assert folder.parent_id == folder_of[unit.parent_id].id, f"{unit.id} is misplaced"
    wanted = active(snapshot)
    by_account = {c.account_id: c for c in connections}
    assert len(by_account) == len(list(connections))
    assert set(by_account) == set(wanted)
    for account in wanted.values():
        connection = by_account[account.id]
        assert connection.folder_id == folder_of[account.parent_id].id, f"{account.id} misplaced"
        assert connection.account_name == account.name
        assert connection.account_email == account.email
        assert connection.account_joined_time == account.joined_time
        assert connection.source_fingerprint == account_fingerprint(account)


def check_handles(
    folders: Iterable[Folder], connections: Iterable[Connection], taken: AbstractSet[str]
) -> None:
    handles_now = [c.handle for c in connections]
    for handle in handles_now:
        assert handles.CONNECTION_HANDLE.match(handle), handle
        assert not handles.is_reserved(handle), handle
        assert handle not in taken, f"{handle} is held elsewhere in the tenant"
    assert len(set(handles_now)) == len(handles_now)
    siblings = Counter((f.parent_id, f.handle) for f in folders)
    assert all(n == 1 for n in siblings.values())


def check_plan_shape(plan: TreePlan, folders: Iterable[Folder]) -> None:
    """changed_fields name exactly what differs; parents are created before their children and
    deleted after them."""
    for c_update in plan.connection_updates:
        differ = {
            f.name
            for f in fields(Connection)
            if getattr(c_update.before, f.name) != getattr(c_update.after, f.name)
        }
        assert c_update.changed_fields
        assert set(c_update.changed_fields) == differ - {"source_fingerprint"}, c_update
        assert len(set(c_update.changed_fields)) == len(c_update.changed_fields)
    for f_update in plan.folder_updates:
        differ = {
            f.name
            for f in fields(Folder)
            if getattr(f_update.before, f.name) != getattr(f_update.after, f.name)
        }
        assert f_update.changed_fields
        assert set(f_update.changed_fields) == differ, f_update
    known = {f.id for f in folders}
    for created in plan.folder_creates:
        assert created.parent_id in known, "a folder is created before its parent"
        known.add(created.id)
    deleted: set[str] = set()
    for removed in plan.folder_deletes:
        assert removed.item.parent_id not in deleted, "a folder is deleted before its child"
        deleted.add(removed.item.id)


@dataclass
class Tree:
    """One integration's stored tree."""

    integration: Integration
    folders: list[Folder]
    connections: list[Connection]

    @classmethod
    def new(cls, *, prefix: str = "", fraction: float = 0.5) -> Tree:
        return cls(make_integration(prefix=prefix, fraction=fraction), empty_tree(), [])

    def plan(
        self,
        snapshot: Snapshot,
        taken: AbstractSet[str],
        new_id: Callable[[str], str],
        *,
        skip: bool = False,
        confirm: bool = True,
    ) -> TreePlan:
        """Plan as the service does: optionally leaving out the unchanged accounts."""
        validate_snapshot(snapshot)
        same_org = self.integration.organization_id in ("", snapshot.organization_id)
        if not (skip and same_org):
            return plan_snapshot(
                self.integration,
                self.folders,
                self.connections,
                snapshot,
                taken,
                new_id=new_id,
                confirm_deletions=confirm,
            )
        stored = {c.account_id: c for c in self.connections}
        unchanged = unchanged_accounts(
            snapshot, {a: c.source_fingerprint for a, c in stored.items()}
        )
        return plan_snapshot(
            self.integration,
            self.folders,
            [c for c in self.connections if c.account_id not in unchanged],
            snapshot,
            taken | {stored[a].handle for a in unchanged},
            new_id=new_id,
            confirm_deletions=confirm,
            unchanged=unchanged,
        )

    def applied(self, plan: TreePlan, snapshot: Snapshot) -> Tree:
        folders, connections = apply_plan(self.folders, self.connections, plan)
        integration = replace(
            self.integration,
            organization_id=snapshot.organization_id,
            management_account_id=snapshot.management_account_id,
        )
        return Tree(integration, folders, connections)

    def sync(
        self,
        snapshot: Snapshot,
        taken: AbstractSet[str],
        new_id: Callable[[str], str],
        *,
        skip: bool = False,
    ) -> tuple[TreePlan, Tree]:
        plan = self.plan(snapshot, taken, new_id, skip=skip)
        check_plan_shape(plan, self.folders)
        return plan, self.applied(plan, snapshot)


STATIC_CONNECTION_HANDLES = ["mine", "prod", "dev", "team_x", "a000000000001", "prod_0001"]
STATIC_FOLDER_HANDLES = ["mine", "prod", "dev", "team-x", "ou_00000001"]


def user_edits(data: st.DataObject, tree: Tree, taken: AbstractSet[str]) -> Tree:
    """What users do between syncs: give a few connections and folders handles of their own."""
    connections = sorted(tree.connections, key=lambda c: c.id)
    for _ in range(data.draw(st.integers(0, 2), label="static connections")):
        held = {c.handle for c in connections} | taken
        free = [h for h in STATIC_CONNECTION_HANDLES if h not in held]
        if not connections or not free:
            break
        i = data.draw(st.integers(0, len(connections) - 1))
        handle = data.draw(st.sampled_from(free))
        connections[i] = replace(connections[i], handle=handle, handle_static=True)
    folders = sorted(tree.folders, key=lambda f: (f.kind is not FolderKind.ROOT, f.id))
    for _ in range(data.draw(st.integers(0, 2), label="static folders")):
        if len(folders) < 2:
            break
        i = data.draw(st.integers(1, len(folders) - 1))  # never the root
        assert folders[i].kind is FolderKind.ORGANIZATIONAL_UNIT
        siblings = {f.handle for f in folders if f.parent_id == folders[i].parent_id}
        free = [h for h in STATIC_FOLDER_HANDLES if h not in siblings]
        if free:
            handle = data.draw(st.sampled_from(free))
            folders[i] = replace(folders[i], handle=handle, handle_static=True)
    return Tree(tree.integration, folders, connections)


def outcome(tree: Tree) -> set[tuple[str, str, str, str]]:
    """What a workspace sees: (connection id, account, handle, AWS id of its folder)."""
    aws_of = {f.id: f.aws_id for f in tree.folders}
    return {(c.id, c.account_id, c.handle, aws_of[c.folder_id]) for c in tree.connections}


def folder_outcome(tree: Tree) -> set[tuple[str, str, str, str | None]]:
    aws_of = {f.id: f.aws_id for f in tree.folders}
    return {
        (f.id, f.aws_id, f.handle, aws_of[f.parent_id] if f.parent_id else None)
        for f in tree.folders
    }


# -- properties ---------------------------------------------------------------------------------


@PROPERTY
@given(snapshot=snapshots(), prefix=prefixes, taken=taken_sets)
def test_first_apply_mirrors_the_snapshot_and_a_second_changes_nothing(
    snapshot: Snapshot, prefix: str, taken: frozenset[str]
) -> None:
    new_id = id_factory()
    tree = Tree.new(prefix=prefix)
    plan, tree = tree.sync(snapshot, taken, new_id)
    mirrors(tree.folders, tree.connections, snapshot)
    check_handles(tree.folders, tree.connections, taken)
    assert not plan.connection_updates
    assert not plan.connection_deletes
    assert not plan.folder_deletes
    assert plan.accounts_skipped_inactive == len(snapshot.accounts) - len(active(snapshot))
    # Idempotence, with and without skipping unchanged accounts.
    for skip in (False, True):
        again = tree.plan(snapshot, taken, new_id, skip=skip)
        assert again.empty, again
        assert not again.fingerprint_refreshes
        assert not again.needs_confirmation


@PROPERTY
@given(data=st.data(), prefix=prefixes, taken=taken_sets, skip=st.booleans(), statics=st.booleans())
def test_a_sequence_of_snapshots_keeps_ids_and_handles_stable(
    data: st.DataObject, prefix: str, taken: frozenset[str], skip: bool, statics: bool
) -> None:
    new_id = id_factory()
    snapshot = data.draw(snapshots(), label="first")
    _, tree = Tree.new(prefix=prefix).sync(snapshot, taken, new_id, skip=skip)
    for step in range(data.draw(st.integers(1, 5), label="steps")):
        if statics:
            tree = user_edits(data, tree, taken)
        following = data.draw(mutated(snapshot), label=f"snapshot {step + 1}")
        before = {c.account_id: c for c in tree.connections}
        plan, after = tree.sync(following, taken, new_id, skip=skip)
        mirrors(after.folders, after.connections, following)
        check_handles(after.folders, after.connections, taken)
        now = {c.account_id: c for c in after.connections}
        was_active, is_active = active(snapshot), active(following)
        for account_id in was_active.keys() & is_active.keys():
            old, new = before[account_id], now[account_id]
            assert new.id == old.id, f"{account_id} got a new connection"
            assert new.handle_static == old.handle_static
            if old.handle_static or was_active[account_id].name == is_active[account_id].name:
                assert new.handle == old.handle, (
                    f"{account_id} ({old.account_name!r}) moved from {old.handle} to {new.handle}"
                )
        # A user-set folder handle stays while its folder stays under the same parent.
        folders_now = {f.id: f for f in after.folders}
        for folder in tree.folders:
            kept = folders_now.get(folder.id)
            if folder.handle_static and kept is not None and kept.parent_id == folder.parent_id:
                assert (kept.handle, kept.handle_static) == (folder.handle, True)
        # No swaps: a persisting connection never takes the handle of another persisting one
        # that took its own.
        old_handles = {c.id: c.handle for c in tree.connections}
        new_handles = {c.id: c.handle for c in after.connections}
        held_before = {h: i for i, h in old_handles.items()}
        for conn_id, handle in new_handles.items():
            other = held_before.get(handle)
            if other is None or other == conn_id or other not in new_handles:
                continue
            assert new_handles[other] != old_handles.get(conn_id), (
                f"{conn_id} and {other} swapped {handle} and {new_handles[other]}"
            )
        # Deletion reasons.
        reasons = {d.item.account_id: d.reason for d in plan.connection_deletes}
        following_ids = {a.id for a in following.accounts}
        assert set(reasons) == was_active.keys() - is_active.keys()
        for account_id, reason in reasons.items():
            expected = (
                DeletionReason.ACCOUNT_NOT_ACTIVE
                if account_id in following_ids
                else DeletionReason.REMOVED_FROM_ORGANIZATION
            )
            assert reason is expected
        # And the result is a fixed point.
        again = after.plan(following, taken, new_id, skip=skip)
        assert again.empty, again
        assert not again.fingerprint_refreshes
        snapshot, tree = following, after


def _rotate(items: list[T_], names: list[str]) -> dict[T_, str]:
    return dict(zip(items, names[1:] + names[:1], strict=True))


@PROPERTY
@given(data=st.data(), prefix=prefixes, taken=taken_sets)
def test_passing_names_around_never_passes_handles_around(
    data: st.DataObject, prefix: str, taken: frozenset[str]
) -> None:
    """Accounts (and sibling OUs) trade names: whoever held a handle before the sync either
    keeps it or lets it go, but it never goes to another account (OU) that stays."""
    new_id = id_factory()
    snapshot = data.draw(snapshots(max_units=6, max_accounts=12), label="first")
    ids = sorted(active(snapshot))
    assume(len(ids) >= 2)
    _, tree = Tree.new(prefix=prefix).sync(snapshot, taken, new_id)
    chosen = data.draw(st.lists(st.sampled_from(ids), unique=True, min_size=2, max_size=5))
    by_id = {a.id: a for a in snapshot.accounts}
    names_of = _rotate(chosen, [by_id[a].name for a in chosen])
    units = {u.id: u for u in snapshot.units}
    parents = sorted({u.parent_id for u in snapshot.units})
    if parents:
        parent = data.draw(st.sampled_from(parents), label="OUs of")
        siblings = data.draw(
            st.permutations(sorted(u for u in units if units[u].parent_id == parent))
        )
        titles = _rotate(siblings, [units[u].name for u in siblings])
        units.update({u: units[u]._replace(name=t) for u, t in titles.items()})
    following = replace(
        snapshot,
        units=tuple(units.values()),
        accounts=tuple(a._replace(name=names_of.get(a.id, a.name)) for a in snapshot.accounts),
    )
    _, after = tree.sync(following, taken, new_id)
    mirrors(after.folders, after.connections, following)
    old_holder = {c.handle: c.id for c in tree.connections}
    for connection in after.connections:
        holder = old_holder.get(connection.handle, connection.id)
        assert holder == connection.id, f"{connection.id} took {connection.handle} of {holder}"
    old_folders = {f.id: f for f in tree.folders}
    old_sibling = {(f.parent_id, f.handle): f.id for f in tree.folders}
    for folder in after.folders:
        holder = old_sibling.get((folder.parent_id, folder.handle), folder.id)
        assert holder == folder.id or holder not in old_folders, (
            f"{folder.id} took {folder.handle} of its sibling {holder}"
        )


@PROPERTY
@given(data=st.data(), prefix=prefixes, taken=taken_sets)
def test_skipping_unchanged_accounts_changes_nothing(
    data: st.DataObject, prefix: str, taken: frozenset[str]
) -> None:
    new_id = id_factory()
    snapshot = data.draw(snapshots(), label="first")
    _, tree = Tree.new(prefix=prefix).sync(snapshot, taken, new_id)
    tree = user_edits(data, tree, taken)
    following = data.draw(mutated(snapshot), label="second")
    full = tree.plan(following, taken, new_id, skip=False)
    skipped = tree.plan(following, taken, new_id, skip=True)
    assert full.connections_total == skipped.connections_total == len(tree.connections)
    assert full.needs_confirmation == skipped.needs_confirmation
    assert {(d.item.id, d.reason) for d in full.connection_deletes} == {
        (d.item.id, d.reason) for d in skipped.connection_deletes
    }
    assert {(d.item.id, d.reason) for d in full.folder_deletes} == {
        (d.item.id, d.reason) for d in skipped.folder_deletes
    }
    after_full = tree.applied(full, following)
    after_skipped = tree.applied(skipped, following)
    # Connection and folder ids of new items differ (each plan drew its own); compare the rest.
    assert {o[1:] for o in outcome(after_full)} == {o[1:] for o in outcome(after_skipped)}
    assert {o[1:] for o in folder_outcome(after_full)} == {
        o[1:] for o in folder_outcome(after_skipped)
    }
    kept = {c.id for c in tree.connections}
    assert {o for o in outcome(after_full) if o[0] in kept} == {
        o for o in outcome(after_skipped) if o[0] in kept
    }


FRACTIONS = [0.0, 0.1, 0.25, 1 / 3, 0.5, 2 / 3, 0.75, 0.99, 1.0]


@PROPERTY
@given(data=st.data(), fraction=st.one_of(st.sampled_from(FRACTIONS), st.floats(0, 1)))
def test_the_deletion_guard_stops_exactly_above_the_fraction(
    data: st.DataObject, fraction: float
) -> None:
    new_id = id_factory()
    snapshot = data.draw(snapshots(max_units=8, max_accounts=12), label="first")
    _, tree = Tree.new(fraction=fraction).sync(snapshot, frozenset(), new_id)
    following = data.draw(mutated(snapshot, max_steps=8), label="second")
    total = len(tree.connections)
    deletions = len(active(snapshot).keys() - active(following).keys())
    expected = fraction > 0 and total > 0 and deletions / total > fraction
    for skip in (False, True):
        plan = tree.plan(following, frozenset(), new_id, skip=skip, confirm=False)
        assert plan.connections_total == total
        assert plan.connections_to_delete == deletions
        assert plan.needs_confirmation == expected, (deletions, total, fraction)
        confirmed = tree.plan(following, frozenset(), new_id, skip=skip, confirm=True)
        assert not confirmed.needs_confirmation


@PROPERTY
@given(
    data=st.data(),
    prefix=prefixes,
    new_root=st.sampled_from([ROOT_ID, "r-cd34"]),
    skip=st.booleans(),
)
def test_a_different_organization_replaces_everything(
    data: st.DataObject, prefix: str, new_root: str, skip: bool
) -> None:
    new_id = id_factory()
    snapshot = data.draw(snapshots(), label="first")
    _, tree = Tree.new(prefix=prefix).sync(snapshot, frozenset(), new_id)
    following = data.draw(mutated(snapshot), label="second")
    other = replace(
        following,
        organization_id=OTHER_ORG_ID,
        root_id=new_root,
        units=tuple(
            u._replace(parent_id=new_root if u.parent_id == ROOT_ID else u.parent_id)
            for u in following.units
        ),
        accounts=tuple(
            a._replace(parent_id=new_root if a.parent_id == ROOT_ID else a.parent_id)
            for a in following.accounts
        ),
    )
    plan = tree.plan(other, frozenset(), new_id, skip=skip, confirm=False)
    assert plan.organization_changed
    assert plan.connections_to_delete == plan.connections_total == len(tree.connections)
    assert plan.needs_confirmation == bool(tree.connections)  # 100% > the default 0.5
    plan = tree.plan(other, frozenset(), new_id, skip=skip, confirm=True)
    assert not plan.needs_confirmation
    assert {d.item.id for d in plan.connection_deletes} == {c.id for c in tree.connections}
    assert {d.reason for d in plan.connection_deletes} <= {DeletionReason.ORGANIZATION_CHANGED}
    old_ou_folders = {f.id for f in tree.folders if f.kind is FolderKind.ORGANIZATIONAL_UNIT}
    assert {d.item.id for d in plan.folder_deletes} == old_ou_folders
    assert {d.reason for d in plan.folder_deletes} <= {DeletionReason.ORGANIZATION_CHANGED}
    assert not plan.connection_updates
    old_ids = {c.id for c in tree.connections} | {f.id for f in tree.folders}
    assert not {c.id for c in plan.connection_creates} & old_ids
    assert not {f.id for f in plan.folder_creates} & old_ids
    check_plan_shape(plan, tree.folders)
    after = tree.applied(plan, other)
    mirrors(after.folders, after.connections, other)
    check_handles(after.folders, after.connections, frozenset())
    assert not {c.id for c in after.connections} & old_ids
    assert after.integration.organization_id == OTHER_ORG_ID
    again = after.plan(other, frozenset(), new_id, skip=skip)
    assert again.empty
    assert not again.organization_changed


@PROPERTY
@given(data=st.data(), prefix=prefixes)
def test_handles_held_elsewhere_are_never_assigned(data: st.DataObject, prefix: str) -> None:
    new_id = id_factory()
    snapshot = data.draw(snapshots(max_units=4, max_accounts=20), label="first")
    # Everything the first apply would hand out, plus the usual suspects, is now held elsewhere.
    _, probe = Tree.new(prefix=prefix).sync(snapshot, frozenset(), id_factory())
    taken = frozenset(
        data.draw(
            st.sets(st.sampled_from(sorted({c.handle for c in probe.connections} | set(ELSEWHERE))))
        )
    )
    _, tree = Tree.new(prefix=prefix).sync(snapshot, taken, new_id)
    check_handles(tree.folders, tree.connections, taken)
    following = data.draw(mutated(snapshot), label="second")
    _, after = tree.sync(following, taken, new_id)
    check_handles(after.folders, after.connections, taken)


# -- validate_snapshot --------------------------------------------------------------------------


def unit(n: int, parent: str = ROOT_ID, name: str = "Unit") -> OrganizationalUnit:
    return OrganizationalUnit(ou_id(n), parent, name)


def account(account_id: str = "123456789012", parent: str = ROOT_ID, **changes: Any) -> Account:
    return Account(account_id, "Prod", "ops@example.com", parent, "ACTIVE")._replace(**changes)


def snap(
    units: Iterable[OrganizationalUnit] = (), accounts: Iterable[Account] = (), **changes: Any
) -> Snapshot:
    return replace(Snapshot(ORG_ID, MANAGEMENT, ROOT_ID, tuple(units), tuple(accounts)), **changes)


# Twelve digits, but not ASCII ones: `str.isdigit` says yes, the rule says no.
FULLWIDTH_ID = "".join(chr(0xFF10 + int(d)) for d in "123456789012")
ARABIC_INDIC_ID = "".join(chr(0x0660 + int(d)) for d in "123456789012")


def violations(snapshot: Snapshot, path: str = "snapshot") -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        validate_snapshot(snapshot, path)
    assert caught.value.reason == "INVALID_SNAPSHOT"
    return [v.field for v in caught.value.violations]


def test_a_valid_snapshot_passes() -> None:
    validate_snapshot(
        snap(
            [unit(1), unit(0, ou_id(1))],  # a child listed before its parent is fine
            [account(parent=ou_id(0)), account("000000000001", name="")],
        )
    )


@PROPERTY
@given(snapshot=snapshots())
def test_generated_snapshots_are_valid(snapshot: Snapshot) -> None:
    validate_snapshot(snapshot)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"organization_id": "org-1"}, "snapshot.organization_id"),
        ({"organization_id": "o-ABCDEF1234"}, "snapshot.organization_id"),
        ({"management_account_id": "12345"}, "snapshot.management_account_id"),
        ({"management_account_id": FULLWIDTH_ID}, "snapshot.management_account_id"),
        ({"root_id": "root"}, "snapshot.root_id"),
        ({"root_id": "r-ab"}, "snapshot.root_id"),
    ],
)
def test_bad_snapshot_ids(changes: dict[str, Any], field: str) -> None:
    assert violations(replace(snap(), **changes)) == [field]


@pytest.mark.parametrize(
    ("units", "accounts", "fields_"),
    [
        # Duplicates.
        ([unit(0), unit(0)], [], ["snapshot.organizational_units[1].id"]),
        ([], [account(), account()], ["snapshot.accounts[1].id"]),
        # Unknown parents.
        ([unit(0, ou_id(7))], [], ["snapshot.organizational_units[0].parent_id"]),
        ([], [account(parent=ou_id(7))], ["snapshot.accounts[0].parent_id"]),
        ([], [account(parent="r-other")], ["snapshot.accounts[0].parent_id"]),
        # Cycles.
        ([unit(0, ou_id(0))], [], ["snapshot.organizational_units[0].parent_id"]),
        (
            [unit(0), unit(1, ou_id(2)), unit(2, ou_id(1))],
            [],
            ["snapshot.organizational_units[1].parent_id"],
        ),
        # Bad shapes.
        (
            [OrganizationalUnit("ou-AB12-00000000", ROOT_ID, "x")],
            [],
            ["snapshot.organizational_units[0].id"],
        ),
        (
            [OrganizationalUnit("ou-ab12-0000", ROOT_ID, "x")],
            [],
            ["snapshot.organizational_units[0].id"],
        ),
        ([unit(0, name="")], [], ["snapshot.organizational_units[0].name"]),
        ([unit(0, name="x" * 1025)], [], ["snapshot.organizational_units[0].name"]),
        ([], [account("12345678901")], ["snapshot.accounts[0].id"]),
        ([], [account("12345678901a")], ["snapshot.accounts[0].id"]),
        ([], [account(ARABIC_INDIC_ID)], ["snapshot.accounts[0].id"]),
        ([], [account(state="")], ["snapshot.accounts[0].state"]),
        ([], [account(email="x" * 321)], ["snapshot.accounts[0].email"]),
        ([], [account(name="x" * 1025)], ["snapshot.accounts[0].name"]),
        # Several at once: every one is named.
        (
            [unit(0, name=""), unit(0)],
            [account("1"), account(parent="nowhere")],
            [
                "snapshot.organizational_units[0].name",
                "snapshot.organizational_units[1].id",
                "snapshot.accounts[0].id",
                "snapshot.accounts[1].parent_id",
            ],
        ),
    ],
)
def test_bad_snapshot_contents(
    units: list[OrganizationalUnit], accounts: list[Account], fields_: list[str]
) -> None:
    assert violations(snap(units, accounts)) == fields_


def test_violation_paths_follow_the_given_path() -> None:
    assert violations(snap([], [account(parent="nowhere")]), "outcome.snapshot") == [
        "outcome.snapshot.accounts[0].parent_id"
    ]
