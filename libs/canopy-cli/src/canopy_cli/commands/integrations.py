"""`canopy integrations …`: create, list, show, change and delete integrations."""

from __future__ import annotations

import enum
from typing import Annotated

import typer
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.type.v1 import types_pb2
from canopy_cli import render
from canopy_cli.app import (
    PAGE_SIZE,
    Output,
    OutputOption,
    clients_of,
    console,
    integrations_app,
    show,
)
from canopy_cli.client import CliError, eprint
from canopy_cli.commands.sharing import grantee_of
from canopy_cli.connection_options import (
    NO_SETTINGS,
    ConnectionSettings,
    with_connection_options,
)
from canopy_cli.impact import impact_view, removes_or_renames
from canopy_cli.preview import (
    DryRunOption,
    YesOption,
    confirm_impact,
    make_change,
    preview,
)


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


TenantOption = Annotated[str | None, typer.Option("--tenant", help="A tenant id (t_…).")]
OrgOption = Annotated[str | None, typer.Option("--org", help="An org id (o_…).")]


def _scope(tenant: str | None, org: str | None) -> types_pb2.Scope:
    if bool(tenant) == bool(org):
        raise typer.BadParameter("name exactly one of them", param_hint="--tenant / --org")
    return types_pb2.Scope(tenant_id=tenant) if tenant else types_pb2.Scope(org_id=org or "")


def _initial_permissions(
    permissions: Permissions, grantees: list[str] | None
) -> pb.RootFolderPermissions:
    if not grantees:
        return pb.RootFolderPermissions(mode=_PERMISSION_MODES[permissions])
    if permissions != Permissions.none:
        raise typer.BadParameter(
            "--grantee gives the root folder to those grantees only; leave out --permissions",
            param_hint="--grantee / --permissions",
        )
    return pb.RootFolderPermissions(
        mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_SPECIFIC,
        grantees=[grantee_of(value) for value in grantees],
    )


def _ids(value: str) -> list[str]:
    return [i.strip() for i in value.split(",") if i.strip()]


IncludeOusOption = Annotated[
    str | None,
    typer.Option(
        "--include-ous",
        help="Comma-separated OU ids (ou-…, or the root r-…): mirror only the accounts inside "
        "them; the folders above them stay.",
    ),
]
ExcludeOusOption = Annotated[
    str | None,
    typer.Option("--exclude-ous", help="Comma-separated OU ids left out with all below them."),
]
ExcludeAccountsOption = Annotated[
    str | None,
    typer.Option("--exclude-accounts", help="Comma-separated 12-digit account ids left out."),
]
# The AwsDiscoveryFilters lists, in the order of the --include-ous, --exclude-ous and
# --exclude-accounts values.
_FILTER_OPTIONS = (
    "include_organizational_unit_ids",
    "exclude_organizational_unit_ids",
    "exclude_account_ids",
)


def _set_filters(integration: pb.Integration, *values: str | None) -> list[str]:
    """Put the given filter lists on the integration; the update mask paths of those given
    ("" clears a list)."""
    paths = []
    for name, value in zip(_FILTER_OPTIONS, values, strict=True):
        if value is not None:
            getattr(integration.filters, name).extend(_ids(value))
            paths.append(f"filters.{name}")
    return paths


@integrations_app.command("create")
@with_connection_options(unset_help=None)
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
    event_queue: Annotated[
        str,
        typer.Option(
            help="The SQS queue (URL or ARN) of the organization's change events, in us-east-1 "
            "of the discovery role's account (canopy template discovery --event-queue)."
        ),
    ] = "",
    permissions: Annotated[
        Permissions,
        typer.Option(
            help="Grants of the root folder: none, all-workspaces (with --org: every workspace "
            "of the org) or all-orgs (with --tenant: every org and workspace of the tenant)."
        ),
    ] = Permissions.none,
    include_ous: IncludeOusOption = None,
    exclude_ous: ExcludeOusOption = None,
    exclude_accounts: ExcludeAccountsOption = None,
    exclude_management_account: Annotated[
        bool,
        typer.Option(
            "--exclude-management-account",
            help="No connection for the management account (a service-managed StackSet does "
            "not deploy the member role there).",
        ),
    ] = False,
    grantee: Annotated[
        list[str] | None,
        typer.Option(
            "--grantee",
            help="Grant the root folder to this tenant (t_…), org (o_…) or workspace (w_…) "
            "inside the integration's scope, instead of --permissions; repeat for several.",
        ),
    ] = None,
    output: OutputOption = Output.table,
    connection: ConnectionSettings = NO_SETTINGS,
) -> None:
    """Create an integration; discovery syncs it at once. The connection settings options
    give what every connection inherits."""
    integration = pb.Integration(
        handle=handle,
        scope=_scope(tenant, org),
        discovery_access=pb.AwsDiscoveryAccess(
            role_arn=role_arn, external_id=external_id, event_queue=event_queue
        ),
        member_access=pb.AwsMemberAccess(role_name=member_role),
        handle_prefix=prefix,
        exclude_management_account=exclude_management_account,
    )
    _set_filters(integration, include_ous, exclude_ous, exclude_accounts)
    connection.write(integration.connection_config, "")
    reply = clients_of(ctx).integrations.CreateIntegration(
        rpc.CreateIntegrationRequest(
            integration=integration,
            initial_permissions=_initial_permissions(permissions, grantee),
        )
    )
    created = reply.integration
    show(output, created, render.integration_details(created))
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
        page = clients_of(ctx).integrations.ListIntegrations(request)
        found.integrations.extend(page.integrations)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    show(output, found, render.integrations_table(found.integrations))


@integrations_app.command("show")
def integrationsshow(
    ctx: typer.Context, integration_id: str, output: OutputOption = Output.table
) -> None:
    """Show one integration."""
    reply = clients_of(ctx).integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=integration_id)
    )
    show(output, reply.integration, render.integration_details(reply.integration))


@integrations_app.command("update")
@with_connection_options(
    unset_help="Return this setting to its default (connections that override it keep their "
    "override); repeat for several."
)
def integrations_update(
    ctx: typer.Context,
    integration_id: str,
    handle: Annotated[str | None, typer.Option(help="A new handle.")] = None,
    prefix: Annotated[
        str | None, typer.Option(help='A new handle prefix ("" for none); renames connections.')
    ] = None,
    role_arn: Annotated[str | None, typer.Option(help="A new discovery role ARN.")] = None,
    external_id: Annotated[str | None, typer.Option(help="A new discovery external id.")] = None,
    event_queue: Annotated[
        str | None,
        typer.Option(help='A new event queue (URL or ARN; "" for none: syncs on the schedule).'),
    ] = None,
    member_role: Annotated[str | None, typer.Option(help="A new member role name.")] = None,
    member_external_id: Annotated[
        str | None, typer.Option(help='The member roles\' external id ("" = the discovery one).')
    ] = None,
    sync_interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds between full syncs (60 to 86400; default 900, or 86400 with an event "
            "queue)."
        ),
    ] = None,
    max_delete_fraction: Annotated[
        float | None,
        typer.Option(help="Largest fraction of connections one sync may delete (0 = no guard)."),
    ] = None,
    include_ous: IncludeOusOption = None,
    exclude_ous: ExcludeOusOption = None,
    exclude_accounts: ExcludeAccountsOption = None,
    exclude_management_account: Annotated[
        bool | None,
        typer.Option(
            "--exclude-management-account/--include-management-account",
            help="Leave the management account out of the tree, or mirror it again.",
        ),
    ] = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    output: OutputOption = Output.table,
    connection: ConnectionSettings = NO_SETTINGS,
) -> None:
    """Change an integration: only the fields whose options are given ("" clears a filter
    list). A filter change syncs at once and prunes what is now left out. A change that would
    remove or rename schemas in a workspace is shown first and asked about, unless --yes."""
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
    if event_queue is not None:
        integration.discovery_access.event_queue = event_queue
        paths.append("discovery_access.event_queue")
    if member_role is not None:
        integration.member_access.role_name = member_role
        paths.append("member_access.role_name")
    if member_external_id is not None:
        integration.member_access.external_id = member_external_id
        paths.append("member_access.external_id")
    # A setting named in the mask but unset ("" or --unset) goes back to its default.
    paths.extend(connection.write(integration.connection_config, "connection_config."))
    if sync_interval is not None:
        integration.sync_interval.FromSeconds(int(sync_interval))
        paths.append("sync_interval")
    if max_delete_fraction is not None:
        integration.max_delete_fraction = max_delete_fraction
        paths.append("max_delete_fraction")
    paths += _set_filters(integration, include_ous, exclude_ous, exclude_accounts)
    if exclude_management_account is not None:
        integration.exclude_management_account = exclude_management_account
        paths.append("exclude_management_account")
    if not paths:
        raise CliError(
            "nothing to change: give at least one option (canopy integrations update --help)"
        )
    stub = clients_of(ctx).integrations
    request = rpc.UpdateIntegrationRequest(
        integration=integration, update_mask=FieldMask(paths=paths)
    )

    def pin_etag(pinned: rpc.UpdateIntegrationRequest) -> None:
        current = stub.GetIntegration(rpc.GetIntegrationRequest(id=integration_id))
        pinned.integration.etag = current.integration.etag

    reply = make_change(
        stub.UpdateIntegration, request, dry_run=dry_run, yes=yes, output=output, pin_etag=pin_etag
    )
    if reply is not None:
        show(output, reply.integration, render.integration_details(reply.integration))


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
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    output: OutputOption = Output.table,
) -> None:
    """Delete an integration and its whole tree (every workspace loses its schemas). Shows
    what would go and asks for the handle; with --confirm, asks yes or no if workspaces would
    lose schemas, unless --yes."""
    stub = clients_of(ctx).integrations
    current = stub.GetIntegration(rpc.GetIntegrationRequest(id=integration_id)).integration
    if confirm is not None:
        _check_handle(current, confirm)
    request = rpc.DeleteIntegrationRequest(
        id=current.id, confirm_handle=current.handle, etag=current.etag
    )
    if dry_run:
        make_change(stub.DeleteIntegration, request, dry_run=True, yes=yes, output=output)
        return
    impact = None if yes else preview(stub.DeleteIntegration, request)
    if confirm is None:
        if impact is not None:  # beside the question, on stdout as typer.prompt is
            console().print(impact_view(impact))
        typed = typer.prompt(
            f"This deletes {current.handle} ({current.id}) and its whole tree, irreversibly.\n"
            f"Type its handle to confirm"
        )
        _check_handle(current, typed)
    elif impact is not None and removes_or_renames(impact):
        confirm_impact(impact)
    stub.DeleteIntegration(request)
    typer.echo(f"deleted {current.handle} ({current.id})")


def _check_handle(current: pb.Integration, typed: str) -> None:
    if typed != current.handle:
        raise CliError(
            f"{typed!r} is not the handle of {current.id} ({current.handle!r}): nothing deleted"
        )


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
    typer.echo(clients_of(ctx).integrations.GenerateExternalId(request).external_id)
