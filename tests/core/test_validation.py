"""Handles and ids end where the name ends: `$` also matches before a final newline, so every
pattern ends with `\\Z` (a tenant handle "acme\\n" was accepted and stored)."""

from __future__ import annotations

import pytest

from canopy_core.errors import InvalidArgument
from canopy_core.ids import id_pattern
from canopy_core.validation import Violations


@pytest.mark.parametrize("handle", ["acme\n", "acme\n\n", "\nacme"])
def test_a_handle_with_a_newline_is_invalid(handle: str) -> None:
    with pytest.raises(InvalidArgument) as caught, Violations() as v:
        v.handle("tenant.handle", handle)
    assert [f.field for f in caught.value.violations] == ["tenant.handle"]


@pytest.mark.parametrize("value", ["t_acme\n", "t_acme\r\n", " t_acme"])
def test_an_id_with_a_newline_or_space_is_invalid(value: str) -> None:
    assert id_pattern("t").match(value) is None
    with pytest.raises(InvalidArgument), Violations() as v:
        v.resource_id("id", value, "t")


def test_well_formed_handles_and_ids_stay_valid() -> None:
    with Violations() as v:
        v.handle("tenant.handle", "acme-prod_1")
        v.resource_id("id", "t_acme", "t")
