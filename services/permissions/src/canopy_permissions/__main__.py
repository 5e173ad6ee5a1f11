"""`python -m canopy_permissions`: run the permissions service."""

from __future__ import annotations

from canopy_core.server import run
from canopy_permissions.server import spec
from canopy_permissions.settings import PermissionsSettings


def main() -> None:
    """Serve until SIGTERM."""
    run(spec(), PermissionsSettings)


if __name__ == "__main__":
    main()
