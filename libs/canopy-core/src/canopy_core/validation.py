"""Input checks that collect every bad field before failing with `INVALID_ARGUMENT`."""

from __future__ import annotations

import re
from types import TracebackType

from canopy_core.errors import FieldViolation, InvalidArgument
from canopy_core.ids import id_pattern

# Tenant, org, workspace and integration handles.
HANDLE = re.compile(r"^[a-z](?:[a-z0-9]|[-_](?=[a-z0-9])){0,38}\Z")
HANDLE_RULE = (
    "must be 1-39 characters: a lower-case letter, then letters, digits, and single '-' or '_' "
    "between them"
)
MAX_TEXT = 1024


class Violations:
    """Collects field violations; as a context manager, raises them all on exit."""

    def __init__(self) -> None:
        self.found: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        """Record one bad field."""
        self.found.append(FieldViolation(field, description))

    def required(self, field: str, value: str) -> bool:
        """A non-empty string; returns whether it is present."""
        if not value:
            self.add(field, "is required")
            return False
        return True

    def handle(self, field: str, value: str) -> None:
        """A required handle."""
        if self.required(field, value) and not HANDLE.match(value):
            self.add(field, HANDLE_RULE)

    def resource_id(self, field: str, value: str, prefix: str) -> None:
        """A required id of the given type (`t`, `o`, `w`, `i`, …)."""
        if self.required(field, value) and not id_pattern(prefix).match(value):
            self.add(field, f"must look like '{prefix}_' followed by 1-60 of [a-z0-9]")

    def text(self, field: str, value: str, *, max_length: int = MAX_TEXT) -> None:
        """Free text of bounded length without control characters."""
        if len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters")
        elif any(ord(ch) < 32 for ch in value):
            self.add(field, "must not contain control characters")

    def check(self) -> None:
        """Raise `InvalidArgument` if anything was recorded."""
        if self.found:
            raise InvalidArgument(self.found)

    def __enter__(self) -> Violations:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.check()
