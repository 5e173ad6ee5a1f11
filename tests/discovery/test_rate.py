"""The adaptive rate of an API operation: its pure core against a simulated AWS, and its asyncio
shell shared by concurrent calls.

The simulation is a deterministic discrete-event model of one operation of a crawl: `concurrency`
callers that always have a call to make, each sent when the operation's rate lets it go, arriving
at AWS after half the round trip and answered after the other half; AWS admits it if the
operation's token bucket (refilled at a limit the client is not told, holding `burst` seconds of
it but two tokens at least, full at first) has a token, and throttles it otherwise; a throttled
call is sent again. (A bucket of a single token admits only every other call once they come a
hair faster than its rate: it wastes what it refills while it is full. AWS's buckets hold more.)
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canopy_discovery.rate import AdaptiveRates, OperationRate, Tuning

# The simulation


@dataclass
class Arrival:
    """One call as AWS saw it."""

    at: float
    admitted: bool


@dataclass
class Simulated:
    """What happened in a simulated run."""

    arrivals: list[Arrival] = field(default_factory=list)
    rates: list[tuple[float, float | None]] = field(default_factory=list)  # (time, rate) per event

    def admitted_between(self, start: float, end: float) -> int:
        return sum(a.admitted for a in self.arrivals if start <= a.at < end)

    def throttled_between(self, start: float, end: float) -> int:
        return sum(not a.admitted for a in self.arrivals if start <= a.at < end)


def simulate(
    limit: Callable[[float], float],
    *,
    seconds: float,
    concurrency: int = 16,
    latency: float = 0.05,
    burst: float = 0.1,
    ceiling: float | None = None,
) -> Simulated:
    """Run one operation against a hidden `limit(t)` (calls a second at time t) for `seconds`."""
    rate = OperationRate(ceiling)
    run = Simulated()
    events: list[tuple[float, int, str, float]] = []
    order = itertools.count()
    tokens, refilled = max(2.0, burst * limit(0.0)), 0.0
    timer: float | None = None

    def at(when: float, kind: str, released: float = 0.0) -> None:
        heapq.heappush(events, (when, next(order), kind, released))

    def want(now: float) -> None:
        if rate.request(now):
            at(now + latency / 2, "arrive", now)
        else:
            plan(now)

    def plan(now: float) -> None:
        nonlocal timer
        timer = rate.next_release(now)
        if timer is not None:
            at(timer, "release", timer)

    for _ in range(concurrency):
        want(0.0)
    while events:
        now, _, kind, released = heapq.heappop(events)
        if now > seconds:
            break
        if kind == "release":
            if released != timer:
                continue  # re-planned since
            for _ in range(rate.release(now)):
                at(now + latency / 2, "arrive", now)
            plan(now)
        elif kind == "arrive":
            current = limit(now)
            tokens = min(max(2.0, burst * current), tokens + (now - refilled) * current)
            refilled = now
            admitted = tokens >= 1.0
            if admitted:
                tokens -= 1.0
            run.arrivals.append(Arrival(now, admitted))
            at(now + latency / 2, "ok" if admitted else "throttled", released)
        else:
            rate.answered(released, now, throttled=kind == "throttled")
            plan(now)
            want(now)  # the next call, or the throttled one again
        run.rates.append((now, rate.rate))
    return run


def fixed(limit: float) -> Callable[[float], float]:
    return lambda _t: limit


def steady(run: Simulated, start: float, end: float, limit: float) -> tuple[float, float]:
    """(Share of `limit` used, throttled share of the calls admitted) between start and end."""
    admitted = run.admitted_between(start, end)
    return admitted / (limit * (end - start)), run.throttled_between(start, end) / max(1, admitted)


def most(limit: float, seconds: float, burst: float = 0.1) -> float:
    """The largest share of `limit` AWS can admit in `seconds`: its rate, and its bucket."""
    return 1.0 + max(2.0, burst * limit) / (limit * seconds)


# Finding the limit


@pytest.mark.parametrize("limit", [2.0, 5.0, 20.0, 100.0, 250.0, 1000.0])
def test_the_rate_converges_just_under_a_fixed_hidden_limit(limit: float) -> None:
    run = simulate(fixed(limit), seconds=40, concurrency=64, latency=0.02)
    used, throttled = steady(run, 15, 40, limit)
    assert 0.9 <= used <= most(limit, 25), used
    assert throttled <= 0.05, throttled


@settings(max_examples=30, deadline=None)
@given(
    limit=st.floats(min_value=5, max_value=300),
    latency=st.floats(min_value=0.005, max_value=0.3),
    burst=st.floats(min_value=0.0, max_value=2.0),
    headroom=st.floats(min_value=1.5, max_value=20),
)
def test_any_hidden_limit_is_found_and_held_with_few_throttles(
    limit: float, latency: float, burst: float, headroom: float
) -> None:
    # Enough callers to send `headroom` times the limit if nothing held them back. (Below 5 calls
    # a second with round trips of a quarter second, a throttle is 5 to 6 % of the few calls
    # between two probes.)
    concurrency = max(2, int(headroom * limit * latency) + 1)
    run = simulate(fixed(limit), seconds=40, concurrency=concurrency, latency=latency, burst=burst)
    used, throttled = steady(run, 15, 40, limit)
    assert 0.9 <= used <= most(limit, 25, burst), used
    assert throttled <= 0.05, throttled


@pytest.mark.parametrize(("before", "after"), [(250.0, 100.0), (100.0, 10.0), (50.0, 5.0)])
def test_the_rate_reconverges_when_the_limit_drops(before: float, after: float) -> None:
    run = simulate(lambda t: before if t < 20 else after, seconds=45, concurrency=64)
    used, throttled = steady(run, 10, 20, before)
    assert used >= 0.9
    used, throttled = steady(run, 25, 45, after)
    assert 0.9 <= used <= most(after, 20), used
    assert throttled <= 0.05, throttled
    # The drop itself costs less than a second's worth of what was being sent (a rate ten times
    # lower takes a few seconds to measure; the calls it throttles meanwhile are a few a cut).
    assert run.throttled_between(20, 25) <= before


@pytest.mark.parametrize(("before", "after"), [(100.0, 250.0), (10.0, 100.0), (100.0, 1000.0)])
def test_the_rate_reconverges_when_the_limit_rises(before: float, after: float) -> None:
    run = simulate(lambda t: before if t < 20 else after, seconds=45, concurrency=128)
    used, throttled = steady(run, 30, 45, after)
    assert 0.9 <= used <= most(after, 15), used
    assert throttled <= 0.05, throttled


def test_the_probing_above_a_held_limit_throttles_a_few_calls_at_a_time() -> None:
    # No burst of throttles every time the probe crosses the limit: in every second, at most
    # a few calls and at most 5 % of what was admitted.
    limit = 100.0
    run = simulate(fixed(limit), seconds=60, concurrency=32)
    for second in range(10, 60):
        throttled = run.throttled_between(second, second + 1)
        assert throttled <= max(3, 0.05 * run.admitted_between(second, second + 1)), second


@settings(max_examples=25, deadline=None)
@given(
    limit=st.floats(min_value=5, max_value=300),
    ceiling_share=st.floats(min_value=0.3, max_value=3.0),
    rises=st.booleans(),
)
def test_the_rate_never_climbs_above_the_ceiling(
    limit: float, ceiling_share: float, rises: bool
) -> None:
    ceiling = ceiling_share * limit
    hidden = (lambda t: limit if t < 10 else 10 * limit) if rises else fixed(limit)
    run = simulate(hidden, seconds=25, concurrency=64, ceiling=ceiling)
    paced = [rate for _, rate in run.rates if rate is not None]
    assert paced  # it was throttled, so it is paced
    assert max(paced) <= ceiling + 1e-9


# The core, step by step


def test_an_operation_goes_unpaced_until_its_first_throttle() -> None:
    rate = OperationRate()
    assert all(rate.request(0.001 * i) for i in range(500))
    for i in range(500):
        rate.answered(0.001 * i, 0.05 + 0.001 * i, throttled=False)
    assert rate.rate is None
    assert rate.request(0.6)


def measured_cut(rate: OperationRate, per_second: float, start: float = 0.0) -> None:
    """Throttle `rate` twice, 0.2 s apart, with AWS accepting `per_second` in between; every
    answer comes 50 ms after its call was let go.

    Before the first throttle 100 calls go at once and succeed (so that first cut, unmeasured,
    paces at what was sent: 200 a second); calls queue from then on, and the second throttle,
    soon after, continues the episode the first began and measures AWS's rate over it.
    """
    for _ in range(100):
        assert rate.request(start)
    for i in range(100):
        rate.answered(start + i * 0.0045, start + 0.05 + i * 0.0045, throttled=False)
    rate.answered(start + 0.45, start + 0.5, throttled=True)
    while rate.request(start + 0.5):
        pass
    succeeded = round(per_second * 0.2) - 1  # the estimate counts one more (see OperationRate)
    for i in range(succeeded):
        answered = start + 0.5 + (i + 0.5) * 0.2 / succeeded
        rate.answered(answered - 0.05, answered, throttled=False)
    rate.answered(start + 0.65, start + 0.7, throttled=True)


def test_the_rate_is_measured_between_two_throttles() -> None:
    rate = OperationRate()
    measured_cut(rate, 100.0)
    # Between the throttles at 0.5 and 0.7 AWS accepted 19 calls (+1): 100 a second; 0.9 of it.
    assert rate.rate == pytest.approx(90.0)
    assert rate.cuts == 2


def test_throttles_of_calls_let_go_before_a_cut_change_nothing() -> None:
    rate = OperationRate()
    for i in range(32):
        rate.request(0.001 * i)
    rate.answered(0.0, 0.05, throttled=True)
    paced = rate.rate
    cuts = rate.cuts
    for i in range(1, 32):  # the rest of what was in flight, throttled too
        rate.answered(0.001 * i, 0.05 + 0.001 * i, throttled=True)
    assert (rate.rate, rate.cuts) == (paced, cuts)
    assert rate.throttled == 32


def test_a_cut_holds_back_every_queued_call() -> None:
    rate = OperationRate()
    rate.request(0.0)
    rate.answered(0.0, 0.05, throttled=True)
    assert rate.rate is not None
    for _ in range(10):
        assert not rate.request(0.05)
    first_due = rate.next_release(0.05)
    assert first_due is not None
    assert first_due > 0.05
    released = rate.release(first_due)
    assert released == 1
    assert rate.cut_since(0.0)
    assert not rate.cut_since(first_due)


def test_the_rate_climbs_only_while_calls_wait() -> None:
    rate = OperationRate()
    measured_cut(rate, 100.0)
    assert rate.rate == pytest.approx(90.0)
    assert rate.release(0.8) == 1  # the call that queued goes: nothing waits
    cut = rate.rate
    rate.next_release(30.0)  # for half a minute
    assert rate.rate == cut
    while rate.request(30.0):  # the bucket's saved tokens, then something waits
        pass
    rate.next_release(31.0)
    assert rate.rate == pytest.approx(100.0, rel=1e-3)  # back at what AWS accepted, in a second
    rate.next_release(33.0)
    assert rate.rate is not None
    assert rate.rate > 150.0


def test_a_rate_that_is_always_throttled_bottoms_out_at_the_minimum() -> None:
    rate = OperationRate()
    rate.request(0.0)
    for i in range(50):
        rate.answered(i * 0.2, i * 0.2 + 0.05, throttled=True)
    assert rate.rate == Tuning().min_rate


# The shell: one rate per operation, shared by a crawl's concurrent calls


def paced_at(rates: AdaptiveRates, operation: str, per_second: float) -> None:
    """Make `operation` paced at 0.9 x `per_second`, cut just now, with nothing queued."""
    now = asyncio.get_running_loop().time()
    core = rates.rate(operation)
    measured_cut(core, per_second, now - 0.7)
    core.cancel(now)  # the call measured_cut queued has no waiter here


async def test_operations_are_paced_independently() -> None:
    rates = AdaptiveRates()
    paced_at(rates, "ListAccountsForParent", 20.0)
    assert rates.rate("ListAccountsForParent").rate == pytest.approx(18.0, rel=0.01)
    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(rates.acquire("ListOrganizationalUnitsForParent") for _ in range(50)))
    assert asyncio.get_running_loop().time() - started < 0.1
    assert rates.rate("ListOrganizationalUnitsForParent").rate is None


async def test_concurrent_calls_of_one_operation_share_its_rate() -> None:
    rates = AdaptiveRates()
    paced_at(rates, "ListAccountsForParent", 50.0)
    pace = rates.rate("ListAccountsForParent").rate
    assert pace == pytest.approx(45.0, rel=0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    released = sorted(
        await asyncio.gather(*(rates.acquire("ListAccountsForParent") for _ in range(20)))
    )
    # The bucket is empty at the cut and the rate climbs back towards 50 a second, no further
    # in this time: the k-th call (from 0) goes no earlier than (k + 1) / 50 s after the cut.
    # A slow loop only makes calls later.
    for k, at in enumerate(released):
        assert at >= started + k / 50.0 - 0.005, (k, at - started)
    assert released[-1] - started < 5.0


async def test_a_cancelled_waiter_gives_its_place_to_the_next() -> None:
    rates = AdaptiveRates()
    paced_at(rates, "ListRoots", 10.0)
    first = asyncio.create_task(rates.acquire("ListRoots"))
    second = asyncio.create_task(rates.acquire("ListRoots"))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1.0)
    assert rates.rate("ListRoots").waiting == 0
