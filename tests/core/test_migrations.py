"""Migrations: each service's SQL in its own schema, applied once, safe when replicas race."""

from __future__ import annotations

import asyncio

import asyncpg

from canopy_core.db import Database, Migration, core_migrations, migrate
from canopy_core.settings import ServiceSettings

WIDGETS = [
    Migration("widgets", 1, "0001_widgets.sql", "CREATE TABLE widgets (id int PRIMARY KEY);"),
    Migration("widgets", 2, "0002_names.sql", "ALTER TABLE widgets ADD COLUMN name text;"),
]


async def test_migrations_run_once_and_a_second_run_is_a_no_op(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        first = await migrate(conn, "widgets", [*core_migrations(), *WIDGETS])
        second = await migrate(conn, "widgets", [*core_migrations(), *WIDGETS])
        assert first == len(core_migrations()) + 2
        assert second == 0
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'widgets' AND table_name = 'widgets' ORDER BY 1"
        )
        assert [c["column_name"] for c in columns] == ["id", "name"]
    finally:
        await conn.close()


async def test_a_new_migration_is_applied_on_the_next_start(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "widgets", WIDGETS[:1])
        assert await migrate(conn, "widgets", WIDGETS) == 1
    finally:
        await conn.close()


async def test_replicas_migrating_at_once_apply_each_migration_exactly_once(
    database_url: str,
) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(6)]
    try:
        applied = await asyncio.gather(
            *(migrate(c, "widgets", [*core_migrations(), *WIDGETS]) for c in conns)
        )
        assert sorted(applied) == [0] * 5 + [len(core_migrations()) + 2]
        rows = await conns[0].fetchval("SELECT count(*) FROM widgets.schema_migrations")
        assert rows == len(core_migrations()) + 2
    finally:
        for c in conns:
            await c.close()


async def test_each_service_schema_is_separate(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "alpha", core_migrations())
        await migrate(conn, "beta", core_migrations())
        schemas = await conn.fetch(
            "SELECT table_schema FROM information_schema.tables "
            "WHERE table_name = 'event_log' ORDER BY 1"
        )
        assert [r["table_schema"] for r in schemas] == ["alpha", "beta"]
    finally:
        await conn.close()


async def test_pooled_connections_use_the_service_schema_and_never_jit(database_url: str) -> None:
    # With JIT on (most packaged servers), a short statement whose estimate is far off spent
    # about 100 ms compiling itself on every run: the event log's reads took 3 s per 100,000
    # events instead of 0.6 s against such a server.
    db = await Database.open(ServiceSettings(database_url=database_url, db_schema="widgets"))
    try:
        async with db.connection() as conn:
            assert await conn.fetchval("SHOW jit") == "off"
            assert await conn.fetchval("SHOW search_path") == '"widgets"'
    finally:
        await db.close()


async def test_a_database_a_later_release_migrated_is_left_as_it_is_by_an_earlier_one(
    database_url: str,
) -> None:
    # A replica of the previous release restarting during a rolling upgrade: the rows of
    # migrations it does not know are ignored, and it applies nothing.
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "widgets", WIDGETS)
        assert await migrate(conn, "widgets", WIDGETS[:1]) == 0
        versions = await conn.fetch("SELECT version FROM widgets.schema_migrations ORDER BY 1")
        assert [v["version"] for v in versions] == [1, 2]
    finally:
        await conn.close()
