"""A targeted refresh's new snapshot: the last applied one, with the accounts and OUs read from
the API put in place of what it said of them; or the reason a full crawl must be made instead.
Pure functions.

A refresh is consistent only if the snapshot it patches is the tree as it stands (the stored
snapshot produced the integration's current tree generation), if every account and OU still has
a parent the snapshot knows, and if the organization is still the same one. Otherwise, and when
the burst names so much of the tree that a crawl costs about as little, it falls back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy_discovery.model import AppliedSnapshot

# Why a refresh fell back to a full crawl (the run's `full_crawl_reason`).
NO_STORED_SNAPSHOT = "NO_STORED_SNAPSHOT"
STORED_SNAPSHOT_OUT_OF_DATE = "STORED_SNAPSHOT_OUT_OF_DATE"
TOO_MUCH_OF_THE_TREE = "TOO_MUCH_OF_THE_TREE"
UNKNOWN_PARENT = "UNKNOWN_PARENT"
REMOVED_OU_HAS_CHILDREN = "REMOVED_OU_HAS_CHILDREN"
ORGANIZATION_CHANGED = "ORGANIZATION_CHANGED"
CONFLICT = "CONFLICT"
ACCESS_DENIED = "ACCESS_DENIED"


@dataclass(frozen=True)
class Fallback:
    """A full crawl instead of the refresh, and why."""

    reason: str
    message: str


@dataclass
class Refreshed:
    """What the Organizations API said of the entities a refresh read."""

    accounts: dict[str, tree_pb.Account] = field(default_factory=dict)
    removed_accounts: set[str] = field(default_factory=set)
    units: dict[str, tree_pb.OrganizationalUnit] = field(default_factory=dict)
    removed_units: set[str] = field(default_factory=set)
    organization_ids: set[str] = field(default_factory=set)  # in the ARNs answered
    root_ids: set[str] = field(default_factory=set)  # roots named as parents


def check_stored(stored: AppliedSnapshot | None, tree_generation: int) -> Fallback | None:
    """Whether the stored snapshot is the tree as it stands."""
    if stored is None:
        return Fallback(NO_STORED_SNAPSHOT, "no snapshot has been applied by this discovery yet")
    if stored.generation != tree_generation:
        return Fallback(
            STORED_SNAPSHOT_OUT_OF_DATE,
            f"the last snapshot discovery applied left the tree at generation "
            f"{stored.generation}, but it is at generation {tree_generation}",
        )
    return None


def check_share(
    touched: int, snapshot: tree_pb.OrganizationSnapshot, max_share: float, min_entities: int
) -> Fallback | None:
    """Whether a burst names so much of the tree that a full crawl is the better read."""
    size = len(snapshot.accounts) + len(snapshot.organizational_units)
    if touched <= min_entities or touched <= max_share * size:
        return None
    return Fallback(
        TOO_MUCH_OF_THE_TREE,
        f"the events name {touched} of the tree's {size} accounts and OUs, more than "
        f"{max_share:.0%} (and more than {min_entities})",
    )


def missing_parents(snapshot: tree_pb.OrganizationSnapshot, refreshed: Refreshed) -> set[str]:
    """OUs named as parents by what was read that neither the snapshot nor the refresh knows:
    the refresh reads them too, walking up to a known folder."""
    known = {unit.id for unit in snapshot.organizational_units}
    known -= refreshed.removed_units
    known |= refreshed.units.keys()
    named = {a.parent_id for a in refreshed.accounts.values()}
    named |= {u.parent_id for u in refreshed.units.values()}
    return {p for p in named if p.startswith("ou-") and p not in known}


def patch_snapshot(
    snapshot: tree_pb.OrganizationSnapshot, refreshed: Refreshed
) -> tree_pb.OrganizationSnapshot | Fallback:
    """The snapshot with the refreshed entities in place (new ones appended, removed ones left
    out), or the reason it cannot be made consistent."""
    others = (refreshed.organization_ids - {snapshot.organization_id}) | (
        refreshed.root_ids - {snapshot.root_id}
    )
    if others:
        return Fallback(
            ORGANIZATION_CHANGED,
            f"the API answers for {', '.join(sorted(others))}, the snapshot is of "
            f"{snapshot.organization_id} (root {snapshot.root_id})",
        )
    removed_units = refreshed.removed_units
    units = _patched(snapshot.organizational_units, refreshed.units, removed_units)
    parents = {snapshot.root_id} | {unit.id for unit in units}
    accounts = _patched(snapshot.accounts, refreshed.accounts, refreshed.removed_accounts)
    children = [(u.id, u.parent_id) for u in units] + [(a.id, a.parent_id) for a in accounts]
    for child_id, parent_id in children:
        if parent_id in parents:
            continue
        if parent_id in removed_units:
            return Fallback(
                REMOVED_OU_HAS_CHILDREN,
                f"the OU {parent_id} is gone, but {child_id} is still under it in the snapshot",
            )
        return Fallback(
            UNKNOWN_PARENT,
            f"{child_id} is under {parent_id or 'no parent'}, which the organization's tree "
            "does not lead to",
        )
    patched = tree_pb.OrganizationSnapshot(
        organization_id=snapshot.organization_id,
        management_account_id=snapshot.management_account_id,
        root_id=snapshot.root_id,
    )
    patched.organizational_units.extend(units)
    patched.accounts.extend(accounts)
    return patched


Entry = TypeVar("Entry", tree_pb.Account, tree_pb.OrganizationalUnit)


def _patched(kept: Iterable[Entry], fresh: dict[str, Entry], removed: set[str]) -> list[Entry]:
    """The kept entries in their order with fresh ones in their place, then the new ones."""
    result: list[Entry] = []
    seen: set[str] = set()
    for entry in kept:
        seen.add(entry.id)
        if entry.id in removed:
            continue
        result.append(fresh.get(entry.id, entry))
    result.extend(entry for key, entry in fresh.items() if key not in seen)
    return result
