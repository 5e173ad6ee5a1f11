"""`canopy token`: bearer tokens for calling the services by hand."""

from __future__ import annotations

from typing import Annotated

import typer

from canopy_cli.app import (
    app,
)
from canopy_cli.client import CliError, load_settings
from canopy_core.auth import Role, mint_token, signing_secret


@app.command("token")
def mint(
    subject: Annotated[str, typer.Option(help="The token's subject (sub).")] = "operator",
    owner: Annotated[
        list[str] | None, typer.Option(help="Owner of a t_/o_/w_ id; repeat for several.")
    ] = None,
    member: Annotated[
        list[str] | None, typer.Option(help="Member of a t_/o_/w_ id; repeat for several.")
    ] = None,
    system: Annotated[bool, typer.Option("--system", help="A service-to-service token.")] = False,
    ttl: Annotated[float, typer.Option(help="Lifetime in seconds.")] = 3600,
) -> None:
    """Mint a bearer token signed with CANOPY_JWT_SECRET (or the development secret)."""
    settings = load_settings()
    secret = signing_secret(settings)
    if secret is None:
        raise CliError("minting a token needs CANOPY_JWT_SECRET (HS256)")
    roles: dict[str, Role] = {i: Role.MEMBER for i in member or []}
    roles.update({i: Role.OWNER for i in owner or []})
    typer.echo(
        mint_token(
            secret,
            subject,
            roles=roles,
            system=system,
            ttl_seconds=ttl,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    )
