"""What another Canopy service's failure means to the caller of this one, over real gRPC: the
directory client against a stand-in directory served by the Canopy runtime (so its statuses come
from the real error interceptor). The real permissions service cannot be made to answer
FAILED_PRECONDITION, INTERNAL or late on demand; tests/integration asks it for the rest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from canopy.permissions.v1 import directory_pb2 as dpb
from canopy.permissions.v1 import directory_service_pb2 as drpc
from canopy_core.directory import DirectoryClient
from canopy_core.errors import (
    Code,
    DependencyFailed,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Refused,
    Unavailable,
)
from canopy_core.server import RunningService, Runtime, ServiceSpec, serve
from canopy_core.settings import ServiceSettings
from tests.helpers import free_port

DIRECTORY = "canopy.permissions.v1.DirectoryService"
FIELD = "initial_permissions.grantees[0].workspace_id"


async def get_workspace(
    request: drpc.GetWorkspaceRequest, context: Any
) -> drpc.GetWorkspaceResponse:
    """A stand-in for the directory's GetWorkspace: each id asked for fails its own way."""
    match request.id:
        case "W BAD":
            raise InvalidArgument.field("id", "must look like 'w_' followed by 1-60 of [a-z0-9]")
        case "w_gone":
            raise NotFound("workspace", request.id)
        case "w_frozen":
            raise FailedPrecondition("the workspace is frozen", reason="WORKSPACE_FROZEN")
        case "w_denied":
            raise PermissionDenied("this token may not ask")
        case "w_broken":
            raise RuntimeError("a bug in the directory")
        case "w_slow":
            await asyncio.sleep(5)
    return drpc.GetWorkspaceResponse(
        workspace=dpb.Workspace(id=request.id, org_id="o_ops", tenant_id="t_acme")
    )


async def setup(runtime: Runtime) -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        get_workspace,
        request_deserializer=drpc.GetWorkspaceRequest.FromString,
        response_serializer=drpc.GetWorkspaceResponse.SerializeToString,
    )
    runtime.server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(DIRECTORY, {"GetWorkspace": handler}),)
    )


@pytest.fixture
async def directory(service_env: dict[str, Any]) -> AsyncIterator[RunningService]:
    settings = ServiceSettings(**{**service_env, "service_name": "directory"})
    running = await serve(ServiceSpec("directory", [DIRECTORY], [], setup), settings)
    yield running
    await running.stop()


@pytest.fixture
async def client(directory: RunningService) -> AsyncIterator[DirectoryClient]:
    # The runtime's channel presents the system token, as a service's own channel does.
    channel = directory.runtime.channel(f"127.0.0.1:{directory.port}")
    yield DirectoryClient(channel, timeout=0.5)
    await channel.close()


async def test_an_id_the_directory_refuses_is_the_callers_error_on_the_callers_field(
    client: DirectoryClient,
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await client.workspace("W BAD", field=FIELD)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == [FIELD]
    assert "must look like 'w_'" in caught.value.violations[0].description


async def test_an_id_the_directory_does_not_know_is_not_found(client: DirectoryClient) -> None:
    with pytest.raises(NotFound):
        await client.workspace("w_gone", field=FIELD)


async def test_a_precondition_the_directory_names_passes_on_with_the_callers_field(
    client: DirectoryClient,
) -> None:
    with pytest.raises(Refused) as caught:
        await client.workspace("w_frozen", field=FIELD)
    assert caught.value.code is Code.FAILED_PRECONDITION
    assert caught.value.reason == "WORKSPACE_FROZEN"
    assert caught.value.metadata["field"] == FIELD


@pytest.mark.parametrize("workspace_id", ["w_denied", "w_broken"])
async def test_a_directory_that_fails_on_its_own_is_a_fault_not_an_outage(
    client: DirectoryClient, workspace_id: str
) -> None:
    # Its refusal of this service's own token, or its bug: neither the caller nor a retry
    # can fix that.
    with pytest.raises(DependencyFailed) as caught:
        await client.workspace(workspace_id, field=FIELD)
    assert caught.value.code is Code.INTERNAL
    assert caught.value.reason == "DIRECTORY_FAILED"


async def test_a_directory_too_slow_to_answer_is_unavailable(client: DirectoryClient) -> None:
    with pytest.raises(Unavailable) as caught:
        await client.workspace("w_slow", field=FIELD)
    assert caught.value.reason == "DIRECTORY_UNAVAILABLE"


async def test_a_directory_that_is_down_is_unavailable(directory: RunningService) -> None:
    channel = directory.runtime.channel(f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(Unavailable) as caught:
            await DirectoryClient(channel, timeout=2).workspace("w_ops1", field=FIELD)
    finally:
        await channel.close()
    assert caught.value.code is Code.UNAVAILABLE
    assert caught.value.reason == "DIRECTORY_UNAVAILABLE"


async def test_a_directory_that_answers_gives_the_workspaces_place(client: DirectoryClient) -> None:
    found = await client.workspace("w_ops1", field=FIELD)
    assert (found.id, found.org_id, found.tenant_id) == ("w_ops1", "o_ops", "t_acme")
