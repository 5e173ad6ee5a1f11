"""A durable, gap-free event log in PostgreSQL, with watchers woken by LISTEN/NOTIFY.

Append happens inside the caller's transaction, so an event exists exactly when the change it
describes does. Each append first bumps the single `event_log_head` row: the row lock orders
appending transactions, so the revisions a reader sees only ever grow and never skip a number
that commits later. `NOTIFY` is delivered at commit and wakes one tail reader per process, which
reads each new event once and hands it to the live watchers whose keys match; watchers that are
behind read from the table until they catch up. Events older than the retention are compacted;
watching from before that fails `OUT_OF_RANGE` / `REVISION_COMPACTED`.

A row holds one event, or (`append_ranges`, with `compact_events`) a range of consecutive events
sharing kind and keys: its `revision` is the range's last, `first_revision` its first, `payloads`
one payload per revision. Every read expands ranges into single events, so readers see exactly
the events one row each would give; a read may start or stop inside a range.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import asyncpg

from canopy_core.db import Database, is_connection_error, run_every
from canopy_core.errors import InvalidArgument, OutOfRange, Unavailable
from canopy_core.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class NewEvent(NamedTuple):
    """An event to append: its kind, the keys watchers filter on, and its encoded payload."""

    kind: str
    keys: tuple[str, ...]
    payload: bytes


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LAST_REVISION = 2**62


@functools.lru_cache(maxsize=256)
def _from_micros(micros: int) -> datetime:
    # The events of one transaction share their time: each is made once.
    return _EPOCH + timedelta(microseconds=micros)


class StoredEvent(NamedTuple):
    """An event as stored, with its revision (a tuple: the tail reader makes 10,000s a second)."""

    revision: int
    kind: str
    keys: tuple[str, ...]
    payload: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """What a watch yields: events in revision order, or none (a progress message)."""

    events: Sequence[StoredEvent]
    latest_revision: int


@dataclass(frozen=True, slots=True)
class Page:
    """One read: events after a revision, the head and compaction point seen with them."""

    events: list[StoredEvent]
    head: int
    compacted_through: int
    truncated: bool


def revision_compacted(after_revision: int, compacted_through: int) -> OutOfRange:
    """The error for a watch or read that starts before what the log retains."""
    return OutOfRange(
        f"revision {after_revision} is no longer retained (events up to {compacted_through} "
        "were compacted); list again and watch from the revision the list returns",
        reason="REVISION_COMPACTED",
        metadata={
            "after_revision": str(after_revision),
            "compacted_through": str(compacted_through),
        },
    )


class _Subscriber:
    """A live watcher's mailbox, filled by the tail reader."""

    __slots__ = ("error", "keys", "latest", "overflowed", "queue", "signal", "start")

    def __init__(self, keys: frozenset[str] | None, start: int) -> None:
        self.keys = keys
        self.start = start
        self.latest = start
        self.queue: deque[StoredEvent] = deque()
        self.signal = asyncio.Event()
        self.overflowed = False
        self.error: BaseException | None = None


@dataclass
class _Tail:
    """The one reader per process of new events; it feeds every live subscriber."""

    position: int
    everything: set[_Subscriber] = field(default_factory=set)
    by_key: dict[str, set[_Subscriber]] = field(default_factory=lambda: defaultdict(set))


class EventLog:
    """The event log of one service schema (tables from the core migration)."""

    def __init__(
        self,
        db: Database,
        *,
        progress_interval: float = 5.0,
        batch_size: int = 500,
        max_queued_per_watcher: int = 50_000,
        compact_events: bool = False,
    ) -> None:
        self.db = db
        # Off until every replica reads ranges: the release before them misreads a range row.
        self.compact_events = compact_events
        self.channel = f"canopy_events_{db.schema}"
        self.progress_interval = progress_interval
        self.batch_size = batch_size
        self.max_queued = max_queued_per_watcher
        self._tail: _Tail | None = None
        self._tail_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listen_conn: asyncpg.Connection | None = None
        self._closed = False

    # -- writing -------------------------------------------------------------------------

    async def _take(self, conn: asyncpg.Connection, count: int, method: str) -> int:
        """Take the next `count` revisions in the caller's transaction; returns the last."""
        if count < 1:
            raise ValueError(f"{method} needs at least one event")
        if not conn.is_in_transaction():
            raise RuntimeError(f"EventLog.{method} must run inside the caller's transaction")
        head: int = await conn.fetchval(
            "UPDATE event_log_head SET revision = revision + $1 RETURNING revision", count
        )
        return head

    async def append(self, conn: asyncpg.Connection, events: Sequence[NewEvent]) -> int:
        """Append `events` in the caller's open transaction; returns the last revision.

        Call it as late in the transaction as possible: from here to commit, other appenders
        of this log wait on the head row.
        """
        count = len(events)
        head = await self._take(conn, count, "append")
        first = head - count + 1
        records = [
            (first + i, event.kind, list(event.keys), event.payload)
            for i, event in enumerate(events)
        ]
        if count >= 32:
            await conn.copy_records_to_table(
                "event_log",
                records=records,
                columns=["revision", "kind", "keys", "payload"],
                schema_name=self.db.schema,
            )
        else:
            await conn.executemany(
                "INSERT INTO event_log (revision, kind, keys, payload) VALUES ($1, $2, $3, $4)",
                records,
            )
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, str(head))
        return head

    async def append_from(
        self, conn: asyncpg.Connection, count: int, query: str, *args: object
    ) -> int:
        """Append `count` events that a query produces, without them passing through Python
        (for changes that make 100,000s of events); returns the last revision.

        `query` is a SELECT of rows (position, kind, keys, payload), `position` numbering them
        0 … count-1 in log order. Fewer or more rows than `count` is a bug and raises, which
        rolls back the caller's transaction.
        """
        head = await self._take(conn, count, "append_from")
        status = await conn.execute(
            "INSERT INTO event_log (revision, kind, keys, payload) "
            f"SELECT {head - count + 1} + q.position, q.kind, q.keys, q.payload FROM ({query}) q",
            *args,
        )
        inserted = int(status.split()[-1])
        if inserted != count:
            raise RuntimeError(f"append_from expected {count} events, the query made {inserted}")
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, str(head))
        return head

    async def append_ranges(
        self, conn: asyncpg.Connection, count: int, query: str, *args: object
    ) -> int:
        """Append `count` events that a query produces as ranges sharing kind and keys, one row
        per range when `compact_events` is on (else one row per event); returns the last
        revision.

        `query` is a SELECT of rows (position, kind, keys, payloads): a range's events are
        numbered position … position + cardinality(payloads) - 1 in log order, and together the
        ranges number 0 … count-1 exactly once. Anything else is a bug and raises, which rolls
        back the caller's transaction.
        """
        if not self.compact_events:
            return await self.append_from(conn, count, expand_ranges(query), *args)
        head = await self._take(conn, count, "append_ranges")
        first = head - count + 1
        # A range of one is stored as a single event: the previous release reads those.
        made = await conn.fetchrow(
            f"""
            WITH q AS MATERIALIZED (
                SELECT q.position, q.kind, q.keys, q.payloads,
                       coalesce(cardinality(q.payloads), 0) AS size
                FROM ({query}) q
            ), inserted AS (
                INSERT INTO event_log (revision, first_revision, kind, keys, payload, payloads)
                SELECT {first} + position + size - 1,
                       CASE WHEN size > 1 THEN {first} + position END,
                       kind, keys,
                       CASE WHEN size = 1 THEN payloads[1] END,
                       CASE WHEN size > 1 THEN payloads END
                FROM q
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM inserted) AS rows,
                   coalesce(sum(size), 0) AS events,
                   coalesce(bool_and(size > 0 AND position = follows), true) AS contiguous
            FROM (
                SELECT size, position,
                       lag(position + size, 1, 0::bigint) OVER (ORDER BY position) AS follows
                FROM q
            ) c
            """,
            *args,
        )
        if made["events"] != count or not made["contiguous"]:
            raise RuntimeError(
                f"append_ranges expected {count} events, the query made {made['events']}"
                + ("" if made["contiguous"] else " in ranges that overlap or leave gaps")
            )
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, str(head))
        return head

    # -- reading -------------------------------------------------------------------------

    async def head(self) -> int:
        """The latest committed revision."""
        async with self.db.connection() as conn:
            revision: int = await conn.fetchval("SELECT revision FROM event_log_head")
            return revision

    async def read(
        self,
        after_revision: int,
        keys: Iterable[str] | None = None,
        *,
        limit: int | None = None,
        through: int | None = None,
    ) -> Page:
        """Events after `after_revision` (up to `through`), matching any of `keys` if given.

        Events, head and compaction point come from one statement, so one snapshot: a page
        never mixes a compaction with the events it removed.
        """
        key_list = sorted(set(keys)) if keys is not None else None
        limit = limit or self.batch_size
        # No log comes near 2**62 revisions: a later start reads nothing, and the bounds below
        # (after + limit, after + 1) stay within bigint.
        after_revision = min(after_revision, LAST_REVISION)
        async with self.db.connection() as conn:
            if key_list is None:
                bound = after_revision + limit
                through = bound if through is None else min(through, bound)
                rows = await conn.fetch(_READ_ALL, after_revision, through, None, limit)
            else:
                rows = await conn.fetch(_READ_MATCHING, after_revision, through, key_list, limit)
        head = rows[0]["head"]
        compacted_through = rows[0]["compacted_through"]
        if after_revision < compacted_through:
            raise revision_compacted(after_revision, compacted_through)
        events: list[StoredEvent] = []
        for r in rows:
            if r[2] is None:
                continue
            # Times arrive as epoch microseconds: decoding a timestamp cost more than the rest
            # of the row.
            created_at = _from_micros(r[6])
            if r[8] is None:
                events.append(StoredEvent(r[2], r[3], tuple(r[4]), r[5], created_at))
            else:
                # The part of a range this read covers; its events share one keys tuple.
                kind, event_keys, revision = r[3], tuple(r[4]), r[7]
                for payload in r[8]:
                    events.append(StoredEvent(revision, kind, event_keys, payload, created_at))
                    revision += 1
        return Page(events, head, compacted_through, truncated=len(events) >= limit)

    async def last(self, key: str) -> StoredEvent | None:
        """The latest retained event carrying `key`, if any."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT revision, kind, keys, coalesce(payload, payloads[cardinality(payloads)]), "
                "(extract(epoch FROM created_at) * 1000000)::bigint "
                "FROM event_log WHERE keys && $1::text[] ORDER BY revision DESC LIMIT 1",
                [key],
            )
        if row is None:
            return None
        return StoredEvent(row[0], row[1], tuple(row[2]), row[3], _from_micros(row[4]))

    async def check_start(self, after_revision: int) -> int:
        """Validate a watch's starting point; returns the current head."""
        if after_revision < 0:
            raise InvalidArgument.field("after_revision", "must be zero or positive")
        page = await self.read(after_revision, limit=1, through=after_revision)
        if after_revision > page.head:
            raise OutOfRange(
                f"revision {after_revision} has not been written yet (latest is {page.head}); "
                "list again and watch from the revision the list returns",
                reason="REVISION_NOT_YET_WRITTEN",
                metadata={
                    "after_revision": str(after_revision),
                    "latest_revision": str(page.head),
                },
            )
        return page.head

    async def watch(
        self, after_revision: int, keys: Iterable[str] | None = None
    ) -> AsyncGenerator[WatchBatch, None]:
        """Every event after `after_revision` matching any of `keys`, in order, forever.

        Yields batches of events, and an empty batch whenever nothing happened for
        `progress_interval` seconds. A batch's `latest_revision` is never beyond what this
        watch has delivered or passed over as not matching: resuming after it loses nothing.
        """
        await self.check_start(after_revision)
        keyset = frozenset(keys) if keys is not None else None
        cursor = after_revision
        while True:
            # Catch up from the table.
            while True:
                page = await self.read(cursor, keyset)
                covered = page.events[-1].revision if page.truncated else page.head
                if page.events:
                    yield WatchBatch(page.events, covered)
                cursor = max(cursor, covered)
                if not page.truncated:
                    break
            # Then follow the tail.
            subscriber = await self._subscribe(keyset)
            try:
                while cursor < subscriber.start:
                    # The tail had read past our cursor before we joined: close the gap.
                    page = await self.read(cursor, keyset, through=subscriber.start)
                    covered = page.events[-1].revision if page.truncated else subscriber.start
                    if page.events:
                        yield WatchBatch(page.events, covered)
                    cursor = covered
                async for batch in self._follow(subscriber, cursor):
                    cursor = batch.latest_revision
                    yield batch
                # Only reached when this watcher fell too far behind the tail: drop what was
                # queued and catch up from the table again.
            finally:
                self._unsubscribe(subscriber)

    async def _follow(
        self, subscriber: _Subscriber, cursor: int
    ) -> AsyncGenerator[WatchBatch, None]:
        while True:
            try:
                await asyncio.wait_for(subscriber.signal.wait(), self.progress_interval)
            except TimeoutError:
                if not subscriber.signal.is_set():
                    # Nothing is queued (the tail signals every event it queues, in the same
                    # step as it moves `latest`), so everything up to `latest` was passed over.
                    yield WatchBatch((), max(subscriber.latest, cursor))
                    continue
                # The tail queued something just as the wait timed out: take it first.
            subscriber.signal.clear()
            if subscriber.error is not None:
                raise subscriber.error
            if subscriber.overflowed:
                return
            # Taken together, with no await between: the tail may queue more while we yield.
            events = [e for e in subscriber.queue if e.revision > cursor]
            subscriber.queue.clear()
            covered = max(subscriber.latest, cursor)
            for start in range(0, len(events), self.batch_size):
                chunk = events[start : start + self.batch_size]
                last = start + self.batch_size >= len(events)
                yield WatchBatch(chunk, covered if last else chunk[-1].revision)

    # -- the tail reader -----------------------------------------------------------------

    async def start(self) -> None:
        """Start listening for appends (idempotent); watchers call it implicitly."""
        async with self._tail_lock:
            if self._tail is not None:
                return
            if self._closed:
                raise RuntimeError("the event log is closed")
            self._tail = _Tail(position=await self.head())
            self._tasks.append(asyncio.create_task(self._listen(), name="eventlog-listen"))
            self._tasks.append(asyncio.create_task(self._run_tail(), name="eventlog-tail"))

    async def close(self) -> None:
        """Stop the listener and tail; live watchers end with `Unavailable`."""
        self._closed = True
        if self._tail is not None:
            self._fail_all(self._tail, Unavailable("the service is shutting down; reconnect"))
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.close(timeout=2)

    async def _subscribe(self, keys: frozenset[str] | None) -> _Subscriber:
        await self.start()
        tail = self._tail
        assert tail is not None
        subscriber = _Subscriber(keys, tail.position)
        if keys is None:
            tail.everything.add(subscriber)
        else:
            for key in keys:
                tail.by_key[key].add(subscriber)
        return subscriber

    def _unsubscribe(self, subscriber: _Subscriber) -> None:
        tail = self._tail
        if tail is None:
            return
        tail.everything.discard(subscriber)
        for key in subscriber.keys or ():
            members = tail.by_key.get(key)
            if members is not None:
                members.discard(subscriber)
                if not members:
                    del tail.by_key[key]

    def _dispatch(self, tail: _Tail, events: Sequence[StoredEvent], covered: int) -> None:
        """Queue each event for the subscribers it matches; every subscriber has now been
        offered everything up to `covered`."""
        touched: dict[_Subscriber, list[StoredEvent]] = defaultdict(list)
        by_key = tail.by_key
        for event in events:
            if len(event.keys) == 1:  # the common case: no set to build
                for subscriber in by_key.get(event.keys[0], ()):
                    touched[subscriber].append(event)
            else:
                matched: set[_Subscriber] = set()
                for key in event.keys:
                    matched.update(by_key.get(key, ()))
                for subscriber in matched:
                    touched[subscriber].append(event)
            for subscriber in tail.everything:
                touched[subscriber].append(event)
        for subscriber, mine in touched.items():
            if len(subscriber.queue) + len(mine) > self.max_queued:
                subscriber.overflowed = True
            else:
                subscriber.queue.extend(mine)
        for subscriber in {*tail.everything, *(s for m in by_key.values() for s in m)}:
            subscriber.latest = covered
            if subscriber in touched or subscriber.overflowed:
                subscriber.signal.set()

    def _fail_all(self, tail: _Tail, error: BaseException) -> None:
        for subscriber in {*tail.everything, *(s for m in tail.by_key.values() for s in m)}:
            subscriber.error = error
            subscriber.signal.set()

    async def _run_tail(self) -> None:
        tail = self._tail
        assert tail is not None
        backoff = 0.1
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.progress_interval)
            self._wake.clear()
            try:
                while True:
                    page = await self.read(tail.position, limit=self.batch_size * 10)
                    # A truncated page covers only up to its last event, not the head.
                    covered = page.events[-1].revision if page.truncated else page.head
                    self._dispatch(tail, page.events, covered)
                    tail.position = max(tail.position, covered)
                    if not page.truncated:
                        break
                backoff = 0.1
            except OutOfRange as exc:
                # Only if this process read nothing for the whole retention period.
                self._fail_all(tail, exc)
                tail.position = int(exc.metadata["compacted_through"])
            except Exception as exc:
                if not is_connection_error(exc) and not _is_unavailable(exc):
                    log.exception("event log tail failed; retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    self.db.dsn,
                    timeout=5,
                    server_settings={"application_name": "canopy-event-listener"},
                )
            except Exception as exc:
                if not is_connection_error(exc):
                    log.exception("event log listener cannot connect")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self._listen_conn = conn
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(self.channel, lambda *_args: self._wake.set())
                backoff = 0.1
                # Anything appended while we were not listening is read now.
                self._wake.set()
                await lost.wait()
            except Exception as exc:
                if not is_connection_error(exc):
                    log.exception("event log listener failed")
            finally:
                self._listen_conn = None
                with contextlib.suppress(Exception):
                    conn.terminate()
            log.warning("event log listener lost its connection; reconnecting")
            await asyncio.sleep(backoff)

    # -- retention -----------------------------------------------------------------------

    async def compact(self, retention: timedelta) -> int:
        """Delete events older than `retention`; returns the new compaction point."""
        async with self.db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.channel)
            cutoff = await conn.fetchval(
                "SELECT max(revision) FROM event_log "
                "WHERE created_at < clock_timestamp() - $1::interval",
                retention,
            )
            if cutoff is not None:
                await conn.execute("DELETE FROM event_log WHERE revision <= $1", cutoff)
                await conn.execute(
                    "UPDATE event_log_compaction "
                    "SET compacted_through = greatest(compacted_through, $1)",
                    cutoff,
                )
            through: int = await conn.fetchval("SELECT compacted_through FROM event_log_compaction")
            return through

    async def run_compaction(self, retention: timedelta, every: timedelta) -> None:
        """Compact on a timer, forever (a background task of the service)."""

        async def compact() -> None:
            through = await self.compact(retention)
            log.info("event log compacted", extra={"compacted_through": through})

        await run_every(every, compact, "event log compaction")


def expand_ranges(query: str) -> str:
    """The events (position, kind, keys, payload) of an `append_ranges` query, one row each."""
    return (
        "SELECT r.position + u.n - 1 AS position, r.kind, r.keys, u.payload "
        f"FROM ({query}) r CROSS JOIN LATERAL unnest(r.payloads) WITH ORDINALITY AS u(payload, n)"
    )


# The rows holding events after `$1` through `$2` (matching keys `$3`), at most `$4`, each with
# `lo`/`hi`, the first and last of its revisions the read covers. The upper bound is an index
# condition: the rows through `$2`, and the one range that may straddle it.
_ROWS = """
    SELECT revision, kind, keys, payload, payloads, created_at,
           first_revision AS first,
           greatest(coalesce(first_revision, revision), $1::bigint + 1) AS lo,
           least(revision, coalesce($2::bigint, revision)) AS hi
    FROM event_log
    WHERE revision > $1
      AND revision <= coalesce(
          (SELECT min(revision) FROM event_log WHERE revision >= $2::bigint),
          $2::bigint,
          9223372036854775807
      )
      AND greatest(coalesce(first_revision, revision), $1::bigint + 1)
          <= least(revision, coalesce($2::bigint, revision))
      AND ($3::text[] IS NULL OR keys && $3)
    ORDER BY revision
    LIMIT $4
"""

# One read: the head, the compaction point, and the events of `_ROWS` (`events`: those rows,
# each with `cut`, the last revision the read takes of it), ranges sliced to their part.
_READ = """
    SELECT h.revision AS head, c.compacted_through,
           e.revision, e.kind, e.keys, e.payload,
           (extract(epoch FROM e.created_at) * 1000000)::bigint,
           e.lo,
           CASE WHEN e.first IS NOT NULL
                THEN e.payloads[e.lo - e.first + 1 : e.cut - e.first + 1] END
    FROM event_log_head h
    CROSS JOIN event_log_compaction c
    LEFT JOIN LATERAL ({events}) e ON true
    ORDER BY e.revision
"""

# Unfiltered, the log has no gaps: the first `$4` events after `$1` end at `$1 + $4`, which the
# caller makes the bound `$2`; every event of the rows is read.
_READ_ALL = _READ.format(events=f"SELECT v.*, v.hi AS cut FROM ({_ROWS}) v")

# Filtered, a row holds at least one matching event, so `$4` rows always suffice; a running
# count of their events drops what lies beyond the limit and cuts the range that reaches it.
_READ_MATCHING = _READ.format(
    events=f"""
        SELECT w.*, least(w.hi, w.lo + $4 - 1 - (w.upto - (w.hi - w.lo + 1))) AS cut
        FROM (
            SELECT v.*, sum((v.hi - v.lo + 1)::integer) OVER (ORDER BY v.revision) AS upto
            FROM ({_ROWS}) v
        ) w
        WHERE w.upto - (w.hi - w.lo + 1) < $4
    """
)


def _is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, Unavailable)
