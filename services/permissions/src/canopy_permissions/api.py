"""gRPC servicers of the permissions service: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from canopy.permissions.v1 import change_impact_service_pb2 as impact_rpc
from canopy.permissions.v1 import change_impact_service_pb2_grpc as impact_grpc
from canopy.permissions.v1 import directory_pb2 as pb
from canopy.permissions.v1 import directory_service_pb2 as rpc
from canopy.permissions.v1 import directory_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import permission_service_pb2 as perm_rpc
from canopy.permissions.v1 import permission_service_pb2_grpc as perm_grpc
from canopy.permissions.v1 import workspace_config_service_pb2 as wc_rpc
from canopy.permissions.v1 import workspace_config_service_pb2_grpc as wc_grpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as ws_rpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as ws_grpc
from canopy.type.v1 import types_pb2
from canopy_core.context import current_principal
from canopy_core.convert import timestamp
from canopy_core.db import Database
from canopy_core.errors import InvalidArgument
from canopy_core.eventlog import EventLog
from canopy_core.interceptor import RpcContext
from canopy_core.pagination import PageTokens
from canopy_permissions import attachments, directory, grants, impact, workspace_config
from canopy_permissions.convert import attachment_to_proto, permissions_to_proto
from canopy_permissions.model import Org, Permissions, Plan, Tenant, Workspace
from canopy_permissions.schemas import schema_to_proto


def plan_from_proto(value: int) -> Plan | None:
    """The domain plan of a proto enum value (None when unspecified or unknown)."""
    if value == types_pb2.PLAN_UNSPECIFIED:
        return None
    try:
        return Plan[types_pb2.Plan.Name(types_pb2.Plan.ValueType(value)).removeprefix("PLAN_")]
    except ValueError:
        return None


def plan_to_proto(plan: Plan | None) -> types_pb2.Plan.ValueType:
    """The proto enum value of a domain plan."""
    if plan is None:
        return types_pb2.PLAN_UNSPECIFIED
    return types_pb2.Plan.Value(f"PLAN_{plan.value}")


def tenant_to_proto(tenant: Tenant) -> pb.Tenant:
    return pb.Tenant(
        id=tenant.id,
        handle=tenant.handle,
        display_name=tenant.display_name,
        plan=plan_to_proto(tenant.plan),
        create_time=timestamp(tenant.create_time),
        update_time=timestamp(tenant.update_time),
        etag=tenant.etag,
    )


def org_to_proto(org: Org) -> pb.Org:
    return pb.Org(
        id=org.id,
        tenant_id=org.tenant_id,
        handle=org.handle,
        display_name=org.display_name,
        plan=plan_to_proto(org.plan),
        create_time=timestamp(org.create_time),
        update_time=timestamp(org.update_time),
        etag=org.etag,
    )


def workspace_to_proto(workspace: Workspace) -> pb.Workspace:
    return pb.Workspace(
        id=workspace.id,
        org_id=workspace.org_id,
        tenant_id=workspace.tenant_id,
        handle=workspace.handle,
        display_name=workspace.display_name,
        create_time=timestamp(workspace.create_time),
        update_time=timestamp(workspace.update_time),
        etag=workspace.etag,
    )


class DirectoryApi(rpc_grpc.DirectoryServiceServicer):
    """`canopy.permissions.v1.DirectoryService`."""

    def __init__(self, db: Database, log: EventLog, page_tokens: PageTokens) -> None:
        self.db = db
        self.log = log
        self.page_tokens = page_tokens

    async def UpsertTenant(
        self, request: rpc.UpsertTenantRequest, context: RpcContext
    ) -> rpc.UpsertTenantResponse:
        given = request.tenant
        tenant, created = await directory.upsert_tenant(
            self.db,
            current_principal(),
            Tenant(
                id=given.id,
                handle=given.handle,
                display_name=given.display_name,
                plan=plan_from_proto(given.plan),
                etag=given.etag,
            ),
        )
        return rpc.UpsertTenantResponse(tenant=tenant_to_proto(tenant), created=created)

    async def GetTenant(
        self, request: rpc.GetTenantRequest, context: RpcContext
    ) -> rpc.GetTenantResponse:
        tenant = await directory.get_tenant(self.db, current_principal(), request.id)
        return rpc.GetTenantResponse(tenant=tenant_to_proto(tenant))

    async def UpsertOrg(
        self, request: rpc.UpsertOrgRequest, context: RpcContext
    ) -> rpc.UpsertOrgResponse:
        given = request.org
        org, created = await directory.upsert_org(
            self.db,
            current_principal(),
            Org(
                id=given.id,
                tenant_id=given.tenant_id,
                handle=given.handle,
                display_name=given.display_name,
                plan=plan_from_proto(given.plan),
                etag=given.etag,
            ),
        )
        return rpc.UpsertOrgResponse(org=org_to_proto(org), created=created)

    async def GetOrg(self, request: rpc.GetOrgRequest, context: RpcContext) -> rpc.GetOrgResponse:
        org = await directory.get_org(self.db, current_principal(), request.id)
        return rpc.GetOrgResponse(org=org_to_proto(org))

    async def UpsertWorkspace(
        self, request: rpc.UpsertWorkspaceRequest, context: RpcContext
    ) -> rpc.UpsertWorkspaceResponse:
        given = request.workspace
        workspace, created = await directory.upsert_workspace(
            self.db,
            current_principal(),
            Workspace(
                id=given.id,
                org_id=given.org_id,
                handle=given.handle,
                display_name=given.display_name,
                etag=given.etag,
            ),
        )
        return rpc.UpsertWorkspaceResponse(workspace=workspace_to_proto(workspace), created=created)

    async def GetWorkspace(
        self, request: rpc.GetWorkspaceRequest, context: RpcContext
    ) -> rpc.GetWorkspaceResponse:
        workspace = await directory.get_workspace(self.db, current_principal(), request.id)
        return rpc.GetWorkspaceResponse(workspace=workspace_to_proto(workspace))

    async def ListWorkspaces(
        self, request: rpc.ListWorkspacesRequest, context: RpcContext
    ) -> rpc.ListWorkspacesResponse:
        page = await directory.list_workspaces(
            self.db,
            self.page_tokens,
            current_principal(),
            request.org_id,
            request.page_size,
            request.page_token,
        )
        return rpc.ListWorkspacesResponse(
            workspaces=[workspace_to_proto(w) for w in page.workspaces],
            next_page_token=page.next_page_token,
        )

    async def DeleteWorkspace(
        self, request: rpc.DeleteWorkspaceRequest, context: RpcContext
    ) -> rpc.DeleteWorkspaceResponse:
        await directory.delete_workspace(
            self.db, current_principal(), request.id, request.etag, self.log
        )
        return rpc.DeleteWorkspaceResponse()


def _item(message: object) -> tuple[str | None, str]:
    which = message.WhichOneof("item")  # type: ignore[attr-defined]
    return which, getattr(message, which) if which else ""


def _grantees(values: Iterable[types_pb2.Grantee]) -> list[tuple[str, str]]:
    found = []
    for grantee in values:
        which = grantee.WhichOneof("grantee")
        found.append((which.removesuffix("_id"), getattr(grantee, which)) if which else ("", ""))
    return found


class PermissionApi(perm_grpc.PermissionServiceServicer):
    """`canopy.permissions.v1.PermissionService`."""

    def __init__(self, db: Database, log: EventLog, page_tokens: PageTokens) -> None:
        self.db = db
        self.log = log
        self.page_tokens = page_tokens

    async def GetPermissions(
        self, request: perm_rpc.GetPermissionsRequest, context: RpcContext
    ) -> perm_rpc.GetPermissionsResponse:
        field, item_id = _item(request)
        found = await grants.get_permissions(self.db, current_principal(), field, item_id)
        return perm_rpc.GetPermissionsResponse(permissions=permissions_to_proto(found))

    async def SetPermissions(
        self, request: perm_rpc.SetPermissionsRequest, context: RpcContext
    ) -> perm_rpc.SetPermissionsResponse:
        field, item_id = _item(request)
        principal = current_principal()
        grantees = _grantees(request.grantees)
        if request.validate_only:
            dry = perm_rpc.SetPermissionsRequest()
            dry.CopyFrom(request)
            dry.ClearField("request_id")  # a preview neither replays nor records a result

            async def change(db: Database, log: EventLog) -> Permissions:
                return await grants.set_permissions(
                    db, log, principal, field, item_id, grantees, request.etag, dry
                )

            previewed, found_impact = await impact.preview(self.db, change)
            return perm_rpc.SetPermissionsResponse(
                permissions=permissions_to_proto(previewed), impact=found_impact
            )
        found = await grants.set_permissions(
            self.db, self.log, principal, field, item_id, grantees, request.etag, request
        )
        return perm_rpc.SetPermissionsResponse(permissions=permissions_to_proto(found))

    async def ListAvailableConnections(
        self, request: perm_rpc.ListAvailableConnectionsRequest, context: RpcContext
    ) -> perm_rpc.ListAvailableConnectionsResponse:
        page, token = await grants.list_available(
            self.db,
            self.page_tokens,
            current_principal(),
            request.workspace_id,
            request.page_size,
            request.page_token,
        )
        return perm_rpc.ListAvailableConnectionsResponse(
            connections=[
                perm_rpc.AvailableConnection(
                    connection_id=a.connection_id,
                    handle=a.handle,
                    integration_id=a.integration_id,
                    folder_id=a.folder_id,
                    account_id=a.account_id,
                    title=a.title,
                    attached=a.attached,
                )
                for a in page
            ],
            next_page_token=token,
        )


class WorkspaceSchemaApi(ws_grpc.WorkspaceSchemaServiceServicer):
    """`canopy.permissions.v1.WorkspaceSchemaService`."""

    def __init__(self, db: Database, log: EventLog, page_tokens: PageTokens) -> None:
        self.db = db
        self.log = log
        self.page_tokens = page_tokens

    async def AttachSchema(
        self, request: ws_rpc.AttachSchemaRequest, context: RpcContext
    ) -> ws_rpc.AttachSchemaResponse:
        field, item_id = _item(request)
        row = await attachments.attach(
            self.db, self.log, current_principal(), request.workspace_id, field, item_id, request
        )
        return ws_rpc.AttachSchemaResponse(attachment=attachment_to_proto(row))

    async def DetachSchema(
        self, request: ws_rpc.DetachSchemaRequest, context: RpcContext
    ) -> ws_rpc.DetachSchemaResponse:
        field, item_id = _item(request)
        await attachments.detach(
            self.db, self.log, current_principal(), request.workspace_id, field, item_id, request
        )
        return ws_rpc.DetachSchemaResponse()

    async def ListWorkspaceSchemas(
        self, request: ws_rpc.ListWorkspaceSchemasRequest, context: RpcContext
    ) -> ws_rpc.ListWorkspaceSchemasResponse:
        page = await attachments.list_schemas(
            self.db,
            self.page_tokens,
            current_principal(),
            request.workspace_id,
            request.page_size,
            request.page_token,
        )
        return ws_rpc.ListWorkspaceSchemasResponse(
            schemas=[schema_to_proto(s) for s in page.schemas],
            revision=page.revision,
            next_page_token=page.next_page_token,
            page_revision=page.page_revision,
        )

    async def WatchWorkspaceSchemas(
        self, request: ws_rpc.WatchWorkspaceSchemasRequest, context: RpcContext
    ) -> AsyncIterator[ws_rpc.WatchWorkspaceSchemasResponse]:
        async for reply in attachments.watch(
            self.db, self.log, current_principal(), request.workspace_id, request.after_revision
        ):
            yield reply


CHUNK_BYTES = 1 << 20  # the most file bytes one RenderWorkspaceConfig message carries


class WorkspaceConfigApi(wc_grpc.WorkspaceConfigServiceServicer):
    """`canopy.permissions.v1.WorkspaceConfigService`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def RenderWorkspaceConfig(
        self, request: wc_rpc.RenderWorkspaceConfigRequest, context: RpcContext
    ) -> AsyncIterator[wc_rpc.RenderWorkspaceConfigResponse]:
        given = request.credential_source
        which = given.WhichOneof("source")
        rendered = await workspace_config.render_workspace_config(
            self.db,
            current_principal(),
            request.workspace_id,
            (which, getattr(given, which) if which else ""),
            list(request.connection_patterns),
        )
        yield wc_rpc.RenderWorkspaceConfigResponse(
            header=wc_rpc.WorkspaceConfigHeader(
                workspace_id=rendered.workspace_id,
                revision=rendered.revision,
                etag=rendered.etag,
                files=[
                    wc_rpc.WorkspaceConfigFile(path=f.path, size=len(f.data), sha256=f.sha256)
                    for f in rendered.files
                ],
                search_path=rendered.search_path,
                pattern_matches=[
                    wc_rpc.ConnectionPatternMatch(pattern=m.pattern, schemas=m.schemas)
                    for m in rendered.pattern_matches
                ],
            )
        )
        for file in rendered.files:
            for offset in range(0, len(file.data), CHUNK_BYTES):
                yield wc_rpc.RenderWorkspaceConfigResponse(
                    chunk=wc_rpc.WorkspaceConfigChunk(
                        path=file.path,
                        offset=offset,
                        data=file.data[offset : offset + CHUNK_BYTES],
                    )
                )


class ChangeImpactApi(impact_grpc.ChangeImpactServiceServicer):
    """`canopy.permissions.v1.ChangeImpactService` (system callers only)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def PreviewTreeChange(
        self, request: impact_rpc.PreviewTreeChangeRequest, context: RpcContext
    ) -> impact_rpc.PreviewTreeChangeResponse:
        current_principal().require_system()
        if request.tree_revision < 0:
            raise InvalidArgument.field("tree_revision", "must be zero or positive")
        found = await impact.preview_tree_change(self.db, request.events, request.tree_revision)
        return impact_rpc.PreviewTreeChangeResponse(impact=found)
