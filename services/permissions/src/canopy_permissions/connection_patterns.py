"""Steampipe's wildcard patterns of aggregator connections (`connections = ["aws_prod_*"]`):
which schema names a pattern matches, exactly as Steampipe decides it.

Steampipe resolves an aggregator's entry by name first, then (for any entry that names no
connection) with Go's `path.Match` over the names of the other, non-aggregator connections of
the same plugin, ignoring the error of a malformed pattern (it then matches nothing). The syntax
of `path.Match`:

    pattern:  { term }
    term:     '*'                 any sequence of characters other than '/'
              '?'                 any one character other than '/'
              '[' ['^'] { range } ']'   a character class (never empty)
              c                   the character c (not '*', '?', '\\' or '[')
              '\\' c              the character c
    range:    c | '\\' c | lo '-' hi

The whole name must match. Go matches chunk by chunk (a chunk is the text between stars): a
chunk after a star is taken at its leftmost match and never reconsidered, except the last, which
must end the name. The translation below into a Python regular expression keeps that exactly:
an atomic group around `[^/]*?chunk` commits to the leftmost match. Schema names hold only
`[a-z0-9_]`, so the name-first rule and the '/' rule never change an outcome here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_PATTERNS = 100
MAX_PATTERN_LENGTH = 256


class BadPattern(ValueError):
    """A pattern `path.Match` refuses (`ErrBadPattern`); Steampipe would match nothing with it."""


@dataclass(frozen=True)
class PatternMatch:
    """One pattern, as given, and the schema names it matches, sorted."""

    pattern: str
    schemas: tuple[str, ...]


def _chunks(pattern: str) -> list[tuple[bool, str]]:
    """(preceded by a star, chunk) pairs: a chunk is the text up to the next star outside a
    character class; runs of stars count as one."""
    found: list[tuple[bool, str]] = []
    rest = pattern
    while rest:
        star = rest.startswith("*")
        rest = rest.lstrip("*")
        in_class, i = False, 0
        while i < len(rest):
            ch = rest[i]
            if ch == "\\":
                i += 1  # the escaped character cannot end the chunk
            elif ch == "[":
                in_class = True
            elif ch == "]":
                in_class = False
            elif ch == "*" and not in_class:
                break
            i += 1
        i = min(i, len(rest))
        found.append((star, rest[:i]))
        rest = rest[i:]
    return found


def _class_char(chunk: str, i: int) -> tuple[str, int]:
    """A possibly escaped character of a class at `chunk[i]`, and the index after it."""
    if i >= len(chunk) or chunk[i] in "-]":
        raise BadPattern("a character class is empty, unclosed or has a misplaced '-' or ']'")
    if chunk[i] == "\\":
        i += 1
        if i >= len(chunk):
            raise BadPattern("'\\' ends the pattern")
    if i + 1 >= len(chunk):
        raise BadPattern("a character class is not closed")
    return chunk[i], i + 1


def _chunk_regex(chunk: str) -> str:
    """The regular expression of one chunk: each term matches exactly one character."""
    parts: list[str] = []
    i = 0
    while i < len(chunk):
        ch = chunk[i]
        if ch == "[":
            i += 1
            negated = i < len(chunk) and chunk[i] == "^"
            if negated:
                i += 1
            ranges: list[str] = []
            count = 0
            while True:
                if i < len(chunk) and chunk[i] == "]" and count > 0:
                    i += 1
                    break
                low, i = _class_char(chunk, i)
                high = low
                if chunk[i] == "-":
                    high, i = _class_char(chunk, i + 1)
                if low <= high:  # Go accepts an inverted range, which matches nothing
                    ranges.append(
                        re.escape(low) if low == high else f"{re.escape(low)}-{re.escape(high)}"
                    )
                count += 1
            if ranges:
                parts.append(f"[{'^' if negated else ''}{''.join(ranges)}]")
            else:
                parts.append(r"[\s\S]" if negated else "(?!)")
        elif ch == "?":
            parts.append("[^/]")
            i += 1
        else:
            if ch == "\\":
                i += 1
                if i >= len(chunk):
                    raise BadPattern("'\\' ends the pattern")
            parts.append(re.escape(chunk[i]))
            i += 1
    return "".join(parts)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression that matches exactly the names `path.Match(pattern, name)`
    accepts; `BadPattern` where `path.Match` fails with `ErrBadPattern`."""
    chunks = _chunks(pattern)
    pieces = [r"\A"]
    for index, (star, chunk) in enumerate(chunks):
        body = _chunk_regex(chunk)
        last = index == len(chunks) - 1
        if not star:
            pieces.append(body)
        elif not chunk:
            pieces.append("[^/]*")  # a trailing star takes the rest (no '/')
        elif last:
            pieces.append(f"[^/]*?{body}")  # must end the name: any start position will do
        else:
            pieces.append(f"(?>[^/]*?{body})")  # the leftmost match, committed, as Go does
    pieces.append(r"\Z")
    return re.compile("".join(pieces))


def pattern_problem(pattern: str) -> str | None:
    """Why Canopy refuses a pattern, or None: empty, too long, or malformed."""
    if not pattern:
        return "must not be empty"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"must be at most {MAX_PATTERN_LENGTH} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in pattern):
        return "must not contain control characters"
    try:
        compile_pattern(pattern)
    except BadPattern as error:
        return f"is not a valid Steampipe wildcard pattern: {error}"
    return None


def match_patterns(patterns: Sequence[str], names: Iterable[str]) -> list[PatternMatch]:
    """For each pattern, in order, the names it matches (sorted). Patterns must be valid."""
    ordered = sorted(set(names))
    found = []
    for pattern in patterns:
        regex = compile_pattern(pattern)
        found.append(PatternMatch(pattern, tuple(n for n in ordered if regex.match(n))))
    return found
