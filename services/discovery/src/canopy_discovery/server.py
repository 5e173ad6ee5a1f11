"""The discovery service: what it serves and what it runs."""

from __future__ import annotations

from importlib import resources

from canopy.discovery.v1 import (
    discovery_service_pb2,
    discovery_service_pb2_grpc,
)
from canopy_core.db import load_migrations
from canopy_core.server import Runtime, ServiceSpec, unimplemented

SERVICE_NAMES = [
    discovery_service_pb2.DESCRIPTOR.services_by_name["DiscoveryService"].full_name,
]


async def setup(runtime: Runtime) -> None:
    """Register the servicers; RPCs not built yet answer UNIMPLEMENTED."""
    discovery_service_pb2_grpc.add_DiscoveryServiceServicer_to_server(
        unimplemented(discovery_service_pb2_grpc.DiscoveryServiceServicer), runtime.server
    )


def spec() -> ServiceSpec:
    """The discovery service."""
    return ServiceSpec(
        name="discovery",
        service_names=SERVICE_NAMES,
        migrations=load_migrations("discovery", resources.files("canopy_discovery") / "migrations"),
        setup=setup,
    )
