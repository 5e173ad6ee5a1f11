"""How Canopy's messages look at a terminal: tables, the connection tree, sync progress and
outcome, workspace schema events. Pure functions of protobuf messages to rich renderables or
strings, so `make run` can print the same tree the `canopy tree` command does."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import integration_pb2 as pb
from canopy.permissions.v1 import permission_service_pb2 as ppb
from canopy.permissions.v1 import workspace_schema_pb2 as wpb
from canopy.type.v1 import types_pb2

TERMINAL_RUN_STATES = frozenset(
    {
        dpb.SYNC_RUN_STATE_SUCCEEDED,
        dpb.SYNC_RUN_STATE_FAILED,
        dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION,
        dpb.SYNC_RUN_STATE_CANCELLED,
    }
)


def enum_label(message: Message, field: str) -> str:
    """An enum field's value name without its type prefix: `ENABLED` for
    `INTEGRATION_STATE_ENABLED`."""
    descriptor = message.DESCRIPTOR.fields_by_name[field]
    enum = descriptor.enum_type
    assert enum is not None, f"{field} is not an enum"
    number = getattr(message, field)
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    return value.name.removeprefix(prefix)


def words(label: str) -> str:
    """`ACCESS_REVOKED` → `access revoked`."""
    return label.replace("_", " ").lower()


def timestamp(value: Timestamp) -> str:
    """A timestamp as ISO 8601 UTC to the second; empty when unset."""
    if not value.seconds and not value.nanos:
        return ""
    return value.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")


def seconds(value: Duration) -> str:
    """A duration as people write it: `0.4s`, `12.3s`, `1m05s`, `15m`, `2h`."""
    total = value.ToTimedelta().total_seconds()
    if total < 60:
        return f"{total:.1f}s"
    minutes, rest = divmod(round(total), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours}h" if hours else ""
    if minutes or (rest and hours):
        text += f"{minutes:02d}m" if hours else f"{minutes}m"
    if rest:
        text += f"{rest:02d}s"
    return text


def scope_label(scope: types_pb2.Scope) -> str:
    """`tenant t_acme` or `org o_ops`."""
    owner = scope.WhichOneof("owner")
    if owner == "tenant_id":
        return f"tenant {scope.tenant_id}"
    if owner == "org_id":
        return f"org {scope.org_id}"
    return ""


def grantee_label(grantee: types_pb2.Grantee) -> str:
    """`tenant t_acme`, `org o_ops` or `workspace w_ops1`."""
    kind = grantee.WhichOneof("grantee")
    if kind is None:
        return ""
    return f"{kind.removesuffix('_id')} {getattr(grantee, kind)}"


def regions_label(config: pb.ConnectionConfig) -> str:
    """The regions an integration's connections query."""
    if config.HasField("regions"):
        return ", ".join(config.regions.values)
    return "* (default)"


def integrations_table(integrations: Iterable[pb.Integration]) -> Table:
    """One row per integration."""
    table = Table(box=None, header_style="bold")
    table.add_column("ID", no_wrap=True)
    for column in ("HANDLE", "SCOPE", "STATE", "PREFIX", "ORGANIZATION"):
        table.add_column(column, overflow="fold")
    for item in integrations:
        state = enum_label(item, "state")
        if item.state_reason:
            state = f"{state} ({item.state_reason})"
        table.add_row(
            item.id,
            item.handle,
            scope_label(item.scope),
            state,
            item.handle_prefix,
            item.organization_id,
        )
    return table


def event_queue_check(check: drpc.EventQueueCheck) -> str:
    """One line on TestDiscoveryAccess's check of the event queue."""
    if not check.ok:
        return f"event queue not ok: {check.reason}: {check.message}"
    line = f"event queue ok: {check.queue_url}"
    if check.dead_letter_queue_arn:
        line += (
            f" (dead-letter queue {check.dead_letter_queue_arn} after "
            f"{check.max_receive_count} receives)"
        )
    if check.reason:
        line += f"\nwarning: {check.reason}: {check.message}"
    return line


def _unmatched_label(unmatched: pb.AwsDiscoveryFilters) -> str:
    ids = [
        *unmatched.include_organizational_unit_ids,
        *unmatched.exclude_organizational_unit_ids,
        *unmatched.exclude_account_ids,
    ]
    return ", ".join(ids) or "(none)"


def integration_details(item: pb.Integration) -> Table:
    """Every field of one integration that a person reads, one per line."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    state = enum_label(item, "state")
    if item.state_reason:
        state = f"{state} ({item.state_reason}): {item.state_message}"
    interval = seconds(item.sync_interval) if item.HasField("sync_interval") else "15m (default)"
    queue = item.event_queue_status
    queue_state = enum_label(queue, "state")
    if queue.reason:
        queue_state = f"{queue_state} ({queue.reason}): {queue.message}"
    fraction = (
        f"{item.max_delete_fraction:g}" if item.HasField("max_delete_fraction") else "0.5 (default)"
    )
    rows = [
        ("id", item.id),
        ("handle", item.handle),
        ("scope", scope_label(item.scope)),
        ("tenant", item.tenant_id),
        ("state", state),
        ("discovery role", item.discovery_access.role_arn),
        ("external id", item.discovery_access.external_id),
        ("event queue", item.discovery_access.event_queue or "(none: syncs on the schedule only)"),
        ("event queue status", queue_state),
        ("member role", item.member_access.role_name),
        ("member external id", item.member_access.external_id or "(the discovery role's)"),
        ("handle prefix", item.handle_prefix),
        ("regions", regions_label(item.connection_config)),
        ("sync interval", interval),
        ("max delete fraction", fraction),
        ("root folder", item.root_folder_id),
        ("organization", item.organization_id),
        ("management account", item.management_account_id),
        ("management account mirrored", "no" if item.exclude_management_account else "yes"),
        ("included OUs", ", ".join(item.filters.include_organizational_unit_ids) or "(all)"),
        ("excluded OUs", ", ".join(item.filters.exclude_organizational_unit_ids) or "(none)"),
        ("excluded accounts", ", ".join(item.filters.exclude_account_ids) or "(none)"),
        ("filter ids not found", _unmatched_label(item.unmatched_filters)),
        ("tree generation", str(item.tree_generation)),
        ("created", timestamp(item.create_time)),
        ("updated", timestamp(item.update_time)),
    ]
    for name, value in rows:
        table.add_row(name, Text(value))
    return table


def _folder_label(folder: tree_pb.Folder, extra: str = "") -> Text:
    label = Text()
    label.append(f"{folder.handle}/", style="bold blue")
    label.append(f"  {folder.title}")
    if folder.handle_mode == tree_pb.HANDLE_MODE_STATIC:
        label.append("  static", style="yellow")
    label.append(f"  {folder.id}", style="dim")
    if extra:
        label.append(f"  {extra}", style="dim")
    return label


def _connection_label(connection: tree_pb.Connection) -> Text:
    label = Text()
    label.append(connection.handle, style="bold green")
    label.append(f"  {connection.account_id}  {connection.account_name}")
    if connection.handle_mode == tree_pb.HANDLE_MODE_STATIC:
        label.append("  static", style="yellow")
    label.append(f"  {connection.id}", style="dim")
    return label


def connection_tree(tree: tree_pb.ConnectionTree) -> Tree:
    """The folders (handle, title) and connections (handle, account id, name) of an
    integration, nested as in the organization."""
    state = enum_label(tree, "integration_state")
    if tree.integration_state_reason:
        state = f"{state} ({tree.integration_state_reason})"
    summary = f"{tree.integration_id} · {state} · generation {tree.generation}"
    root = Tree(_folder_label(tree.root.folder, summary), guide_style="dim")

    def add(branch: Tree, node: tree_pb.FolderNode) -> None:
        for child in node.folders:
            add(branch.add(_folder_label(child.folder)), child)
        for connection in node.connections:
            branch.add(_connection_label(connection))

    add(root, tree.root)
    return root


def permissions_table(permissions: ppb.ItemPermissions) -> Table:
    """The direct and inherited grants of a folder or connection."""
    item = permissions.folder_id or permissions.connection_id
    table = Table(
        box=None,
        header_style="bold",
        title=f"{item} ({scope_label(permissions.scope)})",
        title_justify="left",
    )
    table.add_column("GRANTEE", no_wrap=True)
    table.add_column("HOW", no_wrap=True)
    table.add_column("SINCE", overflow="fold")
    for grant in permissions.direct_grants:
        table.add_row(grantee_label(grant.grantee), "direct", timestamp(grant.create_time))
    for inherited in permissions.inherited_grants:
        table.add_row(
            grantee_label(inherited.grant.grantee),
            f"from {inherited.from_folder_id}",
            timestamp(inherited.grant.create_time),
        )
    if not permissions.direct_grants and not permissions.inherited_grants:
        table.caption = "no grants: no workspace may use it"
    return table


def schemas_table(schemas: Iterable[wpb.WorkspaceSchema], revision: int) -> Table:
    """A workspace's schemas, and the revision to watch after."""
    table = Table(
        box=None,
        header_style="bold",
        caption=f"revision {revision}",
        caption_justify="left",
    )
    table.add_column("SCHEMA", no_wrap=True)
    table.add_column("CONNECTION", no_wrap=True)
    table.add_column("ACCOUNT", no_wrap=True)
    table.add_column("ATTACHED", overflow="fold")
    table.add_column("REGIONS", overflow="fold")
    for schema in schemas:
        attached = (
            f"via {schema.via_folder_id}"
            if schema.attachment_kind == wpb.ATTACHMENT_KIND_FOLDER
            else "direct"
        )
        table.add_row(
            schema.name,
            schema.connection_id,
            schema.account_id,
            attached,
            ", ".join(schema.config.regions),
        )
    return table


def schema_event_line(event: wpb.SchemaEvent) -> str:
    """One line per change of a workspace's schemas: `+ aws_prod (c_…)`, `~ old → new (c_…)`,
    `- name (reason)`."""
    kind = event.WhichOneof("event")
    if kind == "schema_added":
        added = event.schema_added.schema
        return f"+ {added.name} ({added.connection_id})"
    if kind == "schema_renamed":
        renamed = event.schema_renamed
        return f"~ {renamed.old_name} → {renamed.new_name} ({renamed.connection_id})"
    if kind == "schema_removed":
        removed = event.schema_removed
        return f"- {removed.name} ({words(enum_label(removed, 'reason'))})"
    if kind == "schema_config_changed":
        changed = event.schema_config_changed.schema
        return f"* {changed.name} ({changed.connection_id}): configuration changed"
    if kind == "workspace_deleted":
        return f"x workspace {event.workspace_id} deleted"
    return f"? revision {event.revision}: {kind}"


def member_access_organization(reply: drpc.TestMemberAccessResponse) -> str:
    """The organization whose accounts unsaved member access was tested in, or why it was not."""
    organization = reply.organization
    if not organization.ok:
        return (
            f"members not tested: the discovery role failed: "
            f"{enum_label(organization, 'reason')}: {organization.message}"
        )
    return (
        f"members: {len(reply.results)} accounts tested in organization "
        f"{organization.organization_id} ({organization.active_account_count} ACTIVE accounts)"
    )


def member_access_table(results: Iterable[dpb.MemberAccessResult]) -> Table:
    """One row per account whose member role was assumed (or not, and why)."""
    table = Table(box=None, header_style="bold")
    table.add_column("ACCOUNT", no_wrap=True)
    table.add_column("MEMBER ROLE", overflow="fold")
    table.add_column("RESULT", overflow="fold")
    for result in results:
        outcome = "ok" if result.ok else f"{enum_label(result, 'reason')}: {result.message}"
        table.add_row(result.account_id, result.role_arn, outcome)
    return table


def progress_display(console: Console) -> Progress:
    """The live display of a sync run: state, a pulsing bar, and the crawl's counters."""
    return Progress(
        SpinnerColumn(finished_text="✓"),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[counters]}"),
        console=console,
    )


def progress_counters(run: dpb.SyncRun) -> str:
    """OUs, accounts, API calls, throttles, elapsed."""
    progress = run.progress
    return (
        f"{progress.organizational_units_found} OUs · {progress.accounts_found} accounts · "
        f"{progress.api_calls} API calls · {progress.throttled_calls} throttled · "
        f"{seconds(progress.elapsed)}"
    )


_SUMMARY_FIELDS = [
    ("folders_created", "folders created"),
    ("folders_updated", "folders updated"),
    ("folders_moved", "folders moved"),
    ("folders_deleted", "folders deleted"),
    ("connections_created", "connections created"),
    ("connections_updated", "connections updated"),
    ("connections_renamed", "connections renamed"),
    ("connections_moved", "connections moved"),
    ("connections_deleted", "connections deleted"),
    ("accounts_skipped_inactive", "inactive accounts skipped"),
    ("events_emitted", "tree events"),
]


def run_outcome(run: dpb.SyncRun) -> RenderableType:
    """What a finished run did, would do, or why it failed."""
    state = enum_label(run, "state")
    head = Text()
    head.append(
        state, style="bold green" if run.state == dpb.SYNC_RUN_STATE_SUCCEEDED else "bold red"
    )
    if run.state == dpb.SYNC_RUN_STATE_SUCCEEDED:
        head.append(f" {enum_label(run, 'apply_outcome')}")
    elif run.state == dpb.SYNC_RUN_STATE_FAILED:
        head.append(f" ({run.failure_reason}) {run.failure_message}")
    head.append(f"  {run.id}", style="dim")
    if run.organization_id:
        head.append(f"  {run.organization_id}", style="dim")
    parts: list[RenderableType] = [head]
    if run.state == dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION:
        parts.append(
            Text(
                f"this sync would delete {run.summary.connections_to_delete} of "
                f"{run.summary.connections_total} connections, more than the integration allows; "
                f"nothing was applied. Apply it with: "
                f"canopy sync {run.integration_id} --confirm-deletions --wait"
            )
        )
    if run.state in (dpb.SYNC_RUN_STATE_SUCCEEDED, dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION):
        counts = [(label, getattr(run.summary, name)) for name, label in _SUMMARY_FIELDS]
        changed = [(label, count) for label, count in counts if count]
        if changed:
            table = Table.grid(padding=(0, 2))
            table.add_column(justify="right")
            table.add_column()
            for label, count in changed:
                table.add_row(str(count), label)
            parts.append(table)
        else:
            parts.append(Text("no changes"))
    return Group(*parts)
