"""The connection tree as users see it: folders and connections to read, their handles and
configuration overrides to change, and the whole nested tree of one integration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from canopy_core.auth import Principal
from canopy_core.errors import FieldViolation, InvalidArgument, StaleEtag
from canopy_core.pagination import PagePosition, page_size
from canopy_core.validation import Violations
from canopy_integration import handles, store
from canopy_integration.config import apply_config_mask, effective_config, validate_config
from canopy_integration.errors import HandleTaken
from canopy_integration.events import TreeEvents
from canopy_integration.integrations import (
    Context,
    check_id,
    hidden,
    missing,
    readable,
    writable,
)
from canopy_integration.model import (
    CONFIG_FIELDS,
    Connection,
    ConnectionConfig,
    ConnectionRead,
    Folder,
    FolderKind,
    Integration,
)
from canopy_integration.tree_paths import folder_paths

FOLDER_WRITABLE = frozenset({"handle"})
FOLDER_OUTPUT_ONLY = frozenset(
    {
        "id",
        "integration_id",
        "parent_folder_id",
        "kind",
        "aws_id",
        "title",
        "handle_mode",
        "path",
        "create_time",
        "update_time",
        "etag",
    }
)
CONNECTION_WRITABLE = frozenset(
    {"handle", "config_overrides", *(f"config_overrides.{n}" for n in CONFIG_FIELDS)}
)
CONNECTION_OUTPUT_ONLY = frozenset(
    {
        "id",
        "integration_id",
        "folder_id",
        "account_id",
        "account_name",
        "account_email",
        "account_joined_time",
        "plugin",
        "handle_mode",
        "effective_config",
        "create_time",
        "update_time",
        "etag",
    }
)


@dataclass(frozen=True)
class FolderPage:
    """One page of folders, with each one's path."""

    folders: list[Folder]
    paths: dict[str, list[str]]
    next_page_token: str


@dataclass(frozen=True)
class ConnectionPage:
    """One page of connections and the integration they belong to."""

    connections: list[Connection]
    integrations: dict[str, Integration]
    next_page_token: str


@dataclass(frozen=True)
class Tree:
    """One integration's whole tree, read in one snapshot, and the log revision it reflects."""

    integration: Integration
    folders: list[Folder]
    connections: list[Connection]
    revision: int


async def get_folder(
    ctx: Context, principal: Principal, folder_id: str
) -> tuple[Folder, list[str]]:
    """One folder and its path, for members of the integration's scope."""
    check_id("id", folder_id, "f")
    async with ctx.db.connection() as conn:
        folder = await store.get_folder(conn, folder_id)
        if folder is None:
            raise await missing(conn, principal, "folder", folder_id)
        await readable(conn, principal, folder.integration_id, named=("folder", folder_id))
        folders = await store.load_folders(conn, folder.integration_id)
    return folder, folder_paths(folders).get(folder.id, [folder.handle])


FOLDERS_PAGE = PagePosition("folders", (str,))
CONNECTIONS_PAGE = PagePosition("connections", (str,))


async def list_folders(
    ctx: Context,
    principal: Principal,
    integration_id: str | None,
    parent_folder_id: str | None,
    requested_size: int,
    page_token: str,
) -> FolderPage:
    """An integration's folders, or one folder's children, by id."""
    if bool(integration_id) == bool(parent_folder_id):
        raise InvalidArgument.field("parent", "name exactly one integration_id or parent_folder_id")
    if integration_id:
        check_id("integration_id", integration_id, "i")
    else:
        check_id("parent_folder_id", parent_folder_id or "", "f")
    size = page_size(requested_size)
    arguments = {"integration_id": integration_id, "parent_folder_id": parent_folder_id}
    position = ctx.page_tokens.open(page_token, FOLDERS_PAGE, arguments)
    async with ctx.db.connection() as conn:
        if integration_id:
            owner, named = integration_id, ("integration", integration_id)
        else:
            named = ("folder", parent_folder_id or "")
            parent = await store.get_folder(conn, named[1])
            if parent is None:
                raise await missing(conn, principal, *named)
            owner = parent.integration_id
        await readable(conn, principal, owner, named=named)
        rows = await store.list_folders(
            conn,
            integration_id=integration_id,
            parent_id=parent_folder_id,
            after_id=position[0] if position else "",
            limit=size + 1,
        )
        everything = await store.load_folders(conn, owner)
    more = len(rows) > size
    rows = rows[:size]
    return FolderPage(
        rows,
        folder_paths(everything),
        ctx.page_tokens.seal(FOLDERS_PAGE, [rows[-1].id], arguments) if more else "",
    )


async def update_folder(
    ctx: Context,
    principal: Principal,
    folder_id: str,
    handle: str,
    paths: Sequence[str],
    etag: str,
) -> tuple[Folder, list[str]]:
    """Set a folder's handle (static), or return it to dynamic with ""."""
    check_id("folder.id", folder_id, "f")
    if handle:
        problem = handles.folder_handle_problem(handle)
        if problem:
            raise InvalidArgument.field("folder.handle", problem)
    async with ctx.db.transaction() as conn:
        folder = await store.get_folder(conn, folder_id, for_update=True)
        if folder is None:
            raise await missing(conn, principal, "folder", folder_id)
        integration = await writable(
            conn, principal, folder.integration_id, named=("folder", folder_id)
        )
        if etag and etag != folder.etag:
            raise StaleEtag("folder", folder_id)
        siblings = await store.sibling_handles(
            conn, folder.integration_id, folder.parent_id, folder.id
        )
        if handle:
            if handle in siblings:
                raise HandleTaken("folder", handle, "folder.handle", "a sibling folder")
            after = replace(folder, handle=handle, handle_static=True)
        elif folder.kind is FolderKind.ROOT:
            after = replace(folder, handle=integration.handle, handle_static=False)
        else:
            request = handles.FolderHandleRequest(
                key=folder.id, ou_id=folder.aws_id, name=folder.title, current=None, static=False
            )
            after = replace(
                folder,
                handle=handles.assign_folder_handles([request], frozenset(siblings))[folder.id],
                handle_static=False,
            )
        changed = tuple(
            n for n in ("handle", "handle_static") if getattr(folder, n) != getattr(after, n)
        )
        folders = await store.load_folders(conn, folder.integration_id)
        before_paths = folder_paths(folders)
        if not changed:
            return folder, before_paths.get(folder.id, [folder.handle])
        await store.update_folders(conn, [after])
        saved = await store.get_folder(conn, folder.id)
        assert saved is not None
        after_paths = folder_paths([*folders, saved])
        events = TreeEvents(integration, after_paths)
        events.folder_updated(folder, saved, changed, before_paths.get(folder.id, ()))
        await ctx.log.append(conn, events.events)
        return saved, after_paths.get(saved.id, [saved.handle])


async def get_connection(ctx: Context, principal: Principal, connection_id: str) -> ConnectionRead:
    """One connection and its integration, for members of the integration's scope."""
    check_id("id", connection_id, "c")
    found = await ctx.connections.get(connection_id)
    if found is None:
        async with ctx.db.connection() as conn:
            raise await missing(conn, principal, "connection", connection_id)
    if not principal.is_member(*found.integration.scope.chain):
        raise hidden(principal, "connection", connection_id)
    return found


async def list_connections(
    ctx: Context,
    principal: Principal,
    integration_id: str | None,
    folder_id: str | None,
    requested_size: int,
    page_token: str,
) -> ConnectionPage:
    """An integration's connections, or one folder's, by id."""
    if bool(integration_id) == bool(folder_id):
        raise InvalidArgument.field("parent", "name exactly one integration_id or folder_id")
    if integration_id:
        check_id("integration_id", integration_id, "i")
    else:
        check_id("folder_id", folder_id or "", "f")
    size = page_size(requested_size)
    arguments = {"integration_id": integration_id, "folder_id": folder_id}
    position = ctx.page_tokens.open(page_token, CONNECTIONS_PAGE, arguments)
    async with ctx.db.connection() as conn:
        if integration_id:
            owner = integration_id
        else:
            folder = await store.get_folder(conn, folder_id or "")
            if folder is None:
                raise await missing(conn, principal, "folder", folder_id or "")
            owner = folder.integration_id
        integration = await readable(
            conn,
            principal,
            owner,
            named=("integration", owner) if integration_id else ("folder", folder_id or ""),
        )
        rows = await store.list_connections(
            conn,
            integration_id=integration_id,
            folder_id=folder_id,
            after_id=position[0] if position else "",
            limit=size + 1,
        )
    more = len(rows) > size
    rows = rows[:size]
    return ConnectionPage(
        rows,
        {integration.id: integration},
        ctx.page_tokens.seal(CONNECTIONS_PAGE, [rows[-1].id], arguments) if more else "",
    )


async def update_connection(
    ctx: Context,
    principal: Principal,
    connection_id: str,
    handle: str,
    overrides: ConnectionConfig,
    paths: Sequence[str],
    etag: str,
) -> tuple[Connection, Integration]:
    """Change a connection's handle (static; "" returns to dynamic) or overrides."""
    check_id("connection.id", connection_id, "c")
    found: list[FieldViolation] = []
    if "handle" in paths and handle:
        problem = handles.connection_handle_problem(handle)
        if problem:
            found.append(FieldViolation("connection.handle", problem))
    config_paths = [p.partition(".")[2] for p in paths if p.startswith("config_overrides")]
    if config_paths:
        collected = Violations()
        validate_config(
            overrides,
            "connection.config_overrides",
            collected,
            overrides=True,
            partition=ctx.partition,
        )
        masked = {p for p in config_paths if p}
        found.extend(
            v
            for v in collected.found
            if not masked or any(v.field.split(".")[2].split("[")[0] == m for m in masked)
        )
    if found:
        raise InvalidArgument(found)
    async with ctx.db.transaction() as conn:
        current = await store.get_connection(conn, connection_id, for_update=True)
        if current is None:
            raise await missing(conn, principal, "connection", connection_id)
        integration = await writable(
            conn, principal, current.integration_id, named=("connection", connection_id)
        )
        if etag and etag != current.etag:
            raise StaleEtag("connection", connection_id)
        after = current
        if config_paths:
            after = replace(
                after,
                config_overrides=apply_config_mask(
                    current.config_overrides, overrides, config_paths
                ),
            )
        if "handle" in paths:
            await store.lock_tenant_handles(conn, current.tenant_id)
            if handle:
                holder = await store.connection_handle_holder(conn, current.tenant_id, handle)
                if holder and holder != current.id:
                    raise HandleTaken("connection", handle, "connection.handle", holder)
                after = replace(after, handle=handle, handle_static=True)
            else:
                taken = await store.handles_in_tenant(
                    conn, current.tenant_id, exclude_id=current.id
                )
                assigned = handles.assign_connection_handles(
                    integration.handle_prefix,
                    [
                        handles.HandleRequest(
                            key=current.id,
                            account_id=current.account_id,
                            account_name=current.account_name,
                            current=None,
                            static=False,
                        )
                    ],
                    taken,
                )
                after = replace(after, handle=assigned[current.id], handle_static=False)
        changed = [
            n
            for n in ("handle", "handle_static", "config_overrides")
            if getattr(current, n) != getattr(after, n)
        ]
        if effective_config(
            integration, current.config_overrides, current.account_id
        ) != effective_config(integration, after.config_overrides, after.account_id):
            changed.append("effective_config")
        if not changed:
            return current, integration
        await store.update_connections(conn, [after])
        saved = await store.get_connection(conn, current.id)
        assert saved is not None
        events = TreeEvents(integration)
        events.connection_updated(current, saved, changed)
        await ctx.log.append(conn, events.events)
        return saved, integration


async def get_tree(ctx: Context, principal: Principal, integration_id: str) -> Tree:
    """The whole tree of an integration, consistent with the log revision returned."""
    check_id("integration_id", integration_id, "i")
    async with (
        ctx.db.connection() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        integration = await readable(conn, principal, integration_id)
        folders, connections = await store.load_tree(conn, integration_id)
        revision: int = await conn.fetchval("SELECT revision FROM event_log_head")
    return Tree(integration, folders, connections, revision)
