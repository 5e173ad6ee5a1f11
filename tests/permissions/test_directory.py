"""DirectoryService over real gRPC and PostgreSQL: upserts by system callers, reads by members,
pagination, deletion, etags, and every bad input answered INVALID_ARGUMENT with its field."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest

from canopy.permissions.v1 import directory_pb2 as pb
from canopy.permissions.v1 import directory_service_pb2 as rpc
from canopy.type.v1 import types_pb2
from tests.helpers import ErrorDetails, bearer, error_details, token

if TYPE_CHECKING:
    from canopy.permissions.v1.directory_service_pb2_grpc import (
        DirectoryServiceAsyncStub as DirectoryServiceStub,
    )

SYSTEM = bearer(token("platform", system=True))
ENTERPRISE = types_pb2.PLAN_ENTERPRISE
TEAM = types_pb2.PLAN_TEAM


async def fails(call: Any) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return error_details(caught.value)


async def seed(directory: DirectoryServiceStub, workspaces: int = 0) -> None:
    """Tenant t_acme, its org o_ops (and o_dev), and w_0… in o_ops."""
    await directory.UpsertTenant(
        rpc.UpsertTenantRequest(tenant=pb.Tenant(id="t_acme", handle="acme", plan=ENTERPRISE)),
        metadata=SYSTEM,
    )
    for org_id, handle in (("o_ops", "ops"), ("o_dev", "dev")):
        await directory.UpsertOrg(
            rpc.UpsertOrgRequest(
                org=pb.Org(id=org_id, tenant_id="t_acme", handle=handle, plan=TEAM)
            ),
            metadata=SYSTEM,
        )
    for i in range(workspaces):
        await directory.UpsertWorkspace(
            rpc.UpsertWorkspaceRequest(
                workspace=pb.Workspace(id=f"w_{i:03d}", org_id="o_ops", handle=f"ws{i}")
            ),
            metadata=SYSTEM,
        )


# -- upserts -------------------------------------------------------------------------------


async def test_upsert_tenant_creates_then_replaces_by_id(directory: DirectoryServiceStub) -> None:
    tenant = pb.Tenant(id="t_acme", handle="acme", display_name="Acme", plan=ENTERPRISE)
    created = await directory.UpsertTenant(rpc.UpsertTenantRequest(tenant=tenant), metadata=SYSTEM)
    assert created.created
    assert created.tenant.handle == "acme"
    assert created.tenant.plan == ENTERPRISE
    assert created.tenant.etag
    assert created.tenant.create_time.seconds > 0

    tenant.plan = TEAM
    tenant.handle = "acme-corp"
    replaced = await directory.UpsertTenant(rpc.UpsertTenantRequest(tenant=tenant), metadata=SYSTEM)
    assert not replaced.created
    assert (replaced.tenant.handle, replaced.tenant.plan) == ("acme-corp", TEAM)
    assert replaced.tenant.etag != created.tenant.etag


async def test_an_unchanged_upsert_keeps_the_etag(directory: DirectoryServiceStub) -> None:
    tenant = pb.Tenant(id="t_acme", handle="acme", plan=ENTERPRISE)
    first = await directory.UpsertTenant(rpc.UpsertTenantRequest(tenant=tenant), metadata=SYSTEM)
    again = await directory.UpsertTenant(rpc.UpsertTenantRequest(tenant=tenant), metadata=SYSTEM)
    assert not again.created
    assert again.tenant.etag == first.tenant.etag
    assert again.tenant.update_time == first.tenant.update_time


async def test_upsert_with_a_stale_etag_is_aborted(directory: DirectoryServiceStub) -> None:
    await seed(directory)
    current = (await directory.GetTenant(rpc.GetTenantRequest(id="t_acme"), metadata=SYSTEM)).tenant
    changed = pb.Tenant(id="t_acme", handle="acme2", plan=ENTERPRISE, etag=current.etag)
    await directory.UpsertTenant(rpc.UpsertTenantRequest(tenant=changed), metadata=SYSTEM)
    stale = pb.Tenant(id="t_acme", handle="acme3", plan=ENTERPRISE, etag=current.etag)
    details = await fails(
        directory.UpsertTenant(rpc.UpsertTenantRequest(tenant=stale), metadata=SYSTEM)
    )
    assert details.code == grpc.StatusCode.ABORTED
    assert details.reason == "ETAG_MISMATCH"


async def test_an_etag_for_a_tenant_that_does_not_exist_is_aborted(
    directory: DirectoryServiceStub,
) -> None:
    tenant = pb.Tenant(id="t_new", handle="new", plan=ENTERPRISE, etag="abc")
    details = await fails(
        directory.UpsertTenant(rpc.UpsertTenantRequest(tenant=tenant), metadata=SYSTEM)
    )
    assert details.code == grpc.StatusCode.ABORTED


async def test_tenant_handles_are_unique(directory: DirectoryServiceStub) -> None:
    await seed(directory)
    other = pb.Tenant(id="t_other", handle="acme", plan=TEAM)
    details = await fails(
        directory.UpsertTenant(rpc.UpsertTenantRequest(tenant=other), metadata=SYSTEM)
    )
    assert details.code == grpc.StatusCode.ALREADY_EXISTS
    assert details.reason == "HANDLE_TAKEN"
    assert details.metadata["field"] == "tenant.handle"


async def test_org_handles_are_unique_within_their_tenant(directory: DirectoryServiceStub) -> None:
    await seed(directory)
    clash = pb.Org(id="o_new", tenant_id="t_acme", handle="ops", plan=TEAM)
    details = await fails(directory.UpsertOrg(rpc.UpsertOrgRequest(org=clash), metadata=SYSTEM))
    assert details.code == grpc.StatusCode.ALREADY_EXISTS
    await directory.UpsertTenant(
        rpc.UpsertTenantRequest(tenant=pb.Tenant(id="t_beta", handle="beta", plan=TEAM)),
        metadata=SYSTEM,
    )
    elsewhere = pb.Org(id="o_new", tenant_id="t_beta", handle="ops", plan=TEAM)
    assert (await directory.UpsertOrg(rpc.UpsertOrgRequest(org=elsewhere), metadata=SYSTEM)).created


async def test_workspace_handles_are_unique_within_their_org(
    directory: DirectoryServiceStub,
) -> None:
    await seed(directory, workspaces=1)
    clash = pb.Workspace(id="w_new", org_id="o_ops", handle="ws0")
    details = await fails(
        directory.UpsertWorkspace(rpc.UpsertWorkspaceRequest(workspace=clash), metadata=SYSTEM)
    )
    assert details.code == grpc.StatusCode.ALREADY_EXISTS
    other_org = pb.Workspace(id="w_new", org_id="o_dev", handle="ws0")
    reply = await directory.UpsertWorkspace(
        rpc.UpsertWorkspaceRequest(workspace=other_org), metadata=SYSTEM
    )
    assert reply.created


async def test_an_org_needs_an_existing_tenant(directory: DirectoryServiceStub) -> None:
    org = pb.Org(id="o_x", tenant_id="t_missing", handle="x", plan=TEAM)
    details = await fails(directory.UpsertOrg(rpc.UpsertOrgRequest(org=org), metadata=SYSTEM))
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "TENANT_NOT_FOUND"


async def test_a_workspace_needs_an_existing_org_and_takes_its_tenant(
    directory: DirectoryServiceStub,
) -> None:
    missing = pb.Workspace(id="w_x", org_id="o_missing", handle="x")
    details = await fails(
        directory.UpsertWorkspace(rpc.UpsertWorkspaceRequest(workspace=missing), metadata=SYSTEM)
    )
    assert details.reason == "ORG_NOT_FOUND"
    await seed(directory)
    ok = pb.Workspace(id="w_x", org_id="o_ops", handle="x", tenant_id="t_ignored")
    reply = await directory.UpsertWorkspace(
        rpc.UpsertWorkspaceRequest(workspace=ok), metadata=SYSTEM
    )
    assert reply.workspace.tenant_id == "t_acme"


async def test_an_org_cannot_move_to_another_tenant(directory: DirectoryServiceStub) -> None:
    await seed(directory)
    await directory.UpsertTenant(
        rpc.UpsertTenantRequest(tenant=pb.Tenant(id="t_beta", handle="beta", plan=TEAM)),
        metadata=SYSTEM,
    )
    moved = pb.Org(id="o_ops", tenant_id="t_beta", handle="ops", plan=TEAM)
    details = await fails(directory.UpsertOrg(rpc.UpsertOrgRequest(org=moved), metadata=SYSTEM))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["org.tenant_id"]


async def test_a_workspace_cannot_move_to_another_org(directory: DirectoryServiceStub) -> None:
    await seed(directory, workspaces=1)
    moved = pb.Workspace(id="w_000", org_id="o_dev", handle="ws0")
    details = await fails(
        directory.UpsertWorkspace(rpc.UpsertWorkspaceRequest(workspace=moved), metadata=SYSTEM)
    )
    assert details.fields == ["workspace.org_id"]


@pytest.mark.parametrize(
    ("tenant", "fields"),
    [
        (pb.Tenant(), ["tenant.id", "tenant.handle", "tenant.plan"]),
        (pb.Tenant(id="acme", handle="acme", plan=TEAM), ["tenant.id"]),
        (pb.Tenant(id="t_ACME", handle="acme", plan=TEAM), ["tenant.id"]),
        (pb.Tenant(id="t_" + "a" * 61, handle="acme", plan=TEAM), ["tenant.id"]),
        (pb.Tenant(id="t_a", handle="Acme", plan=TEAM), ["tenant.handle"]),
        (pb.Tenant(id="t_a", handle="1acme", plan=TEAM), ["tenant.handle"]),
        (pb.Tenant(id="t_a", handle="ac--me", plan=TEAM), ["tenant.handle"]),
        (pb.Tenant(id="t_a", handle="acme-", plan=TEAM), ["tenant.handle"]),
        (pb.Tenant(id="t_a", handle="a" * 40, plan=TEAM), ["tenant.handle"]),
        (pb.Tenant(id="t_a\n", handle="acme\n", plan=TEAM), ["tenant.id", "tenant.handle"]),
        (
            pb.Tenant(id="t_a", handle="acme", plan=TEAM, display_name="x" * 101),
            ["tenant.display_name"],
        ),
        (
            pb.Tenant(id="t_a", handle="acme", plan=TEAM, display_name="a\nb"),
            ["tenant.display_name"],
        ),
        (pb.Tenant(id="t_a", handle="acme"), ["tenant.plan"]),
        (pb.Tenant(id="t_a", handle="acme", plan=99), ["tenant.plan"]),  # type: ignore[arg-type]
    ],
)
async def test_bad_tenant_fields_are_invalid_argument(
    directory: DirectoryServiceStub, tenant: pb.Tenant, fields: list[str]
) -> None:
    details = await fails(
        directory.UpsertTenant(rpc.UpsertTenantRequest(tenant=tenant), metadata=SYSTEM)
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == fields


async def test_a_handle_of_39_characters_is_accepted(directory: DirectoryServiceStub) -> None:
    tenant = pb.Tenant(id="t_a", handle="a" * 20 + "-b_c" + "d" * 15, plan=TEAM)
    assert len(tenant.handle) == 39
    assert (
        await directory.UpsertTenant(rpc.UpsertTenantRequest(tenant=tenant), metadata=SYSTEM)
    ).created


@pytest.mark.parametrize(
    ("org", "fields"),
    [
        (pb.Org(), ["org.id", "org.tenant_id", "org.handle", "org.plan"]),
        (pb.Org(id="t_x", tenant_id="o_x", handle="x", plan=TEAM), ["org.id", "org.tenant_id"]),
        (pb.Org(id="o_x", tenant_id="t_acme", handle="_x", plan=TEAM), ["org.handle"]),
    ],
)
async def test_bad_org_fields_are_invalid_argument(
    directory: DirectoryServiceStub, org: pb.Org, fields: list[str]
) -> None:
    details = await fails(directory.UpsertOrg(rpc.UpsertOrgRequest(org=org), metadata=SYSTEM))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == fields


@pytest.mark.parametrize(
    ("workspace", "fields"),
    [
        (pb.Workspace(), ["workspace.id", "workspace.org_id", "workspace.handle"]),
        (pb.Workspace(id="w_x", org_id="w_y", handle="x"), ["workspace.org_id"]),
        (pb.Workspace(id="w_x", org_id="o_ops", handle="x y"), ["workspace.handle"]),
    ],
)
async def test_bad_workspace_fields_are_invalid_argument(
    directory: DirectoryServiceStub, workspace: pb.Workspace, fields: list[str]
) -> None:
    details = await fails(
        directory.UpsertWorkspace(rpc.UpsertWorkspaceRequest(workspace=workspace), metadata=SYSTEM)
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == fields


@pytest.mark.parametrize(
    "call",
    [
        lambda d, m: d.UpsertTenant(
            rpc.UpsertTenantRequest(tenant=pb.Tenant(id="t_x", handle="x", plan=TEAM)), metadata=m
        ),
        lambda d, m: d.UpsertOrg(
            rpc.UpsertOrgRequest(org=pb.Org(id="o_x", tenant_id="t_acme", handle="x", plan=TEAM)),
            metadata=m,
        ),
        lambda d, m: d.UpsertWorkspace(
            rpc.UpsertWorkspaceRequest(
                workspace=pb.Workspace(id="w_x", org_id="o_ops", handle="x")
            ),
            metadata=m,
        ),
        lambda d, m: d.DeleteWorkspace(rpc.DeleteWorkspaceRequest(id="w_000"), metadata=m),
    ],
    ids=["UpsertTenant", "UpsertOrg", "UpsertWorkspace", "DeleteWorkspace"],
)
async def test_only_system_callers_write_the_directory(
    directory: DirectoryServiceStub, call: Any
) -> None:
    await seed(directory, workspaces=1)
    owner = bearer(token("alice", t_acme="owner"))
    details = await fails(call(directory, owner))
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "SYSTEM_ONLY"


# -- reads ---------------------------------------------------------------------------------


async def test_members_read_their_tenant_org_and_workspace(directory: DirectoryServiceStub) -> None:
    await seed(directory, workspaces=1)
    tenant_member = bearer(token("tm", t_acme="member"))
    org_member = bearer(token("om", o_ops="member"))
    ws_member = bearer(token("wm", w_000="member"))

    assert (
        await directory.GetTenant(rpc.GetTenantRequest(id="t_acme"), metadata=tenant_member)
    ).tenant.handle == "acme"
    assert (
        await directory.GetOrg(rpc.GetOrgRequest(id="o_ops"), metadata=tenant_member)
    ).org.handle == "ops"
    assert (
        await directory.GetOrg(rpc.GetOrgRequest(id="o_ops"), metadata=org_member)
    ).org.plan == TEAM
    for who in (tenant_member, org_member, ws_member):
        reply = await directory.GetWorkspace(rpc.GetWorkspaceRequest(id="w_000"), metadata=who)
        assert (reply.workspace.org_id, reply.workspace.tenant_id) == ("o_ops", "t_acme")


async def test_outsiders_are_denied_whether_or_not_the_item_exists(
    directory: DirectoryServiceStub,
) -> None:
    await seed(directory, workspaces=1)
    outsider = bearer(token("eve", t_other="owner", o_dev="owner"))
    for call in (
        directory.GetTenant(rpc.GetTenantRequest(id="t_acme"), metadata=outsider),
        directory.GetTenant(rpc.GetTenantRequest(id="t_nothing"), metadata=outsider),
        directory.GetOrg(rpc.GetOrgRequest(id="o_ops"), metadata=outsider),
        directory.GetWorkspace(rpc.GetWorkspaceRequest(id="w_000"), metadata=outsider),
        directory.GetWorkspace(rpc.GetWorkspaceRequest(id="w_nothing"), metadata=outsider),
        directory.ListWorkspaces(rpc.ListWorkspacesRequest(org_id="o_ops"), metadata=outsider),
    ):
        assert (await fails(call)).code == grpc.StatusCode.PERMISSION_DENIED


async def test_a_workspace_member_cannot_read_a_sibling_workspace(
    directory: DirectoryServiceStub,
) -> None:
    await seed(directory, workspaces=2)
    ws_member = bearer(token("wm", w_000="member"))
    details = await fails(
        directory.GetWorkspace(rpc.GetWorkspaceRequest(id="w_001"), metadata=ws_member)
    )
    assert details.code == grpc.StatusCode.PERMISSION_DENIED


async def test_a_missing_item_is_not_found_for_system_callers(
    directory: DirectoryServiceStub,
) -> None:
    for call, reason in (
        (
            directory.GetTenant(rpc.GetTenantRequest(id="t_nope"), metadata=SYSTEM),
            "TENANT_NOT_FOUND",
        ),
        (directory.GetOrg(rpc.GetOrgRequest(id="o_nope"), metadata=SYSTEM), "ORG_NOT_FOUND"),
        (
            directory.GetWorkspace(rpc.GetWorkspaceRequest(id="w_nope"), metadata=SYSTEM),
            "WORKSPACE_NOT_FOUND",
        ),
    ):
        details = await fails(call)
        assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, reason)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda d: d.GetTenant(rpc.GetTenantRequest(id=""), metadata=SYSTEM), "id"),
        (lambda d: d.GetTenant(rpc.GetTenantRequest(id="o_ops"), metadata=SYSTEM), "id"),
        (lambda d: d.GetOrg(rpc.GetOrgRequest(id="t_acme"), metadata=SYSTEM), "id"),
        (lambda d: d.GetWorkspace(rpc.GetWorkspaceRequest(id="w_"), metadata=SYSTEM), "id"),
        (lambda d: d.DeleteWorkspace(rpc.DeleteWorkspaceRequest(id="x"), metadata=SYSTEM), "id"),
        (lambda d: d.ListWorkspaces(rpc.ListWorkspacesRequest(), metadata=SYSTEM), "org_id"),
        (
            lambda d: d.ListWorkspaces(
                rpc.ListWorkspacesRequest(org_id="o_ops", page_size=-1), metadata=SYSTEM
            ),
            "page_size",
        ),
        (
            lambda d: d.ListWorkspaces(
                rpc.ListWorkspacesRequest(org_id="o_ops", page_token="garbage!"), metadata=SYSTEM
            ),
            "page_token",
        ),
    ],
)
async def test_bad_read_arguments_are_invalid_argument(
    directory: DirectoryServiceStub, call: Any, field: str
) -> None:
    details = await fails(call(directory))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == [field]


# -- listing -------------------------------------------------------------------------------


async def test_list_workspaces_pages_through_the_org_by_id(directory: DirectoryServiceStub) -> None:
    await seed(directory, workspaces=7)
    await directory.UpsertWorkspace(
        rpc.UpsertWorkspaceRequest(workspace=pb.Workspace(id="w_dev", org_id="o_dev", handle="d")),
        metadata=SYSTEM,
    )
    org_owner = bearer(token("oo", o_ops="owner"))
    seen: list[str] = []
    token_ = ""
    pages = 0
    while True:
        reply = await directory.ListWorkspaces(
            rpc.ListWorkspacesRequest(org_id="o_ops", page_size=3, page_token=token_),
            metadata=org_owner,
        )
        pages += 1
        seen.extend(w.id for w in reply.workspaces)
        token_ = reply.next_page_token
        if not token_:
            break
    assert seen == [f"w_{i:03d}" for i in range(7)]
    assert pages == 3


async def test_page_size_zero_means_25_and_large_sizes_are_capped_at_100(
    directory: DirectoryServiceStub,
) -> None:
    await seed(directory, workspaces=0)
    for i in range(105):
        await directory.UpsertWorkspace(
            rpc.UpsertWorkspaceRequest(
                workspace=pb.Workspace(id=f"w_{i:03d}", org_id="o_ops", handle=f"ws{i}")
            ),
            metadata=SYSTEM,
        )
    default = await directory.ListWorkspaces(
        rpc.ListWorkspacesRequest(org_id="o_ops"), metadata=SYSTEM
    )
    assert len(default.workspaces) == 25
    assert default.next_page_token
    capped = await directory.ListWorkspaces(
        rpc.ListWorkspacesRequest(org_id="o_ops", page_size=1000), metadata=SYSTEM
    )
    assert len(capped.workspaces) == 100


async def test_a_page_token_cannot_be_reused_with_other_arguments(
    directory: DirectoryServiceStub,
) -> None:
    await seed(directory, workspaces=3)
    first = await directory.ListWorkspaces(
        rpc.ListWorkspacesRequest(org_id="o_ops", page_size=1), metadata=SYSTEM
    )
    details = await fails(
        directory.ListWorkspaces(
            rpc.ListWorkspacesRequest(org_id="o_dev", page_token=first.next_page_token),
            metadata=SYSTEM,
        )
    )
    assert details.fields == ["page_token"]
    assert details.reason == "PAGE_TOKEN_MISMATCH"


# -- deletion ------------------------------------------------------------------------------


async def test_delete_workspace_removes_it(directory: DirectoryServiceStub) -> None:
    await seed(directory, workspaces=2)
    await directory.DeleteWorkspace(rpc.DeleteWorkspaceRequest(id="w_000"), metadata=SYSTEM)
    details = await fails(
        directory.GetWorkspace(rpc.GetWorkspaceRequest(id="w_000"), metadata=SYSTEM)
    )
    assert details.code == grpc.StatusCode.NOT_FOUND
    listed = await directory.ListWorkspaces(
        rpc.ListWorkspacesRequest(org_id="o_ops"), metadata=SYSTEM
    )
    assert [w.id for w in listed.workspaces] == ["w_001"]


async def test_delete_with_a_stale_etag_is_aborted_and_keeps_the_workspace(
    directory: DirectoryServiceStub,
) -> None:
    await seed(directory, workspaces=1)
    old = (
        await directory.GetWorkspace(rpc.GetWorkspaceRequest(id="w_000"), metadata=SYSTEM)
    ).workspace
    await directory.UpsertWorkspace(
        rpc.UpsertWorkspaceRequest(
            workspace=pb.Workspace(id="w_000", org_id="o_ops", handle="renamed")
        ),
        metadata=SYSTEM,
    )
    details = await fails(
        directory.DeleteWorkspace(
            rpc.DeleteWorkspaceRequest(id="w_000", etag=old.etag), metadata=SYSTEM
        )
    )
    assert details.code == grpc.StatusCode.ABORTED
    still = await directory.GetWorkspace(rpc.GetWorkspaceRequest(id="w_000"), metadata=SYSTEM)
    assert still.workspace.handle == "renamed"


async def test_deleting_a_missing_workspace_is_not_found(directory: DirectoryServiceStub) -> None:
    details = await fails(
        directory.DeleteWorkspace(rpc.DeleteWorkspaceRequest(id="w_nope"), metadata=SYSTEM)
    )
    assert details.code == grpc.StatusCode.NOT_FOUND
