"""Settings of the discovery service."""

from __future__ import annotations

from canopy_core.settings import ServiceSettings


class DiscoverySettings(ServiceSettings):
    """`CANOPY_*` settings, with this service's defaults."""

    service_name: str = "discovery"
    db_schema: str = "discovery"
    port: int = 50052
    metrics_port: int | None = 9152
