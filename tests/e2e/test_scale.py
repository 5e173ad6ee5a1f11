"""An organization of the AWS maximum size (50,000 accounts) end to end, through the services as
processes with their default settings: apply, sharing with a workspace, the workspace's render,
and a preview and change of every connection's handle. Marked slow: `make test` leaves it out;
`make bench ARGS=scale` runs it (or `uv run pytest -m slow tests/e2e/test_scale.py`).

Each call has the deadline of the client that makes it in production: discovery gives
ApplyDiscoverySnapshot 300 s, the integration service gives the permissions service's
PreviewTreeChange 60 s. The test prints its figures as one line, `SCALE_TEST_FIGURES {json}`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import change_impact_service_pb2 as impact_rpc
from canopy.permissions.v1 import directory_pb2 as dpb
from canopy.permissions.v1 import directory_service_pb2 as drpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dgrpc
from canopy.permissions.v1 import workspace_config_service_pb2 as crpc
from canopy.permissions.v1 import workspace_config_service_pb2_grpc as cgrpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2
from canopy_core.settings import ServiceSettings
from tests.e2e.processes import ServiceProcess, base_env, start, wait_serving
from tests.helpers import bearer, free_port, token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ACCOUNTS = 50_000  # the AWS maximum
TOP_UNITS, UNITS = 50, 5_000  # two levels of OUs
ROOT = "r-scale"
WORKSPACE = "w_scale"
SYSTEM = bearer(token(system=True))
OWNER = bearer(token(t_scale="owner"))
MAX_MESSAGE_BYTES: int = ServiceSettings.model_fields["max_message_bytes"].default  # 64 MiB
# A client of the services accepts what they may send.
OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]


def organization() -> tree_pb.OrganizationSnapshot:
    """ACCOUNTS active accounts spread over UNITS OUs (TOP_UNITS under the root, the rest under
    them) and the root."""
    units = [
        tree_pb.OrganizationalUnit(
            id=f"ou-sc00-{n:08d}",
            parent_id=ROOT if n < TOP_UNITS else f"ou-sc00-{n % TOP_UNITS:08d}",
            name=f"Unit {n}",
        )
        for n in range(UNITS)
    ]
    accounts = [
        tree_pb.Account(
            id=f"{100000000000 + i:012d}",
            name=f"Team {i}",
            email=f"aws+{i}@example.com",
            parent_id=units[i % UNITS].id if i % 7 else ROOT,
            state="ACTIVE",
        )
        for i in range(ACCOUNTS)
    ]
    return tree_pb.OrganizationSnapshot(
        organization_id="o-scale00001",
        management_account_id="100000000000",
        root_id=ROOT,
        organizational_units=units,
        accounts=accounts,
    )


@pytest.fixture
async def suite(database_url: str, tmp_path: Path) -> AsyncIterator[dict[str, ServiceProcess]]:
    """The integration and permissions services as processes, with their default settings."""
    ports = {"integration": free_port(), "permissions": free_port()}
    env = base_env(
        tmp_path,
        database_url,
        CANOPY_INTEGRATION_ADDRESS=f"127.0.0.1:{ports['integration']}",
        CANOPY_PERMISSIONS_ADDRESS=f"127.0.0.1:{ports['permissions']}",
        CANOPY_DISCOVERY_ADDRESS=f"127.0.0.1:{free_port()}",
        CANOPY_LOG_LEVEL="WARNING",
    )
    running = {name: start(name, env, tmp_path, port) for name, port in ports.items()}
    try:
        for service in running.values():
            await wait_serving(service)
        yield running
    finally:
        for service in running.values():
            service.terminate(30)


async def _until_all_schemas(renders: Any) -> tuple[crpc.WorkspaceConfigHeader, int, float]:
    """Render the workspace until its configuration names every account's schema; the last
    render's header, its bytes and how long it took."""
    deadline = time.monotonic() + 600
    while True:
        started = time.monotonic()
        header, received = None, 0
        async for reply in renders.RenderWorkspaceConfig(
            crpc.RenderWorkspaceConfigRequest(workspace_id=WORKSPACE), metadata=SYSTEM, timeout=120
        ):
            if reply.HasField("header"):
                header = reply.header
            else:
                received += len(reply.chunk.data)
        assert header is not None
        schemas = sum(1 for name in header.search_path if "__" not in name)
        if schemas == ACCOUNTS or time.monotonic() > deadline:
            return header, received, time.monotonic() - started
        await asyncio.sleep(1)


async def _tree_events_after(tree: Any, integration_id: str, after: int) -> list[Any]:
    """Every tree event of the integration after revision `after`, up to the log's head."""
    found: list[Any] = []
    async for reply in tree.WatchTreeEvents(
        tree_rpc.WatchTreeEventsRequest(after_revision=after, integration_id=integration_id),
        metadata=SYSTEM,
        timeout=120,
    ):
        found.extend(reply.events)
        if not reply.events:  # a progress message: the stream has caught up
            return found
    return found


async def test_organization_of_fifty_thousand_accounts_applies_shares_renders_and_previews(
    suite: dict[str, ServiceProcess],
) -> None:
    figures: dict[str, Any] = {"accounts": ACCOUNTS, "max_message_bytes": MAX_MESSAGE_BYTES}
    async with (
        grpc.aio.insecure_channel(suite["permissions"].address, options=OPTIONS) as p_channel,
        grpc.aio.insecure_channel(suite["integration"].address, options=OPTIONS) as i_channel,
    ):
        directory = dgrpc.DirectoryServiceStub(p_channel)
        await directory.UpsertTenant(
            drpc.UpsertTenantRequest(
                tenant=dpb.Tenant(id="t_scale", handle="scale", plan=types_pb2.PLAN_ENTERPRISE)
            ),
            metadata=SYSTEM,
        )
        await directory.UpsertOrg(
            drpc.UpsertOrgRequest(
                org=dpb.Org(
                    id="o_scale", tenant_id="t_scale", handle="ops", plan=types_pb2.PLAN_TEAM
                )
            ),
            metadata=SYSTEM,
        )
        await directory.UpsertWorkspace(
            drpc.UpsertWorkspaceRequest(
                workspace=dpb.Workspace(id=WORKSPACE, org_id="o_scale", handle="scale")
            ),
            metadata=SYSTEM,
        )
        integrations = rpc_grpc.IntegrationServiceStub(i_channel)
        tree = tree_grpc.ConnectionTreeServiceStub(i_channel)
        created = (
            await integrations.CreateIntegration(
                rpc.CreateIntegrationRequest(
                    integration=pb.Integration(
                        handle="aws",
                        scope=types_pb2.Scope(tenant_id="t_scale"),
                        discovery_access=pb.AwsDiscoveryAccess(
                            role_arn="arn:aws:iam::100000000000:role/canopy",
                            external_id="t_scale:abcd1234",
                        ),
                        member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                    ),
                    initial_permissions=pb.RootFolderPermissions(
                        mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_ORGS
                    ),
                ),
                metadata=OWNER,
            )
        ).integration

        # Apply: the snapshot as discovery sends it, with discovery's deadline.
        snapshot = organization()
        figures["snapshot_bytes"] = snapshot.ByteSize()
        started = time.monotonic()
        applied = await tree.ApplyDiscoverySnapshot(
            tree_rpc.ApplyDiscoverySnapshotRequest(integration_id=created.id, snapshot=snapshot),
            metadata=SYSTEM,
            timeout=300,
        )
        figures["apply_seconds"] = round(time.monotonic() - started, 2)
        assert applied.outcome == tree_pb.APPLY_OUTCOME_APPLIED
        assert applied.summary.connections_created == ACCOUNTS
        whole = await tree.GetConnectionTree(
            tree_rpc.GetConnectionTreeRequest(integration_id=created.id),
            metadata=SYSTEM,
            timeout=120,
        )
        figures["connection_tree_bytes"] = whole.ByteSize()
        assert whole.ByteSize() < MAX_MESSAGE_BYTES

        # Share: the root folder (granted to every org of the tenant) attached to a workspace.
        started = time.monotonic()
        schemas = wgrpc.WorkspaceSchemaServiceStub(p_channel)
        for _ in range(3000):  # the permissions service projects the tree as it follows the log
            try:
                await schemas.AttachSchema(
                    wrpc.AttachSchemaRequest(
                        workspace_id=WORKSPACE, folder_id=created.root_folder_id
                    ),
                    metadata=SYSTEM,
                )
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() in (
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.PERMISSION_DENIED,
                )
                await asyncio.sleep(0.2)

        # Render: every schema in the workspace's configuration.
        header, rendered_bytes, render_seconds = await _until_all_schemas(
            cgrpc.WorkspaceConfigServiceStub(p_channel)
        )
        figures["share_to_full_render_seconds"] = round(time.monotonic() - started, 2)
        figures["render_seconds"] = round(render_seconds, 2)
        figures["render_bytes"] = rendered_bytes
        assert sum(1 for name in header.search_path if "__" not in name) == ACCOUNTS
        assert rendered_bytes == sum(f.size for f in header.files)

        # Preview a prefix change: it renames every connection, so the integration service
        # sends all 50,000 tree events to the permissions service in one PreviewTreeChange.
        head = (await _tree_events_after(tree, created.id, 0))[-1].revision
        change = rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=created.id, handle_prefix="aws_"),
            update_mask=FieldMask(paths=["handle_prefix"]),
        )
        preview = rpc.UpdateIntegrationRequest()
        preview.CopyFrom(change)
        preview.validate_only = True
        started = time.monotonic()
        previewed = await integrations.UpdateIntegration(preview, metadata=OWNER, timeout=300)
        figures["preview_seconds"] = round(time.monotonic() - started, 2)
        figures["preview_response_bytes"] = previewed.ByteSize()
        totals = previewed.impact.totals
        assert totals.connections_renamed == ACCOUNTS
        assert totals.workspaces_affected == 1
        assert totals.schemas_renamed == ACCOUNTS

        # The change itself writes the very events the preview sent (a preview equals the
        # effect): their PreviewTreeChange is the message that had to fit.
        started = time.monotonic()
        await integrations.UpdateIntegration(change, metadata=OWNER, timeout=300)
        figures["change_seconds"] = round(time.monotonic() - started, 2)
        events = await _tree_events_after(tree, created.id, head)
        renamed = [e for e in events if e.WhichOneof("event") == "connection_updated"]
        assert len(renamed) == ACCOUNTS
        message = impact_rpc.PreviewTreeChangeRequest(events=renamed, tree_revision=head)
        figures["preview_tree_change_bytes"] = message.ByteSize()
        figures["preview_tree_change_bytes_per_event"] = round(message.ByteSize() / ACCOUNTS)
        figures["preview_tree_change_share_of_limit"] = round(
            message.ByteSize() / MAX_MESSAGE_BYTES, 3
        )
        assert message.ByteSize() < MAX_MESSAGE_BYTES
    print("SCALE_TEST_FIGURES " + json.dumps(figures))
