"""`canopy test-access`, `canopy template …` and `canopy sync`: what discovery checks, the
roles it needs, and syncs followed live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf.json_format import MessageToJson

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.type.v1 import types_pb2
from canopy_cli import render
from canopy_cli.app import (
    Output,
    OutputOption,
    app,
    clients_of,
    console,
    show,
    template_app,
)
from canopy_cli.client import CliError, eprint
from canopy_cli.impact import dry_run_view


def _member_scope(tenant: str | None, org: str | None, external_id: str) -> types_pb2.Scope:
    """--tenant or --org; neither: the owner the external id names."""
    if tenant and org:
        raise typer.BadParameter("name at most one of them", param_hint="--tenant / --org")
    if tenant:
        return types_pb2.Scope(tenant_id=tenant)
    owner = org or external_id.partition(":")[0]
    return (
        types_pb2.Scope(org_id=owner)
        if owner.startswith("o_")
        else types_pb2.Scope(tenant_id=owner)
    )


@app.command("test-access")
def check_access(
    ctx: typer.Context,
    integration_id: Annotated[
        str | None, typer.Option(help="Test the discovery access of this integration.")
    ] = None,
    role_arn: Annotated[str | None, typer.Option(help="A discovery role not saved yet.")] = None,
    external_id: Annotated[str | None, typer.Option(help="Its external id.")] = None,
    event_queue: Annotated[
        str | None, typer.Option(help="With --role-arn: an event queue (URL or ARN) to check too.")
    ] = None,
    members: Annotated[
        bool, typer.Option("--members", help="Also assume the member role in a few accounts.")
    ] = False,
    member_role: Annotated[
        str | None,
        typer.Option(help="With --role-arn --members: the member role name not saved yet."),
    ] = None,
    member_external_id: Annotated[
        str | None,
        typer.Option(help="With --member-role: its external id (default: the discovery one)."),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            help="With --member-role: the tenant the integration will be created in "
            "(default: the external id's owner).",
        ),
    ] = None,
    org: Annotated[
        str | None,
        typer.Option("--org", help="With --member-role: the org it will be created in instead."),
    ] = None,
    account_ids: Annotated[
        list[str] | None,
        typer.Option(
            "--account-id", help="With --members: test this account (repeat); default a sample."
        ),
    ] = None,
    sample_size: Annotated[
        int, typer.Option(help="With --members and no --account-id: accounts to sample (0: 5).")
    ] = 0,
    output: OutputOption = Output.table,
) -> None:
    """Can Canopy assume the discovery role, read the organization and follow its event queue?
    With --members, can it assume the member role in accounts of that organization (before
    creating the integration: --role-arn, --external-id, --member-role)? Exits 1 if not."""
    if integration_id and not (role_arn or external_id or event_queue):
        request = drpc.TestDiscoveryAccessRequest(integration_id=integration_id)
    elif role_arn and external_id and not integration_id:
        request = drpc.TestDiscoveryAccessRequest(
            access=pb.AwsDiscoveryAccess(
                role_arn=role_arn, external_id=external_id, event_queue=event_queue or ""
            )
        )
    else:
        raise typer.BadParameter(
            "give --integration-id, or --role-arn with --external-id",
            param_hint="--integration-id / --role-arn / --external-id",
        )
    member_request = None
    if members and integration_id:
        member_request = drpc.TestMemberAccessRequest(integration_id=integration_id)
    elif members:
        if not member_role:
            raise typer.BadParameter("needs --member-role with --role-arn", param_hint="--members")
        member_request = drpc.TestMemberAccessRequest(
            unsaved=drpc.UnsavedMemberAccess(
                scope=_member_scope(tenant, org, external_id or ""),
                discovery_access=pb.AwsDiscoveryAccess(
                    role_arn=role_arn or "", external_id=external_id or ""
                ),
                member_access=pb.AwsMemberAccess(
                    role_name=member_role, external_id=member_external_id or ""
                ),
            )
        )
    elif member_role or member_external_id or tenant or org or account_ids or sample_size:
        raise typer.BadParameter(
            "are for --members", param_hint="--member-role / --tenant / --org / --account-id"
        )
    if member_request is not None:
        member_request.account_ids.extend(account_ids or [])
        member_request.sample_size = sample_size
    discovery = clients_of(ctx).discovery
    reply = discovery.TestDiscoveryAccess(request)
    member_reply = discovery.TestMemberAccess(member_request) if member_request else None
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
        if reply.HasField("event_queue"):
            typer.echo(render.event_queue_check(reply.event_queue))
        if member_reply is not None:
            if member_reply.HasField("organization"):
                typer.echo(render.member_access_organization(member_reply))
            console().print(render.member_access_table(member_reply.results))
    member_failed = member_reply is not None and (
        not all(r.ok for r in member_reply.results)
        or (member_reply.HasField("organization") and not member_reply.organization.ok)
    )
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
    event_queue: bool = False,
) -> None:
    reply = clients_of(ctx).integrations.RenderRoleTemplate(
        rpc.RenderRoleTemplateRequest(
            kind=kind,
            role_name=role_name or "",
            external_id=external_id or "",
            integration_id=integration_id or "",
            event_queue=event_queue,
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
    event_queue: Annotated[
        bool,
        typer.Option(
            "--event-queue",
            help="Also create the EventBridge rule and SQS queue of live updates (deploy the "
            "stack in us-east-1; its QueueUrl output goes in --event-queue of integrations).",
        ),
    ] = False,
    out: OutOption = None,
    output: OutputOption = Output.table,
) -> None:
    """The stack creating the discovery role in the management account."""
    kind = rpc.ROLE_TEMPLATE_KIND_DISCOVERY_ROLE
    _template(ctx, kind, role_name, external_id, integration_id, out, output, event_queue)


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
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Crawl now and print what applying the result would do; apply nothing. Exits 1 "
            "if the crawl fails.",
        ),
    ] = False,
    output: OutputOption = Output.table,
) -> None:
    """Sync an integration with its organization now."""
    discovery = clients_of(ctx).discovery
    if dry_run:
        _dry_run(discovery, integration_id, confirm_deletions, output)
        return
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
            console().print(render.run_outcome(run))
    except KeyboardInterrupt:
        eprint(f"stopped following {run.id}; it goes on (`canopy sync {integration_id} --wait`)")
        raise typer.Exit(130) from None
    finally:
        stream.cancel()
    if run.state not in render.TERMINAL_RUN_STATES:
        raise CliError(f"the run {run.id} stream ended while {render.enum_label(run, 'state')}")
    if run.state != dpb.SYNC_RUN_STATE_SUCCEEDED:
        raise typer.Exit(1)


def _dry_run(discovery: Any, integration_id: str, confirm_deletions: bool, output: Output) -> None:
    """Crawl, preview applying the snapshot, print the impact (or why the crawl failed)."""
    run = discovery.SyncIntegration(
        drpc.SyncIntegrationRequest(
            integration_id=integration_id, confirm_deletions=confirm_deletions, validate_only=True
        )
    ).run
    show(output, run, dry_run_view(run))
    if run.state == dpb.SYNC_RUN_STATE_FAILED:
        raise typer.Exit(1)


def _follow(stream: Any, run: dpb.SyncRun) -> dpb.SyncRun:
    """Show a run's progress live until it reaches a final state; the last run seen."""
    with render.progress_display(console()) as progress:
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
