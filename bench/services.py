"""Start Canopy services for a benchmark: in-process on port 0, or as separate processes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from canopy.permissions.v1 import directory_pb2 as dpb
from canopy.permissions.v1 import directory_service_pb2 as drpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dgrpc
from canopy.type.v1 import types_pb2
from canopy_core.auth import mint_token
from canopy_core.server import RunningService, serve, tune_gc
from canopy_integration.server import spec as integration_spec
from canopy_integration.settings import IntegrationSettings
from canopy_permissions.server import spec as permissions_spec
from canopy_permissions.settings import PermissionsSettings

SECRET = "canopy-bench-secret-0123456789abcdef0123456789"


def bearer(**claims: Any) -> tuple[tuple[str, str]]:
    """Call metadata with a token signed by the bench secret."""
    subject = claims.pop("subject", "bench")
    system = claims.pop("system", False)
    token = mint_token(SECRET, subject, roles=claims, system=system, ttl_seconds=3600)
    return (("authorization", f"Bearer {token}"),)


SYSTEM = bearer(system=True)


def common_settings(dsn: str) -> dict[str, Any]:
    return {
        "database_url": dsn,
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": None,
        "jwt_secret": SECRET,
        "log_level": "WARNING",
        "data_dir": Path(tempfile.mkdtemp(prefix="canopy-bench-data-")),
    }


@dataclass
class InProcess:
    """The permissions and integration services running in this process."""

    permissions: RunningService
    integration: RunningService


@asynccontextmanager
async def in_process(dsn: str) -> AsyncIterator[InProcess]:
    """Permissions and integration services on one database, with tenant t_bench seeded."""
    permissions = await serve(permissions_spec(), PermissionsSettings(**common_settings(dsn)))
    integration = await serve(
        integration_spec(),
        IntegrationSettings(
            **common_settings(dsn), permissions_address=f"127.0.0.1:{permissions.port}"
        ),
    )
    tune_gc()  # as a service process does once started (canopy_core.server.run)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{permissions.port}") as channel:
            await seed(dgrpc.DirectoryServiceStub(channel))
        yield InProcess(permissions, integration)
    finally:
        await integration.stop()
        await permissions.stop()


async def seed(directory: Any) -> None:
    """An ENTERPRISE tenant for the benchmarks."""
    await directory.UpsertTenant(
        drpc.UpsertTenantRequest(
            tenant=dpb.Tenant(id="t_bench", handle="bench", plan=types_pb2.PLAN_ENTERPRISE)
        ),
        metadata=SYSTEM,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ChildService:
    """A service (or any gRPC server module) running as a child process of the bench."""

    address: str
    pid: int

    def peak_rss_bytes(self) -> int:
        """The process's peak resident memory so far (VmHWM in /proc/PID/status)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmHWM for process {self.pid}")


def process_env(dsn: str, integration_port: int, permissions_port: int) -> dict[str, str]:
    """The environment of services started as processes on `dsn`, knowing each other's ports."""
    return {
        "CANOPY_DATABASE_URL": dsn,
        "CANOPY_JWT_SECRET": SECRET,
        "CANOPY_METRICS_PORT": "none",
        "CANOPY_LOG_LEVEL": "WARNING",
        "CANOPY_INTEGRATION_ADDRESS": f"127.0.0.1:{integration_port}",
        "CANOPY_PERMISSIONS_ADDRESS": f"127.0.0.1:{permissions_port}",
    }


@asynccontextmanager
async def subprocess_service(
    module: str, env: dict[str, str], port: int | None = None
) -> AsyncIterator[str]:
    """A service (or any gRPC server module) as a child process; yields its address."""
    async with child_service(module, env, port) as child:
        yield child.address


@asynccontextmanager
async def child_service(
    module: str, env: dict[str, str], port: int | None = None
) -> AsyncIterator[ChildService]:
    """A service (or any gRPC server module) as a child process, serving once yielded."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        env={**os.environ, **env, "CANOPY_PORT": str(port), "CANOPY_HOST": "127.0.0.1"},
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ["BENCH_SERVICE_LOG"], "ab")  # noqa: SIM115
        if os.environ.get("BENCH_SERVICE_LOG")
        else subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(300):
                if process.poll() is not None:
                    raise RuntimeError(f"{module} exited with {process.returncode}")
                try:
                    await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
        yield ChildService(address, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@asynccontextmanager
async def processes(
    dsn: str, extra: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, str]]:
    """The permissions and integration services as processes on one database, each knowing the
    other's address, with `extra` settings: yields (permissions address, integration address)."""
    integration_port, permissions_port = free_port(), free_port()
    common = {
        "CANOPY_DATABASE_URL": dsn,
        "CANOPY_JWT_SECRET": SECRET,
        "CANOPY_METRICS_PORT": "none",
        "CANOPY_LOG_LEVEL": "WARNING",
        "CANOPY_INTEGRATION_ADDRESS": f"127.0.0.1:{integration_port}",
        "CANOPY_PERMISSIONS_ADDRESS": f"127.0.0.1:{permissions_port}",
        **(extra or {}),
    }
    async with (
        subprocess_service("canopy_permissions", common, port=permissions_port) as permissions,
        subprocess_service("canopy_integration", common, port=integration_port) as integration,
    ):
        yield permissions, integration
