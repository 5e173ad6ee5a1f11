"""Reading the accounts and OUs a burst names from the Organizations API.

An account is read with DescribeAccount and ListParents (two calls sent together); an OU with
DescribeOrganizationalUnit, and ListParents unless the snapshot already knows it (an OU never
moves). Not found means removed from the organization. A parent neither the snapshot nor the
refresh knows is read too, and so on up to a known folder: at most MAX_WALK levels, as OUs nest
five deep. Every call goes through the crawler's discipline (`crawler.api_caller`): one
concurrency bound, retries of throttling with backoff, a timeout per attempt.

A refusal (AccessDenied, after the crawler's few attempts) of any read falls back to a full
crawl: what the credentials may see is decided in one place, by the crawl's rules (an OU whose
listings are refused is not visible and is pruned; a refused root or organization fails). A
refresh never prunes on its own, and a credential that may list an OU but not describe its
accounts loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy_discovery.aws import DiscoveryFailure, classify, error_code, is_access_denied
from canopy_discovery.crawler import account_state
from canopy_discovery.events.patching import ACCESS_DENIED, Fallback, Refreshed, missing_parents

Call = Callable[..., Awaitable[dict[str, Any]]]

# What the API answers for an id that is not (or no longer) in the organization.
NOT_FOUND_CODES = frozenset(
    {
        "AccountNotFoundException",
        "OrganizationalUnitNotFoundException",
        "ChildNotFoundException",
        "ParentNotFoundException",
    }
)
MAX_WALK = 6


async def read_entities(
    call: Call,
    snapshot: tree_pb.OrganizationSnapshot,
    account_ids: Iterable[str],
    unit_ids: Iterable[str],
) -> Refreshed | Fallback:
    """What the API says of the named accounts and OUs, and of any unknown OUs above them; a
    full crawl instead if AWS refuses a read.

    Raises DiscoveryFailure when a call fails for another reason than not found or refused."""
    try:
        return await _read_entities(call, snapshot, account_ids, unit_ids)
    except DiscoveryFailure as failure:
        if not is_access_denied(failure.__cause__):
            raise
        return Fallback(
            ACCESS_DENIED,
            f"AWS refused a read of the refresh; the crawl decides what is visible: "
            f"{failure.message}",
        )


async def _read_entities(
    call: Call,
    snapshot: tree_pb.OrganizationSnapshot,
    account_ids: Iterable[str],
    unit_ids: Iterable[str],
) -> Refreshed:
    refreshed = Refreshed()
    known_units = {unit.id: unit for unit in snapshot.organizational_units}
    await _gather(
        [_read_account(call, account_id, refreshed) for account_id in account_ids]
        + [_read_unit(call, unit_id, known_units.get(unit_id), refreshed) for unit_id in unit_ids]
    )
    for _level in range(MAX_WALK):
        unknown = missing_parents(snapshot, refreshed) - refreshed.removed_units
        if not unknown:
            break
        await _gather([_read_unit(call, unit_id, None, refreshed) for unit_id in unknown])
    return refreshed


async def _gather(reads: list[Coroutine[Any, Any, None]]) -> None:
    """Run the reads together; the first failure, once the others are cancelled."""
    try:
        async with asyncio.TaskGroup() as tasks:
            for read in reads:
                tasks.create_task(read)
    except BaseExceptionGroup as group:
        first = _first(group)
        # Keep AWS's error as the cause: it tells a refusal from other failures.
        raise first from first.__cause__


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first(error)
        if isinstance(error, DiscoveryFailure) or not isinstance(error, Exception):
            return error
        return classify(error)
    return classify(group)


async def _answer(call: Call, operation: str, **params: str) -> dict[str, Any] | None:
    """The call's answer, or None if the API does not know the id."""
    try:
        return await call(operation, **params)
    except DiscoveryFailure as failure:
        if error_code(failure.__cause__) in NOT_FOUND_CODES:
            return None
        raise


def _parent(answer: dict[str, Any] | None, refreshed: Refreshed) -> str:
    """The parent ListParents names ("" if none); a root is noted, to check it is ours."""
    parents = (answer or {}).get("Parents") or []
    if not parents:
        return ""
    parent = parents[0]
    if parent.get("Type") == "ROOT":
        refreshed.root_ids.add(str(parent["Id"]))
    return str(parent["Id"])


def _organization_of(arn: str, refreshed: Refreshed) -> None:
    # arn:aws:organizations::<management account>:account/o-…/<id>, …:ou/o-…/ou-…
    parts = arn.split("/")
    if len(parts) >= 3 and parts[1].startswith("o-"):
        refreshed.organization_ids.add(parts[1])


async def _read_account(call: Call, account_id: str, refreshed: Refreshed) -> None:
    described, parents = await asyncio.gather(
        _answer(call, "DescribeAccount", AccountId=account_id),
        _answer(call, "ListParents", ChildId=account_id),
    )
    if described is None or parents is None:
        refreshed.removed_accounts.add(account_id)
        return
    account = described["Account"]
    _organization_of(str(account.get("Arn", "")), refreshed)
    entry = tree_pb.Account(
        id=account_id,
        name=account.get("Name", ""),
        email=account.get("Email", ""),
        parent_id=_parent(parents, refreshed),
        state=account_state(account),
    )
    joined = account.get("JoinedTimestamp")
    if joined is not None:
        entry.joined_time.FromDatetime(joined)
    refreshed.accounts[account_id] = entry


async def _read_unit(
    call: Call,
    unit_id: str,
    known: tree_pb.OrganizationalUnit | None,
    refreshed: Refreshed,
) -> None:
    if known is not None:
        described = await _answer(call, "DescribeOrganizationalUnit", OrganizationalUnitId=unit_id)
        parent = known.parent_id
    else:
        described, parents = await asyncio.gather(
            _answer(call, "DescribeOrganizationalUnit", OrganizationalUnitId=unit_id),
            _answer(call, "ListParents", ChildId=unit_id),
        )
        parent = _parent(parents, refreshed) if parents is not None else ""
    if described is None:
        refreshed.removed_units.add(unit_id)
        return
    unit = described["OrganizationalUnit"]
    _organization_of(str(unit.get("Arn", "")), refreshed)
    refreshed.units[unit_id] = tree_pb.OrganizationalUnit(
        id=unit_id, parent_id=parent, name=unit.get("Name", "")
    )
