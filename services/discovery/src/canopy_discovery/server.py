"""The discovery service: its RPCs, the scheduler's workers, the tree-event trigger, and the
followers of event queues."""

from __future__ import annotations

from importlib import resources

from canopy.discovery.v1 import discovery_service_pb2, discovery_service_pb2_grpc
from canopy_core.db import load_migrations
from canopy_core.directory import DirectoryClient
from canopy_core.server import Runtime, ServiceSpec
from canopy_discovery.api import Context, DiscoveryApi
from canopy_discovery.aws import AwsSettings
from canopy_discovery.crawler import CrawlLimits
from canopy_discovery.events.consumer import ConsumerConfig, EventConsumer
from canopy_discovery.events.follower import FollowerConfig
from canopy_discovery.integration_client import IntegrationClient
from canopy_discovery.reconcile import Reconciler
from canopy_discovery.scheduler import Scheduler, SchedulerConfig
from canopy_discovery.settings import DiscoverySettings
from canopy_discovery.triggers import follow_tree_events

SERVICE_NAMES = [
    discovery_service_pb2.DESCRIPTOR.services_by_name["DiscoveryService"].full_name,
]


def aws_settings(settings: DiscoverySettings) -> AwsSettings:
    """Where and as whom discovery calls AWS."""
    return AwsSettings(
        endpoint_url=settings.aws_endpoint_url,
        region=settings.aws_region,
        partition=settings.aws_partition,
        access_key_id=settings.aws_access_key_id,
        secret_access_key=(
            settings.aws_secret_access_key.get_secret_value()
            if settings.aws_secret_access_key
            else None
        ),
        session_token=(
            settings.aws_session_token.get_secret_value() if settings.aws_session_token else None
        ),
    )


async def setup(runtime: Runtime) -> None:
    """Register the servicer and start the workers and the trigger."""
    settings = runtime.settings
    if not isinstance(settings, DiscoverySettings):
        settings = DiscoverySettings(**settings.model_dump())
    integration_channel = runtime.channel(settings.integration_address)
    directory_channel = runtime.channel(settings.permissions_address)
    runtime.on_stop.append(integration_channel.close)
    runtime.on_stop.append(directory_channel.close)
    integrations = IntegrationClient(integration_channel)
    directory = DirectoryClient(directory_channel)
    aws = aws_settings(settings)
    default_limits = CrawlLimits(
        max_concurrency=settings.crawl_concurrency,
        max_requests_per_second=settings.crawl_requests_per_second,
        call_timeout=settings.crawl_call_timeout.total_seconds(),
        crawl_timeout=settings.crawl_timeout.total_seconds(),
    )
    ctx = Context(
        db=runtime.db,
        log=runtime.event_log,
        integrations=integrations,
        directory=directory,
        aws=aws,
        page_tokens=runtime.page_tokens,
        default_limits=default_limits,
    )
    discovery_service_pb2_grpc.add_DiscoveryServiceServicer_to_server(
        DiscoveryApi(ctx), runtime.server
    )
    scheduler = Scheduler(
        runtime.db,
        runtime.event_log,
        integrations,
        directory,
        aws,
        SchedulerConfig(
            workers=settings.sync_workers,
            lease_ttl=settings.lease_ttl,
            poll_interval=settings.scheduler_poll_interval.total_seconds(),
            jitter=settings.schedule_jitter,
            default_limits=default_limits,
        ),
    )
    consumer = EventConsumer(
        runtime.db,
        runtime.event_log,
        integrations,
        aws,
        ConsumerConfig(
            max_followers=settings.event_queue_followers,
            lease_ttl=settings.lease_ttl,
            poll_interval=settings.scheduler_poll_interval.total_seconds(),
            follower=FollowerConfig(
                coalesce_window=settings.event_coalesce_window.total_seconds(),
                wait_seconds=settings.event_queue_wait,
                visibility_timeout=max(1, int(settings.event_visibility_timeout.total_seconds())),
                retry_max=settings.event_queue_retry_max.total_seconds(),
                max_share=settings.event_refresh_max_share,
                min_entities=settings.event_refresh_min_entities,
                default_limits=scheduler.config.default_limits,
            ),
        ),
    )
    reconciler = Reconciler(
        runtime.db, runtime.event_log, integrations, directory, settings.schedule_reconcile_interval
    )
    runtime.add_task(scheduler.run(), name="discovery-scheduler")
    runtime.add_task(
        follow_tree_events(runtime.db, runtime.event_log, integrations, on_gap=reconciler.wake),
        name="tree-events",
    )
    runtime.add_task(reconciler.run(), name="schedule-reconciler")
    runtime.add_task(consumer.run(), name="event-queues")


def spec() -> ServiceSpec:
    """The discovery service."""
    return ServiceSpec(
        name="discovery",
        service_names=SERVICE_NAMES,
        migrations=load_migrations("discovery", resources.files("canopy_discovery") / "migrations"),
        setup=setup,
    )
