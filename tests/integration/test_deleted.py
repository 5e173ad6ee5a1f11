"""A deleted integration answers one way from every RPC that names it, or a folder or connection
of it: NOT_FOUND for its scope's members while its tombstone is kept, PERMISSION_DENIED for
everyone else, exactly as for an id that never existed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from tests.integration.conftest import (
    MEMBER,
    OUTSIDER,
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
from tests.integration.test_apply import apply, connections, folders

NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED
Call = Callable[[Any], Awaitable[Any]]


async def first_reply(stream: Any) -> Any:
    try:
        return await anext(aiter(stream))
    finally:
        stream.cancel()


def calls(suite: Suite, ids: dict[str, str]) -> dict[str, Call]:
    """Every RPC that names the integration, or a folder or connection of it, by `ids`:
    integration, root (folder), folder (an OU's), connection."""
    integration, root, folder, connection = (
        ids["integration"],
        ids["root"],
        ids["folder"],
        ids["connection"],
    )
    ints, tree = suite.integrations, suite.tree
    return {
        "GetIntegration": lambda md: ints.GetIntegration(
            rpc.GetIntegrationRequest(id=integration), metadata=md
        ),
        "UpdateIntegration": lambda md: ints.UpdateIntegration(
            rpc.UpdateIntegrationRequest(
                integration=pb.Integration(id=integration, handle_prefix="x_"),
                update_mask=FieldMask(paths=["handle_prefix"]),
            ),
            metadata=md,
        ),
        "DeleteIntegration": lambda md: ints.DeleteIntegration(
            rpc.DeleteIntegrationRequest(id=integration, confirm_handle="aws-prod"), metadata=md
        ),
        "RenderRoleTemplate": lambda md: ints.RenderRoleTemplate(
            rpc.RenderRoleTemplateRequest(
                kind=rpc.ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET, integration_id=integration
            ),
            metadata=md,
        ),
        "GetFolder(root)": lambda md: tree.GetFolder(
            tree_rpc.GetFolderRequest(id=root), metadata=md
        ),
        "GetFolder(ou)": lambda md: tree.GetFolder(
            tree_rpc.GetFolderRequest(id=folder), metadata=md
        ),
        "ListFolders(integration_id)": lambda md: tree.ListFolders(
            tree_rpc.ListFoldersRequest(integration_id=integration), metadata=md
        ),
        "ListFolders(parent_folder_id)": lambda md: tree.ListFolders(
            tree_rpc.ListFoldersRequest(parent_folder_id=root), metadata=md
        ),
        "UpdateFolder": lambda md: tree.UpdateFolder(
            tree_rpc.UpdateFolderRequest(
                folder=tree_pb.Folder(id=folder, handle="mine"),
                update_mask=FieldMask(paths=["handle"]),
            ),
            metadata=md,
        ),
        "GetConnection": lambda md: tree.GetConnection(
            tree_rpc.GetConnectionRequest(id=connection), metadata=md
        ),
        "ListConnections(integration_id)": lambda md: tree.ListConnections(
            tree_rpc.ListConnectionsRequest(integration_id=integration), metadata=md
        ),
        "ListConnections(folder_id)": lambda md: tree.ListConnections(
            tree_rpc.ListConnectionsRequest(folder_id=folder), metadata=md
        ),
        "UpdateConnection": lambda md: tree.UpdateConnection(
            tree_rpc.UpdateConnectionRequest(
                connection=tree_pb.Connection(id=connection, handle="mine"),
                update_mask=FieldMask(paths=["handle"]),
            ),
            metadata=md,
        ),
        "GetConnectionTree": lambda md: tree.GetConnectionTree(
            tree_rpc.GetConnectionTreeRequest(integration_id=integration), metadata=md
        ),
        "WatchTreeEvents": lambda md: first_reply(
            tree.WatchTreeEvents(
                tree_rpc.WatchTreeEventsRequest(integration_id=integration), metadata=md
            )
        ),
    }


async def code_of(call: Call, metadata: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(metadata)
    return caught.value.code()


@pytest.fixture
async def deleted(suite: Suite) -> dict[str, str]:
    """The ids of an integration with a synced tree, deleted by its owner."""
    created = await create(suite, new_integration("aws-prod"))
    await apply(suite, created.id, snapshot([(ou(1), ROOT, "Prod")], [(account(1), ou(1), "Web")]))
    ids = {
        "integration": created.id,
        "root": created.root_folder_id,
        "folder": (await folders(suite, created.id))[ou(1)].id,
        "connection": (await connections(suite, created.id))[account(1)].id,
    }
    await suite.integrations.DeleteIntegration(
        rpc.DeleteIntegrationRequest(id=created.id, confirm_handle="aws-prod"), metadata=OWNER
    )
    return ids


@pytest.mark.parametrize("caller", ["owner", "member"])
async def test_every_rpc_naming_a_deleted_integration_is_not_found_for_its_scope(
    suite: Suite, deleted: dict[str, str], caller: str
) -> None:
    metadata = {"owner": OWNER, "member": MEMBER}[caller]
    answers = {name: await code_of(call, metadata) for name, call in calls(suite, deleted).items()}
    assert answers == dict.fromkeys(answers, NOT_FOUND)


async def test_a_system_caller_finds_it_gone_but_may_still_follow_its_events(
    suite: Suite, deleted: dict[str, str]
) -> None:
    named = calls(suite, deleted)
    watch = named.pop("WatchTreeEvents")
    answers = {name: await code_of(call, SYSTEM) for name, call in named.items()}
    assert answers == dict.fromkeys(answers, NOT_FOUND)
    # A consumer of the tree log still reads what happened, up to the deletion.
    reply = await watch(SYSTEM)
    assert reply.events[-1].WhichOneof("event") == "integration_deleted"


async def test_an_outsider_cannot_tell_a_deleted_integration_from_one_that_never_was(
    suite: Suite, deleted: dict[str, str]
) -> None:
    made_up = {
        "integration": "i_0000000000zzzzzzzzzzzzzzzz",
        "root": "f_0000000000zzzzzzzzzzzzzzzz",
        "folder": "f_0000000000yyyyyyyyyyyyyyyy",
        "connection": "c_0000000000zzzzzzzzzzzzzzzz",
    }
    on_deleted = {n: await code_of(c, OUTSIDER) for n, c in calls(suite, deleted).items()}
    on_made_up = {n: await code_of(c, OUTSIDER) for n, c in calls(suite, made_up).items()}
    assert on_deleted == dict.fromkeys(on_deleted, DENIED)
    assert on_made_up == on_deleted
