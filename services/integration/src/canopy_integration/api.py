"""gRPC servicers of the integration service: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Collection
from dataclasses import replace

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy_core.cache import LruCache
from canopy_core.context import current_principal
from canopy_core.convert import to_timedelta
from canopy_core.discovery_filters import filters_from_proto
from canopy_core.errors import InvalidArgument
from canopy_core.interceptor import RpcContext
from canopy_core.masks import check_mask
from canopy_integration import apply, integrations, previews, reads, roles, templates, tree
from canopy_integration.apply import Failure, Suspension, apply_response
from canopy_integration.convert import (
    config_from_proto,
    connection_to_proto,
    folder_to_proto,
    integration_to_proto,
    limits_from_proto,
    permissions_from_proto,
    report_from_proto,
    snapshot_from_proto,
)
from canopy_integration.events import decode
from canopy_integration.integrations import Context, NewIntegration
from canopy_integration.model import (
    Connection,
    EventQueueReport,
    Folder,
    Integration,
    RootFolderPermissions,
    Scope,
    Snapshot,
)
from canopy_integration.tree_paths import folder_paths
from canopy_integration.watch import watch_tree_events


def integration_from_proto(
    message: pb.Integration, paths: Collection[str] | None = None
) -> Integration:
    """The writable fields of an integration message; unset optional ones take defaults. With
    an update's mask `paths`, durations the mask leaves out are not read (nor checked)."""

    def covered(name: str) -> bool:
        return paths is None or any(
            p == name or p.startswith(f"{name}.") or name.startswith(f"{p}.") for p in paths
        )

    limits = message.crawl_limits
    if limits.HasField("crawl_timeout") and not covered("crawl_limits.crawl_timeout"):
        limits = pb.CrawlLimits()
        limits.CopyFrom(message.crawl_limits)
        limits.ClearField("crawl_timeout")
    return Integration(
        id=message.id,
        scope=Scope(tenant_id=""),
        handle=message.handle,
        discovery_role_arn=message.discovery_access.role_arn,
        discovery_external_id=message.discovery_access.external_id,
        event_queue=message.discovery_access.event_queue,
        member_role_name=message.member_access.role_name,
        member_external_id=message.member_access.external_id,
        handle_prefix=message.handle_prefix,
        connection_config=config_from_proto(message.connection_config),
        sync_interval=(
            to_timedelta(message.sync_interval, "integration.sync_interval")
            if message.HasField("sync_interval") and covered("sync_interval")
            else None
        ),
        max_delete_fraction=(
            message.max_delete_fraction if message.HasField("max_delete_fraction") else 0.5
        ),
        crawl_limits=limits_from_proto(limits, "integration.crawl_limits"),
        filters=filters_from_proto(message.filters),
        exclude_management_account=message.exclude_management_account,
        etag=message.etag,
    )


def _check_kind(message: pb.Integration) -> None:
    if message.kind not in (pb.INTEGRATION_KIND_UNSPECIFIED, pb.INTEGRATION_KIND_AWS_ORGANIZATION):
        raise InvalidArgument.field("integration.kind", "only INTEGRATION_KIND_AWS_ORGANIZATION")


class IntegrationApi(rpc_grpc.IntegrationServiceServicer):
    """`canopy.integration.v1.IntegrationService`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def CreateIntegration(
        self, request: rpc.CreateIntegrationRequest, context: RpcContext
    ) -> rpc.CreateIntegrationResponse:
        given = request.integration
        _check_kind(given)
        scope = given.scope
        created = await integrations.create_integration(
            self.ctx,
            current_principal(),
            NewIntegration(
                integration=integration_from_proto(given),
                scope_tenant_id=scope.tenant_id
                if scope.WhichOneof("owner") == "tenant_id"
                else None,
                scope_org_id=scope.org_id if scope.WhichOneof("owner") == "org_id" else None,
                # Unset: no grants (NONE). Set: its mode must say which.
                permissions=permissions_from_proto(request.initial_permissions)
                if request.HasField("initial_permissions")
                else RootFolderPermissions(),
            ),
            request,
        )
        return rpc.CreateIntegrationResponse(integration=integration_to_proto(created))

    async def GetIntegration(
        self, request: rpc.GetIntegrationRequest, context: RpcContext
    ) -> rpc.GetIntegrationResponse:
        found = await integrations.get_integration(self.ctx, current_principal(), request.id)
        return rpc.GetIntegrationResponse(integration=integration_to_proto(found))

    async def ListIntegrations(
        self, request: rpc.ListIntegrationsRequest, context: RpcContext
    ) -> rpc.ListIntegrationsResponse:
        which = request.scope.WhichOneof("owner")
        page = await integrations.list_integrations(
            self.ctx,
            current_principal(),
            request.scope.tenant_id if which == "tenant_id" else None,
            request.scope.org_id if which == "org_id" else None,
            request.include_org_integrations,
            request.page_size,
            request.page_token,
        )
        return rpc.ListIntegrationsResponse(
            integrations=[integration_to_proto(i) for i in page.integrations],
            next_page_token=page.next_page_token,
        )

    async def UpdateIntegration(
        self, request: rpc.UpdateIntegrationRequest, context: RpcContext
    ) -> rpc.UpdateIntegrationResponse:
        paths = check_mask(
            request.update_mask.paths,
            integrations.WRITABLE_PATHS,
            integrations.OUTPUT_ONLY_PATHS,
        )
        given = integration_from_proto(request.integration, paths)
        if request.validate_only:
            updated, impact = await previews.preview_update_integration(
                self.ctx, current_principal(), request, given, paths
            )
            return rpc.UpdateIntegrationResponse(
                integration=integration_to_proto(updated), impact=impact
            )
        updated = await integrations.update_integration(
            self.ctx,
            current_principal(),
            request.integration.id,
            given,
            paths,
            request.integration.etag,
        )
        return rpc.UpdateIntegrationResponse(integration=integration_to_proto(updated))

    async def DeleteIntegration(
        self, request: rpc.DeleteIntegrationRequest, context: RpcContext
    ) -> rpc.DeleteIntegrationResponse:
        principal = current_principal()
        if request.validate_only:
            dry = _without_request_id(request)
            _, impact = await previews.preview(
                self.ctx,
                lambda ctx: integrations.delete_integration(
                    ctx, principal, request.id, request.confirm_handle, request.etag, dry
                ),
            )
            return rpc.DeleteIntegrationResponse(impact=impact)
        await integrations.delete_integration(
            self.ctx, principal, request.id, request.confirm_handle, request.etag, request
        )
        return rpc.DeleteIntegrationResponse()

    async def GenerateExternalId(
        self, request: rpc.GenerateExternalIdRequest, context: RpcContext
    ) -> rpc.GenerateExternalIdResponse:
        which = request.scope.WhichOneof("owner")
        external_id = await roles.generate_external_id(
            self.ctx,
            current_principal(),
            request.scope.tenant_id if which == "tenant_id" else None,
            request.scope.org_id if which == "org_id" else None,
            request.suffix if request.HasField("suffix") else None,
        )
        return rpc.GenerateExternalIdResponse(external_id=external_id)

    async def RenderRoleTemplate(
        self, request: rpc.RenderRoleTemplateRequest, context: RpcContext
    ) -> rpc.RenderRoleTemplateResponse:
        kinds = {
            rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE: "discovery",
            rpc.ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET: "member",
        }
        if request.kind not in kinds:
            raise InvalidArgument.field(
                "kind",
                "ROLE_TEMPLATE_KIND_DISCOVERY_ROLE or ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET",
            )
        kind = kinds[request.kind]
        rendered, trusted_account_id = await roles.render_role_template(
            self.ctx,
            current_principal(),
            kind,
            request.role_name,
            request.external_id,
            request.integration_id,
            request.event_queue,
        )
        return rpc.RenderRoleTemplateResponse(
            template_yaml=rendered,
            file_name=templates.file_name_for(
                templates.RoleTemplateKind.DISCOVERY_ROLE
                if kind == "discovery"
                else templates.RoleTemplateKind.MEMBER_ROLE_STACK_SET
            ),
            trusted_account_id=trusted_account_id,
        )


class ConnectionTreeApi(tree_grpc.ConnectionTreeServiceServicer):
    """`canopy.integration.v1.ConnectionTreeService`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._connection_responses: LruCache[
            tuple[str, tuple[int, int]], tree_rpc.GetConnectionResponse
        ] = LruCache(reads.CAPACITY)

    async def GetFolder(
        self, request: tree_rpc.GetFolderRequest, context: RpcContext
    ) -> tree_rpc.GetFolderResponse:
        folder, path = await tree.get_folder(self.ctx, current_principal(), request.id)
        return tree_rpc.GetFolderResponse(folder=folder_to_proto(folder, path))

    async def ListFolders(
        self, request: tree_rpc.ListFoldersRequest, context: RpcContext
    ) -> tree_rpc.ListFoldersResponse:
        which = request.WhichOneof("parent")
        page = await tree.list_folders(
            self.ctx,
            current_principal(),
            request.integration_id if which == "integration_id" else None,
            request.parent_folder_id if which == "parent_folder_id" else None,
            request.page_size,
            request.page_token,
        )
        return tree_rpc.ListFoldersResponse(
            folders=[folder_to_proto(f, page.paths.get(f.id, ())) for f in page.folders],
            next_page_token=page.next_page_token,
        )

    async def UpdateFolder(
        self, request: tree_rpc.UpdateFolderRequest, context: RpcContext
    ) -> tree_rpc.UpdateFolderResponse:
        paths = check_mask(request.update_mask.paths, tree.FOLDER_WRITABLE, tree.FOLDER_OUTPUT_ONLY)
        principal = current_principal()

        def change(ctx: Context) -> Awaitable[tuple[Folder, list[str]]]:
            return tree.update_folder(
                ctx, principal, request.folder.id, request.folder.handle, paths, request.folder.etag
            )

        if request.validate_only:
            (folder, path), impact = await previews.preview(self.ctx, change)
            return tree_rpc.UpdateFolderResponse(
                folder=folder_to_proto(folder, path), impact=impact
            )
        folder, path = await change(self.ctx)
        return tree_rpc.UpdateFolderResponse(folder=folder_to_proto(folder, path))

    async def GetConnection(
        self, request: tree_rpc.GetConnectionRequest, context: RpcContext
    ) -> tree_rpc.GetConnectionResponse:
        found = await tree.get_connection(self.ctx, current_principal(), request.id)
        # The same rows make the same answer: kept by the rows' versions, never mutated.
        key = (found.connection.id, found.version)
        response = self._connection_responses.get(key)
        if response is None:
            response = tree_rpc.GetConnectionResponse(
                connection=connection_to_proto(found.connection, found.integration)
            )
            self._connection_responses.put(key, response)
        return response

    async def ListConnections(
        self, request: tree_rpc.ListConnectionsRequest, context: RpcContext
    ) -> tree_rpc.ListConnectionsResponse:
        which = request.WhichOneof("parent")
        page = await tree.list_connections(
            self.ctx,
            current_principal(),
            request.integration_id if which == "integration_id" else None,
            request.folder_id if which == "folder_id" else None,
            request.page_size,
            request.page_token,
        )
        return tree_rpc.ListConnectionsResponse(
            connections=[
                connection_to_proto(c, page.integrations[c.integration_id])
                for c in page.connections
            ],
            next_page_token=page.next_page_token,
        )

    async def UpdateConnection(
        self, request: tree_rpc.UpdateConnectionRequest, context: RpcContext
    ) -> tree_rpc.UpdateConnectionResponse:
        paths = check_mask(
            request.update_mask.paths, tree.CONNECTION_WRITABLE, tree.CONNECTION_OUTPUT_ONLY
        )
        principal = current_principal()
        overrides = config_from_proto(request.connection.config_overrides)

        def change(ctx: Context) -> Awaitable[tuple[Connection, Integration]]:
            return tree.update_connection(
                ctx,
                principal,
                request.connection.id,
                request.connection.handle,
                overrides,
                paths,
                request.connection.etag,
            )

        if request.validate_only:
            (connection, integration), impact = await previews.preview(self.ctx, change)
            return tree_rpc.UpdateConnectionResponse(
                connection=connection_to_proto(connection, integration), impact=impact
            )
        connection, integration = await change(self.ctx)
        return tree_rpc.UpdateConnectionResponse(
            connection=connection_to_proto(connection, integration)
        )

    async def GetConnectionTree(
        self, request: tree_rpc.GetConnectionTreeRequest, context: RpcContext
    ) -> tree_rpc.GetConnectionTreeResponse:
        found = await tree.get_tree(self.ctx, current_principal(), request.integration_id)
        return tree_rpc.GetConnectionTreeResponse(tree=tree_to_proto(found))

    async def ApplyDiscoverySnapshot(
        self, request: tree_rpc.ApplyDiscoverySnapshotRequest, context: RpcContext
    ) -> tree_rpc.ApplyDiscoverySnapshotResponse:
        which = request.WhichOneof("outcome")
        outcome: Snapshot | Failure | Suspension | EventQueueReport | None = None
        if which == "snapshot":
            outcome = snapshot_from_proto(request.snapshot)
            if request.HasField("unmatched_filters"):
                outcome = replace(
                    outcome, unmatched_filters=filters_from_proto(request.unmatched_filters)
                )
        elif which == "failure":
            outcome = Failure(request.failure.reason, request.failure.message)
        elif which == "suspension":
            outcome = Suspension(request.suspension.reason, request.suspension.message)
        elif which == "event_queue_status":
            outcome = report_from_proto(request.event_queue_status)
        if request.HasField("preview_update") and not request.validate_only:
            raise InvalidArgument.field("preview_update", "only with validate_only")
        if request.validate_only:
            update = None
            if request.HasField("preview_update"):
                pending = request.preview_update
                paths = check_mask(
                    pending.update_mask.paths,
                    integrations.WRITABLE_PATHS,
                    integrations.OUTPUT_ONLY_PATHS,
                )
                update = (integration_from_proto(pending.integration, paths), paths)
            return await previews.preview_apply(
                self.ctx, current_principal(), request, outcome, update
            )
        result = await apply.apply_outcome(
            self.ctx,
            current_principal(),
            request.integration_id,
            request.expected_generation,
            outcome,
            request.confirm_deletions,
            request,
        )
        if isinstance(result, tree_rpc.ApplyDiscoverySnapshotResponse):
            return result
        return apply_response(result)

    async def WatchTreeEvents(
        self, request: tree_rpc.WatchTreeEventsRequest, context: RpcContext
    ) -> AsyncIterator[tree_rpc.WatchTreeEventsResponse]:
        which = request.WhichOneof("filter")
        scope_which = request.scope.WhichOneof("owner") if which == "scope" else None
        async for batch in watch_tree_events(
            self.ctx,
            current_principal(),
            request.after_revision,
            integration_id=request.integration_id if which == "integration_id" else None,
            tenant_id=request.scope.tenant_id if scope_which == "tenant_id" else None,
            org_id=request.scope.org_id if scope_which == "org_id" else None,
            scope_given=which == "scope",
        ):
            yield tree_rpc.WatchTreeEventsResponse(
                events=[decode(e) for e in batch.events],
                latest_revision=batch.latest_revision,
            )


def tree_to_proto(found: tree.Tree) -> tree_pb.ConnectionTree:
    """The nested tree: folders and connections under their parents, by handle."""
    paths = folder_paths(found.folders)
    children: dict[str | None, list[tree_pb.FolderNode]] = {}
    nodes: dict[str, tree_pb.FolderNode] = {}
    for folder in found.folders:
        nodes[folder.id] = tree_pb.FolderNode(
            folder=folder_to_proto(folder, paths.get(folder.id, ()))
        )
    by_folder: dict[str, list[tree_pb.Connection]] = {}
    for connection in sorted(found.connections, key=lambda c: c.handle):
        by_folder.setdefault(connection.folder_id, []).append(
            connection_to_proto(connection, found.integration)
        )
    root = None
    for folder in sorted(found.folders, key=lambda f: -len(paths.get(f.id, ()))):
        node = nodes[folder.id]
        node.connections.extend(by_folder.get(folder.id, []))
        kids = sorted(children.get(folder.id, []), key=lambda n: n.folder.handle)
        node.folders.extend(kids)
        if folder.parent_id is None:
            root = node
        else:
            children.setdefault(folder.parent_id, []).append(node)
    return tree_pb.ConnectionTree(
        integration_id=found.integration.id,
        integration_state=pb.IntegrationState.Value(
            f"INTEGRATION_STATE_{found.integration.state.value}"
        ),
        integration_state_reason=found.integration.state_reason,
        generation=found.integration.tree_generation,
        revision=found.revision,
        root=root,
    )


def _without_request_id(request: rpc.DeleteIntegrationRequest) -> rpc.DeleteIntegrationRequest:
    """The request of a preview, which neither replays nor records a result."""
    dry = rpc.DeleteIntegrationRequest()
    dry.CopyFrom(request)
    dry.ClearField("request_id")
    return dry
