"""`canopy-token`: mint a bearer token for operators and scripts.

canopy-token --subject alice --owner t_acme --member w_ops
canopy-token --system
"""

from __future__ import annotations

import argparse
import sys

from canopy_core.auth import Role, mint_token, signing_secret
from canopy_core.settings import ServiceSettings


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        prog="canopy-token",
        description="Mint a Canopy bearer token signed with CANOPY_JWT_SECRET "
        "(or the development secret under .canopy/).",
    )
    parser.add_argument("--subject", default="operator", help="the token's subject (sub)")
    parser.add_argument(
        "--owner", action="append", default=[], metavar="ID", help="owner of a t_/o_/w_ id"
    )
    parser.add_argument(
        "--member", action="append", default=[], metavar="ID", help="member of a t_/o_/w_ id"
    )
    parser.add_argument("--system", action="store_true", help="a service-to-service token")
    parser.add_argument("--ttl", type=float, default=3600, help="lifetime in seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print a token on stdout."""
    args = build_parser().parse_args(argv)
    settings = ServiceSettings()
    secret = signing_secret(settings)
    if secret is None:
        print("canopy-token: needs CANOPY_JWT_SECRET (HS256)", file=sys.stderr)
        return 2
    roles: dict[str, Role] = {i: Role.MEMBER for i in args.member}
    roles.update({i: Role.OWNER for i in args.owner})
    print(
        mint_token(
            secret,
            args.subject,
            roles=roles,
            system=args.system,
            ttl_seconds=args.ttl,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
