"""Upgrading the permissions schema keeps every workspace's schemas as they were."""

from __future__ import annotations

import asyncpg

from canopy_core.db import core_migrations, migrate
from canopy_permissions import store
from canopy_permissions.server import spec


async def test_published_names_are_taken_from_the_rows_they_replace(database_url: str) -> None:
    migrations = [*core_migrations(), *spec().migrations]
    before = [m for m in migrations if not (m.source == "permissions" and m.version >= 4)]
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "permissions", before)
        await conn.executemany(
            "INSERT INTO permissions.workspace_schemas (workspace_id, connection_id, "
            "integration_id, name, account_id, attachment_kind, via_folder_id, config) "
            "VALUES ($1, $2, 'i_1', $3, $4, $5, $6, $7)",
            [
                ("w_a", "c_1", "aws_prod", "111111111111", "FOLDER", "f_root", b"\x08\x01"),
                ("w_b", "c_1", "aws_prod", "111111111111", "DIRECT", "", b"\x08\x01"),
                ("w_a", "c_2", "aws_dev", "222222222222", "FOLDER", "f_root", b""),
            ],
        )
        assert await migrate(conn, "permissions", migrations) == 1
        await conn.execute("SET search_path TO permissions")
        a = await store.workspace_schemas(conn, "w_a")
        b = await store.workspace_schemas(conn, "w_b")
        assert [(s.name, s.account_id, s.attachment_kind, s.config) for s in a] == [
            ("aws_dev", "222222222222", "FOLDER", b""),
            ("aws_prod", "111111111111", "FOLDER", b"\x08\x01"),
        ]
        assert [(s.name, s.attachment_kind, s.via_folder_id) for s in b] == [
            ("aws_prod", "DIRECT", "")
        ]
        assert await conn.fetchval("SELECT count(*) FROM published_schemas") == 2
    finally:
        await conn.close()
