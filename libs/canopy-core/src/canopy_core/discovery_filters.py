"""Discovery filters: which part of an AWS Organization an integration mirrors, as both the
integration service (which stores them) and discovery (which crawls by them) read them.

Pure functions; patterns are ASCII-only and anchored with `\\Z`. The id shapes are those of the
Organizations API reference: `ou-` + 4-32 of `[0-9a-z]` (the root's suffix) + `-` + 8-32 of
`[a-z0-9]`; `r-` + 4-32 of `[0-9a-z]`; 12 digits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from canopy.integration.v1 import integration_pb2 as pb
from canopy_core.validation import Violations

MAX_FILTER_IDS = 1000

OU_ID = re.compile(r"^ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}\Z", re.ASCII)
ROOT_ID = re.compile(r"^r-[0-9a-z]{4,32}\Z", re.ASCII)
ACCOUNT_ID = re.compile(r"^\d{12}\Z", re.ASCII)

INCLUDE_UNITS = "include_organizational_unit_ids"
EXCLUDE_UNITS = "exclude_organizational_unit_ids"
EXCLUDE_ACCOUNTS = "exclude_account_ids"
FILTER_LISTS = (INCLUDE_UNITS, EXCLUDE_UNITS, EXCLUDE_ACCOUNTS)


@dataclass(frozen=True)
class DiscoveryFilters:
    """Which part of the organization is mirrored; empty lists: all of it."""

    include_organizational_unit_ids: tuple[str, ...] = ()
    exclude_organizational_unit_ids: tuple[str, ...] = ()
    exclude_account_ids: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in FILTER_LISTS)

    @property
    def unit_ids(self) -> tuple[str, ...]:
        """Every OU (or root) id named, included or excluded."""
        return self.include_organizational_unit_ids + self.exclude_organizational_unit_ids


NO_FILTERS = DiscoveryFilters()


def filters_from_proto(message: pb.AwsDiscoveryFilters) -> DiscoveryFilters:
    """The filters of a message, as given (validate them with `validate_filters`)."""
    return DiscoveryFilters(
        include_organizational_unit_ids=tuple(message.include_organizational_unit_ids),
        exclude_organizational_unit_ids=tuple(message.exclude_organizational_unit_ids),
        exclude_account_ids=tuple(message.exclude_account_ids),
    )


def filters_to_proto(filters: DiscoveryFilters) -> pb.AwsDiscoveryFilters:
    """The message of the filters."""
    return pb.AwsDiscoveryFilters(
        include_organizational_unit_ids=filters.include_organizational_unit_ids,
        exclude_organizational_unit_ids=filters.exclude_organizational_unit_ids,
        exclude_account_ids=filters.exclude_account_ids,
    )


def validate_filters(
    filters: DiscoveryFilters, path: str, v: Violations, only: Sequence[str] = ()
) -> None:
    """Record a violation at `<path>.<list>[<index>]` (or at the list, for its size) for each
    bad id; `only` limits the check to those lists (empty: all)."""

    def checking(name: str) -> bool:
        return not only or name in only

    include = filters.include_organizational_unit_ids
    if checking(INCLUDE_UNITS):
        _validate_ids(
            include,
            f"{path}.{INCLUDE_UNITS}",
            v,
            lambda i: bool(OU_ID.match(i) or ROOT_ID.match(i)),
            "must be an OU id such as 'ou-ab12-cd34ef56', or the root id such as 'r-ab12'",
        )
    if checking(EXCLUDE_UNITS):
        included = set(include)
        units_path = f"{path}.{EXCLUDE_UNITS}"
        _validate_ids(
            filters.exclude_organizational_unit_ids,
            units_path,
            v,
            lambda i: bool(OU_ID.match(i)),
            "must be an OU id such as 'ou-ab12-cd34ef56' (the root cannot be excluded)",
        )
        for index, unit_id in enumerate(filters.exclude_organizational_unit_ids):
            if unit_id in included:
                v.add(
                    f"{units_path}[{index}]",
                    f"{unit_id!r} is also in {path}.{INCLUDE_UNITS}; name it in one list",
                )
    if checking(EXCLUDE_ACCOUNTS):
        _validate_ids(
            filters.exclude_account_ids,
            f"{path}.{EXCLUDE_ACCOUNTS}",
            v,
            lambda i: bool(ACCOUNT_ID.match(i)),
            "must be an account id of 12 digits",
        )


def _validate_ids(
    ids: Sequence[str],
    path: str,
    v: Violations,
    valid: Callable[[str], bool],
    rule: str,
) -> None:
    if len(ids) > MAX_FILTER_IDS:
        v.add(path, f"must have at most {MAX_FILTER_IDS} ids, has {len(ids)}")
        return
    first: dict[str, int] = {}
    for index, value in enumerate(ids):
        if not valid(value):
            v.add(f"{path}[{index}]", rule)
        elif value in first:
            v.add(f"{path}[{index}]", f"duplicates {path}[{first[value]}]")
        else:
            first[value] = index
