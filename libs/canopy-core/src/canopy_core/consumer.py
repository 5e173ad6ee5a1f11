"""Consuming an event log with exactly-once effect.

The consumer's position (its cursor) lives in the consumer's own database and is advanced in the
same transaction as the effects of the events it read: after a crash at any point either both
happened or neither did, and events at or below the cursor are skipped when redelivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from canopy_core.db import Database
from canopy_core.errors import OutOfRange

log = logging.getLogger(__name__)

T = TypeVar("T")


class Cursor:
    """The stored position of one named consumer."""

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer

    async def get(self, conn: asyncpg.Connection) -> int:
        """The last revision whose effects are committed (0 if none)."""
        revision = await conn.fetchval(
            "SELECT revision FROM consumer_cursors WHERE consumer = $1", self.consumer
        )
        return int(revision or 0)

    async def lock(self, conn: asyncpg.Connection) -> int:
        """Like `get`, holding the row until commit so replicas apply one batch at a time."""
        await conn.execute(
            "INSERT INTO consumer_cursors (consumer, revision) VALUES ($1, 0) "
            "ON CONFLICT (consumer) DO NOTHING",
            self.consumer,
        )
        revision: int = await conn.fetchval(
            "SELECT revision FROM consumer_cursors WHERE consumer = $1 FOR UPDATE", self.consumer
        )
        return revision

    async def advance(self, conn: asyncpg.Connection, revision: int) -> None:
        """Move the cursor forward to `revision`, inside the caller's transaction."""
        await conn.execute(
            "UPDATE consumer_cursors SET revision = greatest(revision, $2), updated_at = now() "
            "WHERE consumer = $1",
            self.consumer,
            revision,
        )

    async def reset(self, conn: asyncpg.Connection, revision: int) -> None:
        """Move the cursor to `revision`, backwards too (after the source log was reset)."""
        await self.lock(conn)
        await conn.execute(
            "UPDATE consumer_cursors SET revision = $2, updated_at = now() WHERE consumer = $1",
            self.consumer,
            revision,
        )


async def apply_batch(
    db: Database,
    cursor: Cursor,
    events: Sequence[T],
    revision_of: Callable[[T], int],
    handle: Callable[[asyncpg.Connection, Sequence[T]], Awaitable[None]],
) -> int:
    """Apply the events past the cursor and advance it, in one transaction; returns the cursor."""
    async with db.transaction() as conn:
        position = await cursor.lock(conn)
        fresh = [event for event in events if revision_of(event) > position]
        if not fresh:
            return position
        await handle(conn, fresh)
        last = revision_of(fresh[-1])
        await cursor.advance(conn, last)
        return last


async def consume(
    db: Database,
    cursor: Cursor,
    subscribe: Callable[[int], AsyncIterator[Sequence[T]]],
    revision_of: Callable[[T], int],
    handle: Callable[[asyncpg.Connection, Sequence[T]], Awaitable[None]],
    *,
    retry_delay: float = 0.5,
    max_retry_delay: float = 10.0,
) -> None:
    """Follow a source forever from the stored cursor, reconnecting after any failure.

    `subscribe(after_revision)` opens the source (for example a `Watch…` stream) and yields
    batches of events. A compacted cursor (`OutOfRange`) is not retried: it is raised.
    """
    delay = retry_delay
    while True:
        try:
            async with db.connection() as conn:
                position = await cursor.get(conn)
            async for batch in subscribe(position):
                if batch:
                    position = await apply_batch(db, cursor, batch, revision_of, handle)
                delay = retry_delay
        except OutOfRange:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "consumer %s failed (%r); retrying in %.1f s",
                cursor.consumer,
                exc,
                delay,
                extra={"consumer": cursor.consumer, "error": repr(exc), "retry_in": delay},
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_retry_delay)
