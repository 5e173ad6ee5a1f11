"""`canopy`: Canopy's integrations, trees, grants and workspace schemas at a terminal.

Every command calls the services through the generated stubs. Addresses and the token come
from options before the command or from the environment (CANOPY_INTEGRATION_ADDRESS,
CANOPY_DISCOVERY_ADDRESS, CANOPY_PERMISSIONS_ADDRESS, CANOPY_TOKEN); with no token, a system
token is minted from the development secret, so `canopy` works as is beside `make run`.
A failed call prints one line on stderr (`canopy: CODE (REASON) field: message`) and exits 1.
The root command is in `canopy_cli.app`; each command group in a module of `canopy_cli.commands`.
"""

from canopy_cli.app import app
from canopy_cli.commands import (
    discovery,
    integrations,
    schemas,
    sharing,
    tokens,
    tree,
    workspace,
)

__all__ = ["app", "discovery", "integrations", "schemas", "sharing", "tokens", "tree", "workspace"]
