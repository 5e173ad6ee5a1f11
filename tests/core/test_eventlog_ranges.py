"""Events stored as ranges (one row for consecutive events of one kind and keys) read back
exactly as the same events stored one per row: revisions, order, resumption inside a range,
page limits that cut one, key filters, compaction, `last`, and live delivery by the tail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canopy_core.db import Database
from canopy_core.errors import OutOfRange
from canopy_core.eventlog import EventLog, NewEvent, Page, StoredEvent
from canopy_core.settings import ServiceSettings

# Ranges given as arrays: $1 positions, $2 kinds, $3 keys (comma-joined), $4 sizes, and $5 every
# payload in log order (a range's payloads are its slice of them).
RANGES = """
    SELECT r.position, r.kind, string_to_array(r.keys, ',') AS keys,
           ($5::bytea[])[r.position + 1 : r.position + r.size] AS payloads
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[])
         AS r(position, kind, keys, size)
"""

Range = tuple[str, tuple[str, ...], int]  # kind, keys, how many events


def range_args(ranges: Sequence[Range], offset: int = 0) -> tuple[object, ...]:
    """The arguments of RANGES for these ranges; payloads name their position (from `offset`)."""
    positions, position = [], 0
    for _, _, size in ranges:
        positions.append(position)
        position += size
    payloads = [f"p{offset + n}".encode() for n in range(position)]
    return (
        positions,
        [kind for kind, _, _ in ranges],
        [",".join(keys) for _, keys, _ in ranges],
        [size for _, _, size in ranges],
        payloads,
    )


def one_per_event(ranges: Sequence[Range], offset: int = 0) -> list[NewEvent]:
    """The same events as `range_args`, one by one."""
    events, n = [], offset
    for kind, keys, size in ranges:
        for _ in range(size):
            events.append(NewEvent(kind, keys, f"p{n}".encode()))
            n += 1
    return events


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(
        ServiceSettings(database_url=database_url, db_schema="evranges", db_pool_max_size=10)
    )
    yield database
    await database.close()


@pytest.fixture
async def log(db: Database) -> AsyncIterator[EventLog]:
    event_log = EventLog(db, progress_interval=0.2, batch_size=4, compact_events=True)
    yield event_log
    await event_log.close()


async def append_ranges(db: Database, log: EventLog, ranges: Sequence[Range]) -> int:
    count = sum(size for _, _, size in ranges)
    async with db.transaction() as conn:
        head = await log.append_ranges(conn, count, RANGES, *range_args(ranges, await log.head()))
    return head


def summary(events: Sequence[StoredEvent]) -> list[tuple[int, str, tuple[str, ...], bytes]]:
    return [(e.revision, e.kind, e.keys, e.payload) for e in events]


async def first_batch(
    log: EventLog, after_revision: int, keys: list[str] | None = None
) -> tuple[list[int], int]:
    """The revisions and claim of a watch's first batch."""
    stream = log.watch(after_revision, keys)
    try:
        batch = await asyncio.wait_for(anext(stream), 10)
    finally:
        await stream.aclose()
    return [e.revision for e in batch.events], batch.latest_revision


async def rows(db: Database) -> list[tuple[int, int | None]]:
    async with db.connection() as conn:
        found = await conn.fetch("SELECT revision, first_revision FROM event_log ORDER BY 1")
    return [(r[0], r[1]) for r in found]


# Two workspaces' ranges of five and three, then a range of one: revisions 1-5, 6-8, 9.
THREE = [("renamed", ("w:a",), 5), ("renamed", ("w:b",), 3), ("added", ("w:a",), 1)]


async def test_ranges_take_one_row_each_and_read_back_event_by_event(
    db: Database, log: EventLog
) -> None:
    assert await append_ranges(db, log, THREE) == 9
    # A range of one is a single event: the release before ranges reads it.
    assert await rows(db) == [(5, 1), (8, 6), (9, None)]
    page = await log.read(0, limit=100)
    assert summary(page.events) == [
        (n, kind, keys, f"p{n - 1}".encode())
        for n, (kind, keys) in enumerate(
            [("renamed", ("w:a",))] * 5 + [("renamed", ("w:b",))] * 3 + [("added", ("w:a",))],
            start=1,
        )
    ]
    assert page.head == 9
    assert not page.truncated
    assert len({e.created_at for e in page.events}) == 1


async def test_without_compact_events_ranges_are_stored_one_row_per_event(db: Database) -> None:
    plain = EventLog(db)
    try:
        assert await append_ranges(db, plain, THREE) == 9
        assert await rows(db) == [(n, None) for n in range(1, 10)]
        assert [e.payload for e in (await plain.read(0)).events] == [
            f"p{n}".encode() for n in range(9)
        ]
    finally:
        await plain.close()


async def test_reading_after_a_revision_inside_a_range_resumes_inside_it(
    db: Database, log: EventLog
) -> None:
    await append_ranges(db, log, THREE)
    page = await log.read(3, limit=100)
    assert [e.revision for e in page.events] == [4, 5, 6, 7, 8, 9]
    assert [e.payload for e in page.events][:2] == [b"p3", b"p4"]
    assert await first_batch(log, 6) == ([7, 8, 9], 9)


async def test_a_page_limit_cuts_a_range_and_the_next_page_resumes_inside_it(
    db: Database, log: EventLog
) -> None:
    await append_ranges(db, log, THREE)
    first = await log.read(0, limit=3)
    assert [e.revision for e in first.events] == [1, 2, 3]
    assert first.truncated
    second = await log.read(3, limit=3)
    assert [e.revision for e in second.events] == [4, 5, 6]
    assert second.truncated
    third = await log.read(6, limit=3)
    assert [e.revision for e in third.events] == [7, 8, 9]
    assert [e.payload for e in third.events] == [b"p6", b"p7", b"p8"]
    # A watch's catch-up pages (four events each here) claim only what they sent.
    stream = log.watch(0)
    batches = [await asyncio.wait_for(anext(stream), 10) for _ in range(3)]
    assert [[e.revision for e in b.events] for b in batches] == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert [b.latest_revision for b in batches] == [4, 8, 9]
    await stream.aclose()


async def test_a_read_through_a_revision_inside_a_range_stops_there(
    db: Database, log: EventLog
) -> None:
    await append_ranges(db, log, THREE)
    assert [e.revision for e in (await log.read(2, through=4, limit=100)).events] == [3, 4]
    assert [e.revision for e in (await log.read(4, through=7, limit=100)).events] == [5, 6, 7]
    assert (await log.read(7, through=7)).events == []


async def test_key_filters_select_whole_ranges(db: Database, log: EventLog) -> None:
    await append_ranges(db, log, THREE)
    assert [e.revision for e in (await log.read(0, ["w:b"], limit=100)).events] == [6, 7, 8]
    assert [e.revision for e in (await log.read(2, ["w:a"], limit=100)).events] == [3, 4, 5, 9]
    page = await log.read(0, ["w:a"], limit=2)
    assert [e.revision for e in page.events] == [1, 2]
    assert page.truncated
    assert [e.revision for e in (await log.read(7, ["w:b"], limit=100)).events] == [8]
    assert await first_batch(log, 1, ["w:b"]) == ([6, 7, 8], 9)


async def test_last_is_the_last_event_of_the_latest_range_carrying_the_key(
    db: Database, log: EventLog
) -> None:
    await append_ranges(db, log, THREE[:2])
    last = await log.last("w:a")
    assert last is not None
    assert (last.revision, last.payload) == (5, b"p4")
    last = await log.last("w:b")
    assert last is not None
    assert (last.revision, last.payload) == (8, b"p7")


async def test_compaction_removes_a_range_as_a_whole(db: Database, log: EventLog) -> None:
    await append_ranges(db, log, THREE[:2])
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE event_log SET created_at = now() - interval '8 days' WHERE revision = 5"
        )
    assert await log.compact(timedelta(days=7)) == 5
    with pytest.raises(OutOfRange) as caught:
        await log.read(3)
    assert caught.value.metadata["compacted_through"] == "5"
    assert [e.revision for e in (await log.read(5, limit=100)).events] == [6, 7, 8]
    assert await log.compact(timedelta(0)) == 8
    assert await rows(db) == []


async def test_the_tail_delivers_a_range_to_live_watchers(db: Database, log: EventLog) -> None:
    everything, only_b = log.watch(0), log.watch(0, ["w:b"])
    for stream in (everything, only_b):  # progress messages: both now follow the tail
        assert (await asyncio.wait_for(anext(stream), 10)).events == ()
    head = await append_ranges(db, log, [("renamed", ("w:a",), 6), ("renamed", ("w:b",), 7)])
    seen_all: list[int] = []
    while not seen_all or seen_all[-1] < head:
        batch = await asyncio.wait_for(anext(everything), 10)
        seen_all += [e.revision for e in batch.events]
        # Chunks of the live tail (four events here) claim only what they hold.
        assert not batch.events or batch.latest_revision in (batch.events[-1].revision, head)
    seen_b: list[int] = []
    while not seen_b or seen_b[-1] < head:
        seen_b += [e.revision for e in (await asyncio.wait_for(anext(only_b), 10)).events]
    assert seen_all == list(range(1, 14))
    assert seen_b == list(range(7, 14))
    await everything.aclose()
    await only_b.aclose()


async def test_ranges_that_do_not_number_the_events_exactly_append_nothing(
    db: Database, log: EventLog
) -> None:
    overlapping = """
        SELECT p AS position, 'test' AS kind, ARRAY['k'] AS keys,
               ARRAY['\\x00'::bytea, '\\x01'::bytea] AS payloads
        FROM unnest($1::bigint[]) p
    """
    for positions, count in (([0, 1], 4), ([0, 3], 4), ([0, 2], 3)):
        with pytest.raises(RuntimeError, match="append_ranges expected"):
            async with db.transaction() as conn:
                await log.append_ranges(conn, count, overlapping, positions)
    assert await log.head() == 0
    assert await rows(db) == []


# -- the property: a log of ranges reads like the same events one per row ----------------------

KEYS = ("a", "b", "c")
ranges_strategy = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(("renamed", "added")),
            st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True).map(tuple),
            st.integers(1, 12),
        ),
        min_size=1,
        max_size=4,
    ),
    min_size=1,
    max_size=4,
)
reads = st.lists(
    st.tuples(
        st.integers(0, 120),  # after_revision (clamped to the head)
        st.one_of(st.none(), st.lists(st.sampled_from(KEYS), min_size=1, max_size=2)),
        st.integers(1, 15),  # limit
        st.one_of(st.none(), st.integers(0, 120)),  # through
    ),
    min_size=1,
    max_size=8,
)


async def _reset(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.execute("TRUNCATE event_log")
        await conn.execute("UPDATE event_log_head SET revision = 0")
        await conn.execute("UPDATE event_log_compaction SET compacted_through = 0")


def _same(ranged: Page, single: Page) -> None:
    assert summary(ranged.events) == summary(single.events)
    assert [e.created_at for e in ranged.events] == [e.created_at for e in single.events]
    assert (ranged.head, ranged.compacted_through, ranged.truncated) == (
        single.head,
        single.compacted_through,
        single.truncated,
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=ranges_strategy, plan=reads)
async def test_a_log_of_ranges_reads_exactly_like_the_same_events_one_per_row(
    database_url: str,
    changes: list[list[Range]],
    plan: list[tuple[int, list[str] | None, int, int | None]],
) -> None:
    dbs = [
        await Database.open(ServiceSettings(database_url=database_url, db_schema=schema))
        for schema in ("evprop_ranges", "evprop_rows")
    ]
    ranged, single = EventLog(dbs[0], compact_events=True), EventLog(dbs[1])
    try:
        for db in dbs:
            await _reset(db)
        heads = []
        for n, change in enumerate(changes):
            count, offset = sum(size for _, _, size in change), await ranged.head()
            async with dbs[0].transaction() as conn:
                await ranged.append_ranges(conn, count, RANGES, *range_args(change, offset))
            async with dbs[1].transaction() as conn:
                await single.append(conn, one_per_event(change, offset))
            heads.append(offset + count)
            for db in dbs:  # each change's time, the same in both logs
                async with db.transaction() as conn:
                    await conn.execute(
                        "UPDATE event_log SET created_at = $1 WHERE revision > $2",
                        datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
                        offset,
                    )
        head = heads[-1]
        assert len(await rows(dbs[0])) == sum(len(change) for change in changes)
        for after, keys, limit, through in plan:
            after = min(after, head)
            _same(
                await ranged.read(after, keys, limit=limit, through=through),
                await single.read(after, keys, limit=limit, through=through),
            )
            # Paging on from each page's last event reads the rest exactly once.
            position = after
            while True:
                page = await ranged.read(position, keys, limit=limit)
                _same(page, await single.read(position, keys, limit=limit))
                if not page.truncated:
                    break
                position = page.events[-1].revision
        for key in KEYS:
            ranged_last, single_last = await ranged.last(key), await single.last(key)
            assert (ranged_last and ranged_last[:4]) == (single_last and single_last[:4])
        # Compacting the same changes from both: what is left still reads the same.
        cut = heads[(len(heads) - 1) // 2]
        for db in dbs:
            async with db.transaction() as conn:
                await conn.execute(
                    "UPDATE event_log SET created_at = now() - interval '8 days' "
                    "WHERE revision <= $1",
                    cut,
                )
        assert await ranged.compact(timedelta(days=7)) == cut
        assert await single.compact(timedelta(days=7)) == cut
        for after, keys, limit, _ in plan:
            after = min(max(after, cut), head)
            _same(
                await ranged.read(after, keys, limit=limit),
                await single.read(after, keys, limit=limit),
            )
    finally:
        await ranged.close()
        await single.close()
        for db in dbs:
            await db.close()


async def test_reading_after_the_largest_revision_reads_nothing(db: Database) -> None:
    log = EventLog(db, compact_events=True)
    page = await log.read(2**63 - 1)
    assert page.events == []
    keyed = await log.read(2**63 - 1, keys=["workspace:w_1"])
    assert keyed.events == []
