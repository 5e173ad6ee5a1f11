"""Integrations: create, read, list, update and delete, with plan gating, tenant-wide handles,
and the ripple of settings changes into every connection.

Use cases take a `Context` (database, event log, directory) and a principal; they never import
grpc. Every write commits its tree events in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import asyncpg

from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy_core import plans, requests
from canopy_core.auth import Principal
from canopy_core.db import Database
from canopy_core.directory import Directory, ScopeInfo
from canopy_core.discovery_filters import FILTER_LISTS
from canopy_core.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    StaleEtag,
)
from canopy_core.eventlog import EventLog
from canopy_core.ids import id_pattern, new_id
from canopy_core.pagination import PagePosition, PageTokens, page_size
from canopy_core.validation import Violations
from canopy_integration import event_queue, handles, initial_permissions, store
from canopy_integration.config import apply_config_mask, effective_config
from canopy_integration.convert import integration_to_proto
from canopy_integration.discovery_client import DiscoveryClient
from canopy_integration.errors import ConfirmationMismatch, HandleTaken, PlanNotEligible
from canopy_integration.events import TreeEvents
from canopy_integration.impact_client import ChangeImpacts
from canopy_integration.model import (
    CONFIG_FIELDS,
    DeletionReason,
    Folder,
    FolderKind,
    Integration,
    RootFolderPermissions,
    Scope,
)
from canopy_integration.reads import ConnectionReads
from canopy_integration.tree_paths import folder_paths
from canopy_integration.trusted_account import TrustedAccount
from canopy_integration.validation import validate_access, validate_settings

WRITABLE_PATHS = frozenset(
    {
        "handle",
        "handle_prefix",
        "discovery_access",
        "discovery_access.role_arn",
        "discovery_access.external_id",
        "discovery_access.event_queue",
        "member_access",
        "member_access.role_name",
        "member_access.external_id",
        "connection_config",
        *(f"connection_config.{name}" for name in CONFIG_FIELDS),
        "sync_interval",
        "max_delete_fraction",
        "crawl_limits",
        "crawl_limits.max_concurrency",
        "crawl_limits.max_requests_per_second",
        "crawl_limits.crawl_timeout",
        "filters",
        *(f"filters.{name}" for name in FILTER_LISTS),
        "exclude_management_account",
    }
)
OUTPUT_ONLY_PATHS = frozenset(
    {
        "id",
        "scope",
        "tenant_id",
        "kind",
        "state",
        "state_reason",
        "state_message",
        "root_folder_id",
        "organization_id",
        "management_account_id",
        "tree_generation",
        "create_time",
        "update_time",
        "etag",
        "event_queue_status",
        "unmatched_filters",
    }
)


@dataclass(frozen=True)
class Context:
    """What the integration use cases run against."""

    db: Database
    log: EventLog
    directory: Directory
    trusted_account: TrustedAccount  # what role templates trust
    partition: str  # the AWS partition the deployment serves
    page_tokens: PageTokens
    impacts: ChangeImpacts  # the workspace half of previews
    discovery: DiscoveryClient  # dry-run crawls for previews
    connections: ConnectionReads = field(init=False)  # GetConnection's reads

    def __post_init__(self) -> None:
        object.__setattr__(self, "connections", ConnectionReads(self.db))


@dataclass(frozen=True)
class IntegrationPage:
    """One page of integrations."""

    integrations: list[Integration]
    next_page_token: str


@dataclass(frozen=True)
class NewIntegration:
    """A create request, as parsed from the wire (scope may name a tenant or an org)."""

    integration: Integration
    scope_tenant_id: str | None
    scope_org_id: str | None
    permissions: RootFolderPermissions | None  # None: given without a known mode


def _raise(found: list[FieldViolation], reason: str | None = None) -> None:
    if found:
        raise InvalidArgument(found, reason=reason)


# -- access ------------------------------------------------------------------------------------


def hidden(principal: Principal, kind: str, resource_id: str, *chain: str | None) -> Exception:
    """NOT_FOUND for callers entitled to know, PERMISSION_DENIED for everyone else. System
    callers also learn the scope `chain` names (a deleted item's tenant and org), so another
    service can answer the item's members as this one does."""
    if principal.system or principal.is_member(resource_id, *chain):
        found = NotFound(kind, resource_id)
        if principal.system and chain and chain[0]:
            found.metadata.update(tenant_id=chain[0], org_id=chain[1] or "")
        return found
    return PermissionDenied(
        f"{principal.subject!r} may not read {kind} {resource_id!r}",
        metadata={"subject": principal.subject, "resource": f"{kind} {resource_id}"},
    )


async def missing(
    conn: asyncpg.Connection, principal: Principal, kind: str, resource_id: str
) -> Exception:
    """The error for an id with no row: members of a deleted item's scope learn NOT_FOUND."""
    scope = await store.tombstone(conn, resource_id)
    return hidden(principal, kind, resource_id, *(scope.chain if scope else ()))


async def readable(
    conn: asyncpg.Connection,
    principal: Principal,
    integration_id: str,
    *,
    named: tuple[str, str] | None = None,
    for_update: bool = False,
) -> Integration:
    """The integration if the caller may read it. Every RPC naming an integration, or a folder
    or connection of it (`named`: the kind and id the caller gave), answers alike: NOT_FOUND for
    its scope's members, also once deleted while its tombstone is kept; PERMISSION_DENIED for
    everyone else, whether or not it exists."""
    kind, resource_id = named or ("integration", integration_id)
    integration = await store.get_integration(conn, integration_id, for_update=for_update)
    if integration is None:
        raise await missing(conn, principal, kind, resource_id)
    if not principal.is_member(*integration.scope.chain):
        raise hidden(principal, kind, resource_id)
    return integration


async def writable(
    conn: asyncpg.Connection,
    principal: Principal,
    integration_id: str,
    *,
    named: tuple[str, str] | None = None,
    for_update: bool = False,
) -> Integration:
    """The integration if the caller owns its scope (else as `readable`)."""
    integration = await readable(
        conn, principal, integration_id, named=named, for_update=for_update
    )
    principal.require_owner(*integration.scope.chain, resource=f"integration {integration_id}")
    return integration


async def resolve_scope(
    ctx: Context,
    principal: Principal,
    tenant_id: str | None,
    org_id: str | None,
    *,
    at: str = "scope",
    field: str | None = None,
) -> tuple[Scope, ScopeInfo]:
    """The full scope (an org's tenant) from the directory; hidden from outsiders. Errors name
    `<at>.org_id` or `<at>.tenant_id` (`at`: the request's Scope message), or `field`."""
    kind, resource_id = ("org", org_id) if org_id else ("tenant", tenant_id or "")
    field = field or f"{at}.{kind}_id"
    with Violations() as v:
        v.resource_id(field, resource_id, kind[0])
    try:
        if org_id:
            info = await ctx.directory.org(org_id, field=field)
            return Scope(tenant_id=info.tenant_id, org_id=org_id), info
        info = await ctx.directory.tenant(resource_id, field=field)
        return Scope(tenant_id=resource_id), info
    except NotFound:
        raise hidden(principal, kind, resource_id) from None


def check_plan(scope: Scope, info: ScopeInfo) -> None:
    """Tenant scope needs ENTERPRISE; org scope TEAM or ENTERPRISE."""
    org_scoped = bool(scope.org_id)
    if not plans.plan_allows(info.plan, org_scoped):
        needs = plans.eligible_plans_text(org_scoped)
        raise PlanNotEligible("org" if org_scoped else "tenant", scope.owner_id, info.plan, needs)


# -- use cases ---------------------------------------------------------------------------------


async def create_integration(
    ctx: Context,
    principal: Principal,
    given: NewIntegration,
    request: rpc.CreateIntegrationRequest,
) -> Integration:
    """A new PENDING integration with its root folder, and its IntegrationCreated event."""
    found: list[FieldViolation] = []
    if bool(given.scope_tenant_id) == bool(given.scope_org_id):
        found.append(FieldViolation("integration.scope", "name exactly one tenant_id or org_id"))
    owner_id = given.scope_org_id or given.scope_tenant_id or ""
    prefix = "o" if given.scope_org_id else "t"
    if owner_id and not id_pattern(prefix).match(owner_id):
        found.append(
            FieldViolation(
                f"integration.scope.{'org_id' if given.scope_org_id else 'tenant_id'}",
                f"must look like '{prefix}_' followed by 1-60 of [a-z0-9]",
            )
        )
    if not given.integration.handle:
        found.append(FieldViolation("integration.handle", "is required"))
    reason = validate_access(given.integration, owner_id, ctx.partition, "integration", found)
    validate_settings(given.integration, "integration", found, ctx.partition)
    found.extend(
        initial_permissions.form_problems(given.permissions, org_scoped=bool(given.scope_org_id))
    )
    _raise(found, reason)
    assert given.permissions is not None
    new = event_queue.normalized(None, given.integration, ctx.partition)

    scope, info = await resolve_scope(
        ctx, principal, given.scope_tenant_id, given.scope_org_id, at="integration.scope"
    )
    principal.require_owner(*scope.chain, resource=f"integrations of {scope.owner_id}")
    check_plan(scope, info)
    await initial_permissions.check(ctx.directory, scope, given.permissions)

    async with ctx.db.transaction() as conn:
        if request.request_id:
            earlier = await requests.replay(
                conn,
                "CreateIntegration",
                request.request_id,
                principal.subject,
                request,
                rpc.CreateIntegrationResponse,
            )
            if earlier is not None:
                first = await store.get_integration(conn, earlier.integration.id)
                if first is None:
                    raise NotFound("integration", earlier.integration.id)
                return first
        await store.lock_tenant_handles(conn, scope.tenant_id)
        holder = await store.handle_holder(conn, scope.tenant_id, given.integration.handle)
        if holder:
            raise HandleTaken("integration", given.integration.handle, "integration.handle", holder)
        integration_id = new_id("i")
        root = Folder(
            id=new_id("f"),
            integration_id=integration_id,
            parent_id=None,
            kind=FolderKind.ROOT,
            aws_id="",
            title=given.integration.handle,
            handle=given.integration.handle,
        )
        created = await store.insert_integration(
            conn,
            replace(new, id=integration_id, scope=scope, root_folder_id=root.id),
        )
        await store.insert_folders(conn, [root])
        stored_root = await store.get_folder(conn, root.id)
        assert stored_root is not None
        events = TreeEvents(created, {root.id: [root.handle]})
        events.integration_created(given.permissions)
        events.folder_created(stored_root)
        await ctx.log.append(conn, events.events)
        if request.request_id:
            await requests.remember(
                conn,
                "CreateIntegration",
                request.request_id,
                principal.subject,
                request,
                rpc.CreateIntegrationResponse(integration=integration_to_proto(created)),
            )
        return created


async def get_integration(ctx: Context, principal: Principal, integration_id: str) -> Integration:
    """One integration, for members of its scope."""
    check_id("id", integration_id, "i")
    async with ctx.db.connection() as conn:
        return await readable(conn, principal, integration_id)


INTEGRATIONS_PAGE = PagePosition("integrations", (str,))


async def list_integrations(
    ctx: Context,
    principal: Principal,
    tenant_id: str | None,
    org_id: str | None,
    include_orgs: bool,
    requested_size: int,
    page_token: str,
) -> IntegrationPage:
    """A scope's integrations, oldest first, for its members; with no scope, every scope's
    (system callers only: discovery reconciles its schedule with them)."""
    found: list[FieldViolation] = []
    every_scope = principal.system and tenant_id is None and org_id is None
    if bool(tenant_id) == bool(org_id) and not every_scope:
        found.append(FieldViolation("scope", "name exactly one tenant_id or org_id"))
    if (org_id or every_scope) and include_orgs:
        found.append(FieldViolation("include_org_integrations", "is for tenant scopes only"))
    _raise(found)
    size = page_size(requested_size)
    arguments = {"tenant_id": tenant_id, "org_id": org_id, "include_orgs": include_orgs}
    position = ctx.page_tokens.open(page_token, INTEGRATIONS_PAGE, arguments)
    after = position[0] if position else ""
    if every_scope:
        async with ctx.db.connection() as conn:
            rows = await store.list_every_integration(conn, after, size + 1)
    else:
        scope, _info = await resolve_scope(ctx, principal, tenant_id, org_id)
        principal.require_member(*scope.chain, resource=f"integrations of {scope.owner_id}")
        async with ctx.db.connection() as conn:
            rows = await store.list_integrations(
                conn, scope.tenant_id, scope.org_id, include_orgs, after, size + 1
            )
        if include_orgs:
            rows = [r for r in rows if principal.is_member(*r.scope.chain)]
    more = len(rows) > size
    rows = rows[:size]
    next_token = ctx.page_tokens.seal(INTEGRATIONS_PAGE, [rows[-1].id], arguments) if more else ""
    return IntegrationPage(rows, next_token)


def check_id(field: str, value: str, prefix: str) -> None:
    with Violations() as v:
        v.resource_id(field, value, prefix)


def merge_update(current: Integration, given: Integration, paths: Sequence[str]) -> Integration:
    """The integration after applying the masked fields of `given` (unset → default)."""
    updated = current
    config_paths: list[str] = []
    limits = current.crawl_limits
    for path in paths:
        top, _, sub = path.partition(".")
        if top == "handle":
            updated = replace(updated, handle=given.handle)
        elif top == "handle_prefix":
            updated = replace(updated, handle_prefix=given.handle_prefix)
        elif top == "discovery_access":
            if sub in ("", "role_arn"):
                updated = replace(updated, discovery_role_arn=given.discovery_role_arn)
            if sub in ("", "external_id"):
                updated = replace(updated, discovery_external_id=given.discovery_external_id)
            if sub in ("", "event_queue"):
                updated = replace(updated, event_queue=given.event_queue)
        elif top == "member_access":
            if sub in ("", "role_name"):
                updated = replace(updated, member_role_name=given.member_role_name)
            if sub in ("", "external_id"):
                updated = replace(updated, member_external_id=given.member_external_id)
        elif top == "connection_config":
            config_paths.append(sub)
        elif top == "sync_interval":
            updated = replace(updated, sync_interval=given.sync_interval)
        elif top == "max_delete_fraction":
            updated = replace(updated, max_delete_fraction=given.max_delete_fraction)
        elif top == "crawl_limits":
            if sub == "":
                limits = given.crawl_limits
            else:
                limits = replace(limits, **{sub: getattr(given.crawl_limits, sub)})
        elif top == "filters":
            if sub == "":
                updated = replace(updated, filters=given.filters)
            else:
                filters = replace(updated.filters, **{sub: getattr(given.filters, sub)})
                updated = replace(updated, filters=filters)
        elif top == "exclude_management_account":
            updated = replace(updated, exclude_management_account=given.exclude_management_account)
    if config_paths:
        updated = replace(
            updated,
            connection_config=apply_config_mask(
                current.connection_config, given.connection_config, config_paths
            ),
        )
    return replace(updated, crawl_limits=limits)


_COMPARED = (
    "handle",
    "handle_prefix",
    "discovery_role_arn",
    "discovery_external_id",
    "event_queue",
    "member_role_name",
    "member_external_id",
    "connection_config",
    "sync_interval",
    "effective_sync_interval",
    "max_delete_fraction",
    "crawl_limits",
    "event_queue_status",
    "filters",
    "exclude_management_account",
)
_FIELD_NAMES = {
    "discovery_role_arn": "discovery_access",
    "discovery_external_id": "discovery_access",
    "event_queue": "discovery_access.event_queue",  # not the role: no resync
    "effective_sync_interval": "sync_interval",
    "member_role_name": "member_access",
    "member_external_id": "member_access",
}


def changed_fields(before: Integration, after: Integration) -> tuple[str, ...]:
    """The API field names that differ (credentials reported as `discovery_access` etc.)."""
    names = [
        _FIELD_NAMES.get(name, name)
        for name in _COMPARED
        if getattr(before, name) != getattr(after, name)
    ]
    return tuple(dict.fromkeys(names))


async def update_integration(
    ctx: Context,
    principal: Principal,
    integration_id: str,
    given: Integration,
    paths: Sequence[str],
    etag: str,
) -> Integration:
    """Apply masked changes; renames and configuration changes ripple to connections."""
    check_id("integration.id", integration_id, "i")
    async with ctx.db.transaction() as conn:
        current = await writable(conn, principal, integration_id, for_update=True)
        if etag and etag != current.etag:
            raise StaleEtag("integration", integration_id)
        updated = merge_update(current, given, paths)
        found: list[FieldViolation] = []
        reason = None
        if any(p.split(".")[0] in ("discovery_access", "member_access") for p in paths):
            reason = validate_access(
                updated, current.scope.owner_id, ctx.partition, "integration", found
            )
        validate_settings(updated, "integration", found, ctx.partition, only=paths)
        _raise(found, reason)
        updated = event_queue.normalized(current, updated, ctx.partition)
        changed = changed_fields(current, updated)
        if not changed:
            return current
        await store.lock_tenant_handles(conn, current.scope.tenant_id)
        if updated.handle != current.handle:
            holder = await store.handle_holder(conn, current.scope.tenant_id, updated.handle)
            if holder and holder != integration_id:
                raise HandleTaken("integration", updated.handle, "integration.handle", holder)
        saved = await store.save_integration(conn, updated)
        folders, connections = await store.load_tree(conn, integration_id)
        events = TreeEvents(saved, folder_paths(folders))
        events.integration_updated(current, saved, changed)
        # The root folder mirrors the integration's handle.
        if saved.handle != current.handle:
            root = next(f for f in folders if f.kind is FolderKind.ROOT)
            new_root = replace(
                root,
                title=saved.handle,
                handle=root.handle if root.handle_static else saved.handle,
            )
            await store.update_folders(conn, [new_root])
            refreshed = await store.get_folder(conn, root.id)
            assert refreshed is not None
            folders = [refreshed if f.id == root.id else f for f in folders]
            events.paths = folder_paths(folders)
            changed_root = tuple(
                n for n in ("title", "handle") if getattr(root, n) != getattr(refreshed, n)
            )
            events.folder_updated(
                root, refreshed, changed_root, folder_paths([*folders, root]).get(root.id, ())
            )
        # Renames from a new prefix, and settings that reach connections without an override.
        renamed: dict[str, str] = {}
        if saved.handle_prefix != current.handle_prefix:
            taken = await store.handles_elsewhere(conn, saved.scope.tenant_id, integration_id)
            assigned = handles.reprefix_connection_handles(
                current.handle_prefix,
                saved.handle_prefix,
                [
                    handles.HandleRequest(
                        key=c.id,
                        account_id=c.account_id,
                        account_name=c.account_name,
                        current=c.handle,
                        static=c.handle_static,
                    )
                    for c in connections
                ],
                taken,
            )
            renamed = {c.id: assigned[c.id] for c in connections if assigned[c.id] != c.handle}
        rewritten = []
        touched = []
        for connection in sorted(connections, key=lambda c: c.id):
            after = replace(connection, handle=renamed.get(connection.id, connection.handle))
            fields_changed: list[str] = []
            if after.handle != connection.handle:
                fields_changed.append("handle")
            before_config = effective_config(
                current, connection.config_overrides, connection.account_id
            )
            after_config = effective_config(
                saved, connection.config_overrides, connection.account_id
            )
            if before_config != after_config:
                fields_changed.append("effective_config")
            if not fields_changed:
                continue
            if "handle" in fields_changed:
                rewritten.append(after)
            else:
                touched.append(after.id)
            events.connection_updated(connection, after, fields_changed, before_integration=current)
        await store.update_connections(conn, rewritten)
        await store.touch_connections(conn, touched)
        await ctx.log.append(conn, events.events)
        return saved


async def delete_integration(
    ctx: Context,
    principal: Principal,
    integration_id: str,
    confirm_handle: str,
    etag: str,
    request: rpc.DeleteIntegrationRequest,
) -> None:
    """Delete the integration and its whole tree, with an event for every item."""
    check_id("id", integration_id, "i")
    async with ctx.db.transaction() as conn:
        if request.request_id:
            earlier = await requests.replay(
                conn,
                "DeleteIntegration",
                request.request_id,
                principal.subject,
                request,
                rpc.DeleteIntegrationResponse,
            )
            if earlier is not None:
                return
        integration = await writable(conn, principal, integration_id, for_update=True)
        if confirm_handle != integration.handle:
            raise ConfirmationMismatch(
                f"confirm_handle must be the integration's handle {integration.handle!r} "
                "to delete it and all of its folders and connections",
                metadata={"field": "confirm_handle", "handle": integration.handle},
            )
        if etag and etag != integration.etag:
            raise StaleEtag("integration", integration_id)
        folders, connections = await store.load_tree(conn, integration_id)
        paths = folder_paths(folders)
        events = TreeEvents(integration, paths)
        reason = DeletionReason.INTEGRATION_DELETED
        for connection in sorted(connections, key=lambda c: c.id):
            events.connection_deleted(connection, reason)
        depth = {fid: len(p) for fid, p in paths.items()}
        for folder in sorted(folders, key=lambda f: (-depth.get(f.id, 0), f.id)):
            events.folder_deleted(folder, reason, paths.get(folder.id, ()))
        events.integration_deleted()
        await store.delete_integration(conn, integration_id)
        await store.add_tombstones(
            conn,
            [integration_id, *(f.id for f in folders), *(c.id for c in connections)],
            integration.scope,
        )
        await ctx.log.append(conn, events.events)
        if request.request_id:
            await requests.remember(
                conn,
                "DeleteIntegration",
                request.request_id,
                principal.subject,
                request,
                rpc.DeleteIntegrationResponse(),
            )
