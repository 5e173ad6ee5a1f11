"""PostgreSQL access: one asyncpg pool per service, confined to the service's own schema.

Migrations are plain SQL files, applied at start under an advisory lock so that replicas starting
together are safe and a second run is a no-op. Connection failures (a restarting server) surface
as `Unavailable`, and the pool drops its idle connections so the next call reconnects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from importlib.abc import Traversable

import asyncpg

from canopy_core.errors import Unavailable
from canopy_core.settings import ServiceSettings

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

# What a lost or refused database connection looks like from asyncpg.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    TimeoutError,
)


def is_connection_error(exc: BaseException) -> bool:
    """Whether `exc` means the database could not be reached (retryable), not a bad query."""
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc) or "connection" in str(exc).lower()
    return isinstance(exc, CONNECTION_ERRORS)


async def run_every(every: timedelta, work: Callable[[], Awaitable[None]], what: str) -> None:
    """Run `work` now and then every `every`, forever (a service's background task). A database
    that cannot be reached just waits for the next turn; any other failure is logged."""
    while True:
        try:
            await work()
        except Exception as exc:
            if not is_connection_error(exc) and not isinstance(exc, Unavailable):
                log.exception("%s failed", what)
        await asyncio.sleep(every.total_seconds())


@dataclass(frozen=True)
class Migration:
    """One SQL file: applied once per schema, in version order, in its own transaction."""

    source: str
    version: int
    name: str
    sql: str


def load_migrations(source: str, folder: Traversable) -> list[Migration]:
    """Read `NNNN_name.sql` files from a package folder, sorted by version."""
    found: list[Migration] = []
    if not folder.is_dir():
        return found
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(source, int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {source}: {versions}")
    return found


def core_migrations() -> list[Migration]:
    """The tables every service schema has: event log, consumer cursors, request ids."""
    return load_migrations("core", resources.files("canopy_core") / "migrations")


async def migrate(conn: asyncpg.Connection, schema: str, migrations: Sequence[Migration]) -> int:
    """Apply what is missing from `migrations` to `schema`; returns how many were applied."""
    lock_key = f"canopy-migrate:{schema}"
    await conn.execute("SELECT pg_advisory_lock(hashtext($1))", lock_key)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations (
                    source text NOT NULL,
                    version integer NOT NULL,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (source, version))"""
        )
        done = {
            (r["source"], r["version"])
            for r in await conn.fetch(f'SELECT source, version FROM "{schema}".schema_migrations')
        }
        applied = 0
        for migration in migrations:
            if (migration.source, migration.version) in done:
                continue
            async with conn.transaction():
                await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                await conn.execute(migration.sql)
                await conn.execute(
                    f'INSERT INTO "{schema}".schema_migrations (source, version, name) '
                    "VALUES ($1, $2, $3)",
                    migration.source,
                    migration.version,
                    migration.name,
                )
            applied += 1
            log.info(
                "migration applied",
                extra={"schema": schema, "migration": f"{migration.source}/{migration.name}"},
            )
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", lock_key)


class Database:
    """A service's pool, with `search_path` set to its schema on every connection."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, schema: str) -> None:
        self.pool = pool
        self.dsn = dsn
        self.schema = schema

    @classmethod
    async def open(
        cls, settings: ServiceSettings, migrations: Sequence[Migration] = ()
    ) -> Database:
        """Resolve the DSN (embedded when unset), apply migrations, and open the pool."""
        dsn = await resolve_dsn(settings)
        schema = settings.db_schema
        timeout = settings.db_connect_timeout.total_seconds()
        conn = await asyncpg.connect(dsn, timeout=timeout)
        try:
            await migrate(conn, schema, [*core_migrations(), *migrations])
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            dsn,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            timeout=timeout,
            server_settings={
                "search_path": f'"{schema}"',
                "application_name": f"canopy-{settings.service_name}",
                # Every statement here is short. With JIT on (the default of most packaged
                # servers), one whose estimate is far off, as any is before its tables are
                # analysed, spends 100 ms compiling itself on every run.
                "jit": "off",
            },
            init=_init_connection,
            reset=_keep_session,
        )
        return cls(pool, dsn, schema)

    async def close(self) -> None:
        """Close every connection, waiting briefly for those in use."""
        try:
            await asyncio.wait_for(self.pool.close(), timeout=5)
        except TimeoutError:
            self.pool.terminate()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; a lost database becomes `Unavailable`."""
        try:
            async with self.pool.acquire() as conn:
                yield conn
        except Exception as exc:
            if is_connection_error(exc):
                await self.pool.expire_connections()
                raise Unavailable(
                    "the database is unavailable; retry shortly", reason="DATABASE_UNAVAILABLE"
                ) from exc
            raise

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside one transaction, committed when the block ends."""
        async with self.connection() as conn, conn.transaction():
            yield conn


def _encode_jsonb(value: object) -> bytes:
    return b"\x01" + json.dumps(value, separators=(",", ":")).encode()


def _decode_jsonb(data: bytes) -> object:
    if data == b"\x01{}":  # the common empty object, without the parser
        return {}
    return json.loads(data[1:])


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without the default reset query (a round trip on every release).

    Pooled connections never change session state: the search path comes from the connection
    settings, locks are transaction-scoped, and LISTEN uses a connection of its own. asyncpg
    still rolls back a transaction left open before calling this.
    """


async def _init_connection(conn: asyncpg.Connection) -> None:
    """jsonb columns read and write Python values (binary, so that COPY works too)."""
    await conn.set_type_codec(
        "jsonb",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        schema="pg_catalog",
        format="binary",
    )


async def resolve_dsn(settings: ServiceSettings) -> str:
    """The configured DATABASE_URL, or the embedded server's DSN."""
    if settings.database_url:
        return settings.database_url
    from canopy_core.embedded import start_embedded

    return await start_embedded(settings.data_dir)
