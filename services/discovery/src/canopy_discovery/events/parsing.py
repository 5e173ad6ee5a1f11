"""What one message of an event queue names: the accounts and OUs that may have changed, or the
reason it is dropped. Pure functions.

The queue receives whole EventBridge events (`source`, `detail-type`, `account`, `time`, `id`,
`detail`), their `detail` a CloudTrail record: `eventName`, `eventTime`, `requestParameters`,
`responseElements`, `serviceEventDetails` (service events: CreateAccountResult,
CloseAccountResult), `errorCode` for a failed call. Account names are redacted (`****`) in these
records, and nothing in them is applied as state anyway: only the ids they name are read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# The largest EventBridge event; anything bigger was not sent by the rule.
MAX_BODY_BYTES = 256 * 1024

SOURCES = {
    "aws.organizations": "organizations.amazonaws.com",
    "aws.account": "account.amazonaws.com",
}
DETAIL_TYPES = frozenset({"AWS API Call via CloudTrail", "AWS Service Event via CloudTrail"})

# Why a message is dropped (the `reason` label of the ignored-events metric).
TOO_LARGE = "TOO_LARGE"
NOT_JSON = "NOT_JSON"
NOT_AN_EVENT = "NOT_AN_EVENT"
WRONG_SOURCE = "WRONG_SOURCE"
WRONG_DETAIL_TYPE = "WRONG_DETAIL_TYPE"
FAILED_CALL = "FAILED_CALL"
UNKNOWN_EVENT = "UNKNOWN_EVENT"
MISSING_FIELDS = "MISSING_FIELDS"
OTHER_ACCOUNT = "OTHER_ACCOUNT"
OTHER_ORGANIZATION = "OTHER_ORGANIZATION"
NOTHING_TO_REFRESH = "NOTHING_TO_REFRESH"  # a known event that changes no account or OU yet

ACCOUNT_ID = re.compile(r"^\d{12}\Z", re.ASCII)
OU_ID = re.compile(r"^ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}\Z", re.ASCII)
_ORGANIZATION_ARN = re.compile(r"arn:aws[a-z-]*:organizations::\d{12}:[a-z]+/(o-[a-z0-9]{10,32})")


@dataclass(frozen=True)
class ChangeEvent:
    """An event that names an account or an OU that may have changed."""

    event_id: str
    event_name: str
    event_time: datetime
    account_id: str = ""
    unit_id: str = ""

    @property
    def entity_id(self) -> str:
        """The account or OU the event names."""
        return self.account_id or self.unit_id


@dataclass(frozen=True)
class Dropped:
    """A message that names nothing to refresh, and why."""

    reason: str
    detail: str
    event_name: str = ""


def parse_message(body: str, queue_account: str, organization_id: str) -> ChangeEvent | Dropped:
    """What a message names. `queue_account` is the account of the queue (the rule's, where the
    calls were recorded); `organization_id` the organization last seen ("" if not known yet)."""
    if len(body.encode()) > MAX_BODY_BYTES:
        return Dropped(TOO_LARGE, f"{len(body.encode())} bytes, more than any EventBridge event")
    try:
        envelope = json.loads(body)
    except ValueError as error:
        return Dropped(NOT_JSON, str(error)[:200])
    if not isinstance(envelope, dict) or not isinstance(envelope.get("detail"), dict):
        return Dropped(NOT_AN_EVENT, "not an EventBridge event with a detail object")
    detail: dict[str, Any] = envelope["detail"]
    source = envelope.get("source")
    if not isinstance(source, str) or detail.get("eventSource") != SOURCES.get(source):
        shown = f"source {source!r:.60}, eventSource {detail.get('eventSource')!r:.60}"
        return Dropped(WRONG_SOURCE, shown)
    detail_type = envelope.get("detail-type")
    if not isinstance(detail_type, str) or detail_type not in DETAIL_TYPES:
        return Dropped(WRONG_DETAIL_TYPE, f"detail-type {detail_type!r:.80}")
    name = detail.get("eventName")
    if not isinstance(name, str) or not name:
        return Dropped(MISSING_FIELDS, "no eventName")
    name = name[:100]
    if detail.get("errorCode"):
        return Dropped(FAILED_CALL, f"the call failed: {detail['errorCode']!s:.100}", name)
    for field in ("account", "recipientAccountId"):
        where = envelope if field == "account" else detail
        if field in where and where[field] != queue_account:
            return Dropped(
                OTHER_ACCOUNT,
                f"{field} {where[field]!r:.40} is not the queue's account {queue_account}",
                name,
            )
    if organization_id:
        others = set(_ORGANIZATION_ARN.findall(json.dumps(detail))) - {organization_id}
        if others:
            return Dropped(OTHER_ORGANIZATION, f"names organization {sorted(others)[0]}", name)
    extract = _EXTRACTORS.get((source, name))
    if extract is None:
        return Dropped(UNKNOWN_EVENT, f"{source} {name}", name)
    event_time = _time(detail.get("eventTime")) or _time(envelope.get("time"))
    event_id = envelope.get("id") or detail.get("eventID")
    if event_time is None or not isinstance(event_id, str) or not event_id:
        return Dropped(MISSING_FIELDS, "no event id or time", name)
    found = extract(detail)
    if isinstance(found, Dropped):
        return Dropped(found.reason, found.detail, name)
    kind, entity = found
    if kind == "account":
        return ChangeEvent(event_id[:200], name, event_time, account_id=entity)
    return ChangeEvent(event_id[:200], name, event_time, unit_id=entity)


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _get(record: dict[str, Any], *path: str) -> Any:
    """The value at `path`, or None where a step is missing or not an object."""
    value: Any = record
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


Extracted = tuple[str, str] | Dropped


def _account(value: object, where: str) -> Extracted:
    if not isinstance(value, str):
        return Dropped(MISSING_FIELDS, f"no {where}")
    if not ACCOUNT_ID.match(value):
        return Dropped(MISSING_FIELDS, f"{where} {value[:40]!r} is not an account id")
    return ("account", value)


def _unit(value: object, where: str) -> Extracted:
    if not isinstance(value, str):
        return Dropped(MISSING_FIELDS, f"no {where}")
    if not OU_ID.match(value):
        return Dropped(MISSING_FIELDS, f"{where} {value[:40]!r} is not an OU id")
    return ("unit", value)


def _request_account(detail: dict[str, Any]) -> Extracted:
    return _account(_get(detail, "requestParameters", "accountId"), "requestParameters.accountId")


def _create_account_result(detail: dict[str, Any]) -> Extracted:
    status = _get(detail, "serviceEventDetails", "createAccountStatus")
    if not isinstance(status, dict):
        return Dropped(MISSING_FIELDS, "no serviceEventDetails.createAccountStatus")
    if status.get("state") != "SUCCEEDED":
        return Dropped(NOTHING_TO_REFRESH, f"account creation {status.get('state')}")
    return _account(status.get("accountId"), "createAccountStatus.accountId")


def _create_account_call(detail: dict[str, Any]) -> Extracted:
    # The call only starts the creation; CreateAccountResult names the account once it exists.
    account = _get(detail, "responseElements", "createAccountStatus", "accountId")
    if account is None:
        return Dropped(NOTHING_TO_REFRESH, "the account is still being created")
    return _account(account, "createAccountStatus.accountId")


def _close_account_result(detail: dict[str, Any]) -> Extracted:
    return _account(
        _get(detail, "serviceEventDetails", "closeAccountStatus", "accountId"),
        "closeAccountStatus.accountId",
    )


def _caller_account(detail: dict[str, Any]) -> Extracted:
    # LeaveOrganization takes no parameters: the account that leaves is the caller.
    return _account(_get(detail, "userIdentity", "accountId"), "userIdentity.accountId")


def _accepted_invitation(detail: dict[str, Any]) -> Extracted:
    handshake = _get(detail, "responseElements", "handshake")
    if not isinstance(handshake, dict):
        return Dropped(MISSING_FIELDS, "no responseElements.handshake")
    if handshake.get("action") != "invite":
        return Dropped(NOTHING_TO_REFRESH, f"a handshake of action {handshake.get('action')!r}")
    parties = handshake.get("parties")
    accounts = [
        party.get("id")
        for party in parties or []
        if isinstance(party, dict) and party.get("type") == "ACCOUNT"
    ]
    return _account(accounts[0] if accounts else None, "handshake.parties[ACCOUNT].id")


def _created_unit(detail: dict[str, Any]) -> Extracted:
    return _unit(
        _get(detail, "responseElements", "organizationalUnit", "id"),
        "responseElements.organizationalUnit.id",
    )


def _named_unit(detail: dict[str, Any]) -> Extracted:
    named = _get(detail, "requestParameters", "organizationalUnitId")
    if named is None:  # the response names it too, when there is one
        named = _get(detail, "responseElements", "organizationalUnit", "id")
    return _unit(named, "requestParameters.organizationalUnitId")


def _renamed_account(detail: dict[str, Any]) -> Extracted:
    # Without an AccountId, PutAccountName renames the caller's own account.
    named = _get(detail, "requestParameters", "accountId")
    if named is None:
        return _account(detail.get("recipientAccountId"), "recipientAccountId")
    return _account(named, "requestParameters.accountId")


_EXTRACTORS = {
    ("aws.organizations", "MoveAccount"): _request_account,
    ("aws.organizations", "CloseAccount"): _request_account,
    ("aws.organizations", "RemoveAccountFromOrganization"): _request_account,
    ("aws.organizations", "CreateAccountResult"): _create_account_result,
    ("aws.organizations", "CreateAccount"): _create_account_call,
    ("aws.organizations", "CreateGovCloudAccount"): _create_account_call,
    ("aws.organizations", "CloseAccountResult"): _close_account_result,
    ("aws.organizations", "LeaveOrganization"): _caller_account,
    ("aws.organizations", "AcceptHandshake"): _accepted_invitation,
    ("aws.organizations", "CreateOrganizationalUnit"): _created_unit,
    ("aws.organizations", "UpdateOrganizationalUnit"): _named_unit,
    ("aws.organizations", "DeleteOrganizationalUnit"): _named_unit,
    ("aws.account", "PutAccountName"): _renamed_account,
}
