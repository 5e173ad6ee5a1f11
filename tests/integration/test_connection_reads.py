"""GetConnection over real gRPC and PostgreSQL: members read, outsiders are denied, a deleted
connection is NOT_FOUND to members; what a process kept from earlier reads is never served once
either row changed, whichever process changed it; concurrent reads share statements."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy_core.server import serve
from canopy_integration import store
from canopy_integration.server import spec as integration_spec
from canopy_integration.settings import IntegrationSettings
from tests.integration.conftest import (
    MEMBER,
    OUTSIDER,
    OWNER,
    ROOT,
    Suite,
    account,
    create,
    set_inherited_regions,
    snapshot,
)
from tests.integration.test_apply import apply, connections

ACCOUNTS: list[tuple[str, str, str] | tuple[str, str, str, str]] = [
    (account(n), ROOT, f"Team {n}") for n in range(1, 41)
]


async def get(stub: Any, connection_id: str, metadata: Any = MEMBER) -> tree_pb.Connection:
    reply = await stub.GetConnection(
        tree_rpc.GetConnectionRequest(id=connection_id), metadata=metadata
    )
    connection: tree_pb.Connection = reply.connection
    return connection


@pytest.fixture
async def second(suite: Suite, service_env: dict[str, Any]) -> AsyncIterator[Any]:
    """A second integration service process on the same database (its own kept reads)."""
    permissions_port = suite.integration_service.runtime.settings.permissions_address
    other = await serve(
        integration_spec(),
        IntegrationSettings(
            **{**service_env, "db_schema": "integration", "permissions_address": permissions_port}
        ),
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{other.port}")
    yield tree_grpc.ConnectionTreeServiceStub(channel)
    await channel.close()
    await other.stop()


async def test_members_read_a_connection_and_outsiders_are_denied(suite: Suite) -> None:
    created = await create(suite)
    await apply(suite, created.id, snapshot([], ACCOUNTS[:2]))
    listed = (await connections(suite, created.id))[account(1)]
    found = await get(suite.tree, listed.id)
    assert found == listed
    assert (found.handle, found.account_name) == ("team_1", "Team 1")
    assert found.effective_config.role_arn == f"arn:aws:iam::{account(1)}:role/canopy-member"
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await get(suite.tree, listed.id, OUTSIDER)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await get(suite.tree, "not-an-id")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_kept_read_is_never_served_after_either_row_changed(suite: Suite) -> None:
    created = await create(suite)
    await apply(suite, created.id, snapshot([], ACCOUNTS[:2]))
    first = (await connections(suite, created.id))[account(1)]
    assert (await get(suite.tree, first.id)).handle == "team_1"  # now kept

    # The connection's row: a static handle.
    await suite.tree.UpdateConnection(
        tree_rpc.UpdateConnectionRequest(
            connection=tree_pb.Connection(id=first.id, handle="pinned"),
            update_mask=FieldMask(paths=["handle"]),
        ),
        metadata=OWNER,
    )
    assert (await get(suite.tree, first.id)).handle == "pinned"

    # The integration's row: inherited settings change every effective configuration.
    await set_inherited_regions(suite, created.id, ["eu-central-1"])
    assert list((await get(suite.tree, first.id)).effective_config.regions) == ["eu-central-1"]

    # A sync renames the account; the next one removes it.
    renamed = snapshot([], [(account(1), ROOT, "Payments"), ACCOUNTS[1]])
    await apply(suite, created.id, renamed)
    assert (await get(suite.tree, first.id)).account_name == "Payments"
    await apply(suite, created.id, snapshot([], ACCOUNTS[1:2]), confirm=True)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await get(suite.tree, first.id)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_change_made_through_another_process_is_read_at_once(
    suite: Suite, second: Any
) -> None:
    created = await create(suite)
    await apply(suite, created.id, snapshot([], ACCOUNTS[:3]))
    by_account = await connections(suite, created.id)
    ids = [by_account[account(n)].id for n in (1, 2, 3)]
    for connection_id in ids:  # both processes keep what they read
        await get(suite.tree, connection_id)
        await get(second, connection_id)

    await second.UpdateConnection(
        tree_rpc.UpdateConnectionRequest(
            connection=tree_pb.Connection(id=ids[0], handle="from_second"),
            update_mask=FieldMask(paths=["handle"]),
        ),
        metadata=OWNER,
    )
    assert (await get(suite.tree, ids[0])).handle == "from_second"

    await suite.integrations.DeleteIntegration(
        rpc.DeleteIntegrationRequest(id=created.id, confirm_handle=created.handle),
        metadata=OWNER,
    )
    for connection_id in ids:
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await get(second, connection_id)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_concurrent_reads_share_statements_and_kept_ones_read_only_versions(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create(suite)
    await apply(suite, created.id, snapshot([], ACCOUNTS))
    by_account = await connections(suite, created.id)
    statements: list[tuple[str, int]] = []  # (what was read, how many ids)

    def counted(name: str) -> Any:
        real = getattr(store, name)

        async def wrapper(conn: Any, ids: Sequence[str]) -> Any:
            statements.append((name, len(ids)))
            return await real(conn, ids)

        return wrapper

    monkeypatch.setattr(store, "read_connections", counted("read_connections"))
    monkeypatch.setattr(store, "connection_versions", counted("connection_versions"))

    async def read_all() -> None:
        found = await asyncio.gather(*(get(suite.tree, c.id) for c in by_account.values()))
        assert found == list(by_account.values())  # each caller its own connection

    await read_all()
    assert sum(n for _, n in statements) == len(ACCOUNTS)
    assert {name for name, _ in statements} == {"read_connections"}
    assert len(statements) < len(ACCOUNTS)  # at least one statement served several calls

    statements.clear()
    await read_all()  # unchanged rows: only their versions are read
    assert {name for name, _ in statements} == {"connection_versions"}
    assert sum(n for _, n in statements) == len(ACCOUNTS)
