"""What services ask the directory (the permissions service's
`DirectoryService`): a scope's tenant and plan, and where a workspace belongs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc

from canopy.permissions.v1 import directory_service_pb2 as rpc
from canopy.permissions.v1 import directory_service_pb2_grpc as rpc_grpc
from canopy.type.v1 import types_pb2
from canopy_core.errors import NotFound
from canopy_core.remote import dependency_error


@dataclass(frozen=True)
class ScopeInfo:
    """A tenant or org as the directory knows it."""

    id: str
    tenant_id: str
    plan: str  # FREE, TEAM, ENTERPRISE


@dataclass(frozen=True)
class WorkspaceInfo:
    """Where a workspace belongs."""

    id: str
    org_id: str
    tenant_id: str


class Directory(Protocol):
    """Lookups other services need from the directory. `field` is the path of the caller's
    request field the id came from: a refused id is the caller's error on that field."""

    async def tenant(self, tenant_id: str, *, field: str) -> ScopeInfo: ...

    async def org(self, org_id: str, *, field: str) -> ScopeInfo: ...

    async def workspace(self, workspace_id: str, *, field: str) -> WorkspaceInfo: ...


def _plan(value: int) -> str:
    return types_pb2.Plan.Name(types_pb2.Plan.ValueType(value)).removeprefix("PLAN_")


class DirectoryClient:
    """`Directory` over gRPC, with this service's system token."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = 5.0) -> None:
        self._stub = rpc_grpc.DirectoryServiceStub(channel)
        self._timeout = timeout

    async def _call(
        self, kind: str, resource_id: str, field: str, method: str, request: object
    ) -> object:
        try:
            return await getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(kind, resource_id) from None
            raise dependency_error(
                error, "DIRECTORY", field=field, asking=f"about {kind} {resource_id!r}"
            ) from None

    async def tenant(self, tenant_id: str, *, field: str) -> ScopeInfo:
        """A tenant and its plan."""
        reply = await self._call(
            "tenant", tenant_id, field, "GetTenant", rpc.GetTenantRequest(id=tenant_id)
        )
        tenant = reply.tenant  # type: ignore[attr-defined]
        return ScopeInfo(tenant.id, tenant.id, _plan(tenant.plan))

    async def org(self, org_id: str, *, field: str) -> ScopeInfo:
        """An org, its tenant and its plan."""
        reply = await self._call("org", org_id, field, "GetOrg", rpc.GetOrgRequest(id=org_id))
        org = reply.org  # type: ignore[attr-defined]
        return ScopeInfo(org.id, org.tenant_id, _plan(org.plan))

    async def workspace(self, workspace_id: str, *, field: str) -> WorkspaceInfo:
        """A workspace, its org and tenant."""
        reply = await self._call(
            "workspace",
            workspace_id,
            field,
            "GetWorkspace",
            rpc.GetWorkspaceRequest(id=workspace_id),
        )
        ws = reply.workspace  # type: ignore[attr-defined]
        return WorkspaceInfo(ws.id, ws.org_id, ws.tenant_id)
