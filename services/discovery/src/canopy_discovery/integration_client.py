"""What discovery asks of the integration service, with its system token."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy_core.errors import Aborted, NotFound, OutOfRange
from canopy_core.remote import dependency_error, error_info

log = logging.getLogger(__name__)


class IntegrationClient:
    """Integrations, their connections, snapshot applies and the tree log."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = 30.0) -> None:
        self._integrations = rpc_grpc.IntegrationServiceStub(channel)
        self._tree = tree_grpc.ConnectionTreeServiceStub(channel)
        self._timeout = timeout

    @staticmethod
    def _translate(
        error: grpc.aio.AioRpcError, what: str, resource_id: str, field: str = "integration_id"
    ) -> Exception:
        code = error.code()
        if code == grpc.StatusCode.NOT_FOUND:
            # A deleted integration's scope, while the integration service still knows it.
            _reason, metadata = error_info(error)
            gone = NotFound("integration", resource_id)
            gone.metadata.update(
                {k: metadata[k] for k in ("tenant_id", "org_id") if metadata.get(k)}
            )
            return gone
        if code == grpc.StatusCode.ABORTED:
            return Aborted(error.details() or "aborted", reason="TREE_GENERATION_MISMATCH")
        if code == grpc.StatusCode.OUT_OF_RANGE:
            reason, metadata = error_info(error)
            return OutOfRange(error.details() or "out of range", reason=reason, metadata=metadata)
        # Unreachable is UNAVAILABLE; a refused value is the caller's error on `field`.
        return dependency_error(error, "INTEGRATION_SERVICE", field=field, asking=f"to {what}")

    async def get_integration(self, integration_id: str) -> pb.Integration:
        """An integration, whatever its scope."""
        try:
            reply = await self._integrations.GetIntegration(
                rpc.GetIntegrationRequest(id=integration_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise self._translate(error, "read the integration", integration_id) from None
        return reply.integration

    async def every_integration(self) -> list[pb.Integration]:
        """Every integration of every tenant and org, oldest first (ListIntegrations without a
        scope, which only system callers may make), all pages."""
        found: list[pb.Integration] = []
        token = ""
        try:
            while True:
                reply = await self._integrations.ListIntegrations(
                    rpc.ListIntegrationsRequest(page_size=100, page_token=token),
                    timeout=self._timeout,
                )
                found.extend(reply.integrations)
                token = reply.next_page_token
                if not token:
                    return found
        except grpc.aio.AioRpcError as error:
            raise self._translate(error, "list the integrations", "*") from None

    async def trusted_account_id(
        self, *, integration_id: str = "", role_name: str = "", external_id: str = ""
    ) -> str:
        """The account the integration service's role templates trust for this integration or
        this role and external id; "" when it cannot say (it renders no template for them)."""
        try:
            reply = await self._integrations.RenderRoleTemplate(
                rpc.RenderRoleTemplateRequest(
                    kind=rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE,
                    integration_id=integration_id,
                    role_name=role_name,
                    external_id=external_id,
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            log.info(
                "no trusted account from the integration service",
                extra={"code": error.code().name, "details": error.details()},
            )
            return ""
        return str(reply.trusted_account_id)

    async def account_ids(self, integration_id: str) -> list[str]:
        """The account ids of an integration's connections."""
        found: list[str] = []
        token = ""
        try:
            while True:
                reply = await self._tree.ListConnections(
                    tree_rpc.ListConnectionsRequest(
                        integration_id=integration_id, page_size=100, page_token=token
                    ),
                    timeout=self._timeout,
                )
                found.extend(c.account_id for c in reply.connections)
                token = reply.next_page_token
                if not token:
                    return found
        except grpc.aio.AioRpcError as error:
            raise self._translate(error, "list the connections", integration_id) from None

    async def apply(
        self, request: tree_rpc.ApplyDiscoverySnapshotRequest
    ) -> tree_rpc.ApplyDiscoverySnapshotResponse:
        """ApplyDiscoverySnapshot (a snapshot of 10,000 accounts is well under the size limit)."""
        try:
            reply: tree_rpc.ApplyDiscoverySnapshotResponse = (
                await self._tree.ApplyDiscoverySnapshot(request, timeout=300)
            )
            return reply
        except grpc.aio.AioRpcError as error:
            raise self._translate(
                error, "apply the snapshot", request.integration_id, "snapshot"
            ) from None

    async def apply_to_latest(
        self, request: tree_rpc.ApplyDiscoverySnapshotRequest, attempts: int = 3
    ) -> tree_rpc.ApplyDiscoverySnapshotResponse:
        """`apply`, and when another apply came first (ABORTED), again on the tree as it is now:
        the crawl is newer than that one. The last ABORTED is raised after `attempts`."""
        for attempt in range(attempts):
            try:
                return await self.apply(request)
            except Aborted:
                if attempt == attempts - 1:
                    raise
                fresh = await self.get_integration(request.integration_id)
                request.expected_generation = fresh.tree_generation
        raise AssertionError("attempts must be at least 1")

    async def watch(self, after_revision: int) -> AsyncIterator[list[tree_pb.TreeEvent]]:
        """Every tree event after a revision, in batches (empty on progress messages)."""
        stream = self._tree.WatchTreeEvents(
            tree_rpc.WatchTreeEventsRequest(after_revision=after_revision)
        )
        try:
            async for reply in stream:
                yield list(reply.events)
        except grpc.aio.AioRpcError as error:
            raise self._translate(error, "stream tree events", "*", "after_revision") from None
        finally:
            stream.cancel()
