"""Every shape check of an id, handle, ARN or account refuses a trailing newline and non-ASCII
digits (Python's `$` matches before a final newline, and `\\d` matches any Unicode digit)."""

from __future__ import annotations

import re

import pytest

from canopy_core.ids import id_pattern
from canopy_core.validation import HANDLE
from canopy_discovery import access_checks
from canopy_integration import apply, aws, handles

CHECKS: list[tuple[str, re.Pattern[str], str]] = [
    ("id", id_pattern("t"), "t_acme"),
    ("handle", HANDLE, "aws-prod"),
    ("connection handle", handles.CONNECTION_HANDLE, "prod_web"),
    ("folder handle", handles.FOLDER_HANDLE, "web-apps"),
    ("failure reason", apply.FAILURE_REASON, "ACCESS_DENIED"),
    ("account id (discovery)", access_checks.ACCOUNT_ID, "111111111111"),
    ("external id (discovery)", access_checks.EXTERNAL_ID, "t_acme:abcd1234"),
    ("role arn (discovery)", access_checks.ROLE_ARN, "arn:aws:iam::111111111111:role/d"),
    ("account id (integration)", aws.ACCOUNT_ID, "111111111111"),
]


@pytest.mark.parametrize(("name", "pattern", "good"), CHECKS, ids=[c[0] for c in CHECKS])
def test_a_trailing_newline_is_refused(name: str, pattern: re.Pattern[str], good: str) -> None:
    assert pattern.match(good)
    assert not pattern.match(good + "\n")


def test_account_ids_are_ascii_digits_only() -> None:
    arabic_indic = "\u0661" * 12  # twelve Unicode digits
    assert not access_checks.ACCOUNT_ID.match(arabic_indic)
    assert not aws.ACCOUNT_ID.match(arabic_indic)
