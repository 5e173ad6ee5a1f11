"""Event queue leases in discovery's store: one replica follows a queue at a time, a dead
replica's queues go to another once their leases expire, a stopping replica lets them go at
once, and a change of queue or role tells the follower to start again. The last applied snapshot
never goes back to an older generation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from importlib import resources

import pytest

from canopy_core.db import Database, load_migrations
from canopy_core.settings import ServiceSettings
from canopy_discovery import store
from canopy_discovery.model import AppliedSnapshot

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/canopy-events"
ROLE = "arn:aws:iam::123456789012:role/canopy-discovery"
TTL = timedelta(seconds=30)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(
        ServiceSettings(database_url=database_url, db_schema="discovery"),
        load_migrations("discovery", resources.files("canopy_discovery") / "migrations"),
    )
    yield database
    await database.close()


async def test_a_queue_is_followed_by_one_replica_until_its_lease_expires(db: Database) -> None:
    async with db.transaction() as conn:
        await store.set_event_queue(conn, "i_one", QUEUE, ROLE, "t_acme:k3j9x0ab")
        first = await store.claim_event_queue(conn, "w_a", timedelta(seconds=1))
        assert first is not None
        assert (first.integration_id, first.queue_url, first.version) == ("i_one", QUEUE, 1)
        assert await store.claim_event_queue(conn, "w_b", TTL) is None
    await asyncio.sleep(1.2)  # w_a died: no renewal
    async with db.transaction() as conn:
        taken = await store.claim_event_queue(conn, "w_b", TTL)
        assert taken is not None
        assert taken.integration_id == "i_one"
        assert await store.renew_event_queues(conn, "w_a", ["i_one"], TTL) == {}
        assert set(await store.renew_event_queues(conn, "w_b", ["i_one"], TTL)) == {"i_one"}


async def test_a_stopping_replica_lets_its_queues_go_at_once(db: Database) -> None:
    async with db.transaction() as conn:
        await store.set_event_queue(conn, "i_one", QUEUE, ROLE, "t_acme:k3j9x0ab")
        assert await store.claim_event_queue(conn, "w_a", TTL) is not None
        await store.release_event_queues(conn, "w_a", ["i_one"])
        taken = await store.claim_event_queue(conn, "w_b", TTL)
        assert taken is not None


async def test_a_new_queue_or_role_bumps_the_version_and_the_same_one_does_not(
    db: Database,
) -> None:
    async with db.transaction() as conn:
        await store.set_event_queue(conn, "i_one", QUEUE, ROLE, "t_acme:k3j9x0ab")
        assert await store.claim_event_queue(conn, "w_a", TTL) is not None
        await store.set_event_queue(conn, "i_one", QUEUE, ROLE, "t_acme:k3j9x0ab")
        held = await store.renew_event_queues(conn, "w_a", ["i_one"], TTL)
        assert held["i_one"].version == 1  # the lease stays with its holder
        await store.set_event_queue(conn, "i_one", QUEUE + "-2", ROLE, "t_acme:k3j9x0ab")
        held = await store.renew_event_queues(conn, "w_a", ["i_one"], TTL)
        assert (held["i_one"].version, held["i_one"].queue_url) == (2, QUEUE + "-2")
        await store.set_event_queue(conn, "i_one", "", "", "")  # the queue was removed
        assert await store.renew_event_queues(conn, "w_a", ["i_one"], TTL) == {}
        assert await store.event_queues(conn) == {}


async def test_the_applied_snapshot_never_goes_back_to_an_older_generation(db: Database) -> None:
    async with db.transaction() as conn:
        await store.save_applied_snapshot(conn, AppliedSnapshot("i_one", 5, "r_new", b"new"))
        await store.save_applied_snapshot(conn, AppliedSnapshot("i_one", 4, "r_old", b"old"))
        kept = await store.get_applied_snapshot(conn, "i_one")
        assert kept == AppliedSnapshot("i_one", 5, "r_new", b"new")
        await store.save_applied_snapshot(conn, AppliedSnapshot("i_one", 5, "r_same", b"same"))
        kept = await store.get_applied_snapshot(conn, "i_one")
        assert kept == AppliedSnapshot("i_one", 5, "r_same", b"same")
