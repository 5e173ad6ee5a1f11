"""`canopy tree`, `canopy grants …`, `canopy attach` and `canopy detach`: the tree, who may use
it, and which workspaces use it."""

from __future__ import annotations

from typing import Annotated

import typer
from google.protobuf.json_format import MessageToJson

from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.type.v1 import types_pb2
from canopy_cli import render
from canopy_cli.app import (
    Output,
    OutputOption,
    app,
    clients_of,
    grants_app,
    show,
)
from canopy_cli.preview import DryRunOption, YesOption, make_change


@app.command("tree")
def tree(ctx: typer.Context, integration_id: str, output: OutputOption = Output.table) -> None:
    """Show an integration's folders and connections as a tree."""
    reply = clients_of(ctx).tree.GetConnectionTree(
        tree_rpc.GetConnectionTreeRequest(integration_id=integration_id)
    )
    show(output, reply.tree, render.connection_tree(reply.tree))


def _item(item_id: str) -> dict[str, str]:
    """The oneof `item` of the permission and attachment requests."""
    if item_id.startswith("f_"):
        return {"folder_id": item_id}
    if item_id.startswith("c_"):
        return {"connection_id": item_id}
    raise typer.BadParameter(
        f"{item_id!r} is neither a folder (f_…) nor a connection (c_…)", param_hint="ITEM_ID"
    )


def grantee_of(value: str) -> types_pb2.Grantee:
    if value.startswith("t_"):
        return types_pb2.Grantee(tenant_id=value)
    if value.startswith("o_"):
        return types_pb2.Grantee(org_id=value)
    if value.startswith("w_"):
        return types_pb2.Grantee(workspace_id=value)
    raise typer.BadParameter(
        f"{value!r} is not a tenant (t_…), org (o_…) or workspace (w_…)", param_hint="--grantee"
    )


@grants_app.command("show")
def grantsshow(ctx: typer.Context, item_id: str, output: OutputOption = Output.table) -> None:
    """The direct and inherited grants of a folder (f_…) or connection (c_…)."""
    reply = clients_of(ctx).permissions.GetPermissions(prpc.GetPermissionsRequest(**_item(item_id)))
    show(output, reply.permissions, render.permissions_table(reply.permissions))


@grants_app.command("set")
def grants_set(
    ctx: typer.Context,
    item_id: str,
    grantee: Annotated[
        list[str] | None,
        typer.Option("--grantee", help="t_…, o_… or w_…; repeat for several."),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every direct grant.")] = False,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    output: OutputOption = Output.table,
) -> None:
    """Replace the direct grants of a folder (f_…) or connection (c_…). If workspaces would
    lose schemas, shows which and asks first, unless --yes."""
    grantees = [grantee_of(value) for value in grantee or []]
    if bool(grantees) == clear:
        raise typer.BadParameter(
            "give --grantee (one or more), or --clear to remove every grant",
            param_hint="--grantee / --clear",
        )
    item = _item(item_id)
    request = prpc.SetPermissionsRequest(grantees=grantees)
    for name, value in item.items():
        setattr(request, name, value)
    stub = clients_of(ctx).permissions

    def pin_etag(pinned: prpc.SetPermissionsRequest) -> None:
        pinned.etag = stub.GetPermissions(prpc.GetPermissionsRequest(**item)).permissions.etag

    reply = make_change(
        stub.SetPermissions, request, dry_run=dry_run, yes=yes, output=output, pin_etag=pin_etag
    )
    if reply is not None:
        show(output, reply.permissions, render.permissions_table(reply.permissions))


@app.command("attach")
def attach(
    ctx: typer.Context, workspace_id: str, item_id: str, output: OutputOption = Output.table
) -> None:
    """Attach a folder (every connection below it) or a connection to a workspace."""
    reply = clients_of(ctx).schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id=workspace_id, **_item(item_id))
    )
    if output == Output.json:
        typer.echo(MessageToJson(reply.attachment))
    else:
        typer.echo(f"attached {item_id} to {workspace_id} ({reply.attachment.id})")


@app.command("detach")
def detach(ctx: typer.Context, workspace_id: str, item_id: str) -> None:
    """Detach a folder or connection from a workspace."""
    clients_of(ctx).schemas.DetachSchema(
        wrpc.DetachSchemaRequest(workspace_id=workspace_id, **_item(item_id))
    )
    typer.echo(f"detached {item_id} from {workspace_id}")
