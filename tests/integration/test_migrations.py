"""Upgrading the integration schema: integrations stored before event queues existed."""

from __future__ import annotations

import asyncpg

from canopy_core.db import core_migrations, migrate
from canopy_integration.server import spec


async def test_an_interval_stored_as_the_old_default_becomes_unset_and_others_stay(
    database_url: str,
) -> None:
    migrations = [*core_migrations(), *spec().migrations]
    before = [m for m in migrations if not (m.source == "integration" and m.version >= 5)]
    through_5 = [m for m in migrations if not (m.source == "integration" and m.version >= 6)]
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "integration", before)
        await conn.executemany(
            "INSERT INTO integration.integrations (id, tenant_id, handle, state, "
            "discovery_role_arn, discovery_external_id, member_role_name, "
            "sync_interval_seconds, max_delete_fraction, root_folder_id, etag) "
            "VALUES ($1, 't_acme', $2, 'ENABLED', 'arn:aws:iam::111111111111:role/d', "
            "'t_acme:abcd1234', 'm', $3, 0.5, $4, 'e')",
            [("i_old", "old", 900, "f_old"), ("i_hourly", "hourly", 3600, "f_hourly")],
        )
        assert await migrate(conn, "integration", through_5) == 1
        rows = await conn.fetch(
            "SELECT id, sync_interval_seconds, event_queue, event_queue_state "
            "FROM integration.integrations ORDER BY id"
        )
        # Unset (0): 15 minutes without a queue, as before; a queue added later lengthens it.
        assert [tuple(r) for r in rows] == [
            ("i_hourly", 3600, "", "NOT_CONFIGURED"),
            ("i_old", 0, "", "NOT_CONFIGURED"),
        ]
    finally:
        await conn.close()


async def test_integrations_written_before_the_filters_have_none_and_old_writers_still_work(
    database_url: str,
) -> None:
    migrations = [*core_migrations(), *spec().migrations]
    before = [m for m in migrations if not (m.source == "integration" and m.version >= 6)]
    conn = await asyncpg.connect(database_url)
    insert = (
        "INSERT INTO integration.integrations (id, tenant_id, handle, state, "
        "discovery_role_arn, discovery_external_id, member_role_name, "
        "sync_interval_seconds, max_delete_fraction, root_folder_id, etag) "
        "VALUES ($1, 't_acme', $2, 'ENABLED', 'arn:aws:iam::111111111111:role/d', "
        "'t_acme:abcd1234', 'm', 0, 0.5, $3, 'e')"
    )
    try:
        await migrate(conn, "integration", before)
        await conn.execute(insert, "i_before", "before", "f_before")
        assert await migrate(conn, "integration", migrations) == 1
        # A replica of the previous release, during a rolling upgrade, writes as it did.
        await conn.execute(insert, "i_old_writer", "old-writer", "f_old_writer")
        rows = await conn.fetch(
            "SELECT id, filters::text, exclude_management_account, unmatched_filters::text "
            "FROM integration.integrations ORDER BY id"
        )
        assert [tuple(r) for r in rows] == [
            ("i_before", "{}", False, "{}"),
            ("i_old_writer", "{}", False, "{}"),
        ]
    finally:
        await conn.close()
