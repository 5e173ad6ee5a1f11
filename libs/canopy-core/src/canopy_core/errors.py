"""The error vocabulary every Canopy service speaks.

Domain code raises these and never imports grpc; the server's error interceptor
(`canopy_core.interceptor`) is the one place that turns them into a `google.rpc.Status` with an
`ErrorInfo` (domain `canopy.dev`) and, for bad input, `BadRequest` field violations.
Each service roots its own hierarchy here (`class IntegrationError(CanopyError)`), so a service's
errors stay in one module, as httpx keeps its exception tree.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ERROR_DOMAIN = "canopy.dev"


class Code(enum.Enum):
    """The gRPC status codes Canopy uses, named as grpc.StatusCode names them."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    UNAVAILABLE = "UNAVAILABLE"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request (`integration.handle`) and what is wrong."""

    field: str
    description: str


class CanopyError(Exception):
    """Root of every error a Canopy RPC may answer with.

    `reason` is an UPPER_SNAKE identifier stable enough for clients to branch on; `metadata`
    carries the values involved (ids, handles), never secrets.
    """

    code: Code = Code.INTERNAL
    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Iterable[FieldViolation] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.violations: list[FieldViolation] = list(violations)


class InvalidArgument(CanopyError):
    """The request is malformed; `violations` names every bad field."""

    code = Code.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: Iterable[FieldViolation],
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        found = list(violations)
        if not found:
            raise ValueError("InvalidArgument needs at least one field violation")
        message = "; ".join(f"{v.field}: {v.description}" for v in found)
        merged = {"field": found[0].field, **(metadata or {})}
        super().__init__(message, reason=reason, metadata=merged, violations=found)

    @classmethod
    def field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        """One bad field."""
        return cls([FieldViolation(field, description)], reason=reason)


class NotFound(CanopyError):
    """The named resource does not exist, or the caller may not know that it does."""

    code = Code.NOT_FOUND
    reason = "NOT_FOUND"

    def __init__(self, kind: str, resource_id: str, *, reason: str | None = None) -> None:
        super().__init__(
            f"{kind} {resource_id!r} not found",
            reason=reason or f"{kind.upper()}_NOT_FOUND",
            metadata={"resource": kind, "id": resource_id},
        )


class AlreadyExists(CanopyError):
    """A handle or id is taken."""

    code = Code.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(CanopyError):
    """The system is not in a state that allows the request (plan, confirmation, parent)."""

    code = Code.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(CanopyError):
    """A concurrent change won: a stale etag or tree generation."""

    code = Code.ABORTED
    reason = "ABORTED"


class StaleEtag(Aborted):
    """The caller's etag no longer matches the stored resource."""

    reason = "ETAG_MISMATCH"

    def __init__(self, kind: str, resource_id: str) -> None:
        super().__init__(
            f"{kind} {resource_id!r} was changed since it was read; read it again",
            metadata={"resource": kind, "id": resource_id},
        )


class Unauthenticated(CanopyError):
    """No valid credentials came with the call."""

    code = Code.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(CanopyError):
    """The caller is known but may not do this."""

    code = Code.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class OutOfRange(CanopyError):
    """A revision outside what the log holds."""

    code = Code.OUT_OF_RANGE
    reason = "OUT_OF_RANGE"


class Unavailable(CanopyError):
    """A dependency (the database, another service) cannot be reached right now; retry."""

    code = Code.UNAVAILABLE
    reason = "UNAVAILABLE"


class Refused(CanopyError):
    """Another Canopy service refused a value this one passed on from the caller's request
    (NOT_FOUND, FAILED_PRECONDITION, …): the caller's error, answered with the code the other
    service gave and the caller's field in `metadata`."""

    def __init__(
        self,
        code: Code,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason or code.value, metadata=metadata)
        self.code = code


class DependencyFailed(CanopyError):
    """Another Canopy service failed in a way neither the caller nor a retry can fix (it refused
    this service's own credentials, or answered INTERNAL): a fault of the deployment."""

    code = Code.INTERNAL
    reason = "DEPENDENCY_FAILED"
