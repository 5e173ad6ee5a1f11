"""Helpers for tests: tokens signed with the test secret, call metadata, free ports."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from canopy_core.auth import Role, mint_token

JWT_SECRET = "canopy-test-secret-0123456789abcdef0123456789"


def free_port() -> int:
    """A port nothing listens on (until someone binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def token(
    subject: str = "tester", *, system: bool = False, ttl: float = 86_400, **roles: str
) -> str:
    """A token signed with the test secret; roles as `t_acme="owner"`. Modules mint theirs at
    import, so a token lives a day: a slow run must not outlive its tokens."""
    return mint_token(
        JWT_SECRET,
        subject,
        roles={k: Role[v.upper()] for k, v in roles.items()},
        system=system,
        ttl_seconds=ttl,
    )


def bearer(value: str) -> tuple[tuple[str, str]]:
    """gRPC call metadata carrying a bearer token."""
    return (("authorization", f"Bearer {value}"),)


@dataclass(frozen=True)
class ErrorDetails:
    """What a client can read from a failed call's `google.rpc.Status`."""

    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    metadata: dict[str, str]
    fields: list[str]


def error_details(error: grpc.aio.AioRpcError) -> ErrorDetails:
    """Decode the ErrorInfo and BadRequest details of a failed call."""
    status = None
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
    assert status is not None, f"no google.rpc.Status on {error.code()}: {error.details()}"
    assert status.code == error.code().value[0]
    reason, domain, metadata, fields = "", "", {}, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return ErrorDetails(error.code(), status.message, reason, domain, metadata, fields)


def unkeyed_page_token(after: Any, arguments: Mapping[str, Any]) -> str:
    """A page token as the services once issued them (base64 JSON with an unkeyed fingerprint
    of the list arguments), which anyone could forge: these must be refused."""
    fingerprint = hashlib.sha256(
        json.dumps(arguments, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    body = json.dumps({"a": after, "f": fingerprint}).encode()
    return base64.urlsafe_b64encode(body).decode().rstrip("=")
