"""Lock order in discovery's store: every transaction that touches an integration's schedule row
and its runs takes the schedule row first, so a worker claiming a run and a deletion cancelling
it never deadlock (seen before as `DeadlockDetectedError` in the claiming worker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from importlib import resources

import pytest

from canopy_core.db import Database, load_migrations
from canopy_core.eventlog import EventLog
from canopy_core.settings import ServiceSettings
from canopy_discovery import store
from canopy_discovery.model import RunState, Trigger
from canopy_discovery.runs import cancel_integration, record, request_sync


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(
        ServiceSettings(database_url=database_url, db_schema="discovery"),
        load_migrations("discovery", resources.files("canopy_discovery") / "migrations"),
    )
    yield database
    await database.close()


async def test_a_claim_and_a_cancellation_of_one_integration_never_deadlock(db: Database) -> None:
    log = EventLog(db)
    async with db.transaction() as conn:
        await request_sync(conn, log, "i_doomed", "t_acme", None, 900, Trigger.CREATED)

    claimed = asyncio.Event()
    cancelling = asyncio.Event()

    async def claim() -> None:
        # As Scheduler.claim: lease the schedule row, then lock the run and record it.
        async with db.transaction() as conn:
            schedule = await store.claim_due(conn, "w_1", timedelta(seconds=30))
            assert schedule is not None
            assert schedule.active_run_id
            claimed.set()
            await cancelling.wait()
            await asyncio.sleep(0.3)  # the cancellation has taken every lock it takes first
            run = await store.get_run(conn, schedule.active_run_id, for_update=True)
            assert run is not None
            await record(conn, log, replace(run, state=RunState.RUNNING))

    async def cancel() -> None:
        await claimed.wait()
        async with db.transaction() as conn:
            cancelling.set()
            await cancel_integration(conn, log, "i_doomed")

    await asyncio.wait_for(asyncio.gather(claim(), cancel()), 30)
    async with db.connection() as conn:
        assert await store.get_schedule(conn, "i_doomed") is None
        (run,) = await store.list_runs(conn, "i_doomed", None, 10)
    assert run.state is RunState.CANCELLED
