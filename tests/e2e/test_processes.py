"""The three services as separate processes: health, reflection with `buf curl`, calls with a
token, JSON logs with request ids, a clean SIGTERM, and
the embedded PostgreSQL shared by the services of one run."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.processes import (
    SERVICES,
    ServiceProcess,
    base_env,
    buf_curl,
    start,
    wait_serving,
)
from tests.helpers import free_port, token


@pytest.fixture
async def suite(database_url: str, tmp_path: Path) -> AsyncIterator[dict[str, ServiceProcess]]:
    env = base_env(tmp_path, database_url)
    running = {name: start(name, env, tmp_path) for name in SERVICES}
    try:
        await asyncio.gather(*(wait_serving(s) for s in running.values()))
        yield running
    finally:
        for service in running.values():
            if service.process.poll() is None:
                service.process.kill()
                service.process.wait()


EXPECTED_SERVICES = {
    "integration": {
        "canopy.integration.v1.IntegrationService",
        "canopy.integration.v1.ConnectionTreeService",
    },
    "discovery": {"canopy.discovery.v1.DiscoveryService"},
    "permissions": {
        "canopy.permissions.v1.DirectoryService",
        "canopy.permissions.v1.PermissionService",
        "canopy.permissions.v1.WorkspaceSchemaService",
        "canopy.permissions.v1.WorkspaceConfigService",
    },
}


async def test_buf_curl_lists_every_service_by_reflection_and_health_says_serving(
    suite: dict[str, ServiceProcess],
) -> None:
    for name, service in suite.items():
        listed = await asyncio.to_thread(buf_curl, "--list-services", f"http://{service.address}")
        assert listed.returncode == 0, listed.stderr
        names = set(listed.stdout.split())
        assert EXPECTED_SERVICES[name] <= names
        assert "grpc.health.v1.Health" in names
        for service_name in EXPECTED_SERVICES[name]:
            health = await asyncio.to_thread(
                buf_curl,
                "-d",
                json.dumps({"service": service_name}),
                f"http://{service.address}/grpc.health.v1.Health/Check",
            )
            assert json.loads(health.stdout) == {"status": "SERVING"}, health.stderr


async def test_buf_curl_upserts_and_reads_a_tenant_with_a_token(
    suite: dict[str, ServiceProcess],
) -> None:
    address = suite["permissions"].address
    system = f"authorization: Bearer {token('operator', system=True)}"
    upsert = await asyncio.to_thread(
        buf_curl,
        "-H",
        system,
        "-d",
        json.dumps({"tenant": {"id": "t_demo", "handle": "demo", "plan": "PLAN_ENTERPRISE"}}),
        f"http://{address}/canopy.permissions.v1.DirectoryService/UpsertTenant",
    )
    assert upsert.returncode == 0, upsert.stderr
    assert json.loads(upsert.stdout)["created"] is True

    member = f"authorization: Bearer {token('alice', t_demo='member')}"
    read = await asyncio.to_thread(
        buf_curl,
        "-H",
        member,
        "-d",
        '{"id": "t_demo"}',
        f"http://{address}/canopy.permissions.v1.DirectoryService/GetTenant",
    )
    assert json.loads(read.stdout)["tenant"]["plan"] == "PLAN_ENTERPRISE"

    anonymous = await asyncio.to_thread(
        buf_curl,
        "-d",
        '{"id": "t_demo"}',
        f"http://{address}/canopy.permissions.v1.DirectoryService/GetTenant",
    )
    assert anonymous.returncode != 0
    assert "unauthenticated" in anonymous.stderr.lower()


async def test_each_rpc_is_logged_as_a_json_line_with_its_request_id(
    suite: dict[str, ServiceProcess],
) -> None:
    service = suite["permissions"]
    await asyncio.to_thread(
        buf_curl,
        "-H",
        f"authorization: Bearer {token(system=True)}",
        "-H",
        "x-request-id: trace-me-123",
        "-d",
        '{"id": "t_nobody"}',
        f"http://{service.address}/canopy.permissions.v1.DirectoryService/GetTenant",
    )
    entries = []
    for _ in range(50):
        entries = [
            json.loads(line)
            for line in service.log_text().splitlines()
            if line.startswith("{") and "trace-me-123" in line
        ]
        if entries:
            break
        await asyncio.sleep(0.1)
    assert entries, service.log_text()
    rpc = entries[-1]
    assert rpc["request_id"] == "trace-me-123"
    assert rpc["method"] == "/canopy.permissions.v1.DirectoryService/GetTenant"
    assert rpc["code"] == "NOT_FOUND"
    assert rpc["service"] == "permissions"


async def test_sigterm_stops_each_service_cleanly_within_its_grace_period(
    suite: dict[str, ServiceProcess],
) -> None:
    for service in suite.values():
        started = time.monotonic()
        status = await asyncio.to_thread(service.terminate, 10)
        assert status == 0, service.log_text()
        assert time.monotonic() - started < 3 + 2
        assert '"msg": "stopped"' in service.log_text()


async def test_without_database_url_the_services_share_one_embedded_postgres(
    tmp_path: Path,
) -> None:
    env = base_env(tmp_path, None)
    running = [start(name, env, tmp_path) for name in SERVICES]
    try:
        await asyncio.gather(*(wait_serving(s, timeout=120) for s in running))
        pgdata = tmp_path / "data" / "pgdata"
        assert (pgdata / "PG_VERSION").exists()
        assert (pgdata / "postmaster.pid").exists()
        for service in running:
            assert await asyncio.to_thread(service.terminate, 30) == 0, service.log_text()
        # The last service to stop also stops the embedded server.
        for _ in range(100):
            if not (pgdata / "postmaster.pid").exists():
                break
            await asyncio.sleep(0.1)
        assert not (pgdata / "postmaster.pid").exists()
    finally:
        for service in running:
            if service.process.poll() is None:
                service.process.kill()


async def test_make_run_starts_the_services_shows_the_demo_tree_and_stops_on_ctrl_c(
    database_url: str, tmp_path: Path
) -> None:
    ports = [free_port() for _ in range(3)]
    env = base_env(
        tmp_path,
        database_url,
        CANOPY_INTEGRATION_ADDRESS=f"127.0.0.1:{ports[0]}",
        CANOPY_DISCOVERY_ADDRESS=f"127.0.0.1:{ports[1]}",
        CANOPY_PERMISSIONS_ADDRESS=f"127.0.0.1:{ports[2]}",
        CANOPY_METRICS_PORT="none",
    )
    launcher = subprocess.Popen(
        [sys.executable, "-m", "canopy_cli.run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert launcher.stdout is not None
        banner: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = await asyncio.to_thread(launcher.stdout.readline)
            if not line:
                break
            banner.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(banner)
        assert "Canopy is running" in text, text
        # The demo organization was discovered and its tree printed.
        assert "Demo: organization o-" in text
        assert "aws_prod_web" in text  # "Prod — Web" and "prod web" collide: one gets a suffix
        assert "aws_public" in text  # "Public" is reserved on its own, not with the prefix
        assert "Old Marketing" not in text  # suspended
        for port in ports:
            assert f"127.0.0.1:{port}" in text
        launcher.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(launcher.wait, 30) == 0
        # A quiet stop: no service complains of another going away.
        after = await asyncio.to_thread(launcher.stdout.read)
        assert "WARNING" not in after, after
        assert "ERROR" not in after, after
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if launcher.stdout is not None:
            launcher.stdout.close()


async def test_the_compose_demo_builds_the_demo_organization_against_running_services(
    services: dict[str, ServiceProcess], suite_env: dict[str, str]
) -> None:
    """What the `demo` container of docker-compose.yml runs once the suite is up."""
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "canopy_cli.demo",
        env={**suite_env, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(demo.communicate(), 180)
    text = output.decode()
    assert demo.returncode == 0, text
    assert "sync SYNC_RUN_STATE_SUCCEEDED" in text
    assert "root folder attached to" in text
    for name in ("Data Lake", "Security Tooling", "pg_admin"):  # accounts, drawn in the tree
        assert name in text
