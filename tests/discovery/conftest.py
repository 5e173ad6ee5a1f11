"""A moto server over HTTP for the whole session, reset before every test; a builder of AWS
Organizations in it; the fault-injecting proxy in front of it.

moto keeps its state in process-wide backends, so the server is reset (`POST /moto-api/reset`)
before each test rather than started anew. The builder uses boto3 against the server, except
where the Organizations API cannot express the state (closed accounts, renamed accounts) or is
too slow in bulk (a thousand accounts): there it edits moto's backend, which lives in this
process because ThreadedMotoServer runs in a thread.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from moto.organizations.models import OrganizationsBackend, organizations_backends
from moto.server import ThreadedMotoServer

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy_discovery.aws import AwsSettings
from tests.awsfaults import FaultProxy

# moto's default account: the organization's management account.
MANAGEMENT_ACCOUNT = "123456789012"
DISCOVERY_ROLE = f"arn:aws:iam::{MANAGEMENT_ACCOUNT}:role/canopy-discovery"
EXTERNAL_ID = "t_acme:k3j9x0ab"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def aws_settings(url: str) -> AwsSettings:
    """Settings that call `url` with the platform credentials moto accepts."""
    return AwsSettings(
        endpoint_url=url, region="us-east-1", access_key_id="testing", secret_access_key="testing"
    )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The URL of a moto server running in a thread for the whole session."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto_url(moto_server: str) -> str:
    """The moto server, emptied of everything earlier tests made."""
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200
    return moto_server


@pytest.fixture
def aws(moto_url: str) -> AwsSettings:
    """AwsSettings calling moto directly."""
    return aws_settings(moto_url)


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of moto, with no rules yet."""
    with FaultProxy(moto_url) as running:
        yield running


@pytest.fixture
def proxied(proxy: FaultProxy) -> AwsSettings:
    """AwsSettings calling moto through the proxy."""
    return aws_settings(proxy.url)


class Org:
    """An AWS Organization in moto, built through boto3 (and moto's backend where noted)."""

    def __init__(self, url: str) -> None:
        self.client: Any = boto3.client(
            "organizations", endpoint_url=url, region_name="us-east-1", **CREDENTIALS
        )
        organization = self.client.create_organization(FeatureSet="ALL")["Organization"]
        self.id: str = organization["Id"]
        self.management_account_id: str = organization["MasterAccountId"]
        self.root_id: str = self.client.list_roots()["Roots"][0]["Id"]
        self._count = 0

    @property
    def backend(self) -> OrganizationsBackend:
        """moto's in-process state of this organization."""
        return organizations_backends[self.management_account_id]["aws"]

    def ou(self, name: str, parent: str | None = None) -> str:
        """Create an OU under `parent` (the root by default); its id."""
        answer = self.client.create_organizational_unit(ParentId=parent or self.root_id, Name=name)
        return str(answer["OrganizationalUnit"]["Id"])

    def ou_chain(self, depth: int, parent: str | None = None, prefix: str = "level") -> list[str]:
        """OUs nested `depth` levels deep, the outermost first."""
        chain: list[str] = []
        for level in range(1, depth + 1):
            chain.append(self.ou(f"{prefix}-{level}", chain[-1] if chain else parent))
        return chain

    def account(self, name: str, parent: str | None = None) -> str:
        """Create an account (ACTIVE) and move it under `parent`; its id."""
        self._count += 1
        status = self.client.create_account(AccountName=name, Email=f"{name}@example.com")
        account_id = str(status["CreateAccountStatus"]["AccountId"])
        if parent and parent != self.root_id:
            self.move(account_id, parent)
        return account_id

    def bulk_accounts(self, count: int, parent: str, prefix: str = "bulk") -> list[str]:
        """Create many accounts through moto's backend: CreateAccount over HTTP costs ~10 ms
        each and grows with the organization, too slow for a thousand in a test."""
        made = []
        for _ in range(count):
            self._count += 1
            name = f"{prefix}-{self._count}"
            status = self.backend.create_account(AccountName=name, Email=f"{name}@example.com")
            account_id = status["CreateAccountStatus"]["AccountId"]
            self.backend.get_account_by_id(account_id).parent_id = parent
            made.append(account_id)
        return made

    def move(self, account_id: str, destination: str) -> None:
        """Move an account under another parent."""
        source = self.client.list_parents(ChildId=account_id)["Parents"][0]["Id"]
        self.client.move_account(
            AccountId=account_id, SourceParentId=source, DestinationParentId=destination
        )

    def suspend(self, account_id: str) -> None:
        """CloseAccount: moto moves the account straight to SUSPENDED."""
        self.client.close_account(AccountId=account_id)

    def set_state(self, account_id: str, state: str, status: str | None = None) -> None:
        """Set an account's State (and legacy Status) in moto's backend; moto's API never reaches
        CLOSED or PENDING_CLOSURE. `status=""` with state "" mimics an answer without `State`."""
        account = self.backend.get_account_by_id(account_id)
        account.state = state
        account.status = status if status is not None else state

    def remove(self, account_id: str) -> None:
        """Remove an account from the organization."""
        self.client.remove_account_from_organization(AccountId=account_id)

    def rename_account(self, account_id: str, name: str) -> None:
        """Rename an account in moto's backend (the Account Management API is not in moto)."""
        self.backend.get_account_by_id(account_id).name = name

    def rename_ou(self, ou_id: str, name: str) -> None:
        """Rename an OU."""
        self.client.update_organizational_unit(OrganizationalUnitId=ou_id, Name=name)

    def delete_ou(self, ou_id: str) -> None:
        """Delete an (empty) OU."""
        self.client.delete_organizational_unit(OrganizationalUnitId=ou_id)

    def expected(self) -> tree_pb.OrganizationSnapshot:
        """The snapshot a crawl should produce, read from moto's backend."""
        snapshot = tree_pb.OrganizationSnapshot(
            organization_id=self.id,
            management_account_id=self.management_account_id,
            root_id=self.root_id,
        )
        for unit in self.backend.ou:
            if unit.id != self.root_id:
                snapshot.organizational_units.add(
                    id=unit.id, parent_id=unit.parent_id, name=unit.name
                )
        for account in self.backend.accounts:
            entry = snapshot.accounts.add(
                id=account.id,
                name=account.name,
                email=account.email,
                parent_id=account.parent_id,
                state=account.state or account.status,
            )
            entry.joined_time.FromDatetime(account.create_time)
        return normalized(snapshot)


def normalized(snapshot: tree_pb.OrganizationSnapshot) -> tree_pb.OrganizationSnapshot:
    """The same snapshot with OUs and accounts sorted by id, to compare crawls."""
    result = tree_pb.OrganizationSnapshot()
    result.CopyFrom(snapshot)
    units = sorted(result.organizational_units, key=lambda unit: unit.id)
    accounts = sorted(result.accounts, key=lambda account: account.id)
    del result.organizational_units[:]
    del result.accounts[:]
    result.organizational_units.extend(units)
    result.accounts.extend(accounts)
    return result


@pytest.fixture
def org(moto_url: str) -> Org:
    """A new organization (management account 123456789012) with nothing in it yet."""
    return Org(moto_url)
