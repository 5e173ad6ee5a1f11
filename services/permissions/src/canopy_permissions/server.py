"""The permissions service: what it serves and what it runs."""

from __future__ import annotations

from importlib import resources

from canopy.permissions.v1 import (
    directory_service_pb2,
    directory_service_pb2_grpc,
    permission_service_pb2,
    permission_service_pb2_grpc,
    workspace_schema_service_pb2,
    workspace_schema_service_pb2_grpc,
)
from canopy_core.db import load_migrations
from canopy_core.server import Runtime, ServiceSpec, unimplemented
from canopy_permissions.api import DirectoryApi

SERVICE_NAMES = [
    directory_service_pb2.DESCRIPTOR.services_by_name["DirectoryService"].full_name,
    permission_service_pb2.DESCRIPTOR.services_by_name["PermissionService"].full_name,
    workspace_schema_service_pb2.DESCRIPTOR.services_by_name["WorkspaceSchemaService"].full_name,
]


async def setup(runtime: Runtime) -> None:
    """Register the servicers; RPCs not built yet answer UNIMPLEMENTED."""
    directory_service_pb2_grpc.add_DirectoryServiceServicer_to_server(
        DirectoryApi(runtime.db), runtime.server
    )
    permission_service_pb2_grpc.add_PermissionServiceServicer_to_server(
        unimplemented(permission_service_pb2_grpc.PermissionServiceServicer), runtime.server
    )
    workspace_schema_service_pb2_grpc.add_WorkspaceSchemaServiceServicer_to_server(
        unimplemented(workspace_schema_service_pb2_grpc.WorkspaceSchemaServiceServicer),
        runtime.server,
    )


def spec() -> ServiceSpec:
    """The permissions service."""
    return ServiceSpec(
        name="permissions",
        service_names=SERVICE_NAMES,
        migrations=load_migrations(
            "permissions", resources.files("canopy_permissions") / "migrations"
        ),
        setup=setup,
    )
