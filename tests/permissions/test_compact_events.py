"""With CANOPY_COMPACT_EVENTS, a prefix change stores one row per workspace in the schema log,
and workspace streams receive exactly what one row per event gives them: the same renames,
revisions, and resumption from a revision inside a workspace's range."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from tests.integration.conftest import ORG_OWNER, SYSTEM
from tests.permissions import test_sharing as sharing
from tests.permissions.test_sharing import Sharing, Stream, listing, setup_attached

s = sharing.s  # the services, started with the settings below


@pytest.fixture
def service_env(service_env: dict[str, Any]) -> dict[str, Any]:
    return {**service_env, "compact_events": True}


async def test_a_prefix_change_writes_one_row_per_workspace_and_streams_every_rename(
    s: Sharing,
) -> None:
    created, stream1, _ = await setup_attached(s)
    _, revision = await listing(s, "w_ops2")
    stream2 = Stream(s, "w_ops2", revision)
    await s.schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id="w_ops2", folder_id=created.root_folder_id),
        metadata=SYSTEM,
    )
    await stream2.wait_for(3)
    _, before = await listing(s, "w_ops2")
    await s.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=created.id, handle_prefix="aws_"),
            update_mask=FieldMask(paths=["handle_prefix"]),
        ),
        metadata=ORG_OWNER,
    )
    renamed: dict[str, list[tuple[int, str, str]]] = {}
    for workspace, stream in (("w_ops1", stream1), ("w_ops2", stream2)):
        events = (await stream.wait_for(6))[3:]
        renamed[workspace] = [
            (e.revision, e.schema_renamed.old_name, e.schema_renamed.new_name) for e in events
        ]
        stream.close()
    # Numbered by workspace, then connection, as one row per event numbered them.
    assert [r[0] for r in renamed["w_ops1"] + renamed["w_ops2"]] == list(
        range(before + 1, before + 7)
    )
    for renames in renamed.values():
        assert sorted(r[1:] for r in renames) == [
            ("data", "aws_data"),
            ("sandbox", "aws_sandbox"),
            ("web", "aws_web"),
        ]
    db = s.services["permissions"].runtime.db
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT first_revision, revision, keys FROM event_log WHERE revision > $1 "
            "ORDER BY revision",
            before,
        )
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (before + 1, before + 3, ["workspace:w_ops1"]),
        (before + 4, before + 6, ["workspace:w_ops2"]),
    ]
    # A watcher that had seen the first rename of its workspace resumes inside the range.
    resumed = Stream(s, "w_ops2", before + 4)
    events = await resumed.wait_for(2)
    resumed.close()
    assert [
        (e.revision, e.schema_renamed.old_name, e.schema_renamed.new_name) for e in events
    ] == renamed["w_ops2"][1:]


async def test_a_listing_paged_under_churn_then_watched_is_the_servers_set_with_ranges(
    s: Sharing,
) -> None:
    await (
        sharing.test_a_listing_paged_under_churn_then_watched_from_its_revision_is_the_servers_set(
            s
        )
    )
    db = s.services["permissions"].runtime.db
    async with db.connection() as conn:
        ranges = await conn.fetchval(
            "SELECT count(*) FROM event_log WHERE first_revision IS NOT NULL"
        )
    assert ranges > 0  # the prefix changes of the churn were stored as ranges
