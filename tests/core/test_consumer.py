"""A consumer stores its cursor with its own writes: every event takes effect exactly once, even
when a batch fails halfway or the consumer is cancelled mid-transaction and restarted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from canopy_core.consumer import Cursor, apply_batch, consume
from canopy_core.db import Database
from canopy_core.eventlog import EventLog, NewEvent, StoredEvent
from canopy_core.settings import ServiceSettings


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(ServiceSettings(database_url=database_url, db_schema="ctest"))
    async with database.transaction() as conn:
        await conn.execute("CREATE TABLE applied (revision bigint PRIMARY KEY, payload bytea)")
    yield database
    await database.close()


@pytest.fixture
async def log(db: Database) -> AsyncIterator[EventLog]:
    event_log = EventLog(db, progress_interval=0.2, batch_size=7)
    yield event_log
    await event_log.close()


async def fill(db: Database, log: EventLog, count: int) -> None:
    async with db.transaction() as conn:
        await log.append(conn, [NewEvent("n", ("all",), str(i).encode()) for i in range(count)])


async def applied(db: Database) -> list[int]:
    async with db.connection() as conn:
        return [r["revision"] for r in await conn.fetch("SELECT revision FROM applied ORDER BY 1")]


async def write_rows(conn: asyncpg.Connection, events: Sequence[StoredEvent]) -> None:
    # A plain INSERT: a repeated event would violate the primary key and fail the test.
    await conn.executemany(
        "INSERT INTO applied (revision, payload) VALUES ($1, $2)",
        [(e.revision, e.payload) for e in events],
    )


def source(log: EventLog):  # type: ignore[no-untyped-def]
    async def subscribe(after: int) -> AsyncIterator[Sequence[StoredEvent]]:
        async for batch in log.watch(after):
            yield batch.events

    return subscribe


async def wait_for_rows(db: Database, count: int) -> list[int]:
    for _ in range(200):
        rows = await applied(db)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.05)
    return await applied(db)


async def test_redelivered_events_at_or_below_the_cursor_are_skipped(db: Database) -> None:
    cursor = Cursor("redelivery")
    events = [StoredEvent(r, "n", (), b"", None) for r in (1, 2, 3)]  # type: ignore[arg-type]
    assert await apply_batch(db, cursor, events, lambda e: e.revision, write_rows) == 3
    again = [*events, StoredEvent(4, "n", (), b"", None)]  # type: ignore[arg-type]
    assert await apply_batch(db, cursor, again, lambda e: e.revision, write_rows) == 4
    assert await applied(db) == [1, 2, 3, 4]


async def test_a_failing_batch_commits_nothing_and_is_retried(db: Database, log: EventLog) -> None:
    await fill(db, log, 30)
    failures = {"left": 2}

    async def flaky(conn: asyncpg.Connection, events: Sequence[StoredEvent]) -> None:
        await write_rows(conn, events)  # written, then the batch fails before commit
        if any(e.revision == 17 for e in events) and failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("handler crashed")

    task = asyncio.create_task(
        consume(db, Cursor("flaky"), source(log), lambda e: e.revision, flaky, retry_delay=0.01)
    )
    try:
        assert await wait_for_rows(db, 30) == list(range(1, 31))
        assert failures["left"] == 0
    finally:
        task.cancel()
    async with db.connection() as conn:
        assert await Cursor("flaky").get(conn) == 30


async def test_a_consumer_cancelled_mid_transaction_resumes_without_loss_or_doubles(
    db: Database, log: EventLog
) -> None:
    await fill(db, log, 50)
    entered = asyncio.Event()

    async def slow(conn: asyncpg.Connection, events: Sequence[StoredEvent]) -> None:
        await write_rows(conn, events)
        if any(e.revision > 20 for e in events):
            entered.set()
            await asyncio.sleep(3600)  # killed here, between its writes and its commit

    first = asyncio.create_task(consume(db, Cursor("c"), source(log), lambda e: e.revision, slow))
    await asyncio.wait_for(entered.wait(), 10)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    partial = await applied(db)
    assert partial == list(range(1, len(partial) + 1))
    assert len(partial) <= 21

    second = asyncio.create_task(
        consume(db, Cursor("c"), source(log), lambda e: e.revision, write_rows)
    )
    try:
        await fill(db, log, 5)
        assert await wait_for_rows(db, 55) == list(range(1, 56))
    finally:
        second.cancel()
