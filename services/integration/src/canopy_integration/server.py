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
from canopy_core.directory import DirectoryClient
from canopy_core.server import Runtime, ServiceSpec
from canopy_integration.api import ConnectionTreeApi, IntegrationApi
from canopy_integration.integrations import Context
from canopy_integration.settings import IntegrationSettings

SERVICE_NAMES = [
    integration_service_pb2.DESCRIPTOR.services_by_name["IntegrationService"].full_name,
    connection_tree_service_pb2.DESCRIPTOR.services_by_name["ConnectionTreeService"].full_name,
]


async def setup(runtime: Runtime) -> None:
    """Register the servicers, talking to the directory of the permissions service."""
    settings = runtime.settings
    trusted = (
        settings.trusted_account_id
        if isinstance(settings, IntegrationSettings)
        else IntegrationSettings.model_fields["trusted_account_id"].default
    )
    channel = runtime.channel(settings.permissions_address)
    runtime.on_stop.append(channel.close)
    ctx = Context(
        db=runtime.db,
        log=runtime.event_log,
        directory=DirectoryClient(channel),
        trusted_account_id=trusted,
    )
    integration_service_pb2_grpc.add_IntegrationServiceServicer_to_server(
        IntegrationApi(ctx), runtime.server
    )
    connection_tree_service_pb2_grpc.add_ConnectionTreeServiceServicer_to_server(
        ConnectionTreeApi(ctx), runtime.server
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
