"""Previews (`validate_only`): a use case runs exactly as it does for real, in a transaction that
is rolled back, with the events it would append captured instead of appended.

Running the real code is what makes a preview equal the effect: the same checks give the same
errors, the same diff gives the same events. Nothing is stored (the transaction never commits),
no watcher is woken (nothing is notified), and the log's head row is only read, so a preview does
not hold up the writers of the log while it runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from canopy_core.db import Database
from canopy_core.eventlog import EventLog, NewEvent


class PreviewDatabase(Database):
    """One connection in one transaction that is never committed: every `transaction()` inside
    the preview is a savepoint of it, so the steps of a previewed change see each other's
    writes, and `preview_database` rolls all of them back at the end."""

    def __init__(self, db: Database, conn: asyncpg.Connection) -> None:
        super().__init__(db.pool, db.dsn, db.schema)
        self._conn = conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """The preview's connection."""
        yield self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """The preview's connection inside a savepoint (released, or rolled back on error)."""
        async with self._conn.transaction():
            yield self._conn


@asynccontextmanager
async def preview_database(db: Database) -> AsyncIterator[PreviewDatabase]:
    """A database for one preview; everything written through it is rolled back on exit."""
    async with db.connection() as conn:
        outer = conn.transaction()
        await outer.start()
        try:
            yield PreviewDatabase(db, conn)
        finally:
            await outer.rollback()


@dataclass(frozen=True)
class BulkEvents:
    """Events a query would have appended (`EventLog.append_from` or `append_ranges`), too many
    to hold: how many
    of each (kind, keys), and the first `sample_per_key` of each keys, in log order."""

    counts: list[tuple[str, tuple[str, ...], int]]
    sample: list[NewEvent]


class PreviewLog(EventLog):
    """An event log that captures appends instead of storing them (`captured`, in log order).

    `sample_per_key` bounds what is kept of a bulk append per watch key; the counts stay
    complete.
    """

    def __init__(self, db: Database, *, sample_per_key: int = 100) -> None:
        super().__init__(db)
        self.captured: list[NewEvent | BulkEvents] = []
        self.sample_per_key = sample_per_key
        self._next: int | None = None
        self.base_revision: int | None = None  # the head the first capture read

    async def _revisions(self, conn: asyncpg.Connection, count: int) -> int:
        """The last revision the events would have had (read, not taken: nothing waits)."""
        if not conn.is_in_transaction():
            raise RuntimeError("a previewed append must run inside the caller's transaction")
        if self._next is None:
            self.base_revision = int(await conn.fetchval("SELECT revision FROM event_log_head"))
            self._next = self.base_revision + 1
        self._next += count
        return self._next - 1

    async def append(self, conn: asyncpg.Connection, events: Sequence[NewEvent]) -> int:
        """Capture `events`; returns the revision the last would have had."""
        if not events:
            raise ValueError("append needs at least one event")
        self.captured.extend(events)
        return await self._revisions(conn, len(events))

    async def append_from(
        self, conn: asyncpg.Connection, count: int, query: str, *args: object
    ) -> int:
        """Capture what the query would append: counts by (kind, keys), and the first
        `sample_per_key` events of each keys in log order."""
        if count < 1:
            raise ValueError("append_from needs at least one event")
        counts = await conn.fetch(
            f"SELECT q.kind, q.keys, count(*) FROM ({query}) q GROUP BY q.kind, q.keys", *args
        )
        limit = len(args) + 1
        sample = await conn.fetch(
            "SELECT s.kind, s.keys, s.payload FROM ("
            "  SELECT q.kind, q.keys, q.payload, q.position,"
            "         row_number() OVER (PARTITION BY q.keys ORDER BY q.position) AS n"
            f"  FROM ({query}) q"
            f") s WHERE s.n <= ${limit} ORDER BY s.position",
            *args,
            self.sample_per_key,
        )
        made = sum(r[2] for r in counts)
        if made != count:
            raise RuntimeError(f"append_from expected {count} events, the query made {made}")
        self.captured.append(
            BulkEvents(
                counts=[(r[0], tuple(r[1]), r[2]) for r in counts],
                sample=[NewEvent(r[0], tuple(r[1]), r[2]) for r in sample],
            )
        )
        return await self._revisions(conn, count)

    async def append_ranges(
        self, conn: asyncpg.Connection, count: int, query: str, *args: object
    ) -> int:
        """Capture what the ranges would append: the same counts and sample as `append_from`
        would of the events one by one, read from the ranges' arrays (their lengths, and the
        first `sample_per_key` elements of each keys' ranges in log order) without expanding
        them."""
        if count < 1:
            raise ValueError("append_ranges needs at least one event")
        limit = len(args) + 1
        rows = await conn.fetch(
            "SELECT q.kind, q.keys, cardinality(q.payloads) AS n,"
            f"       q.payloads[1:${limit}] AS head"
            f" FROM ({query}) q ORDER BY q.position",
            *args,
            self.sample_per_key,
        )
        counts: dict[tuple[str, tuple[str, ...]], int] = {}
        sampled: dict[tuple[str, ...], int] = {}
        sample: list[NewEvent] = []
        for row in rows:
            keys = tuple(row["keys"])
            counts[(row["kind"], keys)] = counts.get((row["kind"], keys), 0) + row["n"]
            room = self.sample_per_key - sampled.get(keys, 0)
            taken = list(row["head"] or ())[: max(room, 0)]
            sampled[keys] = sampled.get(keys, 0) + len(taken)
            sample.extend(NewEvent(row["kind"], keys, payload) for payload in taken)
        made = sum(counts.values())
        if made != count:
            raise RuntimeError(f"append_ranges expected {count} events, the query made {made}")
        self.captured.append(
            BulkEvents(
                counts=[(kind, keys, n) for (kind, keys), n in counts.items()],
                sample=sample,
            )
        )
        return await self._revisions(conn, count)
