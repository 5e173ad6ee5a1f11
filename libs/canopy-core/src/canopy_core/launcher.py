"""`make run`: the three services as child processes on one (by default embedded) PostgreSQL.

Waits until each answers its health check, prints how to call them, and on Ctrl-C or SIGTERM
stops them all gracefully. If one exits on its own, the others are stopped too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from asyncio import FIRST_COMPLETED
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from canopy_core.auth import mint_token, signing_secret
from canopy_core.settings import ServiceSettings


@dataclass(frozen=True)
class Child:
    """One service process to run."""

    name: str
    module: str
    port: int
    service: str


def children(settings: ServiceSettings) -> tuple[Child, ...]:
    """The three services, on the ports of the configured service addresses."""

    def port(address: str) -> int:
        return int(address.rsplit(":", 1)[1])

    return (
        Child(
            "integration",
            "canopy_integration",
            port(settings.integration_address),
            "canopy.integration.v1.IntegrationService",
        ),
        Child(
            "discovery",
            "canopy_discovery",
            port(settings.discovery_address),
            "canopy.discovery.v1.DiscoveryService",
        ),
        Child(
            "permissions",
            "canopy_permissions",
            port(settings.permissions_address),
            "canopy.permissions.v1.DirectoryService",
        ),
    )


async def _wait_serving(child: Child, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{child.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=child.service), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"{child.name} did not become healthy")
            await asyncio.sleep(0.2)


def _banner(settings: ServiceSettings, started: tuple[Child, ...]) -> str:
    secret = signing_secret(settings)
    token = (
        mint_token(secret, "operator", system=True, ttl_seconds=12 * 3600)
        if secret
        else "<mint one with your key>"
    )
    lines = [
        "",
        "Canopy is running:",
        *(f"  {c.name:<12} 127.0.0.1:{c.port}" for c in started),
        "",
        "A system token (12 hours):",
        f"  export CANOPY_TOKEN={token}",
        "",
        "Try:",
        "  .tools/node_modules/.bin/buf curl --protocol grpc --http2-prior-knowledge \\",
        f"    --list-methods http://127.0.0.1:{started[2].port}",
        "  .tools/node_modules/.bin/buf curl --protocol grpc --http2-prior-knowledge \\",
        '    -H "authorization: Bearer $CANOPY_TOKEN" \\',
        '    -d \'{"tenant": {"id": "t_demo", "handle": "demo", "plan": "PLAN_ENTERPRISE"}}\' \\',
        f"    http://127.0.0.1:{started[2].port}/canopy.permissions.v1.DirectoryService/UpsertTenant",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


async def main() -> int:
    """Run until interrupted; returns the exit status."""
    settings = ServiceSettings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = children(settings)
    processes: dict[str, asyncio.subprocess.Process] = {}
    for child in started:
        env = {**os.environ, "CANOPY_PORT": str(child.port)}
        env.setdefault("CANOPY_LOG_FORMAT", "text")
        processes[child.name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", child.module, env=env, start_new_session=True
        )
    status = 0
    try:
        deadline = loop.time() + 120
        exits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(p.wait()) for p in processes.values()
        ]
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        ready: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(_wait_serving(c, deadline) for c in started))
        )
        first = FIRST_COMPLETED
        done, _ = await asyncio.wait([ready, stopper, *exits], return_when=first)
        if ready in done and ready.exception() is None:
            print(_banner(settings, started), flush=True)
            done, _ = await asyncio.wait([stopper, *exits], return_when=first)
        elif ready in done:
            print(f"start-up failed: {ready.exception()}", file=sys.stderr, flush=True)
        if stopper not in done:
            print("a service exited; stopping the others", file=sys.stderr, flush=True)
            status = 1
        ready.cancel()
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
    return status


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
