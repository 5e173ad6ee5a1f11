"""A watch never claims more than it sent: every batch's `latest_revision` is a safe point to
resume from, for each page of a catch-up, each chunk of the live tail, and progress messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import cycle, islice
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canopy_core.db import Database
from canopy_core.errors import OutOfRange
from canopy_core.eventlog import (
    EventLog,
    NewEvent,
    Page,
    StoredEvent,
    WatchBatch,
    _Subscriber,
)
from canopy_core.settings import ServiceSettings

PAGE = 10  # events per watch batch (the tail reads ten times that per page)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(
        ServiceSettings(database_url=database_url, db_schema="evresume", db_pool_max_size=10)
    )
    yield database
    await database.close()


@pytest.fixture
async def log(db: Database) -> AsyncIterator[EventLog]:
    event_log = EventLog(db, progress_interval=0.1, batch_size=PAGE)
    yield event_log
    await event_log.close()


@dataclass
class Appended:
    """What the test appended (revision → key): the truth the watches are checked against,
    which compaction does not remove."""

    keys: dict[int, str] = field(default_factory=dict)

    async def append(self, db: Database, log: EventLog, keys: Sequence[str]) -> int:
        """One transaction appending an event per entry of `keys` (each with that key)."""
        async with db.transaction() as conn:
            head = await log.append(conn, [NewEvent("test", (k,), b"") for k in keys])
        self.keys.update(zip(range(head - len(keys) + 1, head + 1), keys, strict=True))
        return head

    def matching(self, keys: Sequence[str] | None, after: int = 0) -> list[int]:
        """The revisions appended after `after` that a watch of `keys` must deliver."""
        return sorted(r for r, k in self.keys.items() if r > after and (keys is None or k in keys))


@dataclass
class Client:
    """A watch client that checks, after every batch, that the batch's claim holds: every
    event up to `latest_revision` that matches its keys has been delivered."""

    appended: Appended
    keys: list[str] | None
    position: int
    delivered: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.start = self.position

    async def take(self, stream: AsyncIterator[WatchBatch], count: int) -> None:
        """Receive `count` batches (progress messages included), checking each."""
        for _ in range(count):
            batch = await asyncio.wait_for(anext(stream), 10)
            self.receive(batch.events, batch.latest_revision)

    def receive(self, events: Sequence[StoredEvent], latest_revision: int) -> None:
        """Take one batch, checking its order and its claim."""
        revisions = [e.revision for e in events]
        assert revisions == sorted(set(revisions)), "a batch is ordered, without repeats"
        assert not self.delivered or not revisions or revisions[0] > self.delivered[-1]
        self.delivered.extend(revisions)
        assert latest_revision >= self.position, "latest_revision never moves back"
        sent = set(self.delivered)
        claimed = self.appended.matching(self.keys, self.start)
        missing = [r for r in claimed if r <= latest_revision and r not in sent]
        assert not missing, f"latest_revision {latest_revision} claims unsent events {missing}"
        self.position = latest_revision

    async def until(self, stream: AsyncIterator[WatchBatch], revision: int) -> None:
        """Receive batches until the claim reaches `revision`."""
        while self.position < revision:
            await self.take(stream, 1)


async def test_each_page_of_a_long_backlog_claims_only_its_own_events(
    db: Database, log: EventLog
) -> None:
    appended = Appended()
    head = await appended.append(db, log, ["k"] * (PAGE * 5 + 3))
    client = Client(appended, None, 0)
    stream = log.watch(0)
    first = await anext(stream)
    assert [e.revision for e in first.events] == list(range(1, PAGE + 1))
    assert first.latest_revision == PAGE
    client.receive(first.events, first.latest_revision)
    await client.until(stream, head)
    await stream.aclose()
    assert client.delivered == list(range(1, head + 1))


async def test_a_client_that_disconnects_after_the_first_reply_resumes_without_a_gap(
    db: Database, log: EventLog
) -> None:
    appended = Appended()
    await appended.append(db, log, ["k"] * (PAGE * 4))
    client = Client(appended, None, 0)
    stream = log.watch(0)
    await client.take(stream, 1)
    await stream.aclose()
    head = await appended.append(db, log, ["k"] * 3)
    resumed = log.watch(client.position)
    await client.until(resumed, head)
    await resumed.aclose()
    assert client.delivered == list(range(1, head + 1))


async def test_a_live_burst_larger_than_a_chunk_is_claimed_chunk_by_chunk(
    db: Database, log: EventLog
) -> None:
    appended = Appended()
    client = Client(appended, None, 0)
    stream = log.watch(0)
    await client.take(stream, 1)  # a progress message: the watch now follows the tail
    # More than a chunk, and more than the tail reads in one page.
    head = await appended.append(db, log, ["k"] * (PAGE * 10 * 2 + 5))
    first = await asyncio.wait_for(anext(stream), 10)
    assert len(first.events) == PAGE
    assert first.latest_revision == first.events[-1].revision
    client.receive(first.events, first.latest_revision)
    await stream.aclose()
    resumed = log.watch(client.position)
    await client.until(resumed, head)
    await resumed.aclose()
    assert client.delivered == list(range(1, head + 1))


async def test_a_watcher_matching_some_events_of_a_truncated_tail_page_claims_only_that_page(
    db: Database, log: EventLog
) -> None:
    appended = Appended()
    client = Client(appended, ["mine"], 0)
    stream = log.watch(0, ["mine"])
    await client.take(stream, 1)
    # The tail reads 100 events a page: the watcher's events sit in its first and third pages.
    keys = ["mine"] * 3 + ["other"] * 250 + ["mine"] * 2 + ["other"] * 50
    head = await appended.append(db, log, keys)
    await client.take(stream, 1)
    assert client.delivered[:3] == [1, 2, 3]
    await stream.aclose()
    resumed = log.watch(client.position, ["mine"])
    await client.until(resumed, head)
    await resumed.aclose()
    assert client.delivered == [1, 2, 3, 254, 255]


async def test_a_filtered_catch_up_claims_only_up_to_its_last_matching_event(
    db: Database, log: EventLog
) -> None:
    # Pages of a filtered read hold PAGE matching events: the claim stops at the last of them.
    appended = Appended()
    head = await appended.append(db, log, ["mine", "other", "other"] * (PAGE * 2))
    client = Client(appended, ["mine"], 0)
    stream = log.watch(0, ["mine"])
    await client.take(stream, 1)
    assert client.position == 1 + 3 * (PAGE - 1)
    await stream.aclose()
    resumed = log.watch(client.position, ["mine"])
    await client.until(resumed, head)
    await resumed.aclose()
    assert client.delivered == list(range(1, head + 1, 3))


async def test_a_watcher_that_joins_the_tail_late_claims_only_what_it_closed_of_the_gap(
    db: Database,
) -> None:
    appended = Appended()

    class LateJoin(EventLog):
        """Its first catch-up read returns a page read before a burst that the tail has
        already read when the watch joins it: the watch must close that gap from the table."""

        stalled = False

        async def read(self, *args: Any, **kwargs: Any) -> Page:
            page = await super().read(*args, **kwargs)
            if not self.stalled and kwargs.get("limit") is None:
                self.stalled = True
                head = await appended.append(db, self, ["k"] * (PAGE * 3 + 5))
                for _ in range(1000):  # the tail reads the burst (woken by NOTIFY)
                    if self._tail is not None and self._tail.position >= head:
                        break
                    await asyncio.sleep(0.01)
            return page

    log = LateJoin(db, progress_interval=0.1, batch_size=PAGE)
    try:
        await log.start()
        await appended.append(db, log, ["k"] * 5)
        client = Client(appended, None, 0)
        stream = log.watch(0)
        await client.take(stream, 1)
        assert client.delivered == [1, 2, 3, 4, 5]
        assert client.position == 5
        await client.take(stream, 1)  # the first page of the gap
        assert client.position == 5 + PAGE
        await stream.aclose()
        resumed = log.watch(client.position)
        await client.until(resumed, 5 + PAGE * 3 + 5)
        await resumed.aclose()
        assert client.delivered == list(range(1, 5 + PAGE * 3 + 6))
    finally:
        await log.close()


async def test_a_progress_message_never_claims_what_the_tail_queued_as_the_wait_timed_out(
    db: Database, log: EventLog
) -> None:
    # The race, made to happen every time: the tail queues events (and moves the watcher's
    # `latest`) while its wait for them is timing out. The watcher must send them first.
    events = [StoredEvent(r, "test", ("k",), b"", datetime.now(UTC)) for r in (1, 2, 3)]
    subscriber = _Subscriber(None, 0)

    class QueuedAsItTimesOut(asyncio.Event):
        async def wait(self) -> Literal[True]:
            if not subscriber.queue:
                subscriber.queue.extend(events)
                subscriber.latest = 3
                self.set()
            await asyncio.sleep(3600)  # the wait times out although the signal is set
            return True

    subscriber.signal = QueuedAsItTimesOut()
    follow = log._follow(subscriber, 0)
    first = await asyncio.wait_for(anext(follow), 10)
    await follow.aclose()
    assert [e.revision for e in first.events] == [1, 2, 3]
    assert first.latest_revision == 3


# -- the property: random appends, keys, disconnects and compactions -------------------------

KEYS = ("a", "b", "c")
Step = tuple[str, int, tuple[str, ...]]
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.integers(1, 130),
            st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(tuple),
        ),
        st.tuples(st.just("receive"), st.integers(1, 4), st.just(())),
        st.tuples(st.just("disconnect"), st.just(0), st.just(())),
        st.tuples(st.just("compact"), st.just(0), st.just(())),
    ),
    min_size=1,
    max_size=12,
)
watched = st.one_of(st.none(), st.lists(st.sampled_from(KEYS), min_size=1, max_size=2))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps, keys=watched)
async def test_resuming_from_the_last_latest_revision_yields_every_event_once_in_order(
    db: Database, plan: list[Step], keys: list[str] | None
) -> None:
    # Appends interleave with the client's reads and disconnects; a compaction removes every
    # event appended so far, read or not. Each example has a log of its own (one tail reader).
    log = EventLog(db, progress_interval=0.05, batch_size=PAGE)
    appended = Appended()
    client = Client(appended, keys, await log.head())
    stream: AsyncGenerator[WatchBatch, None] | None = None
    try:
        for kind, number, pattern in [*plan, ("append", 1, tuple(keys or KEYS))]:
            if kind == "append":
                await appended.append(db, log, list(islice(cycle(pattern), number)))
            elif kind == "compact":
                await log.compact(timedelta(0))
            elif kind == "disconnect" and stream is not None:
                await stream.aclose()
                stream = None
            elif kind == "receive":
                stream = stream or log.watch(client.position, keys)
                await client.take(stream, number)
        stream = stream or log.watch(client.position, keys)
        await client.until(stream, await log.head())
    except OutOfRange as compacted:
        # Resuming behind a compaction: the client must list again. Only a position the log
        # no longer holds is refused, and what was sent until then was exact (checked above).
        assert client.position < int(compacted.metadata["compacted_through"])
        return
    finally:
        if stream is not None:
            await stream.aclose()
        await log.close()
    assert client.delivered == appended.matching(keys, client.start)
