"""`canopy_cli.streams.follow`: when a terminal's watch reconnects, and where it resumes.

The streams here are scripted stand-ins for a gRPC server stream (the logic under test is the
reconnection policy alone); tests/cli/test_cli.py restarts a real service under a real watch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from canopy_cli.client import Unreachable
from canopy_cli.streams import follow


@dataclass
class Reply:
    latest_revision: int


class Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


@dataclass
class Script:
    """Each opening of the stream plays the next script: replies, then an error or the end."""

    plays: list[tuple[list[int], Exception | None]]
    opened_after: list[int] = field(default_factory=list)
    cancelled: int = 0

    def open(self, after_revision: int) -> Any:
        self.opened_after.append(after_revision)
        replies, error = self.plays.pop(0)
        script = self

        class Stream:
            def __iter__(self) -> Iterator[Reply]:
                for latest in replies:
                    yield Reply(latest)
                if error is not None:
                    raise error

            def cancel(self) -> None:
                script.cancelled += 1

        return Stream()


def run(script: Script, after: int = 0, **kw: Any) -> tuple[list[int], list[int]]:
    reconnects: list[int] = []
    seen = [
        r.latest_revision
        for r in follow(
            script.open,
            after,
            on_reconnect=lambda position, _error: reconnects.append(position),
            sleep=lambda _seconds: None,
            **kw,
        )
    ]
    return seen, reconnects


def test_a_stream_the_server_ends_ends_the_follow() -> None:
    script = Script([([3, 5], None)])
    assert run(script, 2) == ([3, 5], [])
    assert script.opened_after == [2]
    assert script.cancelled == 1


@pytest.mark.parametrize(
    "away",
    [Failed(grpc.StatusCode.UNAVAILABLE), Unreachable("permissions", "127.0.0.1:1")],
    ids=["shutting-down", "unreachable"],
)
def test_after_the_service_goes_away_it_resumes_after_the_last_latest_revision(
    away: Exception,
) -> None:
    script: Script = Script([([4, 9], away), ([], away), ([12], None)])
    seen, reconnects = run(script, 1)
    assert seen == [4, 9, 12]
    assert script.opened_after == [1, 9, 9]
    assert reconnects == [9, 9]


def test_a_stream_that_never_connected_fails_at_once() -> None:
    script = Script([([], Unreachable("permissions", "127.0.0.1:1"))])
    with pytest.raises(Unreachable):
        run(script)


def test_an_error_that_is_not_an_outage_is_not_retried() -> None:
    script = Script([([4], Failed(grpc.StatusCode.OUT_OF_RANGE))])
    with pytest.raises(grpc.RpcError):
        run(script)


def test_it_gives_up_when_the_service_stays_away() -> None:
    away = Failed(grpc.StatusCode.UNAVAILABLE)
    script = Script([([4], away), ([], away), ([], away), ([], None)])
    ticks = iter(range(0, 100, 10))  # each failure is 10 s after the one before
    with pytest.raises(grpc.RpcError):
        run(script, reconnect_for=15, clock=lambda: next(ticks))
    assert script.opened_after == [0, 4, 4]
