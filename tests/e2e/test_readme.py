"""The README's walks, run as a newcomer pastes them: against the three services as processes on
`make run`'s demo (the simulated organization, tenant, org, workspaces and integration), in a
directory laid out like the checkout (`.venv`, `.tools`, `.canopy/jwt-secret`), in one bash
session per walk. Blocks are marked in the README (see tests/e2e/readme_blocks.py); a block that
fails, or prints other than the shape shown, fails the test, naming the README line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from canopy_cli import demo
from tests.awsfaults import FaultProxy
from tests.e2e.processes import REPO, ServiceProcess
from tests.e2e.readme_blocks import reader_env, run_walk, steps
from tests.helpers import JWT_SECRET, token

README = REPO / "README.md"
#: The walks: the API walk with each client, then the `canopy` walk.
WALKS = ("buf", "grpcurl", "cli")


@pytest.fixture
async def demo_suite(services: dict[str, ServiceProcess], proxy: FaultProxy) -> dict[str, str]:
    """What `make run` leaves running: the demo built on the services; their addresses."""
    organization = await asyncio.to_thread(demo.build_organization, proxy.url)
    metadata = (("authorization", f"Bearer {token('demo', system=True)}"),)
    address = {name: service.address for name, service in services.items()}
    async with (
        grpc.aio.insecure_channel(address["integration"]) as integration,
        grpc.aio.insecure_channel(address["discovery"]) as discovery,
        grpc.aio.insecure_channel(address["permissions"]) as permissions,
    ):
        await demo.seed_directory(permissions, metadata)
        await demo.create_and_sync(integration, discovery, permissions, organization, metadata)
    return address


def checkout_like(directory: Path) -> Path:
    """A directory where the README's relative paths resolve as at the top of the checkout."""
    (directory / ".canopy").mkdir(parents=True)
    (directory / ".canopy" / "jwt-secret").write_text(JWT_SECRET)  # as `make run` leaves it
    for tool in (".venv", ".tools"):
        (directory / tool).symlink_to(REPO / tool)
    return directory


def test_every_walk_has_runnable_blocks() -> None:
    markdown = README.read_text()
    for walk in WALKS:
        assert len(steps(markdown, walk)) >= 3, walk


@pytest.mark.timeout(300)
async def test_the_readme_walks_run_as_written(demo_suite: dict[str, str], tmp_path: Path) -> None:
    env = reader_env(
        tmp_path / "home",
        {f"CANOPY_{name.upper()}_ADDRESS": address for name, address in demo_suite.items()},
    )
    (tmp_path / "home").mkdir()
    ports = {
        50051: int(demo_suite["integration"].rsplit(":", 1)[1]),
        50052: int(demo_suite["discovery"].rsplit(":", 1)[1]),
        50053: int(demo_suite["permissions"].rsplit(":", 1)[1]),
    }
    markdown = README.read_text()

    def walk(*names: str) -> str | None:
        """Run walks one after the other, each in a checkout-like directory of its own."""
        for name in names:
            reader = checkout_like(tmp_path / f"reader-{name}")
            outcome = run_walk(markdown, name, reader, env, ports, timeout=90)
            if outcome.failure is not None:
                return outcome.failure
        return None

    # The API walks each end by deleting what they made, so the next starts from the demo; the
    # `canopy` walk only reads the demo (and previews), so it runs beside them.
    failures = await asyncio.gather(
        asyncio.to_thread(walk, "buf", "grpcurl"), asyncio.to_thread(walk, "cli")
    )
    assert not any(failures), "\n\n".join(f for f in failures if f)
