"""The permissions service: what it serves and what it runs."""

from __future__ import annotations

from importlib import resources

from canopy.permissions.v1 import (
    change_impact_service_pb2,
    change_impact_service_pb2_grpc,
    directory_service_pb2,
    directory_service_pb2_grpc,
    permission_service_pb2,
    permission_service_pb2_grpc,
    workspace_config_service_pb2,
    workspace_config_service_pb2_grpc,
    workspace_schema_service_pb2,
    workspace_schema_service_pb2_grpc,
)
from canopy_core.db import load_migrations
from canopy_core.server import Runtime, ServiceSpec
from canopy_permissions.api import (
    ChangeImpactApi,
    DirectoryApi,
    PermissionApi,
    WorkspaceConfigApi,
    WorkspaceSchemaApi,
)
from canopy_permissions.projection import follow_tree_events

SERVICE_NAMES = [
    directory_service_pb2.DESCRIPTOR.services_by_name["DirectoryService"].full_name,
    permission_service_pb2.DESCRIPTOR.services_by_name["PermissionService"].full_name,
    workspace_schema_service_pb2.DESCRIPTOR.services_by_name["WorkspaceSchemaService"].full_name,
    workspace_config_service_pb2.DESCRIPTOR.services_by_name["WorkspaceConfigService"].full_name,
    change_impact_service_pb2.DESCRIPTOR.services_by_name["ChangeImpactService"].full_name,
]


async def setup(runtime: Runtime) -> None:
    """Register the servicers and follow the integration service's tree log."""
    db, log, page_tokens = runtime.db, runtime.event_log, runtime.page_tokens
    directory_service_pb2_grpc.add_DirectoryServiceServicer_to_server(
        DirectoryApi(db, log, page_tokens), runtime.server
    )
    permission_service_pb2_grpc.add_PermissionServiceServicer_to_server(
        PermissionApi(db, log, page_tokens), runtime.server
    )
    workspace_schema_service_pb2_grpc.add_WorkspaceSchemaServiceServicer_to_server(
        WorkspaceSchemaApi(db, log, page_tokens), runtime.server
    )
    workspace_config_service_pb2_grpc.add_WorkspaceConfigServiceServicer_to_server(
        WorkspaceConfigApi(db), runtime.server
    )
    change_impact_service_pb2_grpc.add_ChangeImpactServiceServicer_to_server(
        ChangeImpactApi(db), runtime.server
    )
    channel = runtime.channel(runtime.settings.integration_address)
    runtime.on_stop.append(channel.close)
    runtime.add_task(follow_tree_events(db, log, channel), name="tree-projection")


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
