"""What the integration service asks of the permissions service for previews, with its system
token: the workspace half of a change's impact."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.permissions.v1 import change_impact_service_pb2 as impact_rpc
from canopy.permissions.v1 import change_impact_service_pb2_grpc as impact_grpc
from canopy.type.v1 import impact_pb2
from canopy_core.remote import dependency_error


class ChangeImpacts:
    """The workspace half of previews, from the permissions service."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = 60.0) -> None:
        self._stub = impact_grpc.ChangeImpactServiceStub(channel)
        self._timeout = timeout

    async def preview(
        self, events: Sequence[tree_pb.TreeEvent], tree_revision: int
    ) -> impact_pb2.ChangeImpact:
        """What these tree events, following `tree_revision`, would do to every workspace."""
        try:
            reply = await self._stub.PreviewTreeChange(
                impact_rpc.PreviewTreeChangeRequest(events=events, tree_revision=tree_revision),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise dependency_error(
                error, "PERMISSIONS", field="validate_only", asking="for the impact on workspaces"
            ) from None
        return reply.impact
