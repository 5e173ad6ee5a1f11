"""What an event queue's message names: the real samples of `event_samples/`, and the messages
that must be dropped (pure functions, no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from canopy_discovery.events.parsing import (
    FAILED_CALL,
    MISSING_FIELDS,
    NOT_AN_EVENT,
    NOT_JSON,
    NOTHING_TO_REFRESH,
    OTHER_ACCOUNT,
    OTHER_ORGANIZATION,
    TOO_LARGE,
    UNKNOWN_EVENT,
    WRONG_DETAIL_TYPE,
    WRONG_SOURCE,
    ChangeEvent,
    Dropped,
    parse_message,
)
from tests.discovery.org_events import sample


def parse(event: dict[str, Any] | str, organization_id: str = "") -> ChangeEvent | Dropped:
    """Parse as the queue of the event's own account would."""
    body = event if isinstance(event, str) else json.dumps(event)
    account = "" if isinstance(event, str) else event.get("account", "123456789012")
    return parse_message(body, account, organization_id)


@pytest.mark.parametrize(
    ("name", "account_id", "unit_id"),
    [
        ("move_account", "549271133721", ""),
        ("remove_account_from_organization", "588801414845", ""),
        ("create_account_result", "444455556666", ""),
        ("close_account", "555555555555", ""),
        ("close_account_result", "555555555555", ""),
        ("put_account_name", "222222222222", ""),
        ("create_organizational_unit", "", "ou-examplerootid-exampleouid"),
        ("update_organizational_unit", "", "ou-abcd-11111111"),
        ("delete_organizational_unit", "", "ou-abcd-11111111"),
    ],
)
def test_each_sample_names_the_entity_that_may_have_changed(
    name: str, account_id: str, unit_id: str
) -> None:
    event = sample(name)
    parsed = parse(event)
    assert isinstance(parsed, ChangeEvent), parsed
    assert (parsed.account_id, parsed.unit_id) == (account_id, unit_id)
    assert parsed.entity_id == account_id or unit_id
    assert parsed.event_name == event["detail"]["eventName"]
    assert parsed.event_id == event["id"]
    assert parsed.event_time == datetime.fromisoformat(
        event["detail"]["eventTime"].replace("Z", "+00:00")
    )


def test_the_real_move_account_event_is_parsed_as_captured() -> None:
    parsed = parse(sample("move_account"))
    assert parsed == ChangeEvent(
        event_id="579d06ba-c104-8760-5882-bd2a3275791d",
        event_name="MoveAccount",
        event_time=datetime(2020, 7, 28, 11, 35, 28, tzinfo=UTC),
        account_id="549271133721",
    )


def test_an_event_without_an_account_field_is_accepted_as_moto_delivers_it() -> None:
    event = sample("move_account")
    del event["account"]  # moto's EventBridge leaves it out
    assert isinstance(parse_message(json.dumps(event), "538235518685", ""), ChangeEvent)


def test_create_account_in_progress_names_nothing_yet() -> None:
    parsed = parse(sample("create_account"))
    assert isinstance(parsed, Dropped)
    assert (parsed.reason, parsed.event_name) == (NOTHING_TO_REFRESH, "CreateAccount")


def test_a_failed_account_creation_names_nothing() -> None:
    parsed = parse(sample("create_account_result_failed"))
    assert isinstance(parsed, Dropped)
    assert parsed.reason == NOTHING_TO_REFRESH
    assert "FAILED" in parsed.detail


def test_a_failed_call_is_dropped() -> None:
    parsed = parse(sample("attach_policy_failed"))
    assert isinstance(parsed, Dropped)
    assert (parsed.reason, parsed.event_name) == (FAILED_CALL, "AttachPolicy")
    assert "PolicyTypeNotEnabledException" in parsed.detail


def test_put_account_name_without_an_account_id_renames_the_callers_account() -> None:
    event = sample("put_account_name")
    del event["detail"]["requestParameters"]["accountId"]
    parsed = parse(event)
    assert isinstance(parsed, ChangeEvent)
    assert parsed.account_id == event["detail"]["recipientAccountId"]


def test_an_accepted_invitation_names_the_account_that_joined() -> None:
    event = sample("move_account")
    event["detail"]["eventName"] = "AcceptHandshake"
    event["detail"]["responseElements"] = {
        "handshake": {
            "action": "invite",
            "state": "ACCEPTED",
            "parties": [
                {"type": "ORGANIZATION", "id": "o-aa111bb222"},
                {"type": "ACCOUNT", "id": "222222222222"},
            ],
        }
    }
    parsed = parse(event)
    assert isinstance(parsed, ChangeEvent)
    assert parsed.account_id == "222222222222"


def _poison(change: Any) -> dict[str, Any]:
    event = sample("move_account")
    change(event)
    return event


POISON = [
    ("not json", "{not json", NOT_JSON),
    ("a json list", "[1, 2]", NOT_AN_EVENT),
    ("no detail", json.dumps({"source": "aws.organizations"}), NOT_AN_EVENT),
    ("huge", json.dumps({"detail": {}, "padding": "x" * 300_000}), TOO_LARGE),
    ("another source", _poison(lambda e: e.update(source="aws.ec2")), WRONG_SOURCE),
    ("a list as source", _poison(lambda e: e.update(source=["aws.organizations"])), WRONG_SOURCE),
    (
        "another event source",
        _poison(lambda e: e["detail"].update(eventSource="ec2.amazonaws.com")),
        WRONG_SOURCE,
    ),
    (
        "another detail type",
        _poison(lambda e: e.update({"detail-type": "Scheduled Event"})),
        WRONG_DETAIL_TYPE,
    ),
    (
        "an unknown event name",
        _poison(lambda e: e["detail"].update(eventName="TagResource")),
        UNKNOWN_EVENT,
    ),
    (
        "no event name",
        _poison(lambda e: e["detail"].pop("eventName")),
        MISSING_FIELDS,
    ),
    (
        "no account id",
        _poison(lambda e: e["detail"].update(requestParameters={})),
        MISSING_FIELDS,
    ),
    (
        "a malformed account id",
        _poison(lambda e: e["detail"].update(requestParameters={"accountId": "../../etc"})),
        MISSING_FIELDS,
    ),
    (
        "no time",
        _poison(lambda e: (e["detail"].pop("eventTime"), e.pop("time"))),
        MISSING_FIELDS,
    ),
    (
        "another account's bus",
        _poison(lambda e: e["detail"].update(recipientAccountId="999999999999")),
        OTHER_ACCOUNT,
    ),
]


@pytest.mark.parametrize(("what", "body", "reason"), POISON, ids=[p[0] for p in POISON])
def test_poison_messages_are_dropped_with_their_reason(
    what: str, body: dict[str, Any] | str, reason: str
) -> None:
    parsed = parse(body)
    assert isinstance(parsed, Dropped), what
    assert parsed.reason == reason


def test_an_event_of_another_organization_is_dropped() -> None:
    event = sample("update_organizational_unit")  # its ARN names o-abcdefghij
    parsed = parse(event, organization_id="o-ourorgid12")
    assert isinstance(parsed, Dropped)
    assert parsed.reason == OTHER_ORGANIZATION
    assert "o-abcdefghij" in parsed.detail
    assert isinstance(parse(event, organization_id="o-abcdefghij"), ChangeEvent)


def test_an_event_of_another_queue_account_is_dropped() -> None:
    parsed = parse_message(json.dumps(sample("move_account")), "123456789012", "")
    assert isinstance(parsed, Dropped)
    assert parsed.reason == OTHER_ACCOUNT
