"""A burst's way through the follower where the integration service's answers decide it: another
apply winning twice, a suspended integration, an apply that needs confirmation. The integration
service is a stand-in here (the paths need answers it gives only under races); PostgreSQL is
real, and so is the Organizations client's place, taken by an object answering as moto does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as ipb
from canopy.type.v1 import types_pb2
from canopy_core.db import Database, load_migrations
from canopy_core.errors import Aborted
from canopy_core.eventlog import EventLog
from canopy_core.settings import ServiceSettings
from canopy_discovery import store
from canopy_discovery.aws import AwsSettings
from canopy_discovery.crawler import CrawlLimits
from canopy_discovery.events.batching import gather
from canopy_discovery.events.follower import Follower, FollowerConfig
from canopy_discovery.events.parsing import ChangeEvent
from canopy_discovery.model import AppliedSnapshot, FollowedQueue, RunState, Trigger

INTEGRATION = "i_followed"
ACCOUNT = "111122223333"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(
        ServiceSettings(database_url=database_url, db_schema="discovery"),
        load_migrations("discovery", resources.files("canopy_discovery") / "migrations"),
    )
    yield database
    await database.close()


def snapshot() -> tree_pb.OrganizationSnapshot:
    return tree_pb.OrganizationSnapshot(
        organization_id="o-abcdefghij",
        management_account_id="123456789012",
        root_id="r-root",
        accounts=[tree_pb.Account(id=ACCOUNT, name="web", parent_id="r-root", state="ACTIVE")],
    )


class Organizations:
    """Answers as the API does for the one account, now under the root."""

    def __init__(self) -> None:
        self.calls = 0

    async def describe_account(self, AccountId: str) -> dict[str, Any]:
        self.calls += 1
        arn = f"arn:aws:organizations::123456789012:account/o-abcdefghij/{AccountId}"
        return {"Account": {"Id": AccountId, "Arn": arn, "Name": "web two", "State": "ACTIVE"}}

    async def list_parents(self, ChildId: str) -> dict[str, Any]:
        self.calls += 1
        return {"Parents": [{"Id": "r-root", "Type": "ROOT"}]}


class Integrations:
    """The integration service's answers, as a test sets them."""

    def __init__(self, state: int = ipb.INTEGRATION_STATE_ENABLED, generation: int = 3) -> None:
        self.integration = ipb.Integration(
            id=INTEGRATION,
            tenant_id="t_acme",
            scope=types_pb2.Scope(tenant_id="t_acme"),
            state=state,  # type: ignore[arg-type]
            tree_generation=generation,
            organization_id="o-abcdefghij",
        )
        self.applied: list[tree_rpc.ApplyDiscoverySnapshotRequest] = []
        self.answer: tree_rpc.ApplyDiscoverySnapshotResponse | Exception = Aborted("moved on")

    async def get_integration(self, integration_id: str) -> ipb.Integration:
        return self.integration

    async def apply(
        self, request: tree_rpc.ApplyDiscoverySnapshotRequest
    ) -> tree_rpc.ApplyDiscoverySnapshotResponse:
        self.applied.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def bring_in(db: Database, integrations: Integrations) -> Organizations:
    async with db.transaction() as conn:
        await store.upsert_schedule(conn, INTEGRATION, "t_acme", None, 900)
        await store.save_applied_snapshot(
            conn, AppliedSnapshot(INTEGRATION, 3, "r_crawl", snapshot().SerializeToString())
        )
    follower = Follower(
        FollowedQueue(INTEGRATION, "https://sqs.us-east-1.amazonaws.com/1/q", "arn", "x", 1),
        db,
        EventLog(db),
        integrations,  # type: ignore[arg-type]
        AwsSettings(),
        FollowerConfig(run_poll=0.05),
    )
    touched = gather([ChangeEvent("e1", "PutAccountName", NOW, account_id=ACCOUNT)])
    organizations = Organizations()
    await follower._bring_in(organizations, CrawlLimits(), touched)
    return organizations


async def test_another_apply_winning_twice_falls_back_to_a_full_crawl(db: Database) -> None:
    integrations = Integrations()
    organizations = await bring_in(db, integrations)
    assert len(integrations.applied) == 2
    assert organizations.calls == 2  # read once, patched twice
    async with db.connection() as conn:
        (run,) = await store.list_runs(conn, INTEGRATION, None, 10)
        schedule = await store.get_schedule(conn, INTEGRATION)
    assert (run.state, run.trigger, run.full_crawl_reason) == (
        RunState.QUEUED,
        Trigger.ORGANIZATION_EVENTS,
        "CONFLICT",
    )
    assert [(e.event_id, e.entity_id) for e in run.events] == [("e1", ACCOUNT)]
    assert schedule is not None
    assert schedule.active_run_id == run.id


async def test_a_suspended_integration_is_not_refreshed(db: Database) -> None:
    integrations = Integrations(state=ipb.INTEGRATION_STATE_SUSPENDED)
    organizations = await bring_in(db, integrations)
    assert (integrations.applied, organizations.calls) == ([], 0)
    async with db.connection() as conn:
        assert await store.list_runs(conn, INTEGRATION, None, 10) == []


async def test_a_refresh_that_needs_confirmation_is_recorded_and_keeps_the_snapshot(
    db: Database,
) -> None:
    integrations = Integrations()
    integrations.answer = tree_rpc.ApplyDiscoverySnapshotResponse(
        outcome=tree_pb.APPLY_OUTCOME_NEEDS_CONFIRMATION, generation=3
    )
    await bring_in(db, integrations)
    (sent,) = integrations.applied
    assert (sent.expected_generation, sent.snapshot.accounts[0].name) == (3, "web two")
    async with db.connection() as conn:
        (run,) = await store.list_runs(conn, INTEGRATION, None, 10)
        kept = await store.get_applied_snapshot(conn, INTEGRATION)
    assert (run.state, run.apply_outcome, run.id) == (
        RunState.NEEDS_CONFIRMATION,
        "NEEDS_CONFIRMATION",
        sent.sync_run_id,
    )
    assert run.progress.api_calls == 2
    assert kept is not None
    assert kept.run_id == "r_crawl"  # nothing was applied: the crawl's snapshot stays
