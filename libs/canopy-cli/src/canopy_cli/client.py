"""Reaching the Canopy services from a terminal: sync channels that carry the bearer token, the
stubs on them, and gRPC failures turned into one line a person can act on."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from pydantic import ValidationError

from canopy.discovery.v1 import discovery_service_pb2_grpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc, integration_service_pb2_grpc
from canopy.permissions.v1 import (
    directory_service_pb2_grpc,
    permission_service_pb2_grpc,
    workspace_config_service_pb2_grpc,
    workspace_schema_service_pb2_grpc,
)
from canopy_core.auth import mint_token, signing_secret
from canopy_core.remote import error_info
from canopy_core.settings import ServiceSettings

#: How long a unary call may take before it fails DEADLINE_EXCEEDED; streams have no deadline.
CALL_TIMEOUT = 60.0


class CliError(Exception):
    """A failure reported as one line on stderr, `canopy: …`, with exit status 1 (or the
    subclass's `exit_code`)."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unreachable(CliError):
    """A service did not accept the connection."""

    def __init__(self, service: str, address: str) -> None:
        super().__init__(
            f"cannot reach the {service} service at {address} (is it running? make run)"
        )


@dataclass(frozen=True)
class Target:
    """One Canopy service: its name in messages and its address."""

    service: str
    address: str


def describe_rpc_error(error: grpc.RpcError) -> str:
    """One line for a failed call: code, `ErrorInfo.reason`, the wrong fields, the message.

    e.g. `INVALID_ARGUMENT (INVALID_ARGUMENT) integration.handle: must be …`.
    """
    # error_info reads only trailing_metadata(), which sync errors carry as aio errors do.
    reason, _metadata = error_info(error)
    message = " ".join((error.details() or "").split())
    parts = [error.code().name]
    if reason:
        parts.append(f"({reason})")
    missing = [name for name in bad_request_fields(error) if name not in message]
    if missing:
        parts.append(", ".join(missing) + ":")
    if message:
        parts.append(message)
    return " ".join(parts)


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    """The fields `BadRequest` names on a failed call, in order ([] when it has none)."""
    status = _status(error)
    if status is None:
        return []
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(violation.field for violation in bad.field_violations)
    return fields


def _status(error: grpc.RpcError) -> status_pb2.Status | None:
    for datum in error.trailing_metadata() or ():
        if datum.key == "grpc-status-details-bin" and isinstance(datum.value, bytes):
            return status_pb2.Status.FromString(datum.value)
    return None


def _unreachable(error: grpc.RpcError) -> bool:
    """UNAVAILABLE from the channel itself: a Canopy server always attaches a Status."""
    return error.code() == grpc.StatusCode.UNAVAILABLE and _status(error) is None


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


class _Guard(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the bearer token (and a deadline to unary calls); reports a refused connection as
    `Unreachable` naming the service."""

    def __init__(self, target: Target, token: Callable[[], str]) -> None:
        self.target = target
        self.token = token

    def _details(self, details: grpc.ClientCallDetails, timeout: float | None) -> _CallDetails:
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self.token()}")]
        return _CallDetails(
            method=details.method,
            timeout=details.timeout if details.timeout is not None else timeout,
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=getattr(details, "wait_for_ready", None),
            compression=getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Call with the token; raise `Unreachable` if the service refused the connection."""
        outcome = continuation(self._details(client_call_details, CALL_TIMEOUT), request)
        failure = outcome.exception()
        if isinstance(failure, grpc.RpcError) and _unreachable(failure):
            raise Unreachable(self.target.service, self.target.address)
        return outcome

    def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Open the stream with the token; a refused connection shows when it is read."""
        call = continuation(self._details(client_call_details, None), request)
        return _GuardedStream(call, self.target)


class _GuardedStream:
    """A server stream whose refused connection surfaces as `Unreachable`."""

    def __init__(self, call: Any, target: Target) -> None:
        self._call = call
        self._target = target

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as error:
            if _unreachable(error):
                raise Unreachable(self._target.service, self._target.address) from None
            raise

    def cancel(self) -> bool:
        """Stop the stream."""
        return bool(self._call.cancel())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def load_settings() -> ServiceSettings:
    """The `CANOPY_*` settings the services share (the JWT secret, its issuer and audience); a
    bad value is one line naming the variable."""
    try:
        return ServiceSettings()
    except ValidationError as error:
        problem = error.errors()[0]
        name = "CANOPY_" + str(problem["loc"][0]).upper() if problem["loc"] else "CANOPY_*"
        raise CliError(f"{name}: {problem['msg']}") from None


def development_token() -> tuple[str, str]:
    """A system token signed with the configured or development secret, as `make run` uses, so
    that `canopy` works out of the box on the machine running the services; and where the
    secret came from."""
    settings = load_settings()
    if settings.jwt_secret is not None:
        source = "CANOPY_JWT_SECRET"
    else:
        # Never create a development secret here: no running service could know a new one.
        path = settings.data_dir / "jwt-secret"
        if settings.jwt_public_key or not path.exists():
            raise CliError(
                f"no token: set CANOPY_TOKEN (or CANOPY_JWT_SECRET), or run canopy where "
                f"`make run` keeps its development secret ({path} does not exist)"
            )
        source = str(path)
    secret = signing_secret(settings)
    assert secret is not None
    token = mint_token(
        secret,
        "canopy-cli",
        system=True,
        ttl_seconds=3600,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    return token, source


@dataclass
class Clients:
    """Stubs on the three services, each channel opened on first use and closed by `close`."""

    integration_address: str
    discovery_address: str
    permissions_address: str
    token: str | None = None
    minted_from: str | None = None
    tls: grpc.ChannelCredentials | None = None  # None: plaintext
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def _bearer(self) -> str:
        if self.token is None:
            self.token, self.minted_from = development_token()
        return self.token

    def token_hint(self) -> str:
        """For an UNAUTHENTICATED answer: where the token canopy minted came from."""
        if self.minted_from is None:
            return ""
        return (
            f" (canopy signed its token with {self.minted_from}; set CANOPY_TOKEN to use another)"
        )

    def _channel(self, service: str, address: str) -> grpc.Channel:
        channel = self._channels.get(service)
        if channel is None:
            guard = _Guard(Target(service, address), self._bearer)
            raw = (
                grpc.secure_channel(address, self.tls)
                if self.tls is not None
                else grpc.insecure_channel(address)
            )
            channel = grpc.intercept_channel(raw, guard)
            self._channels[service] = channel
        return channel

    @property
    def integrations(self) -> integration_service_pb2_grpc.IntegrationServiceStub:
        """IntegrationService."""
        channel = self._channel("integration", self.integration_address)
        return integration_service_pb2_grpc.IntegrationServiceStub(channel)

    @property
    def tree(self) -> connection_tree_service_pb2_grpc.ConnectionTreeServiceStub:
        """ConnectionTreeService (on the integration service)."""
        channel = self._channel("integration", self.integration_address)
        return connection_tree_service_pb2_grpc.ConnectionTreeServiceStub(channel)

    @property
    def discovery(self) -> discovery_service_pb2_grpc.DiscoveryServiceStub:
        """DiscoveryService."""
        channel = self._channel("discovery", self.discovery_address)
        return discovery_service_pb2_grpc.DiscoveryServiceStub(channel)

    @property
    def directory(self) -> directory_service_pb2_grpc.DirectoryServiceStub:
        """DirectoryService (on the permissions service)."""
        channel = self._channel("permissions", self.permissions_address)
        return directory_service_pb2_grpc.DirectoryServiceStub(channel)

    @property
    def permissions(self) -> permission_service_pb2_grpc.PermissionServiceStub:
        """PermissionService."""
        channel = self._channel("permissions", self.permissions_address)
        return permission_service_pb2_grpc.PermissionServiceStub(channel)

    @property
    def schemas(self) -> workspace_schema_service_pb2_grpc.WorkspaceSchemaServiceStub:
        """WorkspaceSchemaService (on the permissions service)."""
        channel = self._channel("permissions", self.permissions_address)
        return workspace_schema_service_pb2_grpc.WorkspaceSchemaServiceStub(channel)

    @property
    def workspace_config(self) -> workspace_config_service_pb2_grpc.WorkspaceConfigServiceStub:
        """WorkspaceConfigService (on the permissions service)."""
        channel = self._channel("permissions", self.permissions_address)
        return workspace_config_service_pb2_grpc.WorkspaceConfigServiceStub(channel)

    def close(self) -> None:
        """Close every channel opened."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


def eprint(message: str) -> None:
    """A line on stderr (hints and notes that must not pollute piped output)."""
    print(message, file=sys.stderr, flush=True)
