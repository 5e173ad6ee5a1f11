"""`make run`: the three services as child processes on one (by default embedded) PostgreSQL,
with a simulated AWS Organization to discover.

With `CANOPY_AWS_ENDPOINT_URL` unset and no AWS credentials configured, a moto server in this
process plays AWS: the demo organization is built in it, a demo tenant, org and workspaces are
created, and an integration is created through the API, synced, shared with every workspace of
the org and attached to one. With real AWS credentials (or an endpoint of your own) the services
use them and no demo is built. Ctrl-C or SIGTERM stops everything gracefully; if one service
exits on its own, the others are stopped too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from asyncio import FIRST_COMPLETED
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console

from canopy_cli import demo, render
from canopy_core.auth import mint_token, signing_secret
from canopy_core.settings import ServiceSettings

# Command lines must stay whole for copying, whatever the terminal width.
console = Console(stderr=False, highlight=False, soft_wrap=True)


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


def real_aws_configured() -> bool:
    """Whether the default AWS credential chain finds credentials here."""
    try:
        import boto3  # type: ignore[import-untyped]

        return boto3.Session().get_credentials() is not None
    except Exception:
        return False


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


def _banner(started: tuple[Child, ...], token: str, integration_id: str | None) -> None:
    permissions, integration = started[2].port, started[0].port
    curl = ".tools/node_modules/.bin/buf curl --protocol grpc --http2-prior-knowledge"
    console.print("\n[bold]Canopy is running:[/]")
    for child in started:
        console.print(f"  {child.name:<12} 127.0.0.1:{child.port}")
    console.print("\nA system token (12 hours):")
    console.print(f"  export CANOPY_TOKEN={token}", soft_wrap=True)
    console.print("\nLook further:")
    if integration_id:
        console.print(f"  .venv/bin/canopy tree {integration_id}")
        console.print("  .venv/bin/canopy schemas list w_analytics")
        console.print("  .venv/bin/canopy schemas watch w_analytics")
        console.print(f"  .venv/bin/canopy sync {integration_id} --wait")
    console.print(f"  {curl} --list-services http://127.0.0.1:{permissions}")
    if integration_id:
        console.print(
            f'  {curl} -H "authorization: Bearer $CANOPY_TOKEN" \\\n'
            f'    -d \'{{"integration_id": "{integration_id}"}}\' \\\n'
            f"    http://127.0.0.1:{integration}/canopy.integration.v1.ConnectionTreeService/GetConnectionTree"
        )
    console.print("\nCtrl-C stops everything.", highlight=False)


async def main() -> int:
    """Run until interrupted; returns the exit status."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    settings = ServiceSettings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    env = dict(os.environ)
    env.setdefault("CANOPY_LOG_FORMAT", "text")
    env.setdefault("CANOPY_LOG_LEVEL", "WARNING")
    moto: Any = None
    if not env.get("CANOPY_AWS_ENDPOINT_URL") and not real_aws_configured():
        from moto.server import ThreadedMotoServer

        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        host, port = moto.get_host_and_port()
        env["CANOPY_AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
        env["CANOPY_AWS_ACCESS_KEY_ID"] = "testing"
        env["CANOPY_AWS_SECRET_ACCESS_KEY"] = "testing"
        # Role templates of the demo trust the simulated platform account, said explicitly.
        env.setdefault("CANOPY_TRUSTED_ACCOUNT_ID", demo.SIMULATED_ACCOUNT_ID)

    started = children(settings)
    processes: dict[str, asyncio.subprocess.Process] = {}
    for child in started:
        processes[child.name] = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            child.module,
            env={**env, "CANOPY_PORT": str(child.port)},
            start_new_session=True,
        )
    status = 0
    try:
        deadline = loop.time() + 120
        exits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(p.wait()) for p in processes.values()
        ]
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        ready: asyncio.Future[Any] = asyncio.ensure_future(
            _prepare(started, settings, env, moto is not None, deadline)
        )
        done, _ = await asyncio.wait([ready, stopper, *exits], return_when=FIRST_COMPLETED)
        if ready in done and ready.exception() is None:
            token, integration_id = ready.result()
            _banner(started, token, integration_id)
            done, _ = await asyncio.wait([stopper, *exits], return_when=FIRST_COMPLETED)
        elif ready in done:
            print(f"start-up failed: {ready.exception()}", file=sys.stderr, flush=True)
            status = 1
        if stopper not in done:
            print("a service exited; stopping the others", file=sys.stderr, flush=True)
            status = 1
        ready.cancel()
    finally:
        # The services that follow the integration service's streams stop first, so that none
        # of them reports its source going away.
        followers = [p for name, p in processes.items() if name != "integration"]
        for group in (followers, [processes["integration"]]):
            for process in group:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in group:
                try:
                    await asyncio.wait_for(process.wait(), timeout=30)
                except TimeoutError:
                    process.kill()
        if moto is not None:
            moto.stop()
    return status


async def _prepare(
    started: tuple[Child, ...],
    settings: ServiceSettings,
    env: dict[str, str],
    simulated: bool,
    deadline: float,
) -> tuple[str, str | None]:
    """Wait for the services; build the demo when AWS is simulated. (token, integration id)"""
    await asyncio.gather(*(_wait_serving(c, deadline) for c in started))
    secret = signing_secret(settings)
    token = (
        mint_token(secret, "operator", system=True, ttl_seconds=12 * 3600)
        if secret
        else "<mint one with your key>"
    )
    if not simulated:
        console.print(
            "\nAWS: using your configured credentials or endpoint; no simulated organization."
        )
        return token, None
    metadata = (("authorization", f"Bearer {token}"),)
    console.print("Building the demo organization in a simulated AWS …")
    organization = await asyncio.to_thread(demo.build_organization, env["CANOPY_AWS_ENDPOINT_URL"])
    addresses = {c.name: f"127.0.0.1:{c.port}" for c in started}
    async with (
        grpc.aio.insecure_channel(addresses["integration"]) as integration,
        grpc.aio.insecure_channel(addresses["discovery"]) as discovery,
        grpc.aio.insecure_channel(addresses["permissions"]) as permissions,
    ):
        await demo.seed_directory(permissions, metadata)
        created, run, tree = await demo.create_and_sync(
            integration, discovery, permissions, organization, metadata
        )
    console.print(
        f"\nDemo: organization {organization.organization_id}, integration [bold]aws-demo[/] "
        f"in org {demo.ORG} (tenant {demo.TENANT}), shared with every workspace of the org, "
        f"root folder attached to {demo.WORKSPACES[0]}; its sync: "
        f"{run.progress.accounts_found} accounts, {run.progress.organizational_units_found} OUs, "
        f"{run.summary.connections_created or len(tree.root.connections)} connections."
    )
    console.print(render.connection_tree(tree))
    return token, created.id


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
