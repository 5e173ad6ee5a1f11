"""Steampipe's aggregator wildcards (Go's `path.Match`), as Canopy reports them: known answers
of the documented syntax, a property test against a plain backtracking matcher of the same
grammar, and the refusals of malformed patterns."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canopy_permissions.connection_patterns import (
    MAX_PATTERN_LENGTH,
    BadPattern,
    compile_pattern,
    match_patterns,
    pattern_problem,
)


def matches(pattern: str, name: str) -> bool:
    return compile_pattern(pattern).match(name) is not None


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("aws_prod", "aws_prod", True),
        ("aws_prod", "aws_prod2", False),  # the whole name must match
        ("aws_*", "aws_prod", True),
        ("aws_*", "aws_", True),  # a star may match nothing
        ("aws_*", "gcp_prod", False),
        ("*", "anything_at_all", True),
        ("*_prod", "aws_web_prod", True),
        ("*_prod", "aws_prod_web", False),
        ("aws_*_prod", "aws_eu_web_prod", True),
        ("aws_*_prod", "aws_prod", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "axxbyybzzc", True),
        ("a*b*c", "axxbyybzzcx", False),
        ("a*b?c*x", "abxbbxdbxebxczzx", True),
        ("a*b?c*x", "abxbbxdbxebxczzy", False),
        ("aws_??", "aws_eu", True),
        ("aws_??", "aws_eu1", False),
        ("aws_[ep]*", "aws_prod", True),
        ("aws_[ep]*", "aws_dev", False),
        ("aws_[a-f]*", "aws_dev", True),
        ("aws_[^a-f]*", "aws_dev", False),
        ("aws_[^a-f]*", "aws_prod", True),
        ("aws_[z-a]", "aws_q", False),  # an inverted range matches nothing, it is no error
        ("aws_[^z-a]", "aws_q", True),
        ("[\\]a]", "]", True),
        ("[x\\-]", "-", True),
        ("[\\-x]", "a", False),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("a?b", "a/b", False),  # '?' and '*' never match '/'
        ("a*b", "a/b", False),
        ("a*", "ab/c", False),
        ("a/*", "a/b", True),
        ("[^a]", "/", True),  # a class does
        ("a?b", "a☺b", True),  # one character, not one byte
        ("a???b", "a☺b", False),
        ("[a-\u03b6]*", "\u03b1", True),  # Greek zeta and alpha
        ("*x", "xxx", True),
    ],
)
def test_a_pattern_matches_as_go_path_match_documents(
    pattern: str, name: str, expected: bool
) -> None:
    assert matches(pattern, name) is expected


@pytest.mark.parametrize(
    "pattern",
    [
        "[]a]",  # a class cannot start with ']'
        "[-]",
        "[x-]",
        "[-x]",
        "[a-b-c]",
        "\\",  # a lone escape at the end
        "aws_\\",
        "[",
        "[^",
        "[^bc",
        "aws_[",
        "a/b[",
        "aws_*[",  # after a star too: Go checks the rest of the pattern before saying no
        "aws_[ab",
    ],
)
def test_a_malformed_pattern_is_refused(pattern: str) -> None:
    with pytest.raises(BadPattern):
        compile_pattern(pattern)
    problem = pattern_problem(pattern)
    assert problem is not None
    assert problem.startswith("is not a valid Steampipe wildcard pattern")


def test_empty_overlong_and_control_character_patterns_are_refused() -> None:
    assert pattern_problem("") == "must not be empty"
    assert pattern_problem("a" * (MAX_PATTERN_LENGTH + 1)) is not None
    assert pattern_problem("a" * MAX_PATTERN_LENGTH) is None
    assert pattern_problem("aws_\t*") == "must not contain control characters"
    assert pattern_problem("aws_*") is None


def test_each_pattern_reports_its_matches_in_request_order_sorted_by_name() -> None:
    names = ["aws_prod_web", "aws_dev", "aws_prod_data", "gcp_prod"]
    found = match_patterns(["aws_prod_*", "*_dev", "azure_*", "aws_prod_*"], names)
    assert [(m.pattern, m.schemas) for m in found] == [
        ("aws_prod_*", ("aws_prod_data", "aws_prod_web")),
        ("*_dev", ("aws_dev",)),
        ("azure_*", ()),  # matches nothing now: reported, empty
        ("aws_prod_*", ("aws_prod_data", "aws_prod_web")),  # a repeat is reported again
    ]


def test_a_prefix_change_empties_a_pattern_written_for_the_old_prefix() -> None:
    before = match_patterns(["aws_prod_*"], ["aws_prod_web", "aws_prod_data"])
    after = match_patterns(["aws_prod_*"], ["acme_prod_web", "acme_prod_data"])
    assert before[0].schemas == ("aws_prod_data", "aws_prod_web")
    assert after[0].schemas == ()


# -- a plain matcher of the documented grammar, to compare with ---------------------------------


def _class(pattern: str, i: int) -> tuple[list[tuple[str, str]], bool, int]:
    """The ranges of the class starting after '[' at i, whether negated, the index after ']'."""
    negated = i < len(pattern) and pattern[i] == "^"
    i += negated
    ranges: list[tuple[str, str]] = []

    def one(j: int) -> tuple[str, int]:
        if j >= len(pattern) or pattern[j] in "-]":
            raise BadPattern
        if pattern[j] == "\\":
            j += 1
        if j + 1 >= len(pattern):
            raise BadPattern
        return pattern[j], j + 1

    while not (i < len(pattern) and pattern[i] == "]" and ranges):
        low, i = one(i)
        high = low
        if pattern[i] == "-":
            high, i = one(i + 1)
        ranges.append((low, high))
    return ranges, negated, i + 1


def _check(pattern: str) -> None:
    """Raise BadPattern for a malformed pattern."""
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            if i + 1 >= len(pattern):
                raise BadPattern
            i += 2
        elif pattern[i] == "[":
            i = _class(pattern, i + 1)[2]
        else:
            i += 1


def plain_match(pattern: str, name: str) -> bool:
    """Full backtracking over the grammar: '*' any run of non-'/' characters."""
    _check(pattern)

    def at(p: int, n: int) -> bool:
        if p == len(pattern):
            return n == len(name)
        ch = pattern[p]
        if ch == "*":
            k = n
            while True:
                if at(p + 1, k):
                    return True
                if k == len(name) or name[k] == "/":
                    return False
                k += 1
        if n == len(name):
            return False
        if ch == "?":
            return name[n] != "/" and at(p + 1, n + 1)
        if ch == "[":
            ranges, negated, after = _class(pattern, p + 1)
            inside = any(low <= name[n] <= high for low, high in ranges)
            return inside != negated and at(after, n + 1)
        if ch == "\\":
            p += 1
        return pattern[p] == name[n] and at(p + 1, n + 1)

    return at(0, 0)


PATTERN_ALPHABET = st.sampled_from(["a", "b", "_", "/", "*", "?", "[", "]", "^", "-", "\\"])
NAME_ALPHABET = st.sampled_from(["a", "b", "_", "/", "-", "]", "^"])


@settings(max_examples=3000, deadline=None)
@given(
    pattern=st.lists(PATTERN_ALPHABET, max_size=9).map("".join),
    name=st.lists(NAME_ALPHABET, max_size=8).map("".join),
)
def test_the_translation_agrees_with_a_plain_matcher_of_the_grammar(
    pattern: str, name: str
) -> None:
    try:
        expected = plain_match(pattern, name)
    except BadPattern:
        with pytest.raises(BadPattern):
            compile_pattern(pattern)
        return
    assert matches(pattern, name) is expected
