"""Settings of the integration service."""

from __future__ import annotations

from canopy_core.settings import ServiceSettings


class IntegrationSettings(ServiceSettings):
    """`CANOPY_*` settings, with this service's defaults."""

    service_name: str = "integration"
    db_schema: str = "integration"
    port: int = 50051
    metrics_port: int | None = 9151
