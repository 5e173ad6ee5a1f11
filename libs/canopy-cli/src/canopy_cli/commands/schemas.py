"""`canopy schemas …`: a workspace's schemas, and their changes as they happen."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import typer
from google.protobuf.json_format import MessageToJson

from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy_cli import render
from canopy_cli.app import (
    PAGE_SIZE,
    Output,
    OutputOption,
    clients_of,
    schemas_app,
    show,
)
from canopy_cli.client import eprint
from canopy_cli.streams import follow


@schemas_app.command("list")
def schemas_list(
    ctx: typer.Context, workspace_id: str, output: OutputOption = Output.table
) -> None:
    """A workspace's schemas, and the revision `schemas watch --after` continues from.

    Pages come in connection id order and each is read when it is fetched: while the workspace
    changes, a later page may already show a change after the revision, which the watch from it
    repeats."""
    request = wrpc.ListWorkspaceSchemasRequest(workspace_id=workspace_id, page_size=PAGE_SIZE)
    found = wrpc.ListWorkspaceSchemasResponse()
    while True:
        page = clients_of(ctx).schemas.ListWorkspaceSchemas(request)
        found.schemas.extend(page.schemas)
        found.revision = page.revision  # every page repeats the first page's
        found.page_revision = page.page_revision
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    found.schemas.sort(key=lambda schema: schema.name)  # people look names up
    show(output, found, render.schemas_table(found.schemas, found.revision))


@schemas_app.command("watch")
def schemas_watch(
    ctx: typer.Context,
    workspace_id: str,
    after: Annotated[
        int | None,
        typer.Option(help="Start after this revision (default: now, from schemas list)."),
    ] = None,
    output: OutputOption = Output.table,
) -> None:
    """Print a workspace's schema changes as they happen, one line each, until Ctrl-C or the
    workspace is deleted; if the service restarts, reconnect and go on where it left off."""
    schemas = clients_of(ctx).schemas
    if after is None:
        after = schemas.ListWorkspaceSchemas(
            wrpc.ListWorkspaceSchemasRequest(workspace_id=workspace_id, page_size=1)
        ).revision
    eprint(f"watching {workspace_id} after revision {after} (Ctrl-C stops)")

    def open_stream(after_revision: int) -> Any:
        return schemas.WatchWorkspaceSchemas(
            wrpc.WatchWorkspaceSchemasRequest(
                workspace_id=workspace_id, after_revision=after_revision
            )
        )

    def reconnecting(position: int, error: Exception) -> None:
        eprint(f"the permissions service went away; reconnecting after revision {position}")

    replies: Iterator[wrpc.WatchWorkspaceSchemasResponse] = follow(
        open_stream, after, on_reconnect=reconnecting
    )
    try:
        for reply in replies:
            for event in reply.events:
                if output == Output.json:
                    typer.echo(MessageToJson(event, indent=None))
                else:
                    typer.echo(render.schema_event_line(event))
    except KeyboardInterrupt:
        pass
