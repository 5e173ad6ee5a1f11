"""Settings of the permissions service."""

from __future__ import annotations

from canopy_core.settings import ServiceSettings


class PermissionsSettings(ServiceSettings):
    """`CANOPY_*` settings, with this service's defaults."""

    service_name: str = "permissions"
    db_schema: str = "permissions"
    port: int = 50053
    metrics_port: int | None = 9153
