"""The integration service: what it serves and what it runs."""

from __future__ import annotations

from importlib import resources

from canopy.integration.v1 import (
    connection_tree_service_pb2,
    connection_tree_service_pb2_grpc,
    integration_service_pb2,
    integration_service_pb2_grpc,
)
from canopy_core.db import load_migrations
from canopy_core.server import Runtime, ServiceSpec, unimplemented

SERVICE_NAMES = [
    integration_service_pb2.DESCRIPTOR.services_by_name["IntegrationService"].full_name,
    connection_tree_service_pb2.DESCRIPTOR.services_by_name["ConnectionTreeService"].full_name,
]


async def setup(runtime: Runtime) -> None:
    """Register the servicers; RPCs not built yet answer UNIMPLEMENTED."""
    integration_service_pb2_grpc.add_IntegrationServiceServicer_to_server(
        unimplemented(integration_service_pb2_grpc.IntegrationServiceServicer), runtime.server
    )
    connection_tree_service_pb2_grpc.add_ConnectionTreeServiceServicer_to_server(
        unimplemented(connection_tree_service_pb2_grpc.ConnectionTreeServiceServicer),
        runtime.server,
    )


def spec() -> ServiceSpec:
    """The integration service."""
    return ServiceSpec(
        name="integration",
        service_names=SERVICE_NAMES,
        migrations=load_migrations(
            "integration", resources.files("canopy_integration") / "migrations"
        ),
        setup=setup,
    )
