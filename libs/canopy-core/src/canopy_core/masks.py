"""Update masks (AIP-134): which paths an Update may name."""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from canopy_core.errors import FieldViolation, InvalidArgument


def check_mask(
    paths: Sequence[str],
    writable: AbstractSet[str],
    output_only: AbstractSet[str],
    *,
    field: str = "update_mask",
) -> tuple[str, ...]:
    """The mask's paths, de-duplicated in order; INVALID_ARGUMENT naming each bad one."""
    if not paths:
        raise InvalidArgument.field(
            f"{field}.paths", "name at least one field to change", reason="EMPTY_UPDATE_MASK"
        )
    problems: list[FieldViolation] = []
    for i, path in enumerate(paths):
        top = path.split(".", 1)[0]
        if path in writable:
            continue
        if path in output_only or top in output_only:
            problems.append(FieldViolation(f"{field}.paths[{i}]", f"{path!r} is output only"))
        else:
            known = ", ".join(sorted(p for p in writable if "." not in p))
            problems.append(
                FieldViolation(
                    f"{field}.paths[{i}]", f"{path!r} is not a field you can update ({known})"
                )
            )
    if problems:
        raise InvalidArgument(problems, reason="INVALID_UPDATE_MASK")
    return tuple(dict.fromkeys(paths))
