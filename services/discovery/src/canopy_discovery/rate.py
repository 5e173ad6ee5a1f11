"""How fast a crawl may call each Organizations API: learned from AWS's throttling, per operation.

AWS Organizations throttles each API at a rate it does not publish (`TooManyRequestsException`).
An operation goes unpaced until its first throttling answer; from then on its calls queue for a
token bucket whose rate follows a CUBIC-like curve:

- A throttling answer cuts the rate to `decrease` x an estimate of AWS's rate. While AWS keeps
  throttling (cuts a few round trips apart, calls queued all along), that is what succeeded since
  the episode's first throttle over the time since: AWS's bucket was empty then and kept being
  emptied, so it is what AWS refilled. A throttle that starts an episode has nothing to measure
  by and uses what succeeded lately (the probe crossed the rate some time before AWS said so);
  the first of all, of an operation still ramping up, what was sent and what succeeded lately.
  Answers to calls let go before the last cut say nothing of the new rate: a burst of throttling
  cuts once per round trip, not once per call that was in flight.
- While calls wait for tokens the rate climbs back along a cubic: fast at first, flat near the
  estimate (where the limit probably is), faster beyond it, then doubling every time scale, so
  crossing an unchanged limit costs a throttle or two, not a burst, and a limit that rose (or
  an estimate that fell too low) is found again in a few time scales. Time with nothing waiting
  does not count: a rate nothing presses on does not run away.
- Queued calls are released at the current rate, re-planned at every change, and a call let go
  before a cut but not sent yet queues again (`cut_since`): a cut holds back every call not yet
  sent.

Each operation learns alone (a throttled `ListAccountsForParent` does not slow
`ListOrganizationalUnitsForParent`), every call of one crawl shares its operation's rate, and no
rate climbs above the crawl's ceiling, if it has one. `OperationRate` is the pure core (time is
passed in); `AdaptiveRates` runs it on asyncio. botocore's adaptive retry mode (which aiobotocore
ships) keeps one such rate per client, for every operation, cuts once per throttled answer and
lets calls already past its bucket go: measured against this on the crawl bench, see the README.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import deque
from dataclasses import dataclass

# A token counts as whole a hair early, so that a timer set for the moment it is due never finds
# it one rounding error short (and sets itself for that same moment again, for ever).
_WHOLE = 1.0 - 1e-9


@dataclass(frozen=True)
class Tuning:
    """The controller's constants; the defaults are what the crawler uses."""

    decrease: float = 0.9  # after a throttle: this fraction of the rate AWS accepted
    # The controller's time scale: `scale` seconds, or the time `scale_calls` calls take at the
    # rate, or `scale_round_trips` round trips, whichever is longest (a slow operation, or a slow
    # answer, needs longer to measure and to probe), but `max_scale` seconds at most (so that a
    # rate cut very low, by a storm of throttles, climbs back within a minute or so). Answers of
    # one time scale are remembered to measure rates by, and after a cut the rate climbs back
    # to the estimate in one.
    scale: float = 1.0
    scale_calls: float = 40.0
    scale_round_trips: float = 10.0
    max_scale: float = 20.0
    # Cuts this many round trips (or calls at the rate, if longer) apart, at most, belong to one
    # episode of throttling, over which AWS's rate is measured: the rate stayed above it.
    episode_gap: float = 8.0
    burst: float = 0.05  # tokens a paced operation may save up, in seconds of its rate
    min_rate: float = 1.0  # calls per second: the slowest an operation is ever paced


class OperationRate:
    """The adaptive rate of one API operation: a token bucket, and the queue's length.

    Pure: every method takes the current time. `rate` is None until the first throttling
    answer, then the calls a second the operation is paced at.
    """

    def __init__(self, ceiling: float | None = None, tuning: Tuning = Tuning()) -> None:
        self.tuning = tuning
        self.ceiling = ceiling if ceiling is not None and ceiling > 0 else None
        self.rate: float | None = None
        self.waiting = 0  # calls queued for a token
        self.throttled = 0  # throttling answers seen
        self.cuts = 0  # times the rate was cut
        self._tokens = self._burst()
        self._clock: float | None = None  # when the bucket and the curve were last brought up
        self._limit = math.inf  # the accepted rate at the last cut: the curve's plateau
        self._steepness = 0.0
        self._knee = 0.0  # seconds of waiting after a cut at which the curve reaches the plateau
        self._held = 0.0  # seconds of waiting since the last cut
        self._cut_at = -math.inf
        self._first_sent: float | None = None
        self._round_trip = 0.0  # seconds from letting a call go to its answer, lately
        self._busy_since: float | None = None  # since when calls have been queued, unbroken
        # When calls were let go, within the time scale, and answered successfully, within the
        # time scale and the current episode of throttling (see _accepted_rate).
        self._sent: deque[float] = deque()
        self._successes: deque[float] = deque()
        self._episode: float | None = None

    # Sending

    def request(self, now: float) -> bool:
        """A call wants to go: True if it may go now (its token taken), else it is queued."""
        self._advance(now)
        if self.waiting == 0 and self._take():
            self._let_go(now, 1)
            return True
        if self.waiting == 0:
            self._busy_since = now
        self.waiting += 1
        return False

    def release(self, now: float) -> int:
        """How many queued calls may go now (their tokens taken, in queue order)."""
        self._advance(now)
        released = 0
        while self.waiting > 0 and self._take():
            self.waiting -= 1
            released += 1
        if released:
            self._let_go(now, released)
        if self.waiting == 0:
            self._busy_since = None
        return released

    def cancel(self, now: float) -> None:
        """A queued call gave up waiting."""
        self._advance(now)
        self.waiting = max(0, self.waiting - 1)
        if self.waiting == 0:
            self._busy_since = None

    def next_release(self, now: float) -> float | None:
        """When the first queued call may go, at the current rate; None if none is queued."""
        if self.waiting == 0:
            return None
        self._advance(now)
        if self.rate is None or self._tokens >= _WHOLE:
            return now
        return now + (1.0 - self._tokens) / self.rate

    def cut_since(self, released_at: float) -> bool:
        """Whether the rate was cut after a call was let go at `released_at` (a call that has
        not been sent yet should then queue again, to go at the new rate)."""
        return released_at < self._cut_at

    # Answers

    def answered(self, released_at: float, now: float, *, throttled: bool) -> None:
        """A call let go at `released_at` was answered: successfully, or throttled."""
        self._advance(now)
        # The round trip: the longest of the last few, roughly (it decays by a tenth an answer).
        self._round_trip = max(now - released_at, 0.9 * self._round_trip)
        scale = self._scale(self.rate)
        horizon = now - scale
        _forget(self._sent, horizon)
        if self._episode is not None and now - self._cut_at > self._episode_gap():
            self._episode = None  # it is over: AWS stopped throttling
        _forget(self._successes, horizon if self._episode is None else min(horizon, self._episode))
        if not throttled:
            self._successes.append(now)
            return
        self.throttled += 1
        if released_at < self._cut_at:
            return  # let go before the last cut: the new rate has not been tried yet
        measured = self._accepted_rate(now)
        if measured is not None:
            limit = measured
        else:
            self._episode = now  # this throttle starts one
            first = now if self._first_sent is None else self._first_sent
            span = max(min(scale, now - first), 1e-3)
            if self.rate is not None and self._busy_since is not None:
                # Nothing to measure AWS's rate by: what it accepted lately (the probe crossed
                # its rate some time before it said so), or a cut of the rate calls go at.
                limit = max(len(self._successes) / span, self.tuning.decrease * self.rate)
            else:
                # Nor calls queued for their rate (the first throttle of an unpaced operation):
                # between what was sent lately, too much, and what succeeded, too little for
                # all that an operation still ramping up sent (their geometric mean).
                limit = (len(self._sent) * (len(self._successes) + 1)) ** 0.5 / span
        if self.rate is not None:
            limit = min(limit, self.rate)
        limit = max(self.tuning.min_rate, limit)
        if self.ceiling is not None:
            limit = min(limit, self.ceiling)
        # The curve (see _climb): from decrease x limit back to the limit in one time scale,
        # then on above it.
        self._limit = limit
        self._knee = self._scale(limit)
        self._steepness = (1.0 - self.tuning.decrease) * limit / self._knee**3
        self._held = 0.0
        if self.cuts == 0:
            # The first throttle of an unpaced operation: what it was sent at says little (a
            # crawl ramping up sends in bursts), so pace at that and probe above it at once;
            # the next throttle, measured against this one, gives AWS's rate.
            self._held = self._knee
        self.rate = self._capped(self._limit + self._steepness * (self._held - self._knee) ** 3)
        self._cut_at = now
        self.cuts += 1
        self._tokens = 0.0

    # Inside

    def _burst(self) -> float:
        return max(1.0, (self.rate or 0.0) * self.tuning.burst)

    def _take(self) -> bool:
        if self.rate is None:
            return True
        if self._tokens < _WHOLE:
            return False
        self._tokens = max(0.0, self._tokens - 1.0)
        return True

    def _let_go(self, now: float, count: int) -> None:
        if self._first_sent is None:
            self._first_sent = now
        self._sent.extend(itertools.repeat(now, count))

    def _scale(self, rate: float | None) -> float:
        """The controller's time scale at `rate` (see Tuning)."""
        tuning = self.tuning
        slowest = max(
            tuning.scale_calls / (rate or math.inf), tuning.scale_round_trips * self._round_trip
        )
        return max(tuning.scale, min(tuning.max_scale, slowest))

    def _episode_gap(self) -> float:
        """Cuts further apart than this do not belong to one episode (see Tuning)."""
        return self.tuning.episode_gap * max(self._round_trip, 1.0 / (self.rate or math.inf))

    def _accepted_rate(self, now: float) -> float | None:
        """The rate AWS accepted during the current throttling episode: since the throttle that
        began a chain of cuts, each soon after the one before (within `episode_gap` round trips
        or calls), with calls queued all along; None if this throttle does not continue one.

        AWS's bucket held less than a token when the first call of the episode arrived, and
        more was sent than it took all along (it kept throttling), so what it refilled since
        went to the calls that succeeded since, give or take one: their number (plus one, so
        that this errs high and is cut again rather than low and climbed back slowly) over the
        time is its rate, however unevenly calls were sent. Answers come back in the order
        calls arrived, give or take the jitter of the latency, so answer times stand for arrival
        times.
        """
        start = self._episode
        if start is None or now <= start:
            return None
        if self._busy_since is None or self._busy_since > self._cut_at + self._round_trip:
            return None  # the queue ran dry since the last cut: AWS may have been idle
        succeeded = sum(1 for answered in self._successes if answered > start)
        return (succeeded + 1) / (now - start)

    def _advance(self, now: float) -> None:
        """Bring the bucket and the curve up to `now`."""
        elapsed = 0.0 if self._clock is None else max(0.0, now - self._clock)
        self._clock = now
        if self.rate is None:
            return
        self._tokens = min(self._burst(), self._tokens + elapsed * self.rate)
        if self.cuts == 0 or self.waiting == 0:
            return  # the curve climbs only while calls wait for tokens
        self._climb(elapsed)

    def _climb(self, elapsed: float) -> None:
        """Climb `elapsed` more seconds of waiting along the curve, in three parts of the time
        scale K after a cut: back from decrease x limit to the limit (concave, a cubic), on to
        (2 - decrease) x limit (convex, the same cubic), then doubling every time scale of the
        rate reached, so that a limit far above the last one is found in a few."""
        assert self.rate is not None
        knee, before = self._knee, self._held
        self._held += elapsed
        if self._held <= 2 * knee:
            rate = self._limit + self._steepness * (self._held - knee) ** 3
        else:
            start = max(before, 2 * knee)
            rate = self._limit + self._steepness * knee**3 if before < 2 * knee else self.rate
            rate *= 2 ** ((self._held - start) / self._scale(rate))
        self.rate = self._capped(rate)

    def _capped(self, rate: float) -> float:
        if self.ceiling is not None:
            rate = min(rate, self.ceiling)
        return max(self.tuning.min_rate, rate)


class AdaptiveRates:
    """The operations' rates of one crawl, shared by all its calls, on the running event loop."""

    def __init__(self, ceiling: float | None = None, tuning: Tuning = Tuning()) -> None:
        self.ceiling = ceiling
        self.tuning = tuning
        self.operations: dict[str, OperationRate] = {}
        self._queues: dict[str, deque[asyncio.Future[float]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def rate(self, operation: str) -> OperationRate:
        """The rate of `operation` (made on first use)."""
        found = self.operations.get(operation)
        if found is None:
            found = self.operations[operation] = OperationRate(self.ceiling, self.tuning)
            self._queues[operation] = deque()
        return found

    async def acquire(self, operation: str) -> float:
        """Wait until one call of `operation` may be sent; the time it was let go."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.rate(operation).request(now):
            return now
        waiter: asyncio.Future[float] = loop.create_future()
        self._queues[operation].append(waiter)
        self._plan(operation)
        try:
            return await waiter
        except asyncio.CancelledError:
            queue = self._queues[operation]
            if waiter in queue:  # not released yet: its place goes to the next
                queue.remove(waiter)
                self.operations[operation].cancel(loop.time())
                self._plan(operation)
            raise

    def cut_since(self, operation: str, released_at: float) -> bool:
        """Whether `operation`'s rate was cut after a call was let go at `released_at`."""
        return self.rate(operation).cut_since(released_at)

    def answered(self, operation: str, released_at: float, *, throttled: bool) -> None:
        """Tell the operation's rate how a call it let go at `released_at` was answered."""
        now = asyncio.get_running_loop().time()
        self.rate(operation).answered(released_at, now, throttled=throttled)
        self._plan(operation)

    def _plan(self, operation: str) -> None:
        """(Re)arm the operation's timer for its first queued call, at the current rate."""
        loop = asyncio.get_running_loop()
        timer = self._timers.pop(operation, None)
        if timer is not None:
            timer.cancel()
        due = self.operations[operation].next_release(loop.time())
        if due is not None:
            self._timers[operation] = loop.call_at(due, self._release, operation)

    def _release(self, operation: str) -> None:
        self._timers.pop(operation, None)
        now = asyncio.get_running_loop().time()
        queue = self._queues[operation]
        for _ in range(self.operations[operation].release(now)):
            waiter = queue.popleft()
            if not waiter.cancelled():
                waiter.set_result(now)
        self._plan(operation)


def _forget(times: deque[float], before: float) -> None:
    """Drop the times before `before` from the (roughly ordered) front of `times`."""
    while times and times[0] < before:
        times.popleft()
