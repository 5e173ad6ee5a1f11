"""Typed settings read once at start from `CANOPY_*` environment variables.

Every service shares these fields; each service subclasses `ServiceSettings` to set its own
defaults (port, metrics port, database schema) and add its own fields.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SECONDS = re.compile(r"^\s*\d+(\.\d+)?\s*$")


def _seconds(value: Any) -> Any:
    """Plain numbers are seconds (`CANOPY_SHUTDOWN_GRACE=10`); ISO 8601 (`PT10S`) also works."""
    if isinstance(value, int | float) or (isinstance(value, str) and _SECONDS.match(value)):
        return timedelta(seconds=float(value))
    return value


Duration = Annotated[timedelta, BeforeValidator(_seconds)]


def split_keys(value: str) -> list[str]:
    """The comma-separated secrets of a key list setting, blanks around them ignored."""
    return [part.strip() for part in value.split(",") if part.strip()]


class ServiceSettings(BaseSettings):
    """Settings common to every Canopy service."""

    model_config = SettingsConfigDict(
        env_prefix="CANOPY_",
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
        env_parse_none_str="none",
    )

    service_name: str = "canopy"
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CANOPY_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL DSN; unset: an embedded PostgreSQL under data_dir.",
    )
    db_schema: str = Field(default="canopy", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    db_connect_timeout: Duration = timedelta(seconds=5)
    data_dir: Path = Path(".canopy")

    host: str = "0.0.0.0"
    port: int = Field(default=50050, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    tls_ca_file: Path | None = None  # calling the other services: TLS, checked against this CA
    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=4 * 1024 * 1024)
    shutdown_grace: Duration = timedelta(seconds=10)

    jwt_secret: SecretStr | None = Field(default=None, min_length=32)
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    system_token: SecretStr | None = None
    page_token_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated secrets sealing page tokens, 32+ characters each; the "
        "first seals, all open. Unset: derived from the JWT signing secret.",
    )

    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern=r"^(json|text)$")

    event_retention: Duration = timedelta(days=7)
    watch_progress_interval: Duration = timedelta(seconds=5)
    compact_events: bool = Field(
        default=False,
        description="Store a change's events of one kind and keys as one row covering their "
        "revisions (EventLog.append_ranges). Turn on only once every replica runs a release "
        "that reads such rows (README, Upgrading).",
    )

    integration_address: str = "127.0.0.1:50051"
    discovery_address: str = "127.0.0.1:50052"
    permissions_address: str = "127.0.0.1:50053"

    @field_validator("page_token_keys")
    @classmethod
    def _page_token_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        keys = split_keys(value.get_secret_value())
        if not keys:
            raise ValueError("name at least one key")
        if any(len(k) < 32 for k in keys):
            raise ValueError("every key needs 32 or more characters (openssl rand -hex 32)")
        return value
