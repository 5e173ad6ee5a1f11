"""`python -m canopy_integration`: run the integration service."""

from __future__ import annotations

from canopy_core.server import run
from canopy_integration.server import spec
from canopy_integration.settings import IntegrationSettings


def main() -> None:
    """Serve until SIGTERM."""
    run(spec(), IntegrationSettings)


if __name__ == "__main__":
    main()
