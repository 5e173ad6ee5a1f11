"""`canopy`'s root command and what every command group shares: the options naming the
services and the token, the stubs they open, and how results and failures are printed.

A failed call prints one line on stderr (`canopy: CODE (REASON) field: message`) and exits 1.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import grpc
import typer
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message
from rich.console import Console, RenderableType
from typer.core import TyperGroup

from canopy_cli.client import Clients, CliError, describe_rpc_error
from canopy_core.tls import channel_credentials

PAGE_SIZE = 100
PIPE_WIDTH = 1000


class _CanopyGroup(TyperGroup):
    """The root command: turns every failed call into one line on stderr and exit status 1."""

    def invoke(self, ctx: Any) -> Any:
        """Run the command; report gRPC and CLI failures without a traceback."""
        try:
            return super().invoke(ctx)
        except grpc.RpcError as error:
            line = describe_rpc_error(error)
            clients = ctx.obj
            if error.code() == grpc.StatusCode.UNAUTHENTICATED and isinstance(clients, Clients):
                line += clients.token_hint()
            _exit_with(line)
        except CliError as error:
            _exit_with(error.message, error.exit_code)


def _exit_with(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"canopy: {message}", err=True)
    raise typer.Exit(code)


app = typer.Typer(
    name="canopy",
    help="Canopy at a terminal: integrations, connection trees, grants, workspace schemas.",
    cls=_CanopyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold the bearer token
)
integrations_app = typer.Typer(
    help="Create, list, show, change and delete integrations.", no_args_is_help=True
)
template_app = typer.Typer(
    help="CloudFormation of the IAM roles an integration needs.", no_args_is_help=True
)
grants_app = typer.Typer(help="Who may use a folder or connection.", no_args_is_help=True)
folders_app = typer.Typer(help="Show and rename the folders of a tree.", no_args_is_help=True)
connections_app = typer.Typer(
    help="Show, rename and configure the connections of a tree.", no_args_is_help=True
)
schemas_app = typer.Typer(
    help="The schemas of a workspace, and their changes.", no_args_is_help=True
)
app.add_typer(integrations_app, name="integrations")
app.add_typer(template_app, name="template")
app.add_typer(grants_app, name="grants")
app.add_typer(folders_app, name="folders")
app.add_typer(connections_app, name="connections")
workspace_app = typer.Typer(
    help="A workspace's Steampipe configuration, written to a directory and kept current.",
    no_args_is_help=True,
)
app.add_typer(schemas_app, name="schemas")
app.add_typer(workspace_app, name="workspace")


class Output(enum.StrEnum):
    """How a read prints its result."""

    table = "table"
    json = "json"


OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="table, or protobuf JSON (one object).")
]


@app.callback()
def main(
    ctx: typer.Context,
    integration: Annotated[
        str,
        typer.Option(
            "--integration",
            envvar="CANOPY_INTEGRATION_ADDRESS",
            help="Address of the integration service.",
        ),
    ] = "127.0.0.1:50051",
    discovery: Annotated[
        str,
        typer.Option(
            "--discovery",
            envvar="CANOPY_DISCOVERY_ADDRESS",
            help="Address of the discovery service.",
        ),
    ] = "127.0.0.1:50052",
    permissions: Annotated[
        str,
        typer.Option(
            "--permissions",
            envvar="CANOPY_PERMISSIONS_ADDRESS",
            help="Address of the permissions service.",
        ),
    ] = "127.0.0.1:50053",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="CANOPY_TOKEN",
            help="Bearer token; default: a system token from the development secret.",
            show_default=False,
        ),
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-ca",
            envvar="CANOPY_TLS_CA_FILE",
            help="Call the services over TLS, checking their certificates against this CA.",
            show_default=False,
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            envvar="CANOPY_TLS_CERT_FILE",
            help="Client certificate (with --tls-key) for services that require one.",
            show_default=False,
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            "--tls-key",
            envvar="CANOPY_TLS_KEY_FILE",
            help="Private key of --tls-cert.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Canopy at a terminal: integrations, connection trees, grants, workspace schemas."""
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give --tls-cert and --tls-key together", param_hint="--tls-key")
    try:
        tls = channel_credentials(tls_ca, tls_cert, tls_key)
    except OSError as error:
        raise typer.BadParameter(f"cannot read {error.filename}: {error.strerror}") from None
    clients = Clients(integration, discovery, permissions, token=token or None, tls=tls)
    ctx.obj = clients
    ctx.call_on_close(clients.close)


def clients_of(ctx: typer.Context) -> Clients:
    clients = ctx.find_root().obj
    assert isinstance(clients, Clients)
    return clients


def console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped or redirected: never cut an id short at 80 columns (`| grep` must find it).
        console = Console(highlight=False, width=PIPE_WIDTH)
    return console


def show(output: Output, message: Message, renderable: RenderableType) -> None:
    """Print a read's result: the renderable, or the message as protobuf JSON."""
    if output == Output.json:
        typer.echo(MessageToJson(message))
    else:
        console().print(renderable)
