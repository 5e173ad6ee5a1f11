"""Protobuf of the sharing records (no grpc here)."""

from __future__ import annotations

from canopy.permissions.v1 import permission_service_pb2 as ppb
from canopy.permissions.v1 import workspace_schema_pb2 as wpb
from canopy.type.v1 import types_pb2
from canopy_core.convert import timestamp
from canopy_permissions.model import GrantView, Permissions


def grantee(kind: str, grantee_id: str) -> types_pb2.Grantee:
    """The proto grantee of a (kind, id)."""
    return types_pb2.Grantee(**{f"{kind}_id": grantee_id})


def _grant(view: GrantView) -> ppb.Grant:
    return ppb.Grant(
        grantee=grantee(view.kind, view.grantee_id), create_time=timestamp(view.create_time)
    )


def permissions_to_proto(permissions: Permissions) -> ppb.ItemPermissions:
    """The API view of an item's grants."""
    message = ppb.ItemPermissions(
        scope=types_pb2.Scope(org_id=permissions.org_id)
        if permissions.org_id
        else types_pb2.Scope(tenant_id=permissions.tenant_id),
        direct_grants=[_grant(g) for g in permissions.direct],
        inherited_grants=[
            ppb.InheritedGrant(grant=_grant(g), from_folder_id=g.from_folder_id)
            for g in permissions.inherited
        ],
        update_time=timestamp(permissions.update_time),
        etag=permissions.etag,
    )
    if permissions.item_id.startswith("f_"):
        message.folder_id = permissions.item_id
    else:
        message.connection_id = permissions.item_id
    return message


def attachment_to_proto(row: dict[str, object]) -> wpb.Attachment:
    """The API view of an attachment row."""
    message = wpb.Attachment(
        id=str(row["id"]),
        workspace_id=str(row["workspace_id"]),
        create_time=timestamp(row["created_at"]),  # type: ignore[arg-type]
        update_time=timestamp(row["created_at"]),  # type: ignore[arg-type]
        etag=str(row["etag"]),
    )
    if row["item_kind"] == "folder":
        message.folder_id = str(row["item_id"])
    else:
        message.connection_id = str(row["item_id"])
    return message
