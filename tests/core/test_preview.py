"""Previews' capture of bulk appends (`PreviewLog.append_from`): complete counts and per keys the
first events, exactly as the real append would store them, and nothing stored."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from canopy_core.db import Database
from canopy_core.eventlog import EventLog
from canopy_core.preview import BulkEvents, PreviewLog, preview_database
from canopy_core.settings import ServiceSettings

# Three kinds interleaved under three keys, one of them (c) rare: two events of one keys, one of
# them among that keys' first.
MIXED = """
    SELECT g - 1 AS position,
           CASE WHEN g IN (5, 50) THEN 'c' WHEN g % 5 < 2 THEN 'b' ELSE 'a' END AS kind,
           ARRAY['k' || (g % 3)] AS keys, convert_to(g::text, 'UTF8') AS payload
    FROM generate_series(1, $1::int) g
"""


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(
        ServiceSettings(database_url=database_url, db_schema="previewtest")
    )
    yield database
    await database.close()


async def test_a_previewed_bulk_append_counts_every_event_and_samples_the_first_per_keys(
    db: Database,
) -> None:
    log = EventLog(db)
    async with db.transaction() as conn:
        before = await conn.fetchval("SELECT revision FROM event_log_head")
    async with preview_database(db) as preview_db:
        preview = PreviewLog(preview_db, sample_per_key=4)
        async with preview_db.transaction() as conn:
            assert await preview.append_from(conn, 100, MIXED, 100) == before + 100
    async with db.transaction() as conn:
        assert await conn.fetchval("SELECT revision FROM event_log_head") == before
        await log.append_from(conn, 100, MIXED, 100)
    stored = (await log.read(before, limit=1000)).events
    [captured] = preview.captured
    assert isinstance(captured, BulkEvents)
    assert sorted(captured.counts) == sorted(
        (kind, keys, n) for (kind, keys), n in Counter((e.kind, e.keys) for e in stored).items()
    )
    first, seen = [], Counter[tuple[str, ...]]()
    for event in stored:
        if seen[event.keys] < 4:
            first.append(event)
        seen[event.keys] += 1
    assert [(e.kind, e.keys, e.payload) for e in captured.sample] == [
        (e.kind, e.keys, e.payload) for e in first
    ]
    assert len(first) == 12
    assert ("c", ("k2",), 2) in captured.counts
    assert [e.kind for e in captured.sample if e.keys == ("k2",)] == ["a", "c", "a", "b"]


# Ranges of one to seven events under four keys, in log order: 100 events in all.
RANGES = """
    SELECT r.first AS position, 'renamed' AS kind, ARRAY['w' || (r.n % 4)] AS keys,
           ARRAY(SELECT convert_to((r.first + i)::text, 'UTF8')
                 FROM generate_series(0, r.size - 1) i) AS payloads
    FROM (
        SELECT n, size, coalesce(sum(size) OVER (ORDER BY n ROWS BETWEEN UNBOUNDED PRECEDING
                                                   AND 1 PRECEDING), 0)::int AS first
        FROM (SELECT n, 1 + (n * 5) % 7 AS size FROM generate_series(1, $1::int) n) s
    ) r
"""


@pytest.mark.parametrize("compact", [True, False])
async def test_previewed_ranges_count_and_sample_exactly_what_the_log_stores(
    db: Database, compact: bool
) -> None:
    log = EventLog(db, compact_events=compact)
    async with db.transaction() as conn:
        before = await conn.fetchval("SELECT revision FROM event_log_head")
        count = await conn.fetchval(f"SELECT sum(cardinality(payloads)) FROM ({RANGES}) q", 25)
    async with preview_database(db) as preview_db:
        preview = PreviewLog(preview_db, sample_per_key=5)
        async with preview_db.transaction() as conn:
            assert await preview.append_ranges(conn, count, RANGES, 25) == before + count
    async with db.transaction() as conn:
        assert await conn.fetchval("SELECT revision FROM event_log_head") == before
        await log.append_ranges(conn, count, RANGES, 25)
    stored = (await log.read(before, limit=1000)).events
    assert len(stored) == count
    [captured] = preview.captured
    assert isinstance(captured, BulkEvents)
    assert sorted(captured.counts) == sorted(
        (kind, keys, n) for (kind, keys), n in Counter((e.kind, e.keys) for e in stored).items()
    )
    first, seen = [], Counter[tuple[str, ...]]()
    for event in stored:
        if seen[event.keys] < 5:
            first.append(event)
        seen[event.keys] += 1
    assert [(e.keys, e.payload) for e in captured.sample] == [(e.keys, e.payload) for e in first]
