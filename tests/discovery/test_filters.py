"""Discovery filters: `filter_snapshot` against a brute-force reading of the rule (hypothesis),
the crawl's decisions (a crawl that skips what is left out, filtered, equals the whole
organization filtered), targeted refreshes patched then filtered, and against a real moto
server: fewer API calls for an excluded subtree, and filter ids that name nothing reported."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy_core.discovery_filters import NO_FILTERS, DiscoveryFilters
from canopy_discovery.aws import AwsSettings
from canopy_discovery.crawler import CrawlLimits, CrawlProgress, crawl
from canopy_discovery.events.patching import Refreshed, patch_snapshot
from canopy_discovery.filters import Scope, filter_snapshot, unmatched_filters
from tests.awsfaults import FaultProxy
from tests.discovery.conftest import DISCOVERY_ROLE, EXTERNAL_ID, Org, normalized

ROOT = "r-root"
MANAGEMENT = "000000000000"


def unit_id(n: int) -> str:
    return f"ou-root-{n:08d}"


def account_id(n: int) -> str:
    return f"{n:012d}"


@st.composite
def organizations(draw: st.DrawFn) -> tree_pb.OrganizationSnapshot:
    """A random tree: each OU under the root or an earlier OU, accounts anywhere."""
    unit_count = draw(st.integers(0, 10))
    parents = [ROOT]
    snapshot = tree_pb.OrganizationSnapshot(
        organization_id="o-abcdefghij", management_account_id=MANAGEMENT, root_id=ROOT
    )
    for n in range(unit_count):
        parent = draw(st.sampled_from(parents))
        snapshot.organizational_units.add(id=unit_id(n), parent_id=parent, name=f"unit {n}")
        parents.append(unit_id(n))
    for n in range(draw(st.integers(0, 14))):
        snapshot.accounts.add(
            id=account_id(n), parent_id=draw(st.sampled_from(parents)), name=f"a{n}"
        )
    return snapshot


@st.composite
def scopes(draw: st.DrawFn, snapshot: tree_pb.OrganizationSnapshot) -> Scope:
    """Filters naming ids of the snapshot (the root among the includable) and some that are not
    in it."""
    units = [u.id for u in snapshot.organizational_units] + [unit_id(99)]
    accounts = [a.id for a in snapshot.accounts] + [MANAGEMENT, account_id(99)]
    include = draw(st.lists(st.sampled_from([*units, ROOT]), unique=True, max_size=3))
    exclude = draw(
        st.lists(st.sampled_from(units).filter(lambda u: u not in include), unique=True, max_size=3)
    )
    return Scope(
        DiscoveryFilters(
            tuple(include),
            tuple(exclude),
            tuple(draw(st.lists(st.sampled_from(accounts), unique=True, max_size=3))),
        ),
        draw(st.booleans()),
    )


def chain(snapshot: tree_pb.OrganizationSnapshot, start: str) -> list[str]:
    """`start` and every OU above it, up to and with the root."""
    parent_of = {u.id: u.parent_id for u in snapshot.organizational_units}
    found = [start]
    while found[-1] != snapshot.root_id:
        found.append(parent_of[found[-1]])
    return found


def expected(snapshot: tree_pb.OrganizationSnapshot, scope: Scope) -> tuple[set[str], set[str]]:
    """The OUs and accounts the rule keeps, read literally from the README's wording."""
    include = set(scope.filters.include_organizational_unit_ids)
    exclude = set(scope.filters.exclude_organizational_unit_ids)

    def excluded(node: str) -> bool:
        return bool(exclude & set(chain(snapshot, node)))

    def inside_included(node: str) -> bool:
        return (
            not include or snapshot.root_id in include or bool(include & set(chain(snapshot, node)))
        )

    included_units = [
        u
        for u in include
        if u.startswith("ou-")
        and any(x.id == u for x in snapshot.organizational_units)
        and not excluded(u)
    ]
    on_paths = {node for u in included_units for node in chain(snapshot, u)}
    units = {
        u.id
        for u in snapshot.organizational_units
        if not excluded(u.id) and (inside_included(u.id) or u.id in on_paths)
    }
    accounts = {
        a.id
        for a in snapshot.accounts
        if not excluded(a.parent_id)
        and inside_included(a.parent_id)
        and a.id not in scope.filters.exclude_account_ids
        and not (scope.exclude_management_account and a.id == snapshot.management_account_id)
    }
    return units, accounts


@st.composite
def organizations_and_scopes(draw: st.DrawFn) -> tuple[tree_pb.OrganizationSnapshot, Scope]:
    snapshot = draw(organizations())
    return snapshot, draw(scopes(snapshot))


@settings(max_examples=400, deadline=None)
@given(organizations_and_scopes())
def test_filter_snapshot_keeps_exactly_what_the_rule_says(
    case: tuple[tree_pb.OrganizationSnapshot, Scope],
) -> None:
    snapshot, scope = case
    filtered = filter_snapshot(snapshot, scope)
    units, accounts = expected(snapshot, scope)
    assert {u.id for u in filtered.organizational_units} == units
    assert {a.id for a in filtered.accounts} == accounts
    # The snapshot's order and entries are kept as they were, and so are its ids.
    assert list(filtered.organizational_units) == [
        u for u in snapshot.organizational_units if u.id in units
    ]
    assert list(filtered.accounts) == [a for a in snapshot.accounts if a.id in accounts]
    assert (filtered.organization_id, filtered.root_id, filtered.management_account_id) == (
        snapshot.organization_id,
        snapshot.root_id,
        snapshot.management_account_id,
    )


@settings(max_examples=300, deadline=None)
@given(organizations_and_scopes())
def test_a_filtered_snapshot_is_consistent_and_filtering_again_changes_nothing(
    case: tuple[tree_pb.OrganizationSnapshot, Scope],
) -> None:
    snapshot, scope = case
    filtered = filter_snapshot(snapshot, scope)
    known = {filtered.root_id} | {u.id for u in filtered.organizational_units}
    assert all(u.parent_id in known for u in filtered.organizational_units)
    assert all(a.parent_id in known for a in filtered.accounts)
    assert filter_snapshot(filtered, scope) == filtered


def crawled_part(
    snapshot: tree_pb.OrganizationSnapshot, scope: Scope
) -> tree_pb.OrganizationSnapshot:
    """What a crawl taking the scope's decisions sees (the crawler's `visit`, as a pure walk):
    every OU of a parent it lists, but below an excluded OU nothing, and accounts only of
    included parents."""
    seen = tree_pb.OrganizationSnapshot(
        organization_id=snapshot.organization_id,
        management_account_id=snapshot.management_account_id,
        root_id=snapshot.root_id,
    )
    pending = [(snapshot.root_id, scope.root_included(snapshot.root_id))]
    while pending:
        parent, included = pending.pop()
        for unit in snapshot.organizational_units:
            if unit.parent_id == parent:
                seen.organizational_units.append(unit)
                if scope.enters(unit.id):
                    pending.append((unit.id, scope.child_included(included, unit.id)))
        if included:
            seen.accounts.extend(a for a in snapshot.accounts if a.parent_id == parent)
    return seen


@settings(max_examples=300, deadline=None)
@given(organizations_and_scopes())
def test_what_a_scoped_crawl_sees_filters_to_the_whole_organization_filtered(
    case: tuple[tree_pb.OrganizationSnapshot, Scope],
) -> None:
    snapshot, scope = case
    assert normalized(filter_snapshot(crawled_part(snapshot, scope), scope)) == normalized(
        filter_snapshot(snapshot, scope)
    )


def test_no_filters_keep_the_snapshot_as_it_is() -> None:
    snapshot = tree_pb.OrganizationSnapshot(root_id=ROOT)
    snapshot.accounts.add(id=MANAGEMENT, parent_id=ROOT)
    assert filter_snapshot(snapshot, Scope()) is snapshot


# Targeted refreshes: the stored snapshot (as crawled) is patched, then filtered.

EXCLUDED = unit_id(1)
KEPT = unit_id(2)


def stored() -> tree_pb.OrganizationSnapshot:
    """root → ou 1 (excluded, seen but not crawled below), ou 2; account 5 in ou 2."""
    snapshot = tree_pb.OrganizationSnapshot(
        organization_id="o-abcdefghij", management_account_id=MANAGEMENT, root_id=ROOT
    )
    snapshot.organizational_units.add(id=EXCLUDED, parent_id=ROOT, name="excluded")
    snapshot.organizational_units.add(id=KEPT, parent_id=ROOT, name="kept")
    snapshot.accounts.add(id=account_id(5), parent_id=KEPT, name="five")
    return snapshot


SCOPE = Scope(DiscoveryFilters(exclude_organizational_unit_ids=(EXCLUDED,)))


def test_an_account_moved_into_an_excluded_ou_leaves_the_refreshed_snapshot() -> None:
    moved = Refreshed(
        accounts={account_id(5): tree_pb.Account(id=account_id(5), parent_id=EXCLUDED, name="five")}
    )
    patched = patch_snapshot(stored(), moved)
    assert isinstance(patched, tree_pb.OrganizationSnapshot)
    assert [a.id for a in filter_snapshot(patched, SCOPE).accounts] == []


def test_an_account_moved_out_of_an_excluded_ou_joins_the_refreshed_snapshot() -> None:
    # The crawl never listed the excluded OU's accounts: the refresh reads the moved one.
    moved = Refreshed(
        accounts={account_id(6): tree_pb.Account(id=account_id(6), parent_id=KEPT, name="six")}
    )
    patched = patch_snapshot(stored(), moved)
    assert isinstance(patched, tree_pb.OrganizationSnapshot)
    assert [a.id for a in filter_snapshot(patched, SCOPE).accounts] == [
        account_id(5),
        account_id(6),
    ]


# Against moto: what a scoped crawl costs and finds

FAST = CrawlLimits(max_concurrency=8, base_backoff=0.005, max_backoff=0.02, call_timeout=5)


async def crawl_counted(
    aws: AwsSettings, scope: Scope | None = None
) -> tuple[tree_pb.OrganizationSnapshot, CrawlProgress]:
    progress: list[CrawlProgress] = []
    snapshot = await crawl(
        aws, DISCOVERY_ROLE, EXTERNAL_ID, FAST, on_progress=progress.append, scope=scope
    )
    return snapshot, progress[-1]


def subtree_org(org: Org) -> tuple[str, list[str], str]:
    """An organization with a three-level subtree (the one to exclude) beside a kept OU; the
    subtree's top OU, its accounts, the kept OU."""
    top = org.ou("Sandboxes")
    levels = org.ou_chain(3, top, prefix="sandbox")
    hidden = [org.account(f"sandbox-{n}", unit) for n, unit in enumerate([top, *levels])]
    kept = org.ou("Production")
    org.account("prod", kept)
    org.account("at-root")
    return top, hidden, kept


async def test_an_excluded_subtree_is_not_crawled_and_costs_no_calls(
    proxied: AwsSettings, proxy: FaultProxy, org: Org
) -> None:
    top, hidden, _kept = subtree_org(org)
    whole, whole_progress = await crawl_counted(proxied)
    whole_counts = Counter(proxy.counts)
    proxy.counts.clear()
    scope = Scope(DiscoveryFilters(exclude_organizational_unit_ids=(top,)))
    scoped, progress = await crawl_counted(proxied, scope)
    # The four OUs of the subtree each cost a listing of OUs and one of accounts, as counted by
    # the crawl and as received by the server.
    assert whole_progress.api_calls - progress.api_calls == 8
    assert whole_counts - proxy.counts == Counter(
        {"ListOrganizationalUnitsForParent": 4, "ListAccountsForParent": 4}
    )
    # The excluded OU is seen (it exists) but nothing below it.
    assert top in {u.id for u in scoped.organizational_units}
    assert not set(hidden) & {a.id for a in scoped.accounts}
    assert normalized(filter_snapshot(scoped, scope)) == normalized(filter_snapshot(whole, scope))


async def test_included_ous_are_the_only_ones_whose_accounts_are_listed(
    aws: AwsSettings, org: Org
) -> None:
    _top, _hidden, kept = subtree_org(org)
    whole, whole_progress = await crawl_counted(aws)
    scope = Scope(DiscoveryFilters(include_organizational_unit_ids=(kept,)))
    scoped, progress = await crawl_counted(aws, scope)
    # Accounts are listed for the kept OU only: not for the root nor the subtree's four OUs.
    assert whole_progress.api_calls - progress.api_calls == 5
    filtered = filter_snapshot(scoped, scope)
    assert [u.id for u in filtered.organizational_units] == [kept]
    assert [a.name for a in filtered.accounts] == ["prod"]
    assert normalized(filtered) == normalized(filter_snapshot(whole, scope))


async def test_filter_ids_naming_nothing_are_found_out_and_hidden_ones_are_not(
    aws: AwsSettings, org: Org
) -> None:
    top, hidden, kept = subtree_org(org)
    inner = org.ou("Inner", top)
    scope = Scope(
        DiscoveryFilters(
            include_organizational_unit_ids=(kept, inner, "ou-zzzz-zzzzzzzz"),
            exclude_organizational_unit_ids=(top, "ou-yyyy-yyyyyyyy"),
            exclude_account_ids=(hidden[0], "999999999999"),
        )
    )
    found: list[DiscoveryFilters] = []

    async def check(call: object, snapshot: tree_pb.OrganizationSnapshot) -> None:
        found.append(await unmatched_filters(call, snapshot, scope.filters))  # type: ignore[arg-type]

    await crawl(aws, DISCOVERY_ROLE, EXTERNAL_ID, FAST, scope=scope, then=check)
    # `inner` and `hidden[0]` are below the excluded OU, not crawled, but asked about.
    assert found == [
        DiscoveryFilters(("ou-zzzz-zzzzzzzz",), ("ou-yyyy-yyyyyyyy",), ("999999999999",))
    ]


async def test_no_filters_find_nothing_unmatched_without_a_call(aws: AwsSettings, org: Org) -> None:
    calls: list[str] = []

    async def call(operation: str, **params: str) -> dict[str, object]:
        calls.append(operation)
        return {}

    snapshot = await crawl(aws, DISCOVERY_ROLE, EXTERNAL_ID, FAST)
    assert await unmatched_filters(call, snapshot, NO_FILTERS) == NO_FILTERS
    assert calls == []
