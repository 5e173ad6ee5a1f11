"""One folder or connection at a terminal, a field per line: what `canopy folders show` and
`canopy connections show` (and their updates) print."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy_cli.render import enum_label, timestamp


def _grid(rows: list[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for name, value in rows:
        table.add_row(name, Text(value))
    return table


def _handle(handle: str, mode_of: tree_pb.Folder | tree_pb.Connection) -> str:
    return f"{handle} ({enum_label(mode_of, 'handle_mode').lower()})"


def folder_details(folder: tree_pb.Folder) -> Table:
    """Every field of a folder that a person reads."""
    return _grid(
        [
            ("id", folder.id),
            ("handle", _handle(folder.handle, folder)),
            ("title", folder.title),
            ("path", "/".join(folder.path)),
            ("kind", enum_label(folder, "kind")),
            ("aws id", folder.aws_id),
            ("parent", folder.parent_folder_id or "(none: the root)"),
            ("integration", folder.integration_id),
            ("updated", timestamp(folder.update_time)),
        ]
    )


def connection_details(connection: tree_pb.Connection) -> Table:
    """Every field of a connection that a person reads: its settings as it uses them, each
    marked when the connection overrides it."""
    effective = connection.effective_config
    overridden = set(effective.overridden_fields)

    def setting(field: str, value: str) -> tuple[str, str]:
        return (field.replace("_", " "), value + ("  (override)" if field in overridden else ""))

    return _grid(
        [
            ("id", connection.id),
            ("handle", _handle(connection.handle, connection)),
            ("account", f"{connection.account_id}  {connection.account_name}"),
            ("folder", connection.folder_id),
            ("integration", connection.integration_id),
            setting("regions", ", ".join(effective.regions)),
            setting("default_region", effective.default_region or "(the plugin's)"),
            setting("max_error_retry_attempts", str(effective.max_error_retry_attempts)),
            setting("min_error_retry_delay_ms", str(effective.min_error_retry_delay_ms)),
            setting("ignore_error_codes", ", ".join(effective.ignore_error_codes)),
            setting("ignore_error_messages", "  ".join(effective.ignore_error_messages)),
            setting("endpoint_url", effective.endpoint_url or "(AWS)"),
            setting("s3_force_path_style", str(effective.s3_force_path_style).lower()),
            ("role", effective.role_arn),
            ("external id", effective.external_id),
            ("updated", timestamp(connection.update_time)),
        ]
    )
