"""Bursts: the messages one refresh covers, gathered over a short window. Pure functions.

A burst opens with the first message received after a quiet spell and closes `window` seconds
later (or once it holds `max_messages`): one refresh then reads every account and OU its events
name, each once however many events name it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from canopy_discovery.events.parsing import ChangeEvent, Dropped
from canopy_discovery.model import MAX_COVERED_EVENTS, CoveredEvent


@dataclass(frozen=True)
class Received:
    """One message as it came from the queue."""

    message_id: str
    receipt_handle: str
    body: str
    received_at: float  # time.monotonic()


@dataclass
class Burst:
    """The messages of one burst, in the order they arrived."""

    window: float
    max_messages: int
    messages: list[Received] = field(default_factory=list)

    def add(self, received: Sequence[Received]) -> None:
        """Take in a receive's messages; one received again (its visibility lapsed) counts once."""
        known = {m.message_id: i for i, m in enumerate(self.messages)}
        for message in received:
            if message.message_id in known:
                # The newest receipt handle is the one SQS accepts.
                self.messages[known[message.message_id]] = message
            else:
                known[message.message_id] = len(self.messages)
                self.messages.append(message)

    def remaining(self, now: float) -> float | None:
        """Seconds until the burst closes; None while it is empty."""
        if not self.messages:
            return None
        if len(self.messages) >= self.max_messages:
            return 0.0
        return max(0.0, self.messages[0].received_at + self.window - now)

    def due(self, now: float) -> bool:
        """Whether the burst is complete."""
        left = self.remaining(now)
        return left is not None and left <= 0


def receive_wait(remaining: float | None, longest: int) -> int:
    """WaitTimeSeconds of the next receive: long polling while no burst is open, else no longer
    than the burst has left (SQS waits whole seconds, and answers as soon as a message comes)."""
    if remaining is None:
        return longest
    return min(longest, math.ceil(remaining))


@dataclass(frozen=True)
class Touched:
    """What a burst's events name, and what they are."""

    account_ids: frozenset[str]
    unit_ids: frozenset[str]
    events: tuple[ChangeEvent, ...]  # without duplicates (EventBridge delivers at least once)

    @property
    def size(self) -> int:
        """How many entities the refresh reads (before walking up to known parents)."""
        return len(self.account_ids) + len(self.unit_ids)


def gather(parsed: Sequence[ChangeEvent | Dropped]) -> Touched:
    """The entities named by a burst's events, each once."""
    events: dict[str, ChangeEvent] = {}
    for item in parsed:
        if isinstance(item, ChangeEvent):
            events.setdefault(item.event_id, item)
    return Touched(
        account_ids=frozenset(e.account_id for e in events.values() if e.account_id),
        unit_ids=frozenset(e.unit_id for e in events.values() if e.unit_id),
        events=tuple(events.values()),
    )


def covered(events: Sequence[ChangeEvent]) -> tuple[tuple[CoveredEvent, ...], int]:
    """The events a run lists (the first MAX_COVERED_EVENTS), and how many it covered."""
    listed = tuple(
        CoveredEvent(e.event_id, e.event_name, e.entity_id, e.event_time)
        for e in events[:MAX_COVERED_EVENTS]
    )
    return listed, len(events)
