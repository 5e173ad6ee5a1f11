"""The event log: gap-free revisions in commit order, watchers that never miss or repeat an
event, progress messages, resumption, retention, and recovery of the notification listener."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from canopy_core.db import Database
from canopy_core.errors import InvalidArgument, OutOfRange
from canopy_core.eventlog import EventLog, NewEvent, WatchBatch
from canopy_core.settings import ServiceSettings


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(
        ServiceSettings(database_url=database_url, db_schema="evtest", db_pool_max_size=30)
    )
    yield database
    await database.close()


@pytest.fixture
async def log(db: Database) -> AsyncIterator[EventLog]:
    event_log = EventLog(db, progress_interval=0.2, batch_size=50)
    yield event_log
    await event_log.close()


def event(n: int, *keys: str) -> NewEvent:
    return NewEvent(kind="test", keys=keys or ("all",), payload=str(n).encode())


async def append(db: Database, log: EventLog, *events: NewEvent) -> int:
    async with db.transaction() as conn:
        return await log.append(conn, events)


async def collect(
    stream: AsyncIterator[WatchBatch], until_revision: int, timeout: float = 30
) -> list[int]:
    """Revisions of every event the stream yields up to `until_revision`."""
    seen: list[int] = []

    async def run() -> None:
        async for batch in stream:
            seen.extend(e.revision for e in batch.events)
            if seen and seen[-1] >= until_revision:
                return

    await asyncio.wait_for(run(), timeout)
    return seen


async def test_appends_get_consecutive_revisions_from_one(db: Database, log: EventLog) -> None:
    assert await append(db, log, event(1)) == 1
    assert await append(db, log, event(2), event(3), event(4)) == 4
    page = await log.read(0)
    assert [e.revision for e in page.events] == [1, 2, 3, 4]
    assert [e.payload for e in page.events] == [b"1", b"2", b"3", b"4"]
    assert page.head == 4


async def test_a_bulk_append_is_copied_in_one_go(db: Database, log: EventLog) -> None:
    last = await append(db, log, *(event(i, f"k{i % 3}") for i in range(1000)))
    assert last == 1000
    page = await log.read(0, ["k1"], limit=1000)
    assert [e.revision for e in page.events] == list(range(2, 1001, 3))


GENERATED = """
    SELECT g - 1 AS position, 'test' AS kind, ARRAY['k' || (g % 2)] AS keys,
           convert_to(g::text, 'UTF8') AS payload
    FROM generate_series(1, $1::int) g
"""


async def test_events_made_by_a_query_follow_on_and_reach_watchers(
    db: Database, log: EventLog
) -> None:
    await append(db, log, event(0))
    stream = log.watch(1, ["k1"])
    async with db.transaction() as conn:
        assert await log.append_from(conn, 5, GENERATED, 5) == 6
    page = await log.read(0)
    assert [(e.revision, e.payload, e.keys) for e in page.events[1:]] == [
        (2, b"1", ("k1",)),
        (3, b"2", ("k0",)),
        (4, b"3", ("k1",)),
        (5, b"4", ("k0",)),
        (6, b"5", ("k1",)),
    ]
    assert await collect(stream, 6) == [2, 4, 6]
    await stream.aclose()


async def test_a_query_making_the_wrong_number_of_events_appends_none(
    db: Database, log: EventLog
) -> None:
    with pytest.raises(RuntimeError, match="expected 4 events, the query made 3"):
        async with db.transaction() as conn:
            await log.append_from(conn, 4, GENERATED, 3)
    assert await log.head() == 0
    assert (await log.read(0)).events == []


async def test_an_event_has_its_transactions_time_to_the_microsecond(
    db: Database, log: EventLog
) -> None:
    times = []
    for n in (1, 2):
        async with db.transaction() as conn:
            await log.append(conn, [event(n), event(n + 10)])
            times.append(await conn.fetchval("SELECT now()"))
    page = await log.read(0)
    assert [e.created_at for e in page.events] == [times[0], times[0], times[1], times[1]]
    assert times[0] != times[1]
    assert all(e.created_at.tzinfo is not None for e in page.events)


async def test_append_outside_a_transaction_is_refused(db: Database, log: EventLog) -> None:
    async with db.connection() as conn:
        with pytest.raises(RuntimeError, match="transaction"):
            await log.append(conn, [event(1)])


async def test_a_rolled_back_append_leaves_no_gap(db: Database, log: EventLog) -> None:
    await append(db, log, event(1))
    with pytest.raises(ZeroDivisionError):
        async with db.transaction() as conn:
            await log.append(conn, [event(2)])
            _ = 1 / 0
    assert await append(db, log, event(3)) == 2
    assert [e.payload for e in (await log.read(0)).events] == [b"1", b"3"]


async def test_concurrent_writers_and_watchers_see_every_revision_once_in_order(
    db: Database, log: EventLog
) -> None:
    writers, transactions_each = 12, 25
    rng = random.Random(7)

    async def writer(w: int) -> int:
        committed = 0
        for t in range(transactions_each):
            size = rng.randint(1, 4)
            try:
                async with db.transaction() as conn:
                    # Work before and after the append, so transactions overlap and commit in
                    # an order unrelated to when they started.
                    await asyncio.sleep(rng.random() * 0.005)
                    await log.append(conn, [event(w * 1000 + t, f"w{w}") for _ in range(size)])
                    await asyncio.sleep(rng.random() * 0.005)
                    if rng.random() < 0.1:
                        raise RuntimeError("roll back")
                committed += size
            except RuntimeError:
                pass
        return committed

    async def watcher(keys: list[str] | None) -> list[int]:
        seen: list[int] = []
        async for batch in log.watch(0, keys):
            for e in batch.events:
                # Never a revision at or below one already seen.
                assert not seen or e.revision > seen[-1]
                seen.append(e.revision)
            if done.is_set() and batch.latest_revision >= final_head[0] and (not batch.events):
                return seen
        return seen

    done = asyncio.Event()
    final_head = [0]
    watchers = [asyncio.create_task(watcher(None)) for _ in range(4)]
    filtered = asyncio.create_task(watcher(["w3"]))
    late = asyncio.create_task(asyncio.sleep(0.05))
    counts = await asyncio.gather(*(writer(w) for w in range(writers)))
    await late
    late_watcher = asyncio.create_task(watcher(None))
    total = sum(counts)
    final_head[0] = total
    done.set()
    results = await asyncio.wait_for(asyncio.gather(*watchers, late_watcher), 60)
    for seen in results:
        # Gap-free: exactly 1..total, each once.
        assert seen == list(range(1, total + 1))
    page = await log.read(0, ["w3"], limit=10_000)
    assert await asyncio.wait_for(filtered, 60) == [e.revision for e in page.events]


async def test_a_watcher_gets_progress_messages_when_idle(db: Database, log: EventLog) -> None:
    await append(db, log, event(1), event(2))
    stream = log.watch(0)
    first = await anext(stream)
    assert [e.revision for e in first.events] == [1, 2]
    idle = await asyncio.wait_for(anext(stream), 5)
    assert idle.events == ()
    assert idle.latest_revision == 2
    await stream.aclose()


async def test_a_filtered_watcher_progress_reports_the_log_head(
    db: Database, log: EventLog
) -> None:
    await append(db, log, event(1, "a"), event(2, "b"), event(3, "b"))
    stream = log.watch(0, ["a"])
    first = await anext(stream)
    assert [e.revision for e in first.events] == [1]
    assert first.latest_revision == 3
    await stream.aclose()


async def test_a_reconnecting_watcher_resumes_exactly_after_its_last_revision(
    db: Database, log: EventLog
) -> None:
    await append(db, log, *(event(i) for i in range(10)))
    seen: list[int] = []
    stream = log.watch(0)
    batch = await anext(stream)
    seen.extend(e.revision for e in batch.events[:4])  # the client only processed four
    await stream.aclose()
    await append(db, log, event(10), event(11))
    resumed = log.watch(seen[-1])
    rest = await collect(resumed, 12)
    await resumed.aclose()
    assert seen + rest == list(range(1, 13))


async def test_live_events_reach_a_watcher_by_notification_not_polling(db: Database) -> None:
    # Progress every 60 s: only NOTIFY can deliver the event within the test's 10 s.
    slow = EventLog(db, progress_interval=60)
    try:
        stream = slow.watch(0)
        task = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.3)
        await append(db, slow, event(1))
        batch = await asyncio.wait_for(task, 10)
        assert [e.revision for e in batch.events] == [1]
        await stream.aclose()
    finally:
        await slow.close()


async def test_events_written_by_another_replica_reach_this_replicas_watchers(
    db: Database, log: EventLog, database_url: str
) -> None:
    other_db = await Database.open(ServiceSettings(database_url=database_url, db_schema="evtest"))
    other = EventLog(other_db)
    try:
        stream = log.watch(0)
        task = asyncio.create_task(collect(stream, 3))
        await asyncio.sleep(0.2)
        await append(other_db, other, event(1), event(2))
        await append(other_db, other, event(3))
        assert await task == [1, 2, 3]
    finally:
        await other.close()
        await other_db.close()


async def test_the_listener_reconnects_after_its_connection_is_killed(
    db: Database, log: EventLog
) -> None:
    stream = log.watch(0)
    first = asyncio.create_task(anext(stream))
    await append(db, log, event(1))
    assert [e.revision for e in (await asyncio.wait_for(first, 10)).events] == [1]
    following = asyncio.create_task(anext(stream))  # now caught up: the watcher goes live
    killed = 0
    for _ in range(50):  # the listener connects in the background
        async with db.connection() as conn:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'canopy-event-listener' "
                "AND datname = current_database()"
            )
        if killed:
            break
        await asyncio.sleep(0.1)
    assert killed == 1
    await append(db, log, event(2))
    await append(db, log, event(3))
    rest = [e.revision for e in (await asyncio.wait_for(following, 10)).events]
    rest += await collect(stream, 3) if rest[-1:] != [3] else []
    assert rest == [2, 3]
    await stream.aclose()


async def test_a_watcher_that_falls_behind_catches_up_from_the_table(db: Database) -> None:
    small = EventLog(db, progress_interval=0.2, batch_size=10, max_queued_per_watcher=5)
    try:
        stream = small.watch(0)
        waiting = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.2)
        await append(db, small, *(event(i) for i in range(40)))  # more than the queue holds
        first = await asyncio.wait_for(waiting, 10)
        rest = await collect(stream, 40)
        assert [e.revision for e in first.events] + rest == list(range(1, 41))
        await stream.aclose()
    finally:
        await small.close()


async def test_watching_from_a_compacted_revision_is_out_of_range(
    db: Database, log: EventLog
) -> None:
    await append(db, log, event(1), event(2), event(3))
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE event_log SET created_at = now() - interval '8 days' WHERE revision <= 2"
        )
    assert await log.compact(timedelta(days=7)) == 2
    with pytest.raises(OutOfRange) as caught:
        await anext(log.watch(1))
    assert caught.value.reason == "REVISION_COMPACTED"
    assert caught.value.metadata["compacted_through"] == "2"
    stream = log.watch(2)
    assert [e.revision for e in (await anext(stream)).events] == [3]
    await stream.aclose()


async def test_compaction_keeps_events_within_retention(db: Database, log: EventLog) -> None:
    await append(db, log, event(1))
    assert await log.compact(timedelta(days=7)) == 0
    assert len((await log.read(0)).events) == 1


async def test_watching_from_an_unwritten_or_negative_revision_is_refused(
    db: Database, log: EventLog
) -> None:
    await append(db, log, event(1))
    with pytest.raises(OutOfRange) as ahead:
        await anext(log.watch(5))
    assert ahead.value.reason == "REVISION_NOT_YET_WRITTEN"
    with pytest.raises(InvalidArgument) as negative:
        await anext(log.watch(-1))
    assert negative.value.violations[0].field == "after_revision"
