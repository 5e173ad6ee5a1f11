"""Bursts and patched snapshots (pure functions): what one refresh reads, the snapshot it
applies, and when it falls back to a full crawl."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy_discovery.events.batching import Burst, Received, covered, gather, receive_wait
from canopy_discovery.events.parsing import ChangeEvent, Dropped
from canopy_discovery.events.patching import (
    NO_STORED_SNAPSHOT,
    ORGANIZATION_CHANGED,
    REMOVED_OU_HAS_CHILDREN,
    STORED_SNAPSHOT_OUT_OF_DATE,
    TOO_MUCH_OF_THE_TREE,
    UNKNOWN_PARENT,
    Fallback,
    Refreshed,
    check_share,
    check_stored,
    missing_parents,
    patch_snapshot,
)
from canopy_discovery.model import AppliedSnapshot
from tests.discovery.conftest import normalized

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def snapshot() -> tree_pb.OrganizationSnapshot:
    """root → ou-a (→ ou-a1), ou-b; accounts 1 (root), 2 (ou-a), 3 (ou-a1), 4 (ou-b)."""
    return tree_pb.OrganizationSnapshot(
        organization_id="o-abcdefghij",
        management_account_id="000000000001",
        root_id="r-root",
        organizational_units=[
            tree_pb.OrganizationalUnit(id="ou-root-aaaaaaaa", parent_id="r-root", name="A"),
            tree_pb.OrganizationalUnit(
                id="ou-root-a1a1a1a1", parent_id="ou-root-aaaaaaaa", name="A1"
            ),
            tree_pb.OrganizationalUnit(id="ou-root-bbbbbbbb", parent_id="r-root", name="B"),
        ],
        accounts=[
            tree_pb.Account(id="000000000001", name="one", parent_id="r-root", state="ACTIVE"),
            tree_pb.Account(
                id="000000000002", name="two", parent_id="ou-root-aaaaaaaa", state="ACTIVE"
            ),
            tree_pb.Account(
                id="000000000003", name="three", parent_id="ou-root-a1a1a1a1", state="ACTIVE"
            ),
            tree_pb.Account(
                id="000000000004", name="four", parent_id="ou-root-bbbbbbbb", state="ACTIVE"
            ),
        ],
    )


def account(
    account_id: str, parent: str, name: str = "x", state: str = "ACTIVE"
) -> tree_pb.Account:
    return tree_pb.Account(id=account_id, name=name, parent_id=parent, state=state)


def unit(unit_id: str, parent: str, name: str) -> tree_pb.OrganizationalUnit:
    return tree_pb.OrganizationalUnit(id=unit_id, parent_id=parent, name=name)


def test_a_moved_renamed_account_takes_its_place_and_the_rest_is_kept() -> None:
    before = snapshot()
    moved = account("000000000002", "ou-root-bbbbbbbb", "two renamed")
    patched = patch_snapshot(before, Refreshed(accounts={"000000000002": moved}))
    assert isinstance(patched, tree_pb.OrganizationSnapshot)
    expected = snapshot()
    expected.accounts[1].CopyFrom(moved)
    assert patched == expected


def test_new_entities_are_added_and_removed_ones_left_out() -> None:
    refreshed = Refreshed(
        accounts={"000000000009": account("000000000009", "ou-root-newnewne")},
        units={"ou-root-newnewne": unit("ou-root-newnewne", "r-root", "New")},
        removed_accounts={"000000000004"},
        removed_units=set(),
    )
    patched = patch_snapshot(snapshot(), refreshed)
    assert isinstance(patched, tree_pb.OrganizationSnapshot)
    assert [a.id for a in patched.accounts] == [
        "000000000001",
        "000000000002",
        "000000000003",
        "000000000009",
    ]
    assert patched.organizational_units[-1].id == "ou-root-newnewne"


def test_an_empty_ou_that_is_gone_is_left_out() -> None:
    refreshed = Refreshed(
        removed_units={"ou-root-bbbbbbbb"},
        accounts={"000000000004": account("000000000004", "r-root")},  # moved out first
    )
    patched = patch_snapshot(snapshot(), refreshed)
    assert isinstance(patched, tree_pb.OrganizationSnapshot)
    assert "ou-root-bbbbbbbb" not in {u.id for u in patched.organizational_units}


def test_a_removed_ou_that_still_has_children_falls_back() -> None:
    found = patch_snapshot(snapshot(), Refreshed(removed_units={"ou-root-aaaaaaaa"}))
    assert isinstance(found, Fallback)
    assert found.reason == REMOVED_OU_HAS_CHILDREN
    assert "ou-root-aaaaaaaa" in found.message


def test_an_account_under_an_unknown_parent_falls_back() -> None:
    refreshed = Refreshed(accounts={"000000000002": account("000000000002", "ou-root-nowhere1")})
    found = patch_snapshot(snapshot(), refreshed)
    assert isinstance(found, Fallback)
    assert found.reason == UNKNOWN_PARENT
    no_parent = Refreshed(accounts={"000000000002": account("000000000002", "")})
    assert isinstance(patch_snapshot(snapshot(), no_parent), Fallback)


def test_answers_of_another_organization_or_root_fall_back() -> None:
    other = patch_snapshot(snapshot(), Refreshed(organization_ids={"o-zzzzzzzzzz"}))
    assert isinstance(other, Fallback)
    assert other.reason == ORGANIZATION_CHANGED
    root = patch_snapshot(snapshot(), Refreshed(root_ids={"r-else"}))
    assert isinstance(root, Fallback)
    assert root.reason == ORGANIZATION_CHANGED
    same = patch_snapshot(snapshot(), Refreshed(organization_ids={"o-abcdefghij"}))
    assert same == snapshot()


def test_missing_parents_are_the_unknown_ous_above_what_was_read() -> None:
    refreshed = Refreshed(
        accounts={"000000000002": account("000000000002", "ou-root-newchild")},
        units={"ou-root-newchild": unit("ou-root-newchild", "ou-root-newparnt", "C")},
    )
    assert missing_parents(snapshot(), refreshed) == {"ou-root-newparnt"}
    refreshed.units["ou-root-newparnt"] = unit("ou-root-newparnt", "r-root", "P")
    assert missing_parents(snapshot(), refreshed) == set()


def test_the_stored_snapshot_must_be_the_tree_as_it_stands() -> None:
    stored = AppliedSnapshot("i_x", 4, "r_x", b"")
    assert check_stored(stored, 4) is None
    out_of_date = check_stored(stored, 5)
    assert out_of_date is not None
    assert out_of_date.reason == STORED_SNAPSHOT_OUT_OF_DATE
    none = check_stored(None, 0)
    assert none is not None
    assert none.reason == NO_STORED_SNAPSHOT


def test_a_burst_naming_too_much_of_the_tree_falls_back_above_the_floor() -> None:
    tree = snapshot()  # 7 entities
    assert check_share(3, tree, max_share=0.2, min_entities=3) is None  # the floor
    found = check_share(4, tree, max_share=0.2, min_entities=3)
    assert found is not None
    assert found.reason == TOO_MUCH_OF_THE_TREE
    assert check_share(4, tree, max_share=0.6, min_entities=0) is None


@given(
    moves=st.dictionaries(
        st.sampled_from(["000000000001", "000000000002", "000000000003", "000000000004"]),
        st.sampled_from(["r-root", "ou-root-aaaaaaaa", "ou-root-a1a1a1a1", "ou-root-bbbbbbbb"]),
    )
)
def test_patching_equals_the_tree_with_the_changes_made(moves: dict[str, str]) -> None:
    refreshed = Refreshed(accounts={a: account(a, parent, f"n{a}") for a, parent in moves.items()})
    patched = patch_snapshot(snapshot(), refreshed)
    assert isinstance(patched, tree_pb.OrganizationSnapshot)
    expected = snapshot()
    for entry in expected.accounts:
        if entry.id in moves:
            entry.CopyFrom(account(entry.id, moves[entry.id], f"n{entry.id}"))
    assert normalized(patched) == normalized(expected)


# Bursts


def message(n: int, at: float) -> Received:
    return Received(f"m{n}", f"h{n}", "{}", at)


def test_a_burst_closes_a_window_after_its_first_message_or_when_full() -> None:
    burst = Burst(window=2.0, max_messages=3)
    assert burst.remaining(10.0) is None
    assert not burst.due(10.0)
    burst.add([message(1, 10.0)])
    assert burst.remaining(10.5) == 1.5
    burst.add([message(2, 11.0)])
    assert not burst.due(11.9)
    assert burst.due(12.0)
    burst.add([message(3, 11.0)])
    assert burst.remaining(10.1) == 0.0  # full


def test_a_message_received_again_counts_once_with_its_newest_handle() -> None:
    burst = Burst(window=2.0, max_messages=10)
    burst.add([message(1, 1.0)])
    burst.add([Received("m1", "newer", "{}", 2.0)])
    assert [(m.message_id, m.receipt_handle) for m in burst.messages] == [("m1", "newer")]


def test_the_receive_waits_no_longer_than_the_open_burst() -> None:
    assert receive_wait(None, 20) == 20
    assert receive_wait(1.2, 20) == 2
    assert receive_wait(0.0, 20) == 0
    assert receive_wait(40.0, 20) == 20


def test_a_burst_reads_each_entity_once_and_keeps_each_event_once() -> None:
    events: list[ChangeEvent | Dropped] = [
        ChangeEvent("e1", "MoveAccount", NOW, account_id="000000000002"),
        ChangeEvent("e2", "MoveAccount", NOW, account_id="000000000002"),
        ChangeEvent("e1", "MoveAccount", NOW, account_id="000000000002"),  # delivered twice
        ChangeEvent("e3", "UpdateOrganizationalUnit", NOW, unit_id="ou-root-aaaaaaaa"),
        Dropped("NOT_JSON", "…"),
    ]
    touched = gather(events)
    assert touched.account_ids == {"000000000002"}
    assert touched.unit_ids == {"ou-root-aaaaaaaa"}
    assert [e.event_id for e in touched.events] == ["e1", "e2", "e3"]
    assert touched.size == 2


def test_a_run_lists_the_first_hundred_events_and_counts_them_all() -> None:
    events = [
        ChangeEvent(f"e{i}", "MoveAccount", NOW, account_id="000000000002") for i in range(130)
    ]
    listed, count = covered(events)
    assert count == 130
    assert len(listed) == 100
    assert (listed[0].event_id, listed[0].entity_id, listed[0].event_time) == (
        "e0",
        "000000000002",
        NOW,
    )
