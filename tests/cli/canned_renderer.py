"""A STAND-IN WorkspaceConfigService that serves the replies a test gives it, on a gRPC server of
its own on port 0: how `canopy workspace config` treats a server that breaks the contract (bad
sizes, hashes, order), which the permissions service's renderer never does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from canopy.permissions.v1 import workspace_config_service_pb2 as cpb
from canopy.permissions.v1 import workspace_config_service_pb2_grpc as cgrpc


class CannedRenderer(cgrpc.WorkspaceConfigServiceServicer):
    """Serves the replies it is given, whatever the request (a server breaking the contract)."""

    def __init__(self, answers: Sequence[cpb.RenderWorkspaceConfigResponse]) -> None:
        self.answers = list(answers)
        self.requests: list[cpb.RenderWorkspaceConfigRequest] = []

    async def RenderWorkspaceConfig(
        self, request: cpb.RenderWorkspaceConfigRequest, context: Any
    ) -> AsyncIterator[cpb.RenderWorkspaceConfigResponse]:
        """The canned replies."""
        self.requests.append(request)
        for answer in self.answers:
            yield answer


async def canned_server(renderer: CannedRenderer) -> tuple[grpc.aio.Server, int]:
    """A gRPC server on port 0 serving a canned renderer; returns it and its port."""
    server = grpc.aio.server()
    cgrpc.add_WorkspaceConfigServiceServicer_to_server(renderer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port
