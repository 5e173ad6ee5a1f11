"""How a previewed change's impact (`canopy.type.v1.ChangeImpact`) looks at a terminal: a totals
line, the folders and connections that would change, every workspace's schema changes, where the
lists were cut, the mass-deletion guard's verdict and a failed crawl. Pure functions of the
message, as in `canopy_cli.render`."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.type.v1 import impact_pb2
from canopy_cli.render import enum_label, progress_counters, words

_TREE_TOTALS = [
    ("folders_created", "folder(s) created"),
    ("folders_renamed", "folder(s) renamed"),
    ("folders_moved", "folder(s) moved"),
    ("folders_deleted", "folder(s) deleted"),
    ("connections_created", "connection(s) created"),
    ("connections_renamed", "connection(s) renamed"),
    ("connections_moved", "connection(s) moved"),
    ("connections_deleted", "connection(s) deleted"),
    ("connections_reconfigured", "connection(s) reconfigured"),
]
_SCHEMA_TOTALS = [
    ("schemas_added", "added"),
    ("schemas_renamed", "renamed"),
    ("schemas_removed", "removed"),
    ("schemas_config_changed", "reconfigured"),
]


def removes_or_renames(impact: impact_pb2.ChangeImpact) -> bool:
    """Whether the change would take a schema away from a workspace or rename one (either
    breaks the workspace's queries), or the mass-deletion guard would stop it: what a person
    confirms before the change is made."""
    totals = impact.totals
    return bool(
        totals.schemas_removed or totals.schemas_renamed or impact.deletion_guard.would_stop
    )


def totals_line(impact: impact_pb2.ChangeImpact) -> Text:
    """`Tree: 3 connection(s) renamed. Workspaces: 2 affected — 3 renamed, 1 removed.`"""
    totals = impact.totals
    tree = [
        f"{getattr(totals, name)} {label}" for name, label in _TREE_TOTALS if getattr(totals, name)
    ]
    schemas = [
        f"{getattr(totals, name)} {label}"
        for name, label in _SCHEMA_TOTALS
        if getattr(totals, name)
    ]
    line = Text()
    line.append("Tree: ", style="bold")
    line.append(", ".join(tree) if tree else "no change")
    line.append(".  ")
    line.append("Workspaces: ", style="bold")
    if totals.workspaces_affected:
        line.append(f"{totals.workspaces_affected} affected — schemas " + ", ".join(schemas))
    else:
        line.append("no workspace's schemas would change")
    line.append(".")
    return line


def _change(old: str, new: str) -> str:
    return f"{old} → {new}" if old and old != new else new


def tree_table(items: list[impact_pb2.TreeItemImpact]) -> Table:
    """One row per folder or connection that would change, in the order of its tree events."""
    table = Table(box=None, header_style="bold", title="Tree", title_justify="left")
    for column in ("CHANGE", "ITEM", "ID", "HANDLE", "PARENT"):
        table.add_column(column, no_wrap=True)
    table.add_column("DETAIL", overflow="fold")
    for item in items:
        detail = ", ".join(item.changed_fields)
        if item.deletion_reason:
            detail = words(item.deletion_reason)
        table.add_row(
            words(enum_label(item, "change")),
            f"{words(enum_label(item, 'item_type'))} {item.external_id}",
            item.id or "(new)",
            _change(item.old_handle, item.handle),
            _change(item.old_parent_folder_id, item.parent_folder_id),
            detail,
        )
    return table


def schemas_table(workspaces: list[impact_pb2.WorkspaceImpact]) -> Table:
    """One row per schema change of every workspace: what, the name (old → new), the
    connection, and why a schema would be removed; a row says where a workspace's list was cut."""
    table = Table(box=None, header_style="bold", title="Workspaces", title_justify="left")
    for column in ("WORKSPACE", "CHANGE", "SCHEMA", "CONNECTION"):
        table.add_column(column, no_wrap=True)
    table.add_column("REASON", overflow="fold")
    for workspace in workspaces:
        for schema in workspace.schemas:
            table.add_row(
                workspace.workspace_id,
                words(enum_label(schema, "change")),
                _change(schema.old_name, schema.name),
                schema.connection_id or "(new)",
                words(schema.removed_reason),
            )
        shown = len(workspace.schemas)
        total = (
            workspace.schemas_added
            + workspace.schemas_renamed
            + workspace.schemas_removed
            + workspace.schemas_config_changed
        )
        if workspace.truncated or shown < total:
            table.add_row(
                workspace.workspace_id,
                Text(f"… {total - shown} more", style="yellow"),
                Text(f"(list cut at {shown} of {total})", style="yellow"),
                "",
                "",
            )
    return table


def guard_verdict(impact: impact_pb2.ChangeImpact) -> Text | None:
    """What the mass-deletion guard would do; None when the change deletes no connection."""
    guard = impact.deletion_guard
    if guard.would_stop:
        return Text(
            f"The deletion guard would stop this: it deletes {guard.connections_to_delete} of "
            f"{guard.connections_total} connections, more than the integration allows; nothing "
            f"would be applied until the deletions are confirmed (the lists show what confirming "
            f"would do).",
            style="bold red",
        )
    if guard.connections_to_delete:
        return Text(
            f"Deletion guard: {guard.connections_to_delete} of {guard.connections_total} "
            f"connections deleted, within what the integration allows."
        )
    return None


def impact_view(impact: impact_pb2.ChangeImpact) -> RenderableType:
    """Everything a person reads before confirming a change."""
    parts: list[RenderableType] = []
    if impact.crawl_failure_reason:
        parts.append(
            Text(
                f"The crawl with these settings failed ({impact.crawl_failure_reason}): "
                f"{impact.crawl_failure_message}. The integration would go to ERROR and its tree "
                f"stay as it is; the impact below leaves the crawl out.",
                style="bold red",
            )
        )
    parts.append(totals_line(impact))
    verdict = guard_verdict(impact)
    if verdict is not None:
        parts.append(verdict)
    if impact.tree_items:
        parts.append(tree_table(list(impact.tree_items)))
    if impact.workspaces:
        parts.append(schemas_table(list(impact.workspaces)))
    if impact.truncated:
        parts.append(
            Text(
                "The lists were cut (at most 1,000 tree items and workspaces, 100 schemas per "
                "workspace); the totals above are complete. `--output json` has the same lists.",
                style="yellow",
            )
        )
    return Group(*parts)


def dry_run_view(run: dpb.SyncRun) -> RenderableType:
    """A dry-run sync: how the crawl went, then what applying its snapshot would do."""
    head = Text()
    head.append("dry run ", style="bold")
    if run.state == dpb.SYNC_RUN_STATE_FAILED:
        head.append(f"FAILED ({run.failure_reason}) {run.failure_message}", style="bold red")
        head.append(f"\n{progress_counters(run)}", style="dim")
        return head
    head.append(f"{enum_label(run, 'state')} {enum_label(run, 'apply_outcome')}", style="bold")
    head.append(f"  {run.organization_id}  {progress_counters(run)}", style="dim")
    return Group(head, impact_view(run.impact))
