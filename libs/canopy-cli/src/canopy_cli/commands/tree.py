"""`canopy folders …` and `canopy connections …`: one folder or connection of a tree, its
handle, and a connection's settings overrides. Changes are previewed and confirmed as
`canopy_cli.preview` says."""

from __future__ import annotations

from typing import Annotated

import typer
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy_cli.app import Output, OutputOption, clients_of, connections_app, folders_app, show
from canopy_cli.client import CliError
from canopy_cli.connection_options import (
    NO_SETTINGS,
    ConnectionSettings,
    with_connection_options,
)
from canopy_cli.details import connection_details, folder_details
from canopy_cli.preview import DryRunOption, YesOption, make_change

HandleOption = Annotated[
    str | None,
    typer.Option(
        help='A handle of your own (static: syncs keep it); "" returns to the computed one.'
    ),
]


@folders_app.command("show")
def folders_show(ctx: typer.Context, folder_id: str, output: OutputOption = Output.table) -> None:
    """Show one folder (f_…)."""
    folder = clients_of(ctx).tree.GetFolder(tree_rpc.GetFolderRequest(id=folder_id)).folder
    show(output, folder, folder_details(folder))


@folders_app.command("update")
def folders_update(
    ctx: typer.Context,
    folder_id: str,
    handle: HandleOption = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    output: OutputOption = Output.table,
) -> None:
    """Change a folder's handle (unique among its siblings)."""
    if handle is None:
        raise CliError("nothing to change: give --handle (canopy folders update --help)")
    tree = clients_of(ctx).tree
    request = tree_rpc.UpdateFolderRequest(
        folder=tree_pb.Folder(id=folder_id, handle=handle), update_mask=FieldMask(paths=["handle"])
    )

    def pin_etag(pinned: tree_rpc.UpdateFolderRequest) -> None:
        pinned.folder.etag = tree.GetFolder(tree_rpc.GetFolderRequest(id=folder_id)).folder.etag

    reply = make_change(
        tree.UpdateFolder, request, dry_run=dry_run, yes=yes, output=output, pin_etag=pin_etag
    )
    if reply is not None:
        show(output, reply.folder, folder_details(reply.folder))


@connections_app.command("show")
def connections_show(
    ctx: typer.Context, connection_id: str, output: OutputOption = Output.table
) -> None:
    """Show one connection (c_…): its handle, account and settings (overrides marked)."""
    connection = (
        clients_of(ctx)
        .tree.GetConnection(tree_rpc.GetConnectionRequest(id=connection_id))
        .connection
    )
    show(output, connection, connection_details(connection))


@connections_app.command("update")
@with_connection_options(
    unset_help="Remove this override: the connection inherits the integration's setting; "
    "repeat for several."
)
def connections_update(
    ctx: typer.Context,
    connection_id: str,
    handle: HandleOption = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    output: OutputOption = Output.table,
    connection: ConnectionSettings = NO_SETTINGS,
) -> None:
    """Change a connection's handle (its schema name in every workspace) or override the
    settings it inherits from its integration: only what the options give."""
    request = tree_rpc.UpdateConnectionRequest(connection=tree_pb.Connection(id=connection_id))
    paths = connection.write(request.connection.config_overrides, "config_overrides.")
    if handle is not None:
        request.connection.handle = handle
        paths.insert(0, "handle")
    if not paths:
        raise CliError("nothing to change: give an option (canopy connections update --help)")
    request.update_mask.paths.extend(paths)
    tree = clients_of(ctx).tree

    def pin_etag(pinned: tree_rpc.UpdateConnectionRequest) -> None:
        current = tree.GetConnection(tree_rpc.GetConnectionRequest(id=connection_id))
        pinned.connection.etag = current.connection.etag

    reply = make_change(
        tree.UpdateConnection, request, dry_run=dry_run, yes=yes, output=output, pin_etag=pin_etag
    )
    if reply is not None:
        show(output, reply.connection, connection_details(reply.connection))
