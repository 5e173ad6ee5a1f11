"""Event log figures: append throughput with concurrent writers, and delivery to many live
watchers through the shared tail reader, each against a baseline measured in the same run."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from bench.support import fresh_database, summary_ms
from canopy_core.db import Database
from canopy_core.eventlog import EventLog, NewEvent
from canopy_core.settings import ServiceSettings

APPENDS = 2_000
FANOUT_EVENTS = 2_000


async def _append_rate(db: Database, log: EventLog, writers: int) -> float:
    """Committed single-event transactions per second with `writers` concurrent writers."""
    per_writer = APPENDS // writers

    async def writer(w: int) -> None:
        for _ in range(per_writer):
            async with db.transaction() as conn:
                await log.append(conn, [NewEvent("bench", (f"w{w}",), b"x" * 200)])

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return per_writer * writers / (time.perf_counter() - started)


async def _delivery(db: Database, log: EventLog, watchers: int) -> dict[str, Any]:
    """Append events spread over `watchers` keys; time from commit to receipt of each."""
    committed: dict[int, float] = {}
    arrivals: list[tuple[int, float]] = []
    head = await log.head()
    expected = FANOUT_EVENTS
    done = asyncio.Event()
    received = 0

    async def watch(key: str) -> None:
        nonlocal received
        async for batch in log.watch(head, [key]):
            now = time.perf_counter()
            for event in batch.events:
                # NOTIFY can beat the writer back from its COMMIT: match up afterwards.
                arrivals.append((event.revision, now))
                received += 1
            if received >= expected:
                done.set()

    tasks = [asyncio.create_task(watch(f"k{i}")) for i in range(watchers)]
    await asyncio.sleep(0.5)  # every watcher caught up and live
    started = time.perf_counter()
    for i in range(FANOUT_EVENTS):
        async with db.transaction() as conn:
            revision = await log.append(conn, [NewEvent("bench", (f"k{i % watchers}",), b"y")])
        committed[revision] = time.perf_counter()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    delays = [max(0.0, at - committed[revision]) for revision, at in arrivals]
    return {
        "watchers": watchers,
        "events": FANOUT_EVENTS,
        "delivered": received,
        "seconds": round(elapsed, 3),
        "delay": summary_ms(delays),
    }


async def run(admin_dsn: str) -> dict[str, Any]:
    """All event log figures."""
    async with fresh_database(admin_dsn) as dsn:
        settings = ServiceSettings(database_url=dsn, db_schema="bench", db_pool_max_size=20)
        db = await Database.open(settings)
        log = EventLog(db, progress_interval=5)
        try:
            one = await _append_rate(db, log, 1)
            eight = await _append_rate(db, log, 8)
            print(f"  appends/s: 1 writer {one:.0f}, 8 writers {eight:.0f}", file=sys.stderr)
            single = await _delivery(db, log, 1)
            many = await _delivery(db, log, 500)
            print(
                f"  delivery p99: 1 watcher {single['delay']['p99_ms']} ms, "
                f"500 watchers {many['delay']['p99_ms']} ms",
                file=sys.stderr,
            )
        finally:
            await log.close()
            await db.close()
    return {
        "append_per_second_1_writer": round(one),
        "append_per_second_8_writers": round(eight),
        "append_8_writers_vs_1": round(eight / one, 2),
        "delivery_1_watcher": single,
        "delivery_500_watchers": many,
        "delivery_p99_500_vs_1_watcher": round(
            many["delay"]["p99_ms"] / max(single["delay"]["p99_ms"], 0.001), 2
        ),
    }
