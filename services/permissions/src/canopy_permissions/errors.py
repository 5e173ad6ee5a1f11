"""Errors of the permissions service (directory, grants, attachments, schema streams)."""

from __future__ import annotations

from canopy_core.errors import AlreadyExists, CanopyError, FieldViolation, InvalidArgument


class PermissionsError(CanopyError):
    """Root of the permissions service's own errors."""


class HandleTaken(PermissionsError, AlreadyExists):
    """Another resource in the same namespace has this handle."""

    reason = "HANDLE_TAKEN"

    def __init__(self, kind: str, handle: str, field: str) -> None:
        super().__init__(
            f"another {kind} already has the handle {handle!r}",
            metadata={"resource": kind, "handle": handle, "field": field},
        )


class ImmutableField(PermissionsError, InvalidArgument):
    """A field that cannot change after creation was given a new value."""

    reason = "IMMUTABLE_FIELD"

    def __init__(self, field: str, stored: str) -> None:
        InvalidArgument.__init__(
            self, [FieldViolation(field, f"cannot change (it is {stored!r})")], reason=self.reason
        )
