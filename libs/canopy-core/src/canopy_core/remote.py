"""Reading the errors other Canopy services answer with (the other side of the interceptor), and
what they mean to this service's own caller."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from canopy_core.errors import (
    CanopyError,
    Code,
    DependencyFailed,
    FieldViolation,
    InvalidArgument,
    Refused,
    Unavailable,
)

# The other service could not be reached, or did not answer in time: retrying may help.
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# The other service refused a value of the request: the caller sent it, the caller is wrong.
BAD_VALUE = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE})
# The other service answered with a verdict on the caller's request that this service passes on.
PASSED_ON = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def _status(error: grpc.RpcError) -> status_pb2.Status | None:
    trailing: Any = getattr(error, "trailing_metadata", lambda: None)()
    for key, value in trailing or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def error_info(error: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """The `ErrorInfo` reason and metadata of a failed call ("" and {} when it has none);
    works for the errors of sync and asyncio calls alike."""
    status = _status(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, dict(info.metadata)
    return "", {}


def violation_descriptions(error: grpc.RpcError) -> list[str]:
    """The descriptions of a failed call's `BadRequest` field violations, in order."""
    status = _status(error)
    found: list[str] = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.extend(v.description for v in bad.field_violations)
    return found


def dependency_error(
    error: grpc.aio.AioRpcError, dependency: str, *, field: str, asking: str
) -> CanopyError:
    """What another Canopy service's failure means to this service's caller.

    `dependency` names the other service in reasons (`DIRECTORY` → `DIRECTORY_UNAVAILABLE`);
    `field` is the caller's field the value came from; `asking` says what was asked ("about
    workspace 'w_x'"). Only a service that cannot be reached is UNAVAILABLE (retry); a refused
    value is the caller's INVALID_ARGUMENT on `field`; NOT_FOUND, FAILED_PRECONDITION,
    ALREADY_EXISTS, ABORTED and RESOURCE_EXHAUSTED pass on with their code; anything else (our
    own credentials refused, INTERNAL) is a fault of the deployment: INTERNAL, reason
    `<dependency>_FAILED`.
    """
    code = error.code()
    details = error.details() or code.name
    reason, _metadata = error_info(error)
    name = dependency.lower().replace("_", " ")
    about = {"dependency": dependency.lower()}
    if code in UNREACHABLE:
        return Unavailable(
            f"the {name} could not be asked {asking}: {code.name}; retry",
            reason=f"{dependency}_UNAVAILABLE",
            metadata=about,
        )
    if code in BAD_VALUE:
        descriptions = violation_descriptions(error) or [details]
        return InvalidArgument(
            [FieldViolation(field, description) for description in descriptions],
            reason=reason or None,
            metadata=about,
        )
    if code in PASSED_ON:
        return Refused(
            Code(code.name),
            f"{field}: {details}",
            reason=reason or None,
            metadata={"field": field, **about},
        )
    return DependencyFailed(
        f"the {name} failed when asked {asking}: {code.name}",
        reason=f"{dependency}_FAILED",
        metadata=about,
    )
