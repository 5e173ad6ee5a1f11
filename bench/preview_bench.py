"""Preview of a handle prefix change: 10,000 connections in one integration, its root folder
shared with and attached to 100 workspaces (1,000,000 schemas). The services run as separate
processes, as in `schema_streams`.

Reported:
- `preview_ms`: `UpdateIntegration` with `validate_only`, end to end as the client sees it
  (median of 3), its impact checked (10,000 connections renamed, 100 workspaces, 1,000,000
  schemas renamed) and its size (`impact_bytes`; the lists are cut, the totals are not).
- `real_ms`: the same update for real, from the call until the permissions service has committed
  the last of the 1,000,000 `SchemaRenamed` events (its schema log head, read every 5 ms, reaches
  the head before the change + 1,000,000): the change's effect, not only its RPC.
- `preview_vs_real`: their ratio (target < 0.5).
- `rows_written_by_preview`: row versions committed during the previews (checked: 0, or the bench
  fails). PostgreSQL's `n_tup_ins/upd/del` count rolled-back writes as well ("attempted
  actions"), and a preview runs the real use case in a transaction that is rolled back, so those
  counters are reported as `rolled_back_row_writes_per_preview` and cannot prove that nothing was
  stored. What proves it: every row of the two services' tables whose `xmin` the snapshot taken
  before the previews does not see (row versions committed since; an insert or an update makes
  one), every table's row count (a delete), and both event logs' heads, before and after. The
  same check and counters over the real change show that they see writes.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from bench.services import SYSTEM, bearer, processes
from bench.sharing_bench import flat_integration, seed_workspaces
from bench.support import fresh_database
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dgrpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc

CONNECTIONS = int(os.environ.get("BENCH_PREVIEW_CONNECTIONS", 10_000))
WORKSPACES = int(os.environ.get("BENCH_PREVIEW_WORKSPACES", 100))
# The permissions service's CANOPY_COMPACT_EVENTS (off by default, as in a deployment that has
# not finished its upgrade): with it, the real change writes one row per workspace per batch.
COMPACT_EVENTS = os.environ.get("BENCH_COMPACT_EVENTS", "0") != "0"
PREVIEWS = 3
SCHEMAS = ("integration", "permissions")
# PostgreSQL 15 sends a backend's table counters at the end of a transaction at most once a
# second, and an idle backend's pending ones within 10 s (PGSTAT_IDLE_INTERVAL).
STATS_FLUSH_SECONDS = 11.0
OWNER = bearer(o_bench="owner")


class PreviewWroteRows(AssertionError):
    """The previews committed something: the bench fails."""


@dataclass
class DatabaseState:
    """What the two services' schemas hold at one moment."""

    snapshot: str  # pg_current_snapshot(): which transactions had committed
    rows: dict[str, int]  # schema.table → row count
    heads: dict[str, int]  # schema → its event log's head revision
    counters: dict[str, int]  # schema.table → n_tup_ins + n_tup_upd + n_tup_del


async def _tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
        "WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE' ORDER BY 1",
        list(SCHEMAS),
    )
    return [r[0] for r in rows]


async def _counters(conn: asyncpg.Connection) -> dict[str, int]:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = await conn.fetch(
        "SELECT schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del "
        "FROM pg_stat_user_tables WHERE schemaname = ANY($1::text[])",
        list(SCHEMAS),
    )
    return {r[0]: r[1] for r in rows}


async def _settled_counters(conn: asyncpg.Connection) -> dict[str, int]:
    """The counters once every backend has sent what it counted: read after the flush delay,
    and again until two reads a second apart agree."""
    await asyncio.sleep(STATS_FLUSH_SECONDS)
    found = await _counters(conn)
    while True:
        await asyncio.sleep(1.0)
        again = await _counters(conn)
        if again == found:
            return found
        found = again


async def _state(conn: asyncpg.Connection) -> DatabaseState:
    snapshot = await conn.fetchval("SELECT pg_current_snapshot()::text")
    rows = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in await _tables(conn)}
    heads = {s: await conn.fetchval(f"SELECT revision FROM {s}.event_log_head") for s in SCHEMAS}
    return DatabaseState(snapshot, rows, heads, await _settled_counters(conn))


async def _committed_since(conn: asyncpg.Connection, before: DatabaseState) -> dict[str, int]:
    """Per table, the row versions committed since `before` (an insert or an update makes one):
    rows whose `xmin` that snapshot does not see. A row's 32-bit xmin gets the epoch of the next
    transaction id, or the one before if it is above that id's low half."""
    found = {}
    for table in await _tables(conn):
        count: int = await conn.fetchval(
            "WITH n AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next) "
            f"SELECT count(*) FROM {table} t, n WHERE NOT pg_visible_in_snapshot(("
            "  (((n.next >> 32) - (t.xmin::text::bigint > (n.next & 4294967295))::int) << 32)"
            "  | t.xmin::text::bigint)::text::xid8, $1::text::pg_snapshot)",
            before.snapshot,
        )
        if count:
            found[table] = count
    return found


@dataclass
class Writes:
    """What was written between two states of the database."""

    committed_row_versions: dict[str, int]  # table → row versions committed since
    row_count_changes: dict[str, int]  # table → rows after - rows before
    log_head_changes: dict[str, int]  # schema → events appended to its log
    counted: dict[str, int]  # table → n_tup_ins + n_tup_upd + n_tup_del since (rolled back too)
    after: DatabaseState

    @property
    def rows_written(self) -> int:
        """Rows stored: committed inserts and updates (row versions), and deletes (at least a
        table's decrease)."""
        return sum(self.committed_row_versions.values()) + sum(
            -n for n in self.row_count_changes.values() if n < 0
        )

    def figures(self) -> dict[str, Any]:
        return {
            "rows_written": self.rows_written,
            "committed_row_versions": self.committed_row_versions,
            "row_count_changes": self.row_count_changes,
            "log_head_changes": self.log_head_changes,
            "counter_row_writes": sum(self.counted.values()),
        }


async def _writes(conn: asyncpg.Connection, before: DatabaseState) -> Writes:
    """What was written since `before`."""
    committed = await _committed_since(conn, before)
    after = await _state(conn)
    return Writes(
        committed_row_versions=committed,
        row_count_changes={
            t: after.rows.get(t, 0) - n for t, n in before.rows.items() if after.rows.get(t, 0) != n
        },
        log_head_changes={
            s: after.heads[s] - h for s, h in before.heads.items() if after.heads[s] != h
        },
        counted={
            t: n - before.counters.get(t, 0)
            for t, n in after.counters.items()
            if n != before.counters.get(t, 0)
        },
        after=after,
    )


async def _until(conn: asyncpg.Connection, query: str, expected: int, what: str) -> None:
    """Wait (up to 10 minutes) until `query` returns `expected`."""
    deadline = time.monotonic() + 600
    while (found := await conn.fetchval(query)) != expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {found}, expected {expected}")
        await asyncio.sleep(0.5)


async def _share(
    integrations: Any, tree: Any, schemas: Any, conn: asyncpg.Connection
) -> pb.Integration:
    """The integration with its connections, attached to every workspace and projected."""
    created = await flat_integration(integrations, tree, CONNECTIONS)
    # The permissions service projects the tree asynchronously: attach once it has it all, so
    # each attachment adds the workspace's schemas in one go.
    await _until(
        conn,
        "SELECT count(*) FROM permissions.tree_connections",
        CONNECTIONS,
        "connections projected",
    )
    print(f"  {CONNECTIONS} connections projected; attaching", file=sys.stderr)
    for i in range(WORKSPACES):
        await schemas.AttachSchema(
            wrpc.AttachSchemaRequest(workspace_id=f"w_{i:04d}", folder_id=created.root_folder_id),
            metadata=SYSTEM,
        )
    await _until(
        conn,
        "SELECT count(*) FROM (SELECT workspace_id FROM permissions.workspace_schemas "
        f"GROUP BY workspace_id HAVING count(*) = {CONNECTIONS}) w",
        WORKSPACES,
        "workspaces with every schema",
    )
    return created


def _update(integration_id: str, validate_only: bool) -> rpc.UpdateIntegrationRequest:
    return rpc.UpdateIntegrationRequest(
        integration=pb.Integration(id=integration_id, handle_prefix="aws_"),
        update_mask=FieldMask(paths=["handle_prefix"]),
        validate_only=validate_only,
    )


def _check_impact(reply: rpc.UpdateIntegrationResponse) -> None:
    totals = reply.impact.totals
    found = (totals.connections_renamed, totals.workspaces_affected, totals.schemas_renamed)
    expected = (CONNECTIONS, WORKSPACES, CONNECTIONS * WORKSPACES)
    if found != expected:
        raise AssertionError(
            f"impact (connections renamed, workspaces, schemas renamed) {found}, not {expected}"
        )
    others = (
        totals.connections_created + totals.connections_deleted + totals.connections_moved,
        totals.schemas_added + totals.schemas_removed + totals.schemas_config_changed,
    )
    if others != (0, 0):
        raise AssertionError(f"impact has other changes: {totals}")


async def _real_change(
    integrations: Any, conn: asyncpg.Connection, integration_id: str
) -> tuple[float, float]:
    """The update for real: (seconds to its reply, seconds until the permissions service has
    committed every rename event)."""
    target = (
        await conn.fetchval("SELECT revision FROM permissions.event_log_head")
        + CONNECTIONS * WORKSPACES
    )
    started = time.perf_counter()
    await integrations.UpdateIntegration(_update(integration_id, False), metadata=OWNER)
    replied = time.perf_counter()
    deadline = replied + 600
    while await conn.fetchval("SELECT revision FROM permissions.event_log_head") < target:
        if time.perf_counter() > deadline:
            raise TimeoutError("the rename events were not committed within 10 minutes")
        await asyncio.sleep(0.005)
    committed = time.perf_counter()
    return replied - started, committed - started


async def run(admin_dsn: str) -> dict[str, Any]:
    """The figures of a prefix change's preview and of the change itself."""
    big = [
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.max_receive_message_length", 64 << 20),
    ]
    async with (
        fresh_database(admin_dsn) as dsn,
        processes(dsn, {"CANOPY_COMPACT_EVENTS": "true" if COMPACT_EVENTS else "false"}) as (
            p_address,
            i_address,
        ),
        grpc.aio.insecure_channel(p_address) as p_channel,
        grpc.aio.insecure_channel(i_address, options=big) as i_channel,
    ):
        conn = await asyncpg.connect(dsn)
        try:
            await seed_workspaces(dgrpc.DirectoryServiceStub(p_channel), WORKSPACES)
            integrations = rpc_grpc.IntegrationServiceStub(i_channel)
            created = await _share(
                integrations,
                tree_grpc.ConnectionTreeServiceStub(i_channel),
                wgrpc.WorkspaceSchemaServiceStub(p_channel),
                conn,
            )
            print(f"  {WORKSPACES} workspaces projected; previewing", file=sys.stderr)
            before = await _state(conn)
            times, replies = [], []
            for _ in range(PREVIEWS):
                started = time.perf_counter()
                reply = await integrations.UpdateIntegration(
                    _update(created.id, True), metadata=OWNER
                )
                times.append(time.perf_counter() - started)
                _check_impact(reply)
                replies.append(reply)
            previewed = await _writes(conn, before)
            if previewed.rows_written or previewed.log_head_changes:
                raise PreviewWroteRows(f"the previews wrote: {previewed.figures()}")
            print(f"  previews {[round(t, 2) for t in times]} s; the change", file=sys.stderr)
            rpc_seconds, real_seconds = await _real_change(integrations, conn, created.id)
            changed = await _writes(conn, previewed.after)
            if changed.log_head_changes.get("permissions") != CONNECTIONS * WORKSPACES:
                raise AssertionError(f"the change appended {changed.log_head_changes}")
            if not changed.rows_written or not changed.counted:
                raise AssertionError(f"the check saw no write of the change: {changed}")
        finally:
            await conn.close()
    preview_seconds = statistics.median(times)
    impact = replies[-1].impact
    result = {
        "compact_events": COMPACT_EVENTS,
        "connections": CONNECTIONS,
        "workspaces": WORKSPACES,
        "schemas_renamed": impact.totals.schemas_renamed,
        "preview_ms": round(preview_seconds * 1000, 1),
        "preview_runs_ms": [round(t * 1000, 1) for t in times],
        "real_ms": round(real_seconds * 1000, 1),
        "real_rpc_ms": round(rpc_seconds * 1000, 1),
        "real_definition": "from the call until the permissions service's schema log head is "
        f"the head before + {CONNECTIONS * WORKSPACES:,} (every SchemaRenamed committed)",
        "preview_vs_real": round(preview_seconds / real_seconds, 3),
        "impact_bytes": impact.ByteSize(),
        "reply_bytes": replies[-1].ByteSize(),
        "impact_listed": {
            "tree_items": len(impact.tree_items),
            "workspaces": len(impact.workspaces),
            "schemas": sum(len(w.schemas) for w in impact.workspaces),
        },
        "rows_written_by_preview": previewed.rows_written,
        "rolled_back_row_writes_per_preview": round(sum(previewed.counted.values()) / PREVIEWS),
        "real_change_writes": changed.figures(),
    }
    print(f"  preview {preview_seconds:.2f} s, real {real_seconds:.2f} s", file=sys.stderr)
    return result
