"""The moto server, fault proxy and organization builder of the discovery tests, and the three
services as processes in front of them, for the end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.awsfaults import FaultProxy
from tests.discovery.conftest import moto_server, moto_url, org, proxy  # noqa: F401
from tests.e2e.processes import SERVICES, ServiceProcess, base_env, start, stop_all, wait_serving
from tests.helpers import free_port
from tests.integration.conftest import TRUSTED_ACCOUNT_ID


@pytest.fixture
def ports() -> dict[str, int]:
    """A free port for each service."""
    return {name: free_port() for name in SERVICES}


@pytest.fixture
def suite_env(
    database_url: str,
    tmp_path: Path,
    proxy: FaultProxy,  # noqa: F811
    ports: dict[str, int],
) -> dict[str, str]:
    """The environment of the three services (and of anything that calls them)."""
    return base_env(
        tmp_path,
        database_url,
        CANOPY_AWS_ENDPOINT_URL=proxy.url,
        CANOPY_AWS_ACCESS_KEY_ID="testing",
        CANOPY_AWS_SECRET_ACCESS_KEY="testing",
        CANOPY_TRUSTED_ACCOUNT_ID=TRUSTED_ACCOUNT_ID,
        CANOPY_INTEGRATION_ADDRESS=f"127.0.0.1:{ports['integration']}",
        CANOPY_DISCOVERY_ADDRESS=f"127.0.0.1:{ports['discovery']}",
        CANOPY_PERMISSIONS_ADDRESS=f"127.0.0.1:{ports['permissions']}",
        CANOPY_SCHEDULER_POLL_INTERVAL="0.3",
        CANOPY_WATCH_PROGRESS_INTERVAL="1",
    )


@pytest.fixture
async def services(
    suite_env: dict[str, str], tmp_path: Path, ports: dict[str, int]
) -> AsyncIterator[dict[str, ServiceProcess]]:
    running = {name: start(name, suite_env, tmp_path, ports[name]) for name in SERVICES}
    try:
        await asyncio.gather(*(wait_serving(s) for s in running.values()))
        yield running
    finally:
        stop_all(running.values())
