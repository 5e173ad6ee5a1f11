"""Plans checked after create, over real gRPC, PostgreSQL and moto: an org downgraded below TEAM
stops syncing its integration (SUSPENDED, nothing crawled, tree, grants and workspace schemas
kept) until it is upgraded again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.permissions.v1 import directory_pb2 as dirpb
from canopy.permissions.v1 import directory_service_pb2 as dirrpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import permission_service_pb2_grpc as pgrpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2
from tests.awsfaults import FaultProxy
from tests.discovery.conftest import DISCOVERY_ROLE, Org
from tests.discovery.stack import Stack, finished, first_run, handles, runs_of, start_stack
from tests.helpers import error_details
from tests.integration.conftest import ORG_OWNER, SYSTEM


@pytest.fixture
async def stack(service_env: dict[str, Any], proxy: FaultProxy) -> AsyncIterator[Stack]:
    built = await start_stack(service_env, proxy, discovery={"schedule_reconcile_interval": 0.5})
    yield built
    await built.close()


async def set_org_plan(stack: Stack, plan: types_pb2.Plan.ValueType) -> None:
    await stack.directory.UpsertOrg(
        dirrpc.UpsertOrgRequest(
            org=dirpb.Org(id="o_ops", tenant_id="t_acme", handle="ops", plan=plan)
        ),
        metadata=SYSTEM,
    )


async def integration_of(stack: Stack, integration_id: str) -> pb.Integration:
    reply = await stack.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=integration_id), metadata=ORG_OWNER
    )
    return reply.integration


async def until_state(
    stack: Stack, integration_id: str, state: pb.IntegrationState.ValueType
) -> pb.Integration:
    for _ in range(150):
        integration = await integration_of(stack, integration_id)
        if integration.state == state:
            return integration
        await asyncio.sleep(0.1)
    raise AssertionError(f"still {pb.IntegrationState.Name(integration.state)}")


async def schema_names(schemas: Any) -> list[str]:
    reply = await schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(workspace_id="w_ops1", page_size=100), metadata=SYSTEM
    )
    return sorted(s.name for s in reply.schemas)


async def test_a_downgraded_org_suspends_its_integration_keeping_everything_until_upgraded(
    stack: Stack, org: Org
) -> None:
    web = org.account("Web Prod")
    permissions = pgrpc.PermissionServiceStub(stack.channels[2])
    schemas = wgrpc.WorkspaceSchemaServiceStub(stack.channels[2])
    created = (
        await stack.integrations.CreateIntegration(
            rpc.CreateIntegrationRequest(
                integration=pb.Integration(
                    handle="ops-aws",
                    scope=types_pb2.Scope(org_id="o_ops"),
                    discovery_access=pb.AwsDiscoveryAccess(
                        role_arn=DISCOVERY_ROLE, external_id="o_ops:k3j9x0ab"
                    ),
                    member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                ),
                initial_permissions=pb.RootFolderPermissions(
                    mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
                ),
            ),
            metadata=ORG_OWNER,
        )
    ).integration
    assert (await first_run(stack, created.id)).state == dpb.SYNC_RUN_STATE_SUCCEEDED
    for _ in range(100):  # the permissions service learns the tree from the tree log
        try:
            await schemas.AttachSchema(
                wrpc.AttachSchemaRequest(workspace_id="w_ops1", folder_id=created.root_folder_id),
                metadata=SYSTEM,
            )
            break
        except grpc.aio.AioRpcError as error:
            assert error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("the root folder never reached the permissions service")
    for _ in range(100):
        if len(await schema_names(schemas)) == 2:
            break
        await asyncio.sleep(0.1)

    async def kept() -> tuple[Any, ...]:
        tree = await stack.tree.GetConnectionTree(
            tree_rpc.GetConnectionTreeRequest(integration_id=created.id), metadata=SYSTEM
        )
        grants = await permissions.GetPermissions(
            prpc.GetPermissionsRequest(folder_id=created.root_folder_id), metadata=SYSTEM
        )
        return (
            tree.tree.generation,
            tree.tree.root.SerializeToString(deterministic=True),
            await handles(stack, created.id),
            list(grants.permissions.direct_grants),
            await schema_names(schemas),
        )

    before = await kept()
    assert before[4] == ["master", "web_prod"]  # moto names the management account "master"

    await set_org_plan(stack, types_pb2.PLAN_FREE)
    suspended = await until_state(stack, created.id, pb.INTEGRATION_STATE_SUSPENDED)
    assert suspended.state_reason == "PLAN_NOT_ELIGIBLE"
    assert "plan FREE" in suspended.state_message
    assert "TEAM or ENTERPRISE" in suspended.state_message
    runs = await runs_of(stack, created.id)
    # The organization changes, time passes (the reconciler looks every half second, the
    # schedule is made due again): nothing is crawled, nothing changes.
    org.rename_account(web, "Website")
    org.account("Audit")
    async with stack.services["discovery"].runtime.db.connection() as conn:
        await conn.execute("UPDATE schedules SET next_run_at = now()")
    await asyncio.sleep(2)
    assert await runs_of(stack, created.id) == runs
    assert await kept() == before
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.discovery.SyncIntegration(
            drpc.SyncIntegrationRequest(integration_id=created.id), metadata=ORG_OWNER
        )
    refused = error_details(caught.value)
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.reason == "PLAN_NOT_ELIGIBLE"
    assert await runs_of(stack, created.id) == runs

    await set_org_plan(stack, types_pb2.PLAN_TEAM)
    for _ in range(100):
        after = await runs_of(stack, created.id)
        if len(after) > len(runs):
            break
        await asyncio.sleep(0.1)
    resumed = await finished(stack, after[0].id)
    assert resumed.trigger == dpb.SYNC_TRIGGER_RECONCILED
    assert resumed.state == dpb.SYNC_RUN_STATE_SUCCEEDED
    enabled = await until_state(stack, created.id, pb.INTEGRATION_STATE_ENABLED)
    assert enabled.state_reason == ""
    assert sorted((await handles(stack, created.id)).values()) == [
        "audit",
        "master",
        "website",
    ]


async def test_a_run_asked_for_while_suspended_is_cancelled_with_the_reason(
    service_env: dict[str, Any], proxy: FaultProxy, org: Org
) -> None:
    # No reconciler passes but the first: only the worker's own check before the crawl.
    stack = await start_stack(service_env, proxy, discovery={"schedule_reconcile_interval": 3600})
    try:
        created = (
            await stack.integrations.CreateIntegration(
                rpc.CreateIntegrationRequest(
                    integration=pb.Integration(
                        handle="ops-aws",
                        scope=types_pb2.Scope(org_id="o_ops"),
                        discovery_access=pb.AwsDiscoveryAccess(
                            role_arn=DISCOVERY_ROLE, external_id="o_ops:k3j9x0ab"
                        ),
                        member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                    )
                ),
                metadata=ORG_OWNER,
            )
        ).integration
        await first_run(stack, created.id)
        await set_org_plan(stack, types_pb2.PLAN_FREE)
        # A settings change queues a run; the worker finds the plan changed before crawling.
        await stack.integrations.UpdateIntegration(
            rpc.UpdateIntegrationRequest(
                integration=pb.Integration(
                    id=created.id, member_access=pb.AwsMemberAccess(role_name="other-role")
                ),
                update_mask=FieldMask(paths=["member_access"]),
            ),
            metadata=ORG_OWNER,
        )
        for _ in range(100):
            runs = await runs_of(stack, created.id)
            if len(runs) == 2:
                break
            await asyncio.sleep(0.1)
        cancelled = await finished(stack, runs[0].id)
        assert cancelled.trigger == dpb.SYNC_TRIGGER_SETTINGS_CHANGED
        assert cancelled.state == dpb.SYNC_RUN_STATE_CANCELLED
        assert cancelled.failure_reason == "PLAN_NOT_ELIGIBLE"
        assert cancelled.progress.api_calls == 0
        suspended = await until_state(stack, created.id, pb.INTEGRATION_STATE_SUSPENDED)
        assert suspended.state_reason == "PLAN_NOT_ELIGIBLE"
    finally:
        await stack.close()
