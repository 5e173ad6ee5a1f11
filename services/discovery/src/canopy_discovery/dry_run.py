"""SyncIntegration `validate_only`: crawl, diff, apply nothing.

The crawl runs in the call (no lease: it writes nothing, so it cannot collide with a sync), and
its snapshot goes to ApplyDiscoverySnapshot `validate_only`, which answers with what applying
would do. A dry run is not stored; its run record exists only in the response. With
`preview_update` (from the integration service, previewing UpdateIntegration) the crawl uses the
settings the update would give, and the integration service previews update and snapshot as one
change.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from canopy.discovery.v1 import discovery_pb2 as pb
from canopy.discovery.v1 import discovery_service_pb2 as rpc
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as ipb
from canopy.integration.v1 import integration_service_pb2 as irpc
from canopy_core.auth import Principal
from canopy_core.directory import Directory
from canopy_core.errors import CanopyError, PermissionDenied
from canopy_discovery.aws import AwsSettings, DiscoveryFailure
from canopy_discovery.convert import run_to_proto
from canopy_discovery.crawler import CrawlLimits, CrawlProgress, crawl
from canopy_discovery.errors import PlanNotEligible
from canopy_discovery.filters import Scope, filter_snapshot
from canopy_discovery.integration_client import IntegrationClient
from canopy_discovery.model import RunState, SyncRun, Trigger
from canopy_discovery.plans import plan_suspension
from canopy_discovery.runs import scope_of
from canopy_discovery.scheduler import OUTCOME_STATES, copy_progress, crawl_limits, run_progress


def settings_after(integration: ipb.Integration, update: irpc.UpdateIntegrationRequest) -> None:
    """The integration as the update would leave it, for crawling (in place)."""
    update.update_mask.MergeMessage(
        update.integration,
        integration,
        replace_message_field=True,
        replace_repeated_field=True,
    )


async def dry_run(
    integrations: IntegrationClient,
    directory: Directory,
    aws: AwsSettings,
    default_limits: CrawlLimits,
    principal: Principal,
    request: rpc.SyncIntegrationRequest,
) -> pb.SyncRun:
    """Crawl the integration's organization and preview applying the snapshot."""
    tenant_id, org_id, _ = await scope_of(integrations, principal, request.integration_id)
    principal.require_owner(tenant_id, org_id, resource=f"integration {request.integration_id}")
    update = request.preview_update if request.HasField("preview_update") else None
    if update is not None and not principal.system:
        raise PermissionDenied(
            "preview_update is for the integration service: preview an update with "
            "UpdateIntegration validate_only",
            metadata={"field": "preview_update"},
        )
    try:
        suspension = await plan_suspension(directory, tenant_id, org_id)
    except CanopyError:
        suspension = None
    if suspension is not None:
        raise PlanNotEligible(request.integration_id, suspension.message)
    integration = await integrations.get_integration(request.integration_id)
    crawled = ipb.Integration()
    crawled.CopyFrom(integration)
    if update is not None:
        settings_after(crawled, update)
    started = datetime.now(UTC)
    run = SyncRun(
        id="",
        integration_id=integration.id,
        tenant_id=tenant_id,
        org_id=org_id,
        state=RunState.RUNNING,
        trigger=Trigger.MANUAL,
        confirm_deletions=request.confirm_deletions,
        create_time=started,
        start_time=started,
        update_time=started,
    )
    progress = CrawlProgress()
    scope = Scope.of(crawled)
    try:
        snapshot = await crawl(
            aws,
            crawled.discovery_access.role_arn,
            crawled.discovery_access.external_id,
            crawl_limits(default_limits, crawled),
            on_progress=lambda p: copy_progress(p, progress),
            scope=scope,
        )
    except DiscoveryFailure as failure:
        ended = datetime.now(UTC)
        failed = replace(
            run,
            state=RunState.FAILED,
            failure_reason=failure.reason,
            failure_message=failure.message,
            progress=run_progress(progress),
            end_time=ended,
            update_time=ended,
        )
        message = run_to_proto(failed)
        message.dry_run = True
        return message
    apply_request = tree_rpc.ApplyDiscoverySnapshotRequest(
        integration_id=integration.id,
        expected_generation=integration.tree_generation,
        snapshot=filter_snapshot(snapshot, scope),
        confirm_deletions=request.confirm_deletions,
        validate_only=True,
    )
    if update is not None:
        apply_request.preview_update.CopyFrom(update)
    # If the tree moved on while crawling, the preview is of the tree as it is now.
    reply = await integrations.apply_to_latest(apply_request)
    ended = datetime.now(UTC)
    done = replace(
        run,
        state=OUTCOME_STATES.get(reply.outcome, RunState.FAILED),
        apply_outcome=tree_pb.ApplyOutcome.Name(reply.outcome).removeprefix("APPLY_OUTCOME_"),
        summary=reply.summary.SerializeToString(),
        organization_id=snapshot.organization_id,
        progress=run_progress(progress),
        end_time=ended,
        update_time=ended,
    )
    message = run_to_proto(done)
    message.dry_run = True
    message.impact.CopyFrom(reply.impact)
    return message
