"""WatchTreeEvents: who may follow which part of the tree log."""

from __future__ import annotations

from collections.abc import AsyncIterator

from canopy_core.auth import Principal
from canopy_core.errors import InvalidArgument
from canopy_core.eventlog import WatchBatch
from canopy_core.ids import id_pattern
from canopy_integration.integrations import Context, readable, resolve_scope


async def watch_tree_events(
    ctx: Context,
    principal: Principal,
    after_revision: int,
    *,
    integration_id: str | None,
    tenant_id: str | None,
    org_id: str | None,
    scope_given: bool,
) -> AsyncIterator[WatchBatch]:
    """Tree events after a revision: of one integration, of a scope, or (system) all."""
    if integration_id is not None:
        if not id_pattern("i").match(integration_id):
            raise InvalidArgument.field("integration_id", "must look like 'i_…'")
        if not principal.system:  # system callers may follow a deleted integration's events
            async with ctx.db.connection() as conn:
                await readable(conn, principal, integration_id)
        keys = [f"integration:{integration_id}"]
    elif scope_given:
        if bool(tenant_id) == bool(org_id):
            raise InvalidArgument.field("scope", "name exactly one tenant_id or org_id")
        scope, _ = await resolve_scope(ctx, principal, tenant_id, org_id)
        principal.require_member(*scope.chain, resource=f"tree events of {scope.owner_id}")
        keys = [f"org:{org_id}"] if org_id else [f"tenant:{tenant_id}"]
    else:
        principal.require_system()
        keys = None
    async for batch in ctx.log.watch(after_revision, keys):
        yield batch
