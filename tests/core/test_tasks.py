"""Stopping background tasks: every task ends, and a cancellation of the stopper is not lost."""

from __future__ import annotations

import asyncio

import pytest

from canopy_core.tasks import cancel_and_wait


async def test_every_task_is_cancelled_and_awaited_whatever_it_raised() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    async def failing_on_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            raise RuntimeError("cleanup failed")

    tasks = [asyncio.create_task(forever()), asyncio.create_task(failing_on_cancel())]
    await asyncio.sleep(0)
    await cancel_and_wait(*tasks)
    assert all(task.done() for task in tasks)


async def test_a_stopper_cancelled_while_it_waits_is_cancelled() -> None:
    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.2)  # cleanup that takes a while

    went_on = asyncio.Event()

    async def stopper(child: asyncio.Task[None]) -> None:
        await cancel_and_wait(child)
        went_on.set()  # as if it had never been cancelled

    child = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    task = asyncio.create_task(stopper(child))
    await asyncio.sleep(0.05)  # the stopper waits for the child's cleanup
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not went_on.is_set()
