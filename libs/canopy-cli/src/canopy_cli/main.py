"""`canopy`: Canopy's integrations, trees, grants and workspace schemas at a terminal.

Every command calls the services through the generated stubs. Addresses and the token come
from options before the command or from the environment (CANOPY_INTEGRATION_ADDRESS,
CANOPY_DISCOVERY_ADDRESS, CANOPY_PERMISSIONS_ADDRESS, CANOPY_TOKEN); with no token, a system
token is minted from the development secret, so `canopy` works as is beside `make run`.
A failed call prints one line on stderr (`canopy: CODE (REASON) field: message`) and exits 1.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import grpc
import typer
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message
from rich.console import Console, RenderableType
from typer.core import TyperGroup

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.type.v1 import types_pb2
from canopy_cli import render
from canopy_cli.client import Clients, CliError, describe_rpc_error, eprint, load_settings
from canopy_core.auth import Role, mint_token, signing_secret
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
            _exit_with(error.message)


def _exit_with(message: str) -> NoReturn:
    typer.echo(f"canopy: {message}", err=True)
    raise typer.Exit(1)


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
schemas_app = typer.Typer(
    help="The schemas of a workspace, and their changes.", no_args_is_help=True
)
app.add_typer(integrations_app, name="integrations")
app.add_typer(template_app, name="template")
app.add_typer(grants_app, name="grants")
app.add_typer(schemas_app, name="schemas")


class Output(enum.StrEnum):
    """How a read prints its result."""

    table = "table"
    json = "json"


class Permissions(enum.StrEnum):
    """The grants a new integration's root folder starts with."""

    none = "none"
    all_workspaces = "all-workspaces"
    all_orgs = "all-orgs"


_PERMISSION_MODES = {
    Permissions.none: pb.ROOT_FOLDER_PERMISSIONS_MODE_NONE,
    Permissions.all_workspaces: pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES,
    Permissions.all_orgs: pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_ORGS,
}

OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="table, or protobuf JSON (one object).")
]
TenantOption = Annotated[str | None, typer.Option("--tenant", help="A tenant id (t_…).")]
OrgOption = Annotated[str | None, typer.Option("--org", help="An org id (o_…).")]


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


def _clients(ctx: typer.Context) -> Clients:
    clients = ctx.find_root().obj
    assert isinstance(clients, Clients)
    return clients


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped or redirected: never cut an id short at 80 columns (`| grep` must find it).
        console = Console(highlight=False, width=PIPE_WIDTH)
    return console


def _show(output: Output, message: Message, renderable: RenderableType) -> None:
    """Print a read's result: the renderable, or the message as protobuf JSON."""
    if output == Output.json:
        typer.echo(MessageToJson(message))
    else:
        _console().print(renderable)


def _scope(tenant: str | None, org: str | None) -> types_pb2.Scope:
    if bool(tenant) == bool(org):
        raise typer.BadParameter("name exactly one of them", param_hint="--tenant / --org")
    return types_pb2.Scope(tenant_id=tenant) if tenant else types_pb2.Scope(org_id=org or "")


def _regions(value: str) -> types_pb2.StringList:
    return types_pb2.StringList(values=[r.strip() for r in value.split(",") if r.strip()])


# ---------------------------------------------------------------------------------------------
# integrations


@integrations_app.command("create")
def integrations_create(
    ctx: typer.Context,
    handle: Annotated[str, typer.Option(help="Unique in the tenant, e.g. aws-prod.")],
    role_arn: Annotated[str, typer.Option(help="The discovery role's ARN.")],
    external_id: Annotated[
        str, typer.Option(help="<tenant or org id>:<8 characters> (integrations external-id).")
    ],
    member_role: Annotated[str, typer.Option(help="The role name in every member account.")],
    tenant: TenantOption = None,
    org: OrgOption = None,
    prefix: Annotated[str, typer.Option(help="Prepended to every connection handle.")] = "",
    regions: Annotated[
        str | None, typer.Option(help="Comma-separated regions, wildcards allowed (us-*).")
    ] = None,
    permissions: Annotated[
        Permissions,
        typer.Option(
            help="Grants of the root folder: none, all-workspaces (with --org: every workspace "
            "of the org) or all-orgs (with --tenant: every org and workspace of the tenant)."
        ),
    ] = Permissions.none,
    output: OutputOption = Output.table,
) -> None:
    """Create an integration; discovery syncs it at once."""
    integration = pb.Integration(
        handle=handle,
        scope=_scope(tenant, org),
        discovery_access=pb.AwsDiscoveryAccess(role_arn=role_arn, external_id=external_id),
        member_access=pb.AwsMemberAccess(role_name=member_role),
        handle_prefix=prefix,
    )
    if regions is not None:
        integration.connection_config.regions.CopyFrom(_regions(regions))
    reply = _clients(ctx).integrations.CreateIntegration(
        rpc.CreateIntegrationRequest(
            integration=integration,
            initial_permissions=pb.RootFolderPermissions(mode=_PERMISSION_MODES[permissions]),
        )
    )
    created = reply.integration
    _show(output, created, render.integration_details(created))
    if output == Output.table:
        eprint(f"discovery is syncing it; see the tree with: canopy tree {created.id}")


@integrations_app.command("list")
def integrations_list(
    ctx: typer.Context,
    tenant: TenantOption = None,
    org: OrgOption = None,
    include_orgs: Annotated[
        bool, typer.Option("--include-orgs", help="With --tenant, its orgs' integrations too.")
    ] = False,
    output: OutputOption = Output.table,
) -> None:
    """List the integrations of a tenant or an org, oldest first."""
    request = rpc.ListIntegrationsRequest(
        scope=_scope(tenant, org), include_org_integrations=include_orgs, page_size=PAGE_SIZE
    )
    found = rpc.ListIntegrationsResponse()
    while True:
        page = _clients(ctx).integrations.ListIntegrations(request)
        found.integrations.extend(page.integrations)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    _show(output, found, render.integrations_table(found.integrations))


@integrations_app.command("show")
def integrations_show(
    ctx: typer.Context, integration_id: str, output: OutputOption = Output.table
) -> None:
    """Show one integration."""
    reply = _clients(ctx).integrations.GetIntegration(rpc.GetIntegrationRequest(id=integration_id))
    _show(output, reply.integration, render.integration_details(reply.integration))


@integrations_app.command("update")
def integrations_update(
    ctx: typer.Context,
    integration_id: str,
    handle: Annotated[str | None, typer.Option(help="A new handle.")] = None,
    prefix: Annotated[
        str | None, typer.Option(help='A new handle prefix ("" for none); renames connections.')
    ] = None,
    role_arn: Annotated[str | None, typer.Option(help="A new discovery role ARN.")] = None,
    external_id: Annotated[str | None, typer.Option(help="A new discovery external id.")] = None,
    member_role: Annotated[str | None, typer.Option(help="A new member role name.")] = None,
    member_external_id: Annotated[
        str | None, typer.Option(help='The member roles\' external id ("" = the discovery one).')
    ] = None,
    regions: Annotated[
        str | None, typer.Option(help='Comma-separated regions ("" for the default, *).')
    ] = None,
    sync_interval: Annotated[
        float | None, typer.Option(help="Seconds between syncs (60 to 86400).")
    ] = None,
    max_delete_fraction: Annotated[
        float | None,
        typer.Option(help="Largest fraction of connections one sync may delete (0 = no guard)."),
    ] = None,
    output: OutputOption = Output.table,
) -> None:
    """Change an integration: only the fields whose options are given."""
    integration = pb.Integration(id=integration_id)
    paths: list[str] = []
    if handle is not None:
        integration.handle = handle
        paths.append("handle")
    if prefix is not None:
        integration.handle_prefix = prefix
        paths.append("handle_prefix")
    if role_arn is not None:
        integration.discovery_access.role_arn = role_arn
        paths.append("discovery_access.role_arn")
    if external_id is not None:
        integration.discovery_access.external_id = external_id
        paths.append("discovery_access.external_id")
    if member_role is not None:
        integration.member_access.role_name = member_role
        paths.append("member_access.role_name")
    if member_external_id is not None:
        integration.member_access.external_id = member_external_id
        paths.append("member_access.external_id")
    if regions is not None:
        if regions.strip():
            integration.connection_config.regions.CopyFrom(_regions(regions))
        paths.append("connection_config.regions")  # named but unset: back to the default
    if sync_interval is not None:
        integration.sync_interval.FromSeconds(int(sync_interval))
        paths.append("sync_interval")
    if max_delete_fraction is not None:
        integration.max_delete_fraction = max_delete_fraction
        paths.append("max_delete_fraction")
    if not paths:
        raise CliError(
            "nothing to change: give at least one option (canopy integrations update --help)"
        )
    reply = _clients(ctx).integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(integration=integration, update_mask=FieldMask(paths=paths))
    )
    _show(output, reply.integration, render.integration_details(reply.integration))


@integrations_app.command("delete")
def integrations_delete(
    ctx: typer.Context,
    integration_id: str,
    confirm: Annotated[
        str | None,
        typer.Option(
            "--confirm", metavar="HANDLE", help="The integration's handle, to not be asked."
        ),
    ] = None,
) -> None:
    """Delete an integration and its whole tree (every workspace loses its schemas)."""
    clients = _clients(ctx)
    current = clients.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=integration_id)
    ).integration
    if confirm is None:
        confirm = typer.prompt(
            f"This deletes {current.handle} ({current.id}) and its whole tree, irreversibly.\n"
            f"Type its handle to confirm"
        )
    if confirm != current.handle:
        raise CliError(
            f"{confirm!r} is not the handle of {current.id} ({current.handle!r}): nothing deleted"
        )
    clients.integrations.DeleteIntegration(
        rpc.DeleteIntegrationRequest(id=current.id, confirm_handle=confirm, etag=current.etag)
    )
    typer.echo(f"deleted {current.handle} ({current.id})")


@integrations_app.command("external-id")
def integrations_external_id(
    ctx: typer.Context,
    tenant: TenantOption = None,
    org: OrgOption = None,
    suffix: Annotated[
        str | None, typer.Option(help="8 characters [a-z0-9] instead of random ones.")
    ] = None,
) -> None:
    """Generate an external id for the roles' trust policies."""
    request = rpc.GenerateExternalIdRequest(scope=_scope(tenant, org))
    if suffix is not None:
        request.suffix = suffix
    typer.echo(_clients(ctx).integrations.GenerateExternalId(request).external_id)


# ---------------------------------------------------------------------------------------------
# discovery


@app.command("test-access")
def check_access(
    ctx: typer.Context,
    integration_id: Annotated[
        str | None, typer.Option(help="Test the discovery access of this integration.")
    ] = None,
    role_arn: Annotated[str | None, typer.Option(help="A discovery role not saved yet.")] = None,
    external_id: Annotated[str | None, typer.Option(help="Its external id.")] = None,
    members: Annotated[
        bool, typer.Option("--members", help="Also assume the member role in a few accounts.")
    ] = False,
    output: OutputOption = Output.table,
) -> None:
    """Can Canopy assume the discovery role and read the organization? Exits 1 if not."""
    if integration_id and not (role_arn or external_id):
        request = drpc.TestDiscoveryAccessRequest(integration_id=integration_id)
    elif role_arn and external_id and not integration_id:
        request = drpc.TestDiscoveryAccessRequest(
            access=pb.AwsDiscoveryAccess(role_arn=role_arn, external_id=external_id)
        )
    else:
        raise typer.BadParameter(
            "give --integration-id, or --role-arn with --external-id",
            param_hint="--integration-id / --role-arn / --external-id",
        )
    if members and not integration_id:
        raise typer.BadParameter("needs --integration-id", param_hint="--members")
    discovery = _clients(ctx).discovery
    reply = discovery.TestDiscoveryAccess(request)
    member_reply = (
        discovery.TestMemberAccess(drpc.TestMemberAccessRequest(integration_id=integration_id))
        if members and integration_id
        else None
    )
    if output == Output.json:
        typer.echo(MessageToJson(reply))
        if member_reply is not None:
            typer.echo(MessageToJson(member_reply))
    else:
        if reply.ok:
            typer.echo(
                f"ok: organization {reply.organization_id} (management account "
                f"{reply.management_account_id}, root {reply.root_id}), "
                f"role in account {reply.account_id}"
            )
        else:
            typer.echo(f"not ok: {render.enum_label(reply, 'reason')}: {reply.message}")
        if member_reply is not None:
            _console().print(render.member_access_table(member_reply.results))
    member_failed = member_reply is not None and not all(r.ok for r in member_reply.results)
    if not reply.ok or member_failed:
        raise typer.Exit(1)


def _template(
    ctx: typer.Context,
    kind: rpc.RoleTemplateKind.ValueType,
    role_name: str | None,
    external_id: str | None,
    integration_id: str | None,
    out: Path | None,
    output: Output,
) -> None:
    reply = _clients(ctx).integrations.RenderRoleTemplate(
        rpc.RenderRoleTemplateRequest(
            kind=kind,
            role_name=role_name or "",
            external_id=external_id or "",
            integration_id=integration_id or "",
        )
    )
    if output == Output.json:
        typer.echo(MessageToJson(reply))
        return
    if out is None:
        typer.echo(reply.template_yaml, nl=not reply.template_yaml.endswith("\n"))
        return
    out.write_text(reply.template_yaml)
    eprint(f"wrote {out} (trusts AWS account {reply.trusted_account_id})")


RoleNameOption = Annotated[
    str | None, typer.Option(help="The IAM role name (default: the integration's).")
]
TemplateExternalIdOption = Annotated[
    str | None, typer.Option(help="The external id (default: the integration's).")
]
TemplateIntegrationOption = Annotated[
    str | None, typer.Option(help="Take the role name and external id from this integration.")
]
OutOption = Annotated[
    Path | None, typer.Option("--out", help="Write the YAML to this file instead of stdout.")
]


@template_app.command("discovery")
def template_discovery(
    ctx: typer.Context,
    role_name: RoleNameOption = None,
    external_id: TemplateExternalIdOption = None,
    integration_id: TemplateIntegrationOption = None,
    out: OutOption = None,
    output: OutputOption = Output.table,
) -> None:
    """The stack creating the discovery role in the management account."""
    kind = rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE
    _template(ctx, kind, role_name, external_id, integration_id, out, output)


@template_app.command("member")
def template_member(
    ctx: typer.Context,
    role_name: RoleNameOption = None,
    external_id: TemplateExternalIdOption = None,
    integration_id: TemplateIntegrationOption = None,
    out: OutOption = None,
    output: OutputOption = Output.table,
) -> None:
    """The StackSet template creating the member role in every member account."""
    kind = rpc.ROLE_TEMPLATE_KIND_MEMBER_ROLE_STACK_SET
    _template(ctx, kind, role_name, external_id, integration_id, out, output)


@app.command("sync")
def sync(
    ctx: typer.Context,
    integration_id: str,
    confirm_deletions: Annotated[
        bool,
        typer.Option(
            "--confirm-deletions", help="Apply even if it deletes more than the guard allows."
        ),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Follow the run live until it ends; exit 1 unless it succeeds."
        ),
    ] = False,
    output: OutputOption = Output.table,
) -> None:
    """Sync an integration with its organization now."""
    discovery = _clients(ctx).discovery
    run = discovery.SyncIntegration(
        drpc.SyncIntegrationRequest(
            integration_id=integration_id, confirm_deletions=confirm_deletions
        )
    ).run
    if not wait:
        if output == Output.json:
            typer.echo(MessageToJson(run))
        else:
            typer.echo(f"{run.id} {render.enum_label(run, 'state')}")
            eprint(f"follow it with: canopy sync {integration_id} --wait")
        return
    stream = discovery.WatchSyncRun(drpc.WatchSyncRunRequest(id=run.id))
    try:
        if output == Output.json:
            for update in stream:
                run = update.run
                if run.state in render.TERMINAL_RUN_STATES:
                    break
            typer.echo(MessageToJson(run))
        else:
            run = _follow(stream, run)
            _console().print(render.run_outcome(run))
    except KeyboardInterrupt:
        eprint(f"stopped following {run.id}; it goes on (`canopy sync {integration_id} --wait`)")
        raise typer.Exit(130) from None
    finally:
        stream.cancel()
    if run.state not in render.TERMINAL_RUN_STATES:
        raise CliError(f"the run {run.id} stream ended while {render.enum_label(run, 'state')}")
    if run.state != dpb.SYNC_RUN_STATE_SUCCEEDED:
        raise typer.Exit(1)


def _follow(stream: Any, run: dpb.SyncRun) -> dpb.SyncRun:
    """Show a run's progress live until it reaches a final state; the last run seen."""
    with render.progress_display(_console()) as progress:
        task = progress.add_task(
            render.enum_label(run, "state"), total=None, counters=render.progress_counters(run)
        )
        for update in stream:
            run = update.run
            done = run.state in render.TERMINAL_RUN_STATES
            progress.update(
                task,
                description=render.enum_label(run, "state"),
                counters=render.progress_counters(run),
                total=1 if done else None,
                completed=1 if done else 0,
            )
            if done:
                break
    return run


# ---------------------------------------------------------------------------------------------
# tree, grants, attachments


@app.command("tree")
def tree(ctx: typer.Context, integration_id: str, output: OutputOption = Output.table) -> None:
    """Show an integration's folders and connections as a tree."""
    reply = _clients(ctx).tree.GetConnectionTree(
        tree_rpc.GetConnectionTreeRequest(integration_id=integration_id)
    )
    _show(output, reply.tree, render.connection_tree(reply.tree))


def _item(item_id: str) -> dict[str, str]:
    """The oneof `item` of the permission and attachment requests."""
    if item_id.startswith("f_"):
        return {"folder_id": item_id}
    if item_id.startswith("c_"):
        return {"connection_id": item_id}
    raise typer.BadParameter(
        f"{item_id!r} is neither a folder (f_…) nor a connection (c_…)", param_hint="ITEM_ID"
    )


def _grantee(value: str) -> types_pb2.Grantee:
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
def grants_show(ctx: typer.Context, item_id: str, output: OutputOption = Output.table) -> None:
    """The direct and inherited grants of a folder (f_…) or connection (c_…)."""
    reply = _clients(ctx).permissions.GetPermissions(prpc.GetPermissionsRequest(**_item(item_id)))
    _show(output, reply.permissions, render.permissions_table(reply.permissions))


@grants_app.command("set")
def grants_set(
    ctx: typer.Context,
    item_id: str,
    grantee: Annotated[
        list[str] | None,
        typer.Option("--grantee", help="t_…, o_… or w_…; repeat for several."),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every direct grant.")] = False,
    output: OutputOption = Output.table,
) -> None:
    """Replace the direct grants of a folder (f_…) or connection (c_…)."""
    grantees = [_grantee(value) for value in grantee or []]
    if bool(grantees) == clear:
        raise typer.BadParameter(
            "give --grantee (one or more), or --clear to remove every grant",
            param_hint="--grantee / --clear",
        )
    reply = _clients(ctx).permissions.SetPermissions(
        prpc.SetPermissionsRequest(grantees=grantees, **_item(item_id))
    )
    _show(output, reply.permissions, render.permissions_table(reply.permissions))


@app.command("attach")
def attach(
    ctx: typer.Context, workspace_id: str, item_id: str, output: OutputOption = Output.table
) -> None:
    """Attach a folder (every connection below it) or a connection to a workspace."""
    reply = _clients(ctx).schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id=workspace_id, **_item(item_id))
    )
    if output == Output.json:
        typer.echo(MessageToJson(reply.attachment))
    else:
        typer.echo(f"attached {item_id} to {workspace_id} ({reply.attachment.id})")


@app.command("detach")
def detach(ctx: typer.Context, workspace_id: str, item_id: str) -> None:
    """Detach a folder or connection from a workspace."""
    _clients(ctx).schemas.DetachSchema(
        wrpc.DetachSchemaRequest(workspace_id=workspace_id, **_item(item_id))
    )
    typer.echo(f"detached {item_id} from {workspace_id}")


# ---------------------------------------------------------------------------------------------
# workspace schemas


@schemas_app.command("list")
def schemas_list(
    ctx: typer.Context, workspace_id: str, output: OutputOption = Output.table
) -> None:
    """A workspace's schemas, and the revision `schemas watch --after` continues from."""
    request = wrpc.ListWorkspaceSchemasRequest(workspace_id=workspace_id, page_size=PAGE_SIZE)
    found = wrpc.ListWorkspaceSchemasResponse()
    while True:
        page = _clients(ctx).schemas.ListWorkspaceSchemas(request)
        found.schemas.extend(page.schemas)
        found.revision = page.revision
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    _show(output, found, render.schemas_table(found.schemas, found.revision))


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
    workspace is deleted."""
    schemas = _clients(ctx).schemas
    if after is None:
        after = schemas.ListWorkspaceSchemas(
            wrpc.ListWorkspaceSchemasRequest(workspace_id=workspace_id, page_size=1)
        ).revision
    eprint(f"watching {workspace_id} after revision {after} (Ctrl-C stops)")
    stream = schemas.WatchWorkspaceSchemas(
        wrpc.WatchWorkspaceSchemasRequest(workspace_id=workspace_id, after_revision=after)
    )
    try:
        for reply in stream:
            for event in reply.events:
                if output == Output.json:
                    typer.echo(MessageToJson(event, indent=None))
                else:
                    typer.echo(render.schema_event_line(event))
    except KeyboardInterrupt:
        pass
    finally:
        stream.cancel()


# ---------------------------------------------------------------------------------------------
# tokens


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
