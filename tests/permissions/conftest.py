"""A permissions service in-process on port 0, and stubs to call it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from canopy.permissions.v1 import directory_service_pb2_grpc
from canopy_core.server import RunningService, serve
from canopy_permissions.server import spec
from canopy_permissions.settings import PermissionsSettings

if TYPE_CHECKING:
    from canopy.permissions.v1.directory_service_pb2_grpc import DirectoryServiceAsyncStub


@pytest.fixture
async def permissions(service_env: dict[str, Any]) -> AsyncIterator[RunningService]:
    running = await serve(spec(), PermissionsSettings(**service_env))
    yield running
    await running.stop()


@pytest.fixture
async def channel(permissions: RunningService) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{permissions.port}") as ch:
        yield ch


@pytest.fixture
def directory(channel: grpc.aio.Channel) -> DirectoryServiceAsyncStub:
    return directory_service_pb2_grpc.DirectoryServiceStub(channel)
