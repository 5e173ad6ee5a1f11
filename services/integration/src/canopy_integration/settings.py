"""Settings of the integration service."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from canopy_core.settings import Duration, ServiceSettings


class IntegrationSettings(ServiceSettings):
    """`CANOPY_*` settings, with this service's defaults."""

    service_name: str = "integration"
    db_schema: str = "integration"
    port: int = 50051
    metrics_port: int | None = 9151
    trusted_account_id: str | None = Field(
        default=None,
        pattern=r"^\d{12}$",
        description="The platform's AWS account that role templates trust. Unset: the account "
        "of the credentials the discovery service uses (STS GetCallerIdentity), asked of it "
        "when a template is rendered; never a guess.",
    )
    aws_partition: Literal["aws", "aws-cn", "aws-us-gov"] = Field(
        default="aws",
        description="The AWS partition the deployment serves: role ARNs of another one are "
        "refused, and templates trust the platform account in this one.",
    )
    tombstone_retention: Duration = Field(
        default=timedelta(days=90),
        description="How long a deleted item's id stays known: until then its scope's members "
        "asking for it get NOT_FOUND, afterwards PERMISSION_DENIED like everyone else.",
    )
