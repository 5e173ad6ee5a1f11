"""Coalescing concurrent lookups by key into few queries (the "data loader" pattern).

Under load a service answers many reads of single rows at once; each one alone pays for a pooled
connection, a round trip and the database's work on one statement. A `Coalescer` runs at most
`max_in_flight` fetches at a time: a key asked for while they are all busy waits, with every other
key asked for meanwhile, and the next free fetch reads them all in one call of `fetch_many`. An idle
service fetches each key at once; a busy one fetches in batches as large as its backlog.

A lookup never sees data older than its own arrival: the batch it joins is fetched only after it
joined, so whatever was committed before the call began is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """`await get(key)`: the value `fetch_many` returns for `key` (None when it has none)."""

    def __init__(
        self,
        fetch_many: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]],
        *,
        max_in_flight: int = 1,
        max_batch: int = 256,
    ) -> None:
        if max_in_flight < 1 or max_batch < 1:
            raise ValueError("max_in_flight and max_batch must be at least 1")
        self._fetch_many = fetch_many
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V | None:
        """The value for `key`, fetched together with the other keys asked for meanwhile."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        self._schedule()
        return await future

    def _schedule(self) -> None:
        # On the next pass of the loop, so that the keys asked for in this one go together.
        if not self._scheduled and len(self._running) < self._max_in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._waiting and len(self._running) < self._max_in_flight:
            keys = list(self._waiting)[: self._max_batch]
            batch = {key: self._waiting.pop(key) for key in keys}
            task = asyncio.get_running_loop().create_task(self._fetch(batch))
            self._running.add(task)  # also a reference until done: the loop keeps weak ones
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._waiting:
            self._schedule()

    async def _fetch(self, batch: dict[K, list[asyncio.Future[V | None]]]) -> None:
        try:
            found = await self._fetch_many(list(batch))
        except asyncio.CancelledError:
            for futures in batch.values():
                for future in futures:
                    future.cancel()
            raise
        except Exception as exc:  # every caller of the batch gets the failure
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, futures in batch.items():
            value = found.get(key)
            for future in futures:
                if not future.done():  # a caller that gave up (cancelled) is skipped
                    future.set_result(value)
