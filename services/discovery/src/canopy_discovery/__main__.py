"""`python -m canopy_discovery`: run the discovery service."""

from __future__ import annotations

from canopy_core.server import run
from canopy_discovery.server import spec
from canopy_discovery.settings import DiscoverySettings


def main() -> None:
    """Serve until SIGTERM."""
    run(spec(), DiscoverySettings)


if __name__ == "__main__":
    main()
