"""gRPC servicer of the discovery service: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from canopy.discovery.v1 import discovery_pb2 as pb
from canopy.discovery.v1 import discovery_service_pb2 as rpc
from canopy.discovery.v1 import discovery_service_pb2_grpc as rpc_grpc
from canopy_core.context import current_principal
from canopy_core.db import Database
from canopy_core.directory import Directory
from canopy_core.discovery_filters import (
    NO_FILTERS,
    filters_from_proto,
    filters_to_proto,
    validate_filters,
)
from canopy_core.errors import InvalidArgument
from canopy_core.eventlog import EventLog
from canopy_core.interceptor import RpcContext
from canopy_core.pagination import PageTokens
from canopy_core.validation import Violations
from canopy_discovery import access_checks, runs
from canopy_discovery.access import AccessResult
from canopy_discovery.aws import AwsSettings
from canopy_discovery.convert import run_to_proto
from canopy_discovery.crawler import CrawlLimits
from canopy_discovery.dry_run import dry_run
from canopy_discovery.filter_access import FilterCheck, checked_filters
from canopy_discovery.integration_client import IntegrationClient
from canopy_discovery.queue_access import QueueCheck


@dataclass(frozen=True)
class Context:
    """What the discovery RPCs run against."""

    db: Database
    log: EventLog
    integrations: IntegrationClient
    directory: Directory
    aws: AwsSettings
    page_tokens: PageTokens
    default_limits: CrawlLimits  # the service's crawl limits, under an integration's own


def _reason(name: str) -> pb.AccessFailureReason.ValueType:
    try:
        return pb.AccessFailureReason.Value(f"ACCESS_FAILURE_REASON_{name}")
    except ValueError:
        return pb.ACCESS_FAILURE_REASON_OTHER


def _queue_reply(check: QueueCheck | None) -> rpc.EventQueueCheck | None:
    if check is None:
        return None
    return rpc.EventQueueCheck(
        queue_url=check.queue_url,
        ok=check.ok,
        reason=check.reason,
        message=check.message,
        queue_arn=check.queue_arn,
        dead_letter_queue_arn=check.dead_letter_queue_arn,
        max_receive_count=check.max_receive_count,
    )


def _filters_reply(check: FilterCheck | None) -> rpc.FilterCheck | None:
    if check is None:
        return None
    return rpc.FilterCheck(
        ok=check.ok, unmatched=filters_to_proto(check.unmatched), message=check.message
    )


def _access_reply(
    result: AccessResult, filters: FilterCheck | None = None
) -> rpc.TestDiscoveryAccessResponse:
    return rpc.TestDiscoveryAccessResponse(
        ok=result.ok,
        account_id=result.account_id,
        organization_id=result.organization_id,
        management_account_id=result.management_account_id,
        root_id=result.root_id,
        reason=_reason(result.reason) if result.reason else pb.ACCESS_FAILURE_REASON_UNSPECIFIED,
        message=result.message,
        platform_account_id=result.platform_account_id,
        trusted_account_id=result.trusted_account_id,
        event_queue=_queue_reply(result.event_queue),
        filters=_filters_reply(filters),
    )


def _unsaved(unsaved: rpc.UnsavedMemberAccess) -> access_checks.UnsavedMemberAccess:
    return access_checks.UnsavedMemberAccess(
        tenant_id=unsaved.scope.tenant_id,
        org_id=unsaved.scope.org_id,
        discovery_role_arn=unsaved.discovery_access.role_arn,
        discovery_external_id=unsaved.discovery_access.external_id,
        event_queue=unsaved.discovery_access.event_queue,
        member_role_name=unsaved.member_access.role_name,
        member_external_id=unsaved.member_access.external_id,
    )


class DiscoveryApi(rpc_grpc.DiscoveryServiceServicer):
    """`canopy.discovery.v1.DiscoveryService`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def TestDiscoveryAccess(
        self, request: rpc.TestDiscoveryAccessRequest, context: RpcContext
    ) -> rpc.TestDiscoveryAccessResponse:
        which = request.WhichOneof("target")
        filters = filters_from_proto(request.filters)
        with Violations() as v:
            if which != "access" and request.HasField("filters"):
                v.add("filters", "only with `access`: an integration's own filters are checked")
            validate_filters(filters, "filters", v)
        role_arn, external_id = request.access.role_arn, request.access.external_id
        if which == "integration_id":
            result = await access_checks.discovery_access_for_integration(
                self.ctx.integrations, self.ctx.aws, current_principal(), request.integration_id
            )
            if result.root_id:
                integration = await self.ctx.integrations.get_integration(request.integration_id)
                filters = filters_from_proto(integration.filters)
                role_arn = integration.discovery_access.role_arn
                external_id = integration.discovery_access.external_id
        elif which == "access":
            result = await access_checks.discovery_access_for_role(
                self.ctx.integrations,
                self.ctx.directory,
                self.ctx.aws,
                current_principal(),
                request.access.role_arn,
                request.access.external_id,
                request.access.event_queue,
            )
        elif which == "platform_credentials":
            current_principal()  # any authenticated caller
            result = await access_checks.platform_credentials(self.ctx.aws)
        else:
            raise InvalidArgument.field(
                "target", "name an integration_id, an access or the platform_credentials to test"
            )
        if which == "platform_credentials":
            filters = NO_FILTERS
        result, check = await checked_filters(self.ctx.aws, role_arn, external_id, filters, result)
        return _access_reply(result, check)

    async def TestMemberAccess(
        self, request: rpc.TestMemberAccessRequest, context: RpcContext
    ) -> rpc.TestMemberAccessResponse:
        report = await access_checks.member_access(
            self.ctx.integrations,
            self.ctx.directory,
            self.ctx.aws,
            current_principal(),
            request.integration_id,
            _unsaved(request.unsaved) if request.HasField("unsaved") else None,
            list(request.account_ids),
            request.sample_size,
        )
        organization = report.organization
        return rpc.TestMemberAccessResponse(
            results=[
                pb.MemberAccessResult(
                    account_id=r.account_id,
                    role_arn=r.role_arn,
                    ok=r.ok,
                    reason=_reason(r.reason) if r.reason else pb.ACCESS_FAILURE_REASON_UNSPECIFIED,
                    message=r.message,
                )
                for r in report.results
            ],
            organization=None
            if organization is None
            else rpc.MemberAccessOrganization(
                ok=organization.ok,
                organization_id=organization.organization_id,
                active_account_count=len(organization.active_account_ids),
                reason=_reason(organization.reason)
                if organization.reason
                else pb.ACCESS_FAILURE_REASON_UNSPECIFIED,
                message=organization.message,
            ),
        )

    async def SyncIntegration(
        self, request: rpc.SyncIntegrationRequest, context: RpcContext
    ) -> rpc.SyncIntegrationResponse:
        if request.HasField("preview_update") and not request.validate_only:
            raise InvalidArgument.field("preview_update", "only with validate_only")
        if request.validate_only:
            return rpc.SyncIntegrationResponse(
                run=await dry_run(
                    self.ctx.integrations,
                    self.ctx.directory,
                    self.ctx.aws,
                    self.ctx.default_limits,
                    current_principal(),
                    request,
                )
            )
        run = await runs.sync_integration(
            self.ctx.db,
            self.ctx.log,
            self.ctx.integrations,
            self.ctx.directory,
            current_principal(),
            request,
        )
        return rpc.SyncIntegrationResponse(run=run_to_proto(run))

    async def GetSyncRun(
        self, request: rpc.GetSyncRunRequest, context: RpcContext
    ) -> rpc.GetSyncRunResponse:
        run = await runs.get_run(self.ctx.db, current_principal(), request.id)
        return rpc.GetSyncRunResponse(run=run_to_proto(run))

    async def ListSyncRuns(
        self, request: rpc.ListSyncRunsRequest, context: RpcContext
    ) -> rpc.ListSyncRunsResponse:
        page = await runs.list_runs(
            self.ctx.db,
            self.ctx.page_tokens,
            self.ctx.integrations,
            current_principal(),
            request.integration_id,
            request.page_size,
            request.page_token,
        )
        return rpc.ListSyncRunsResponse(
            runs=[run_to_proto(r) for r in page.runs], next_page_token=page.next_page_token
        )

    async def WatchSyncRun(
        self, request: rpc.WatchSyncRunRequest, context: RpcContext
    ) -> AsyncIterator[rpc.WatchSyncRunResponse]:
        async for run in runs.watch_run(self.ctx.db, self.ctx.log, current_principal(), request.id):
            yield rpc.WatchSyncRunResponse(run=run)
