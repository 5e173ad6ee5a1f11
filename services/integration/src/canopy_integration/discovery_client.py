"""What the integration service asks of the discovery service, with its system token: the
account of the platform's AWS credentials, which only discovery holds, and dry-run crawls for
previews of new discovery settings."""

from __future__ import annotations

import grpc

from canopy.discovery.v1 import discovery_service_pb2 as rpc
from canopy.discovery.v1 import discovery_service_pb2_grpc as rpc_grpc
from canopy.discovery.v1.discovery_pb2 import SyncRun
from canopy_core.errors import Unavailable
from canopy_core.remote import dependency_error
from canopy_integration.errors import TrustedAccountUnknown

_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class DiscoveryClient:
    """The discovery service: the platform credentials' account (`PlatformIdentity`), and
    dry-run syncs."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = 20.0) -> None:
        self._stub = rpc_grpc.DiscoveryServiceStub(channel)
        self._timeout = timeout

    async def platform_account_id(self) -> str:
        """The account of discovery's AWS credentials (STS GetCallerIdentity)."""
        try:
            reply = await self._stub.TestDiscoveryAccess(
                rpc.TestDiscoveryAccessRequest(platform_credentials=rpc.PlatformCredentials()),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in _UNREACHABLE:
                raise Unavailable(
                    "the discovery service, which reads the account of the platform's AWS "
                    f"credentials, cannot be reached: {error.code().name}",
                    reason="DISCOVERY_UNAVAILABLE",
                ) from None
            raise TrustedAccountUnknown(
                f"the discovery service answered {error.code().name}: {error.details()}"
            ) from None
        if not reply.ok or not reply.platform_account_id:
            raise TrustedAccountUnknown(
                f"discovery could not read its credentials' account: {reply.message}"
            )
        return reply.platform_account_id

    async def dry_run(self, request: rpc.SyncIntegrationRequest, timeout: float = 900.0) -> SyncRun:
        """A dry-run sync (`validate_only`): the crawl's outcome and what applying it would do."""
        try:
            reply = await self._stub.SyncIntegration(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise dependency_error(
                error, "DISCOVERY", field="integration", asking="to crawl with the new settings"
            ) from None
        return reply.run
