"""Stopping background tasks without losing a cancellation of the one that stops them."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel the tasks and wait until each has ended, whatever it raised.

    `with suppress(CancelledError): await task` would also swallow a cancellation of the caller
    that arrives while it waits, and the caller would go on as if never cancelled (a service
    stopping it then waits forever); here that cancellation is raised.
    """
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception:
            pass  # the task's own failure: it is being stopped anyway
