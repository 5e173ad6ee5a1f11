"""A first walk through the integration service."""

from __future__ import annotations

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from tests.integration.conftest import (
    ROOT,
    SYSTEM,
    Suite,
    account,
    create,
    ou,
    snapshot,
)


async def test_create_then_apply_a_snapshot(suite: Suite) -> None:
    created = await create(suite)
    assert created.state == 1
    snap = snapshot(
        [(ou(1), ROOT, "Production"), (ou(2), ou(1), "Web Apps")],
        [(account(1), ROOT, "Management"), (account(2), ou(2), "Web Prod"), (account(3), ou(1), "Old", "SUSPENDED")],
    )
    reply = await suite.tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(integration_id=created.id, snapshot=snap), metadata=SYSTEM
    )
    assert reply.outcome == tree_pb.APPLY_OUTCOME_APPLIED, reply
    print(reply.summary)
    again = await suite.tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=created.id, snapshot=snap, expected_generation=reply.generation
        ),
        metadata=SYSTEM,
    )
    assert again.outcome == tree_pb.APPLY_OUTCOME_UNCHANGED
    assert again.summary.rows_written == 0
    tree = await suite.tree.GetConnectionTree(tree_rpc.GetConnectionTreeRequest(integration_id=created.id), metadata=SYSTEM)
    print(tree)
