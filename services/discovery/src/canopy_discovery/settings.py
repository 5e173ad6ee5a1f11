"""Settings of the discovery service."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr

from canopy_core.settings import Duration, ServiceSettings


class DiscoverySettings(ServiceSettings):
    """`CANOPY_*` settings, with this service's defaults."""

    service_name: str = "discovery"
    db_schema: str = "discovery"
    port: int = 50052
    metrics_port: int | None = 9152

    aws_endpoint_url: str | None = Field(
        default=None, description="AWS endpoint (a moto server, a proxy); unset: real AWS."
    )
    aws_region: str = "us-east-1"
    aws_partition: Literal["aws", "aws-cn", "aws-us-gov"] = Field(
        default="aws",
        description="The AWS partition of the platform's credentials: roles of another one are "
        "refused (IAM trust never crosses partitions).",
    )
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None

    crawl_concurrency: int = Field(default=8, ge=1, le=64)
    crawl_requests_per_second: float | None = Field(default=None, gt=0)
    crawl_call_timeout: Duration = timedelta(seconds=20)
    crawl_timeout: Duration = timedelta(minutes=10)

    sync_workers: int = Field(default=4, ge=1, le=64, description="Concurrent syncs per replica.")
    lease_ttl: Duration = timedelta(seconds=30)
    scheduler_poll_interval: Duration = timedelta(seconds=5)
    schedule_jitter: float = Field(default=0.1, ge=0, le=0.5)
    schedule_reconcile_interval: Duration = Field(
        default=timedelta(minutes=5),
        description="How often the schedule is reconciled with the integration service's list "
        "of integrations (also at start, and after a compacted gap in the tree log).",
    )

    event_queue_followers: int = Field(
        default=32, ge=0, le=1024, description="Event queues one replica follows at most."
    )
    event_coalesce_window: Duration = Field(
        default=timedelta(seconds=2),
        description="How long the events of a burst are gathered before one refresh reads what "
        "they name (from the first event of the burst).",
    )
    event_queue_wait: int = Field(
        default=20, ge=1, le=20, description="SQS long polling: seconds a receive waits."
    )
    event_visibility_timeout: Duration = Field(
        default=timedelta(seconds=60),
        description="How long received messages stay hidden from other receivers; extended "
        "while their refresh waits, so only a dead replica's messages come back.",
    )
    event_queue_retry_max: Duration = Field(
        default=timedelta(seconds=60),
        description="Longest wait between attempts to read a queue that fails.",
    )
    event_refresh_max_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="A burst naming more than this share of the tree's accounts and OUs (and "
        "more than event_refresh_min_entities) is followed by a full crawl instead.",
    )
    event_refresh_min_entities: int = Field(default=20, ge=0)
