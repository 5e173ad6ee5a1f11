"""The integration service: what it serves and what it runs."""

from __future__ import annotations

import logging
from datetime import timedelta
from importlib import resources

from canopy.integration.v1 import (
    connection_tree_service_pb2,
    connection_tree_service_pb2_grpc,
    integration_service_pb2,
    integration_service_pb2_grpc,
)
from canopy_core.db import Database, load_migrations, run_every
from canopy_core.directory import DirectoryClient
from canopy_core.server import Runtime, ServiceSpec
from canopy_integration import store
from canopy_integration.api import ConnectionTreeApi, IntegrationApi
from canopy_integration.discovery_client import DiscoveryClient
from canopy_integration.impact_client import ChangeImpacts
from canopy_integration.integrations import Context
from canopy_integration.settings import IntegrationSettings
from canopy_integration.trusted_account import TrustedAccount

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    integration_service_pb2.DESCRIPTOR.services_by_name["IntegrationService"].full_name,
    connection_tree_service_pb2.DESCRIPTOR.services_by_name["ConnectionTreeService"].full_name,
]


async def setup(runtime: Runtime) -> None:
    """Register the servicers, talking to the directory of the permissions service."""
    settings = runtime.settings
    if not isinstance(settings, IntegrationSettings):
        settings = IntegrationSettings(**settings.model_dump())
    channel = runtime.channel(settings.permissions_address)
    runtime.on_stop.append(channel.close)
    discovery_channel = runtime.channel(settings.discovery_address)
    runtime.on_stop.append(discovery_channel.close)
    discovery = DiscoveryClient(discovery_channel)
    platform: DiscoveryClient | None = None
    if settings.trusted_account_id is None:
        # Only discovery holds the platform's AWS credentials: it says whose they are.
        platform = discovery
        log.info(
            "CANOPY_TRUSTED_ACCOUNT_ID unset: role templates trust the account of the AWS "
            "credentials discovery uses"
        )
    ctx = Context(
        db=runtime.db,
        log=runtime.event_log,
        directory=DirectoryClient(channel),
        trusted_account=TrustedAccount(settings.trusted_account_id, platform),
        partition=settings.aws_partition,
        page_tokens=runtime.page_tokens,
        impacts=ChangeImpacts(channel),
        discovery=discovery,
    )
    integration_service_pb2_grpc.add_IntegrationServiceServicer_to_server(
        IntegrationApi(ctx), runtime.server
    )
    connection_tree_service_pb2_grpc.add_ConnectionTreeServiceServicer_to_server(
        ConnectionTreeApi(ctx), runtime.server
    )
    runtime.add_task(
        purge_tombstones(runtime.db, settings.tombstone_retention, every=timedelta(hours=1)),
        name="tombstone-purge",
    )


async def purge_tombstones(db: Database, retention: timedelta, every: timedelta) -> None:
    """Forget deleted ids older than `retention`, on a timer, forever (a background task)."""

    async def purge() -> None:
        async with db.transaction() as conn:
            purged = await store.purge_tombstones(conn, retention)
        if purged:
            log.info("tombstones purged", extra={"purged": purged})

    await run_every(every, purge, "tombstone purge")


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
