"""Which part of the organization an integration mirrors: the crawl's decisions (which parents
to list), the filtering of a snapshot, and which filter ids match nothing. Pure functions but
`unmatched_filters`, which asks the API about ids a crawl did not see.

The rule (the integration's `filters`, see integration.proto): exclusions win; with included
OUs, only accounts inside an included OU's subtree are kept, and the folders of those subtrees
and of the paths from the root down to them; without, everything not excluded. With
`exclude_management_account` the management account is left out too.

A crawl lists an excluded OU's parent (so the OU is seen, and known to exist) but nothing below
it; and lists accounts only where they could be kept. Its snapshot, filtered, equals the
filtered snapshot of a crawl of everything; the snapshot as crawled (excluded OUs and the OUs
outside included subtrees still in it) is what targeted refreshes patch and filter again, so an
account that moves into an excluded OU finds its parent there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import integration_pb2 as ipb
from canopy_core.discovery_filters import NO_FILTERS, DiscoveryFilters, filters_from_proto
from canopy_discovery.aws import DiscoveryFailure, error_code

# What the API answers for an id that is not in the organization (or not well formed for it).
_NOT_FOUND = frozenset(
    {
        "AccountNotFoundException",
        "OrganizationalUnitNotFoundException",
        "ParentNotFoundException",
        "ChildNotFoundException",
        "InvalidInputException",
    }
)


@dataclass(frozen=True)
class Scope:
    """What an integration mirrors: its filters and whether the management account is out."""

    filters: DiscoveryFilters = NO_FILTERS
    exclude_management_account: bool = False

    @classmethod
    def of(cls, integration: ipb.Integration) -> Scope:
        """The scope an integration's settings give."""
        return cls(filters_from_proto(integration.filters), integration.exclude_management_account)

    @property
    def everything(self) -> bool:
        """No filter: the crawl and the snapshot are the whole organization."""
        return not self.filters and not self.exclude_management_account

    def root_included(self, root_id: str) -> bool:
        """Whether the root's own accounts are kept (and everything below, unless excluded)."""
        include = self.filters.include_organizational_unit_ids
        return not include or root_id in include

    def enters(self, unit_id: str) -> bool:
        """Whether a crawl lists what is below this OU (not if it is excluded)."""
        return unit_id not in self.filters.exclude_organizational_unit_ids

    def child_included(self, parent_included: bool, unit_id: str) -> bool:
        """Whether an OU (below a parent that is or is not included) is inside an included
        subtree: its accounts are listed and kept."""
        return parent_included or unit_id in self.filters.include_organizational_unit_ids

    def keeps_account(self, account_id: str, management_account_id: str) -> bool:
        """Whether an account inside an included subtree is kept."""
        if self.exclude_management_account and account_id == management_account_id:
            return False
        return account_id not in self.filters.exclude_account_ids


def filter_snapshot(
    snapshot: tree_pb.OrganizationSnapshot, scope: Scope
) -> tree_pb.OrganizationSnapshot:
    """The part of `snapshot` the scope mirrors, in the snapshot's order. An OU or account
    whose parents do not lead to the root is left out."""
    if scope.everything:
        return snapshot
    parent_of = {unit.id: unit.parent_id for unit in snapshot.organizational_units}
    # Per OU (and the root): None if left out (excluded, or not under the root), else whether
    # it is inside an included subtree.
    status: dict[str, bool | None] = {snapshot.root_id: scope.root_included(snapshot.root_id)}

    def status_of(unit_id: str) -> bool | None:
        chain: list[str] = []
        current = unit_id
        while current not in status:
            if current in chain or current not in parent_of:  # a cycle, or no way up
                for unit in chain:
                    status[unit] = None
                return None
            chain.append(current)
            current = parent_of[current]
        for unit in reversed(chain):
            above = status[parent_of[unit]]
            status[unit] = (
                None
                if above is None or not scope.enters(unit)
                else scope.child_included(above, unit)
            )
        return status[unit_id]

    kept_units = {u.id for u in snapshot.organizational_units if status_of(u.id)}
    # The folders on the path from the root down to each kept included OU stay too.
    for unit_id in list(kept_units):
        parent = parent_of[unit_id]
        while parent in parent_of and parent not in kept_units:
            kept_units.add(parent)
            parent = parent_of[parent]
    filtered = tree_pb.OrganizationSnapshot(
        organization_id=snapshot.organization_id,
        management_account_id=snapshot.management_account_id,
        root_id=snapshot.root_id,
    )
    filtered.organizational_units.extend(
        u for u in snapshot.organizational_units if u.id in kept_units
    )
    filtered.accounts.extend(
        a
        for a in snapshot.accounts
        if (a.parent_id == snapshot.root_id or a.parent_id in parent_of)
        and status_of(a.parent_id)
        and scope.keeps_account(a.id, snapshot.management_account_id)
    )
    return filtered


Call = Callable[..., Awaitable[dict[str, Any]]]


async def unmatched_filters(
    call: Call, snapshot: tree_pb.OrganizationSnapshot, filters: DiscoveryFilters
) -> DiscoveryFilters:
    """The filter ids that name nothing in the organization. An id the snapshot (as crawled)
    shows is found; one it does not (it may be below an excluded OU, or an account outside
    the included OUs, which are not crawled) is asked about, one call each."""
    seen_units = {unit.id for unit in snapshot.organizational_units} | {snapshot.root_id}
    seen_accounts = {account.id for account in snapshot.accounts}

    async def exists(operation: str, key: str, value: str) -> bool:
        try:
            await call(operation, **{key: value})
        except DiscoveryFailure as failure:
            if error_code(failure.__cause__) in _NOT_FOUND:
                return False
            raise
        return True

    async def missing(
        ids: Iterable[str], seen: set[str], operation: str, key: str, prefix: str = ""
    ) -> tuple[str, ...]:
        """The ids neither crawled nor found by asking; an unseen id without `prefix` (another
        root) names nothing without a call."""
        ids = list(ids)
        asked = [i for i in ids if i not in seen and i.startswith(prefix)]
        found = await asyncio.gather(*(exists(operation, key, i) for i in asked))
        present = seen | {i for i, there in zip(asked, found, strict=True) if there}
        return tuple(i for i in ids if i not in present)

    units = ("DescribeOrganizationalUnit", "OrganizationalUnitId", "ou-")
    include, exclude, accounts = await asyncio.gather(
        missing(filters.include_organizational_unit_ids, seen_units, *units),
        missing(filters.exclude_organizational_unit_ids, seen_units, *units),
        missing(filters.exclude_account_ids, seen_accounts, "DescribeAccount", "AccountId"),
    )
    return DiscoveryFilters(include, exclude, accounts)


def unmatched_message(unmatched: DiscoveryFilters) -> str:
    """A human-readable list of the ids that match nothing."""
    parts = [
        f"{name}: {', '.join(ids)}"
        for name, ids in (
            ("included OUs", unmatched.include_organizational_unit_ids),
            ("excluded OUs", unmatched.exclude_organizational_unit_ids),
            ("excluded accounts", unmatched.exclude_account_ids),
        )
        if ids
    ]
    return "filter ids not found in the organization: " + "; ".join(parts)
