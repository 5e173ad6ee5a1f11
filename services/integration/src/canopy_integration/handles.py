"""Connection and folder handles: slugging, validation, collisions and stable assignment.

A connection handle is the schema name a workspace sees, so it follows PostgreSQL's rules and
stays clear of the names PostgreSQL and Steampipe reserve. A discovered connection's handle is
*dynamic* (handle prefix + slug of the account name); a user-set one is *static*. Collisions
resolve deterministically and stably: whoever holds a handle keeps it, the newcomer gets a suffix
from its account id, and one assignment never swaps two handles. A prefix change replaces only
the prefix: the slug and any suffix stay. Folders follow the same rules among their siblings.
Pure: no I/O.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import NamedTuple

CONNECTION_HANDLE = re.compile(r"^[a-z](?:[a-z0-9]|_(?=[a-z0-9])){0,38}\Z")
FOLDER_HANDLE = re.compile(r"^[a-z](?:[a-z0-9]|[-_](?=[a-z0-9])){0,38}\Z")
MAX_HANDLE = 39
MAX_PREFIX = 20

RESERVED_NAMES = frozenset({"public", "information_schema"})
RESERVED_PREFIXES = ("pg_", "steampipe_")

CONNECTION_HANDLE_RULE = (
    "must be 1-39 characters: a lower-case letter, then letters, digits and single '_' between them"
)
FOLDER_HANDLE_RULE = (
    "must be 1-39 characters: a lower-case letter, then letters, digits and single '-' or '_' "
    "between them"
)

_PREFIX = re.compile(r"^[a-z][a-z0-9_]*\Z")
_NOT_SLUG = re.compile(r"[^a-zA-Z0-9]+")
_NOT_ALNUM = re.compile(r"[^a-zA-Z0-9]")
_COUNTER = re.compile(r"_([1-9][0-9]*)$")

# Tail lengths of the id used in the suffixed candidates; the last is the "whole id", capped so
# that a long OU id still leaves room for the base and a counter.
_CONNECTION_TAILS = (4, 6, 24)
_FOLDER_TAILS = (4, 8, 24)


def slug(text: str) -> str:
    """Lower-case ASCII letters and digits; every run of anything else becomes one `_`, trimmed.

    Non-ASCII letters are not transliterated: `Café` becomes `caf`.
    """
    # Only ASCII is lower-cased: str.lower() would turn e.g. the Kelvin sign into a plain `k`.
    return _NOT_SLUG.sub("_", text).lower().strip("_")


def is_reserved(handle: str) -> bool:
    """Whether PostgreSQL or Steampipe reserves this schema name."""
    return handle in RESERVED_NAMES or handle.startswith(RESERVED_PREFIXES)


def connection_handle_problem(handle: str) -> str | None:
    """Why `handle` cannot be a user-set connection handle, or None if it can."""
    if not handle:
        return "must not be empty"
    if len(handle) > MAX_HANDLE:
        return f"must be at most {MAX_HANDLE} characters"
    if not CONNECTION_HANDLE.match(handle):
        return CONNECTION_HANDLE_RULE
    if is_reserved(handle):
        return (
            f"'{handle}' is reserved: 'public', 'information_schema' and names starting "
            "'pg_' or 'steampipe_' cannot be schema names"
        )
    return None


def folder_handle_problem(handle: str) -> str | None:
    """Why `handle` cannot be a user-set folder handle, or None if it can."""
    if not handle:
        return "must not be empty"
    if len(handle) > MAX_HANDLE:
        return f"must be at most {MAX_HANDLE} characters"
    if not FOLDER_HANDLE.match(handle):
        return FOLDER_HANDLE_RULE
    return None


def prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot be an integration's handle prefix, or None if it can ("" can)."""
    if not prefix:
        return None
    if len(prefix) > MAX_PREFIX:
        return f"must be at most {MAX_PREFIX} characters"
    if not _PREFIX.match(prefix):
        return "must be a lower-case letter, then lower-case letters, digits and '_'"
    if "__" in prefix:
        return "must not contain '__'"
    if prefix.startswith(RESERVED_PREFIXES):
        return "must not start with 'pg_' or 'steampipe_' (reserved schema names)"
    return None


def _fit(handle: str, separators: str = "_") -> str:
    """Cut to the maximum handle length without leaving a trailing separator."""
    return handle[:MAX_HANDLE].rstrip(separators)


def _alnum_id(account_id: str) -> str:
    """The account id's letters and digits, lower-cased; refuses an id that has none."""
    cleaned = _NOT_ALNUM.sub("", account_id).lower()
    if not cleaned:
        raise ValueError(f"account id {account_id!r} has no letters or digits")
    return cleaned


def _ou_slug(ou_id: str) -> str:
    """The OU id as a slug (`ou-ab12-cd34ef56` → `ou_ab12_cd34ef56`); refuses an empty one."""
    slugged = slug(ou_id)
    if not slugged:
        raise ValueError(f"OU id {ou_id!r} has no letters or digits")
    return slugged


def dynamic_connection_handle(prefix: str, account_name: str, account_id: str) -> str:
    """The handle a discovered account wants: prefix + slug of its name, or of its id.

    The id (`a123456789012`) stands in when the name slugs to nothing, would put a digit first,
    or would make a reserved name; the result is cut to 39 characters.
    """
    problem = prefix_problem(prefix)
    if problem is not None:
        raise ValueError(f"handle prefix {prefix!r} {problem}")
    return _dynamic_connection_handle(prefix, account_name, account_id)


def _dynamic_connection_handle(prefix: str, account_name: str, account_id: str) -> str:
    """`dynamic_connection_handle` for a prefix already checked (the hot path of a sync)."""
    name = slug(account_name)
    if not name or (not prefix and name[0].isdigit()):
        name = "a" + _alnum_id(account_id)
    # Cutting keeps the first 38+ characters, so it neither makes nor unmakes a reserved name.
    handle = _fit(prefix + name)
    if is_reserved(handle):
        handle = _fit(prefix + "a" + _alnum_id(account_id))
    return handle


def _suffixed(base: str, tail: str, counter: int | None, *, folder: bool) -> str | None:
    """`base_tail` or `base_tail_counter`, base shortened to fit; None if nothing of it fits."""
    suffix = f"_{tail}" if counter is None else f"_{tail}_{counter}"
    room = MAX_HANDLE - len(suffix)
    if room < 1:
        return None
    head = base[:room].rstrip("-_" if folder else "_")
    handle = head + suffix
    if not folder and is_reserved(handle):
        # Only a head of `pg` or `steampipe` (or `information` + `schema`) gets here; without the
        # underscore the name is no longer reserved and still unique to this account.
        handle = head + suffix[1:]
    return handle


@dataclass(frozen=True)
class _Candidates:
    """The collision candidates of one base: the fixed ones, then numbered ones."""

    base: str
    tails: tuple[str, ...]
    folder: bool

    @functools.cached_property
    def _fixed(self) -> list[str]:
        found = [self.base]
        for tail in self.tails:
            candidate = _suffixed(self.base, tail, None, folder=self.folder)
            if candidate is not None and candidate not in found:
                found.append(candidate)
        return found

    def fixed(self) -> list[str]:
        """The base, then the base suffixed with ever longer tails of the id."""
        return self._fixed

    def numbered(self, counter: int) -> str | None:
        """The base with the whole id and a counter (2, 3, …); None if it cannot fit."""
        return _suffixed(self.base, self.tails[-1], counter, folder=self.folder)

    def __iter__(self) -> Iterator[str]:
        fixed = self.fixed()
        yield from fixed
        for counter in itertools.count(2):
            candidate = self.numbered(counter)
            if candidate is None:  # pragma: no cover - needs a counter of about 10**12
                raise OverflowError(f"no room left for a suffix on {self.base!r}")
            if candidate not in fixed:
                yield candidate

    def includes(self, handle: str) -> bool:
        """Whether `handle` is one of these candidates (any counter)."""
        if handle == self.base or handle in self.fixed():
            return True
        found = _COUNTER.search(handle)
        if found is None:
            return False
        counter = int(found.group(1))
        return counter >= 2 and self.numbered(counter) == handle


def _tails(identifier: str, lengths: tuple[int, ...]) -> tuple[str, ...]:
    """The id's last `n` characters for each length, never starting with a separator."""
    tails: list[str] = []
    for length in lengths:
        tail = identifier[-length:].lstrip("_")
        if tail not in tails:
            tails.append(tail)
    return tuple(tails)


def _connection_candidates(base: str, account_id: str) -> _Candidates:
    problem = connection_handle_problem(base)
    if problem is not None:
        raise ValueError(f"connection handle {base!r} {problem}")
    return _Candidates(base, _tails(_alnum_id(account_id), _CONNECTION_TAILS), folder=False)


def _folder_candidates(base: str, ou_id: str) -> _Candidates:
    problem = folder_handle_problem(base)
    if problem is not None:
        raise ValueError(f"folder handle {base!r} {problem}")
    return _Candidates(base, _tails(_ou_slug(ou_id), _FOLDER_TAILS), folder=True)


def collision_candidates(base: str, account_id: str) -> Iterator[str]:
    """Handles to try, in order, when `base` is taken: `base`, `base_9012`, `base_789012`,
    `base_123456789012`, then `base_123456789012_2`, `_3`, … — endless, all valid, none reserved.
    """
    return iter(_connection_candidates(base, account_id))


def is_own_variant(handle: str, base: str, account_id: str) -> bool:
    """Whether `handle` is `base` or one of this account's suffixed forms of it (any counter)."""
    return _connection_candidates(base, account_id).includes(handle)


def dynamic_folder_handle(name: str, ou_id: str) -> str:
    """The handle a discovered OU wants: the slug of its name, or of its id (`ou_ab12_cd34ef56`)
    when the name slugs to nothing or starts with a digit; cut to 39 characters.
    """
    handle = slug(name)
    if not handle or handle[0].isdigit():
        handle = "ou_" + slug(ou_id.removeprefix("ou-"))
    return _fit(handle)


def folder_collision_candidates(base: str, ou_id: str) -> Iterator[str]:
    """Folder handles to try, in order, when `base` is taken among siblings: `base`, then `base`
    with the last 4, the last 8 and all of the OU id's slug, then numbered forms — endless."""
    return iter(_folder_candidates(base, ou_id))


def is_own_folder_variant(handle: str, base: str, ou_id: str) -> bool:
    """Whether `handle` is `base` or one of this OU's suffixed forms of it (any counter)."""
    return _folder_candidates(base, ou_id).includes(handle)


@dataclass(frozen=True)
class HandleRequest:
    """One connection that needs a handle: `current` is None for a new one."""

    key: str
    account_id: str
    account_name: str
    current: str | None
    static: bool


@dataclass(frozen=True)
class FolderHandleRequest:
    """One folder that needs a handle among its siblings: `current` is None for a new one."""

    key: str
    ou_id: str
    name: str
    current: str | None
    static: bool


class _Request(NamedTuple):
    """What assignment needs of a connection or folder request (a tuple: syncs make 10,000s)."""

    key: str
    order: tuple[str, str]
    current: str | None
    static: bool
    name: str
    aws_id: str


def _assign(
    requests: Sequence[_Request],
    taken: AbstractSet[str],
    what: str,
    base_of: Callable[[str, str], str],
    candidates_of: Callable[[str, str], _Candidates],
    wanted: Mapping[str, str] | None = None,
    wanted_first: AbstractSet[str] = frozenset(),
) -> dict[str, str]:
    """Give every request a handle; see `assign_connection_handles` for the rules. `wanted`
    (by key) replaces a dynamic request's current handle as the one it keeps if it can; the
    requests of `wanted_first` (keys) claim theirs before the others."""
    keys = [r.key for r in requests]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{what} handle requests repeat a key")
    ordered = sorted(requests, key=lambda r: r.order)
    assigned: dict[str, str] = {}
    used = set(taken)

    # What anyone held before this assignment stays with its holder: no swaps in one pass.
    held_by: dict[str, set[str]] = {}
    for request in requests:
        if request.current is not None:
            held_by.setdefault(request.current, set()).add(request.key)

    # 1. User-set handles never change.
    for request in ordered:
        if not request.static:
            continue
        if request.current is None:
            raise ValueError(f"static {what} {request.key!r} has no handle")
        if request.current in used:
            raise ValueError(f"static {what} handle {request.current!r} is taken twice")
        assigned[request.key] = request.current
        used.add(request.current)

    # 2. A dynamic handle stays while it is still a form of what the name asks for (or, where
    #    `wanted` names another, that one, unless someone else held it before).
    bases: dict[str, str] = {}
    candidates: dict[str, _Candidates] = {}
    for request in sorted(ordered, key=lambda r: r.key not in wanted_first):
        if request.static:
            continue
        base = bases[request.key] = base_of(request.name, request.aws_id)
        keep = request.current if wanted is None else wanted.get(request.key, request.current)
        if keep is None or keep in used:
            continue
        if keep != request.current and held_by.get(keep, set()) - {request.key}:
            continue
        if keep == base:  # the common case of a sync: nothing to compute
            assigned[request.key] = keep
            used.add(keep)
            continue
        candidates[request.key] = candidates_of(base, request.aws_id)
        if candidates[request.key].includes(keep):
            assigned[request.key] = keep
            used.add(keep)

    # 3. Everyone else takes the first free candidate, in account (OU) id order.
    for request in ordered:
        if request.key in assigned:
            continue
        if request.key not in candidates:
            candidates[request.key] = candidates_of(bases[request.key], request.aws_id)
        for candidate in candidates[request.key]:
            if candidate in used or held_by.get(candidate, set()) - {request.key}:
                continue
            assigned[request.key] = candidate
            used.add(candidate)
            break
    return assigned


def assign_connection_handles(
    prefix: str, requests: Sequence[HandleRequest], taken_elsewhere: AbstractSet[str]
) -> dict[str, str]:
    """A handle for every request (by key), unique and disjoint from `taken_elsewhere`.

    Static handles stay; a dynamic handle stays while it is still a form of prefix + slug of the
    account name; the rest take their first free collision candidate, in account id order, never
    a handle another request held before.
    """

    problem = prefix_problem(prefix)
    if problem is not None:
        raise ValueError(f"handle prefix {prefix!r} {problem}")

    return _assign(
        _connection_requests(requests),
        taken_elsewhere,
        "connection",
        lambda name, account_id: _dynamic_connection_handle(prefix, name, account_id),
        _connection_candidates,
    )


def _connection_requests(requests: Sequence[HandleRequest]) -> list[_Request]:
    return [
        _Request(r.key, (r.account_id, r.key), r.current, r.static, r.account_name, r.account_id)
        for r in requests
    ]


def _same_form(current: str, before: _Candidates, after: _Candidates) -> str | None:
    """The candidate of `after` in the place `current` has among `before`'s: the base for the
    base, the same id suffix for a suffixed form, the same counter for a numbered one."""
    if current == before.base:
        return after.base
    for tail in before.tails:
        if current == _suffixed(before.base, tail, None, folder=before.folder):
            return _suffixed(after.base, tail, None, folder=after.folder)
    found = _COUNTER.search(current)
    if found is not None:
        counter = int(found.group(1))
        if counter >= 2 and before.numbered(counter) == current:
            return after.numbered(counter)
    return None


def prefix_replaced(old_prefix: str, new_prefix: str, request: HandleRequest) -> str | None:
    """The handle a dynamic connection asks for when the handle prefix changes: its handle with
    only the prefix replaced (`e2e_prod_a_8159` → `acc_prod_a_8159`). Where the slug depends on
    the prefix (a name cut to fit, a leading digit, a reserved name), the same form (same
    suffix) of the new prefix's handle for the account instead. None for a static connection,
    a new one, or a handle that is no form of the old prefix's."""
    if request.static or request.current is None:
        return None
    for prefix in (old_prefix, new_prefix):
        problem = prefix_problem(prefix)
        if problem is not None:
            raise ValueError(f"handle prefix {prefix!r} {problem}")
    current = request.current
    old_base = _dynamic_connection_handle(old_prefix, request.account_name, request.account_id)
    new_base = _dynamic_connection_handle(new_prefix, request.account_name, request.account_id)
    before = _connection_candidates(old_base, request.account_id)
    after = _connection_candidates(new_base, request.account_id)
    if not before.includes(current):
        return None
    literal = new_prefix + current.removeprefix(old_prefix)
    if (
        current.startswith(old_prefix)
        and connection_handle_problem(literal) is None
        and after.includes(literal)
    ):
        return literal
    return _same_form(current, before, after)


def reprefix_connection_handles(
    old_prefix: str,
    new_prefix: str,
    requests: Sequence[HandleRequest],
    taken_elsewhere: AbstractSet[str],
) -> dict[str, str]:
    """The handles after the integration's prefix changes from `old_prefix` to `new_prefix`.

    Static handles stay. A dynamic handle becomes `prefix_replaced` (only the prefix changes;
    slug and collision suffix stay) unless that is taken elsewhere, or held by another request
    before the change; then the usual rule of `assign_connection_handles` gives it one. Handles
    that only replace the prefix are claimed before the recomputed forms of handles whose slug
    depends on the prefix: a literal replacement that is free stays free.
    """
    wanted = {}
    literal = set()
    for request in requests:
        replaced = prefix_replaced(old_prefix, new_prefix, request)
        if replaced is not None:
            wanted[request.key] = replaced
            current = request.current or ""
            if replaced == new_prefix + current.removeprefix(old_prefix):
                literal.add(request.key)
    return _assign(
        _connection_requests(requests),
        taken_elsewhere,
        "connection",
        lambda name, account_id: _dynamic_connection_handle(new_prefix, name, account_id),
        _connection_candidates,
        wanted,
        wanted_first=literal,
    )


def assign_folder_handles(
    requests: Sequence[FolderHandleRequest], taken: AbstractSet[str]
) -> dict[str, str]:
    """A handle for every sibling folder (by key), unique and disjoint from `taken`, by the
    rules of `assign_connection_handles` with the OU id in place of the account id."""

    return _assign(
        [_Request(r.key, (r.ou_id, r.key), r.current, r.static, r.name, r.ou_id) for r in requests],
        taken,
        "folder",
        dynamic_folder_handle,
        _folder_candidates,
    )
