"""Upgrading the discovery schema: runs read as they were saved, by either release."""

from __future__ import annotations

from typing import Any

import asyncpg

from canopy_core.db import _init_connection, core_migrations, migrate
from canopy_discovery import store
from canopy_discovery.model import Progress
from canopy_discovery.server import spec

INSERT_RUN = (
    "INSERT INTO discovery.sync_runs (id, integration_id, tenant_id, state, trigger, progress, "
    "etag) VALUES ($1, 'i_1', 't_acme', 'SUCCEEDED', 'MANUAL', $2, 'e')"
)
PREVIOUS_PROGRESS: dict[str, Any] = {
    "organizational_units_found": 3,
    "accounts_found": 7,
    "api_calls": 12,
    "throttled_calls": 1,
    "elapsed_seconds": 0.5,
}


async def test_runs_of_either_release_read_back_and_progress_keeps_the_previous_releases_keys(
    database_url: str,
) -> None:
    migrations = [*core_migrations(), *spec().migrations]
    before = [m for m in migrations if not (m.source == "discovery" and m.version >= 4)]
    conn = await asyncpg.connect(database_url)
    try:
        await _init_connection(conn)
        await migrate(conn, "discovery", before)
        # Saved before the columns existed, refused OUs among the progress keys.
        await conn.execute(
            INSERT_RUN,
            "r_before",
            {
                **PREVIOUS_PROGRESS,
                "organizational_units_refused": 2,
                "refused_organizational_unit_ids": ["ou-a", "ou-b"],
            },
        )
        assert await migrate(conn, "discovery", migrations) == 1
        # Saved by a replica of the previous release, beside the current ones.
        await conn.execute(INSERT_RUN, "r_previous", PREVIOUS_PROGRESS)
        await conn.execute("SET search_path TO discovery")

        earlier = await store.get_run(conn, "r_before")
        previous = await store.get_run(conn, "r_previous")
        assert earlier is not None
        assert previous is not None
        assert earlier.progress == Progress(
            **PREVIOUS_PROGRESS,
            organizational_units_refused=2,
            refused_organizational_unit_ids=("ou-a", "ou-b"),
        )
        assert previous.progress == Progress(**PREVIOUS_PROGRESS)

        # Saved by the current release: what the previous one reads strictly keeps its keys.
        saved = await store.save_run(conn, earlier)
        assert saved.progress == earlier.progress
        progress = await conn.fetchval("SELECT progress FROM sync_runs WHERE id = 'r_before'")
        assert progress == PREVIOUS_PROGRESS
    finally:
        await conn.close()


async def test_progress_keys_of_a_later_release_are_ignored(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await _init_connection(conn)
        await migrate(conn, "discovery", [*core_migrations(), *spec().migrations])
        await conn.execute(INSERT_RUN, "r_later", {**PREVIOUS_PROGRESS, "pages_skipped": 4})
        await conn.execute("SET search_path TO discovery")
        run = await store.get_run(conn, "r_later")
        assert run is not None
        assert run.progress == Progress(**PREVIOUS_PROGRESS)
    finally:
        await conn.close()
