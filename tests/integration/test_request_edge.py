"""The edge's rule for request bytes and text over real gRPC: bytes that do not decode, and
strings holding a NUL anywhere in a request, are INVALID_ARGUMENT naming the field, with the
usual ErrorInfo and BadRequest, before any handler (or PostgreSQL) sees them."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.permissions.v1 import directory_pb2 as dpb
from canopy.permissions.v1 import directory_service_pb2 as drpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import permission_service_pb2_grpc as pgrpc
from canopy.type.v1 import types_pb2
from tests.helpers import ErrorDetails, error_details
from tests.integration.conftest import (
    OWNER,
    ROOT,
    SYSTEM,
    Suite,
    account,
    create,
    new_integration,
    ou,
    snapshot,
)

TREE = "/canopy.integration.v1.ConnectionTreeService"
INTEGRATIONS = "/canopy.integration.v1.IntegrationService"


async def fails(call: Any) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return error_details(caught.value)


def raw(suite: Suite, method: str) -> Any:
    """A byte-level call: the request is sent exactly as given."""
    return suite.channels[0].unary_unary(
        method, request_serializer=None, response_deserializer=None
    )


def tag(number: int, wire: int) -> bytes:
    return bytes([number << 3 | wire])


def field(number: int, body: bytes) -> bytes:
    return tag(number, 2) + bytes([len(body)]) + body


async def connection_count(suite: Suite, integration_id: str) -> int:
    reply = await suite.tree.ListConnections(
        tree_rpc.ListConnectionsRequest(integration_id=integration_id, page_size=100),
        metadata=OWNER,
    )
    return len(reply.connections)


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ("account name", "snapshot.accounts[1].name"),
        ("account email", "snapshot.accounts[1].email"),
        ("ou name", "snapshot.organizational_units[0].name"),
    ],
)
async def test_a_nul_in_a_snapshot_is_invalid_argument_with_its_path_and_stores_nothing(
    suite: Suite, where: str, path: str
) -> None:
    created = await create(suite)
    snap = snapshot(
        [(ou(1), ROOT, "Prod")],
        [(account(1), ROOT, "Web"), (account(2), ou(1), "Data"), (account(3), ou(1), "Ops")],
    )
    if where == "account name":
        snap.accounts[1].name = "Da\x00ta"
    elif where == "account email":
        snap.accounts[1].email = "data\x00@example.com"
    else:
        snap.organizational_units[0].name = "Pr\x00od"
    details = await fails(
        suite.tree.ApplyDiscoverySnapshot(
            tree_rpc.ApplyDiscoverySnapshotRequest(
                integration_id=created.id,
                snapshot=snap,
                expected_generation=created.tree_generation,
            ),
            metadata=SYSTEM,
        )
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "NUL_IN_TEXT"
    assert details.domain == "canopy.dev"
    assert details.fields == [path]
    assert details.metadata["field"] == path
    after = await suite.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=created.id), metadata=OWNER
    )
    assert after.integration.state == created.state
    assert after.integration.tree_generation == created.tree_generation
    assert await connection_count(suite, created.id) == 0


async def test_a_field_sent_with_the_wrong_wire_type_is_invalid_argument_naming_it(
    suite: Suite,
) -> None:
    # A valid ListIntegrations, then page_size (an int32) sent as a length-delimited value:
    # the parser keeps it as an unknown field and would list with the default page size.
    request = rpc.ListIntegrationsRequest(scope=types_pb2.Scope(tenant_id="t_acme"))
    data = request.SerializeToString() + field(3, b"\x05")
    details = await fails(raw(suite, f"{INTEGRATIONS}/ListIntegrations")(data, metadata=OWNER))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "MALFORMED_REQUEST"
    assert details.fields == ["page_size"]
    # Nested: an account's name sent as a varint.
    data = field(1, b"i_abc") + field(4, field(5, tag(2, 0) + b"\x07"))
    details = await fails(raw(suite, f"{TREE}/ApplyDiscoverySnapshot")(data, metadata=SYSTEM))
    assert (details.code, details.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["snapshot.accounts[0].name"],
    )


async def test_invalid_utf8_is_invalid_argument_naming_the_field(suite: Suite) -> None:
    ok = field(2, b"Web")
    bad = field(2, b"W\xffb")
    data = field(1, b"i_abc") + field(4, field(5, ok) + field(5, ok) + field(5, bad))
    details = await fails(raw(suite, f"{TREE}/ApplyDiscoverySnapshot")(data, metadata=SYSTEM))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "MALFORMED_REQUEST"
    assert details.fields == ["snapshot.accounts[2].name"]
    assert "UTF-8" in details.message


async def test_truncated_bytes_are_invalid_argument_naming_the_field(suite: Suite) -> None:
    data = tag(1, 2) + bytes([30]) + b"i_abc"  # an id that claims 30 bytes
    details = await fails(raw(suite, f"{INTEGRATIONS}/GetIntegration")(data, metadata=OWNER))
    assert (details.code, details.reason, details.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
        ["id"],
    )
    details = await fails(raw(suite, f"{INTEGRATIONS}/GetIntegration")(b"\xff", metadata=OWNER))
    assert (details.code, details.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["request"])


async def test_a_caller_without_a_token_learns_nothing_about_its_bytes(suite: Suite) -> None:
    details = await fails(raw(suite, f"{INTEGRATIONS}/GetIntegration")(b"\xff"))
    assert details.code == grpc.StatusCode.UNAUTHENTICATED


async def test_a_nul_in_a_stream_request_is_invalid_argument(suite: Suite) -> None:
    call = suite.tree.WatchTreeEvents(
        tree_rpc.WatchTreeEventsRequest(integration_id="i_\x00"), metadata=SYSTEM
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    details = error_details(caught.value)
    assert (details.code, details.reason, details.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "NUL_IN_TEXT",
        ["integration_id"],
    )


async def test_a_nul_deep_in_a_create_is_refused_before_it_is_stored(suite: Suite) -> None:
    integration = new_integration()
    integration.connection_config.ignore_error_messages.values.extend(["throttl", "x\x00y"])
    details = await fails(
        suite.integrations.CreateIntegration(
            rpc.CreateIntegrationRequest(integration=integration, request_id="r\x00"),
            metadata=OWNER,
        )
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == [
        "integration.connection_config.ignore_error_messages.values[1]",
        "request_id",
    ]
    listed = await suite.integrations.ListIntegrations(
        rpc.ListIntegrationsRequest(scope=types_pb2.Scope(tenant_id="t_acme")), metadata=OWNER
    )
    assert list(listed.integrations) == []


async def test_a_nul_in_a_nested_field_of_a_permissions_request_is_refused(suite: Suite) -> None:
    details = await fails(
        suite.directory.UpsertWorkspace(
            drpc.UpsertWorkspaceRequest(
                workspace=dpb.Workspace(
                    id="w_new", org_id="o_ops", handle="new", display_name="New\x00"
                )
            ),
            metadata=SYSTEM,
        )
    )
    assert (details.code, details.reason, details.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "NUL_IN_TEXT",
        ["workspace.display_name"],
    )
    created = await create(suite, new_integration("aws-ops", org_id="o_ops"))
    permissions = pgrpc.PermissionServiceStub(suite.channels[1])
    details = await fails(
        permissions.SetPermissions(
            prpc.SetPermissionsRequest(
                folder_id=created.root_folder_id,
                grantees=[
                    types_pb2.Grantee(workspace_id="w_ops1"),
                    types_pb2.Grantee(workspace_id="w_ops\x002"),
                ],
            ),
            metadata=SYSTEM,
        )
    )
    assert (details.code, details.reason, details.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "NUL_IN_TEXT",
        ["grantees[1].workspace_id"],
    )
