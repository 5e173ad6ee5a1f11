"""Organizations change events for tests, built from the real samples in `event_samples/`, and
a way to send them to a moto queue as EventBridge would."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).parent / "event_samples"
MANAGEMENT_ACCOUNT = "123456789012"  # moto's, where the queue and the discovery role are


def sample(name: str) -> dict[str, Any]:
    """A sample as published (see event_samples/SOURCES.md)."""
    found: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return found


def _fresh(name: str, account: str = MANAGEMENT_ACCOUNT) -> dict[str, Any]:
    """A sample as our organization's bus would deliver it now: new ids, now, our account."""
    event = copy.deepcopy(sample(name))
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event["id"] = str(uuid.uuid4())
    event["time"] = now
    event["account"] = account
    detail = event["detail"]
    detail["eventID"] = str(uuid.uuid4())
    detail["eventTime"] = now
    detail["recipientAccountId"] = account
    if isinstance(detail.get("userIdentity"), dict):
        detail["userIdentity"]["accountId"] = account
    return event


def moved(account_id: str, source: str, destination: str) -> dict[str, Any]:
    """MoveAccount."""
    event = _fresh("move_account")
    event["detail"]["requestParameters"] = {
        "accountId": account_id,
        "sourceParentId": source,
        "destinationParentId": destination,
    }
    return event


def create_started() -> dict[str, Any]:
    """CreateAccount, still IN_PROGRESS: it names no account yet."""
    return _fresh("create_account")


def close_started(account_id: str) -> dict[str, Any]:
    """CloseAccount (CloseAccountResult follows)."""
    event = _fresh("close_account")
    event["detail"]["requestParameters"] = {"accountId": account_id}
    return event


def created(account_id: str) -> dict[str, Any]:
    """CreateAccountResult, SUCCEEDED (the service event that ends a CreateAccount)."""
    event = _fresh("create_account_result")
    event["detail"]["serviceEventDetails"]["createAccountStatus"]["accountId"] = account_id
    return event


def closed(account_id: str) -> dict[str, Any]:
    """CloseAccountResult."""
    event = _fresh("close_account_result")
    event["detail"]["serviceEventDetails"]["closeAccountStatus"]["accountId"] = account_id
    return event


def removed(account_id: str) -> dict[str, Any]:
    """RemoveAccountFromOrganization."""
    event = _fresh("remove_account_from_organization")
    event["detail"]["requestParameters"] = {"accountId": account_id}
    return event


def renamed(account_id: str) -> dict[str, Any]:
    """PutAccountName (the Account Management API; the name itself is redacted)."""
    event = _fresh("put_account_name")
    event["detail"]["requestParameters"] = {"accountId": account_id, "accountName": "****"}
    return event


def _unit_arn(organization_id: str, unit_id: str) -> str:
    return f"arn:aws:organizations::{MANAGEMENT_ACCOUNT}:ou/{organization_id}/{unit_id}"


def unit_created(unit_id: str, parent_id: str, name: str, organization_id: str) -> dict[str, Any]:
    """CreateOrganizationalUnit."""
    event = _fresh("create_organizational_unit")
    event["detail"]["requestParameters"] = {"parentId": parent_id, "name": name}
    event["detail"]["responseElements"]["organizationalUnit"] = {
        "id": unit_id,
        "name": name,
        "arn": _unit_arn(organization_id, unit_id),
    }
    return event


def unit_renamed(unit_id: str, name: str, organization_id: str) -> dict[str, Any]:
    """UpdateOrganizationalUnit."""
    event = _fresh("update_organizational_unit")
    event["detail"]["requestParameters"] = {"organizationalUnitId": unit_id, "name": name}
    event["detail"]["responseElements"]["organizationalUnit"] = {
        "id": unit_id,
        "name": name,
        "arn": _unit_arn(organization_id, unit_id),
    }
    return event


def unit_deleted(unit_id: str) -> dict[str, Any]:
    """DeleteOrganizationalUnit."""
    event = _fresh("delete_organizational_unit")
    event["detail"]["requestParameters"] = {"organizationalUnitId": unit_id}
    return event


def send(sqs: Any, queue_url: str, *bodies: dict[str, Any] | str) -> None:
    """Put messages on the queue, as the EventBridge rule's SQS target does (a string as is)."""
    items = [b if isinstance(b, str) else json.dumps(b) for b in bodies]
    for start in range(0, len(items), 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "MessageBody": body}
                for i, body in enumerate(items[start : start + 10])
            ],
        )
