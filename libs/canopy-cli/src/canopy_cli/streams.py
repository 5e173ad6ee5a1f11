"""Following a `Watch…` stream from a terminal across server restarts: reconnect, and resume
after the last revision the server said it had covered (never after the last event seen, which
a filtered stream may be far behind)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from canopy_cli.client import Unreachable

#: How long a stream that was connected may stay unreachable before the command gives up.
RECONNECT_FOR = 60.0
FIRST_DELAY, MAX_DELAY = 0.5, 5.0


def retryable(error: Exception) -> bool:
    """The service went away (shutting down, restarting, unreachable): worth reconnecting."""
    if isinstance(error, Unreachable):
        return True
    return isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


def follow(
    open_stream: Callable[[int], Any],
    after_revision: int,
    *,
    on_reconnect: Callable[[int, Exception], None],
    reconnect_for: float = RECONNECT_FOR,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Any]:
    """Every reply of `open_stream(after_revision)`, reopened after the last `latest_revision`
    when the service goes away once connected. Ends when the server ends the stream; a stream
    that never connected, or stays away for `reconnect_for` seconds, raises."""
    position = after_revision
    connected = False
    away_since: float | None = None
    delay = FIRST_DELAY
    while True:
        stream = open_stream(position)
        try:
            for reply in stream:
                connected, away_since, delay = True, None, FIRST_DELAY
                yield reply
                # The caller took the reply in: what it covers is safe to resume after.
                position = max(position, reply.latest_revision)
            return
        except Exception as error:
            if not connected or not retryable(error):
                raise
            now = clock()
            away_since = now if away_since is None else away_since
            if now - away_since > reconnect_for:
                raise
            on_reconnect(position, error)
        finally:
            stream.cancel()
        sleep(delay)
        delay = min(delay * 2, MAX_DELAY)
