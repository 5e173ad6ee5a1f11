"""The Coalescer and the LRU cache: lookups asked for together share one fetch, a lookup never
joins a fetch that began before it, failures reach every caller of their batch, and the cache
keeps the most recently used entries."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from canopy_core.batch import Coalescer
from canopy_core.cache import LruCache


class Source:
    """A fetch_many that records each batch and can be held open until released."""

    def __init__(self, values: Mapping[str, int], *, hold: bool = False) -> None:
        self.values = values
        self.batches: list[list[str]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.failure: Exception | None = None
        if not hold:
            self.release.set()

    async def fetch(self, keys: Sequence[str]) -> dict[str, int]:
        self.batches.append(list(keys))
        self.started.set()
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return {k: self.values[k] for k in keys if k in self.values}


async def test_lookups_asked_for_together_share_one_fetch() -> None:
    source = Source({"a": 1, "b": 2, "c": 3})
    coalescer = Coalescer(source.fetch)
    results = await asyncio.gather(*(coalescer.get(k) for k in ("a", "b", "c", "a")))
    assert results == [1, 2, 3, 1]
    assert source.batches == [["a", "b", "c"]]  # "a" once, for both its callers


async def test_a_key_without_a_value_gets_none() -> None:
    coalescer = Coalescer(Source({"a": 1}).fetch)
    assert list(await asyncio.gather(coalescer.get("a"), coalescer.get("missing"))) == [1, None]


async def test_keys_asked_for_during_a_fetch_wait_and_go_together_in_the_next() -> None:
    source = Source({"a": 1, "b": 2, "c": 3, "d": 4}, hold=True)
    coalescer = Coalescer(source.fetch)  # one fetch at a time
    first = asyncio.ensure_future(coalescer.get("a"))
    await source.started.wait()
    later = [asyncio.ensure_future(coalescer.get(k)) for k in ("b", "c", "d")]
    await asyncio.sleep(0.01)
    assert source.batches == [["a"]]  # the others wait for the running fetch
    source.release.set()
    assert list(await asyncio.gather(first, *later)) == [1, 2, 3, 4]
    assert source.batches == [["a"], ["b", "c", "d"]]


async def test_a_lookup_never_joins_a_fetch_that_began_before_it() -> None:
    # A fetch that is already running may have read before the caller's own change was
    # committed: a key asked for again meanwhile is fetched anew, after it.
    source = Source({"a": 1}, hold=True)
    coalescer = Coalescer(source.fetch)
    early = asyncio.ensure_future(coalescer.get("a"))
    await source.started.wait()
    late = asyncio.ensure_future(coalescer.get("a"))
    source.release.set()
    assert list(await asyncio.gather(early, late)) == [1, 1]
    assert source.batches == [["a"], ["a"]]


async def test_more_fetches_at_once_when_allowed() -> None:
    source = Source({"a": 1, "b": 2}, hold=True)
    coalescer = Coalescer(source.fetch, max_in_flight=2)
    first = asyncio.ensure_future(coalescer.get("a"))
    await source.started.wait()
    second = asyncio.ensure_future(coalescer.get("b"))
    await asyncio.sleep(0.01)
    assert source.batches == [["a"], ["b"]]  # the second did not wait for the first
    source.release.set()
    assert list(await asyncio.gather(first, second)) == [1, 2]


async def test_a_large_backlog_is_fetched_in_batches_of_at_most_max_batch() -> None:
    keys = [f"k{i}" for i in range(10)]
    source = Source({k: i for i, k in enumerate(keys)})
    coalescer = Coalescer(source.fetch, max_batch=4)
    assert await asyncio.gather(*(coalescer.get(k) for k in keys)) == list(range(10))
    assert source.batches == [keys[0:4], keys[4:8], keys[8:10]]


async def test_a_failed_fetch_fails_every_caller_of_its_batch_and_the_next_one_works() -> None:
    source = Source({"a": 1, "b": 2})
    source.failure = ConnectionError("database gone")
    coalescer = Coalescer(source.fetch)
    results = await asyncio.gather(coalescer.get("a"), coalescer.get("b"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    source.failure = None
    assert await coalescer.get("a") == 1


async def test_a_caller_that_gives_up_does_not_disturb_the_others() -> None:
    source = Source({"a": 1, "b": 2}, hold=True)
    coalescer = Coalescer(source.fetch)
    impatient = asyncio.ensure_future(coalescer.get("a"))
    patient = asyncio.ensure_future(coalescer.get("a"))
    other = asyncio.ensure_future(coalescer.get("b"))
    await source.started.wait()
    impatient.cancel()
    source.release.set()
    assert list(await asyncio.gather(patient, other)) == [1, 2]
    assert impatient.cancelled()


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Source({}).fetch, max_in_flight=0)
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Source({}).fetch, max_batch=0)
    with pytest.raises(ValueError, match="at least 1"):
        LruCache[str, int](0)


def test_the_cache_drops_the_least_recently_used_entry() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    cache.put("a", 10)  # replacing keeps the size
    assert len(cache) == 2
    assert cache.get("a") == 10
    cache.pop("a")
    cache.pop("never there")
    assert (len(cache), cache.get("a")) == (1, None)
