"""Per-RPC context: the caller and the request id, set by the interceptor for the handler."""

from __future__ import annotations

from contextvars import ContextVar

from canopy_core.auth import Principal
from canopy_core.errors import Unauthenticated

principal_var: ContextVar[Principal | None] = ContextVar("canopy_principal", default=None)
request_id_var: ContextVar[str | None] = ContextVar("canopy_request_id", default=None)


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served."""
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("this call needs a bearer token", reason="TOKEN_MISSING")
    return principal


def current_request_id() -> str | None:
    """The request id of the RPC being served, for logs and error details."""
    return request_id_var.get()
