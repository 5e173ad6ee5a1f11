"""The fault-injecting proxy itself, driven by plain boto3 clients."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
)

from tests.awsfaults import THROTTLED_MESSAGE, FaultProxy, Rule
from tests.discovery.conftest import CREDENTIALS, DISCOVERY_ROLE, EXTERNAL_ID, Org

NO_RETRIES = Config(retries={"total_max_attempts": 1}, max_pool_connections=20)


def client(service: str, url: str, **credentials: str) -> Any:
    """A boto3 client of `service` calling `url`, without botocore's retries."""
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        config=NO_RETRIES,
        **(credentials or CREDENTIALS),
    )


def assumed(url: str, role_arn: str) -> dict[str, str]:
    """Credentials of `role_arn`, assumed through `url`."""
    answer = client("sts", url).assume_role(
        RoleArn=role_arn, RoleSessionName="test", ExternalId=EXTERNAL_ID
    )
    keys = answer["Credentials"]
    return {
        "aws_access_key_id": keys["AccessKeyId"],
        "aws_secret_access_key": keys["SecretAccessKey"],
        "aws_session_token": keys["SessionToken"],
    }


def test_requests_are_forwarded_and_counted_per_operation(proxy: FaultProxy, org: Org) -> None:
    organizations = client("organizations", proxy.url)
    assert organizations.list_roots()["Roots"][0]["Id"] == org.root_id
    assert organizations.describe_organization()["Organization"]["Id"] == org.id
    client("sts", proxy.url).get_caller_identity()
    assert proxy.counts == {"ListRoots": 1, "DescribeOrganization": 1, "GetCallerIdentity": 1}


def test_throttling_rule_answers_organizations_error_shape(proxy: FaultProxy, org: Org) -> None:
    proxy.add(Rule(operation="ListRoots", error="TooManyRequestsException", message="Slow down"))
    with pytest.raises(ClientError) as caught:
        client("organizations", proxy.url).list_roots()
    error = caught.value.response
    assert error["Error"] == {"Code": "TooManyRequestsException", "Message": "Slow down"}
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_access_denied_rule_answers_sts_error_shape(proxy: FaultProxy, org: Org) -> None:
    proxy.add(Rule(operation="AssumeRole", error="AccessDenied", message="not authorized"))
    with pytest.raises(ClientError) as caught:
        assumed(proxy.url, DISCOVERY_ROLE)
    error = caught.value.response
    assert error["Error"] == {"Type": "Sender", "Code": "AccessDenied", "Message": "not authorized"}
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_sqs_rule_answers_the_query_compatible_json_shape(proxy: FaultProxy, org: Org) -> None:
    # SQS speaks JSON 1.0 and names the awsQuery code in x-amzn-query-error, which botocore
    # reports as the error's code.
    queue = client("sqs", proxy.url).create_queue(QueueName="events")["QueueUrl"]
    proxy.add(
        Rule(
            service="sqs",
            operation="GetQueueAttributes",
            error="com.amazon.coral.service#AccessDeniedException",
            query_error="AccessDenied",
            status=403,
            message="not authorized to perform: sqs:getqueueattributes",
        )
    )
    with pytest.raises(ClientError) as caught:
        client("sqs", proxy.url).get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])
    error = caught.value.response
    assert error["Error"]["Code"] == "AccessDenied"
    assert error["Error"]["QueryErrorCode"] == "AccessDeniedException"
    assert error["Error"]["Type"] == "Sender"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "sqs:getqueueattributes" in error["Error"]["Message"]


def test_rate_rule_throttles_each_operation_beyond_its_bucket(proxy: FaultProxy, org: Org) -> None:
    rule = proxy.add(Rule(service="organizations", rate=4.0, burst=2.0))
    organizations = client("organizations", proxy.url)
    outcomes = []
    for _ in range(4):
        try:
            organizations.list_roots()
            outcomes.append("ok")
        except ClientError as caught:
            outcomes.append(caught.response["Error"]["Code"])
            throttled = caught.response
    # The bucket holds 2 and refills 4 a second: back-to-back calls find it empty after 2.
    assert outcomes[:2] == ["ok", "ok"]
    assert "TooManyRequestsException" in outcomes[2:]
    assert throttled["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert throttled["Error"]["Message"] == THROTTLED_MESSAGE
    organizations.describe_organization()  # another operation has a bucket of its own
    time.sleep(0.3)
    organizations.list_roots()  # a token has come back
    assert rule.throttled_by_operation == {"ListRoots": outcomes.count("TooManyRequestsException")}


def test_first_n_rule_fails_only_the_first_n_matching_requests(proxy: FaultProxy, org: Org) -> None:
    rule = proxy.add(Rule(operation="ListRoots", error="ConcurrentModificationException", first=2))
    organizations = client("organizations", proxy.url)
    outcomes = []
    for _ in range(4):
        try:
            organizations.list_roots()
            outcomes.append("ok")
        except ClientError as error:
            outcomes.append(error.response["Error"]["Code"])
    assert outcomes == ["ConcurrentModificationException"] * 2 + ["ok"] * 2
    assert (rule.matched, rule.injected) == (4, 2)


def test_fraction_rule_fails_about_that_share_of_requests(proxy: FaultProxy, org: Org) -> None:
    rule = proxy.add(Rule(operation="ListRoots", error="TooManyRequestsException", fraction=0.5))
    organizations = client("organizations", proxy.url)
    for _ in range(60):
        with contextlib.suppress(ClientError):
            organizations.list_roots()
    assert rule.matched == 60
    assert 15 <= rule.injected <= 45


def test_role_rule_fails_assume_role_of_that_role_only(proxy: FaultProxy, org: Org) -> None:
    other = "arn:aws:iam::123456789012:role/other"
    proxy.add(Rule(operation="AssumeRole", role_arn=DISCOVERY_ROLE, error="AccessDenied"))
    assert assumed(proxy.url, other)["aws_access_key_id"]
    with pytest.raises(ClientError):
        assumed(proxy.url, DISCOVERY_ROLE)


def test_role_rule_fails_calls_signed_with_that_roles_credentials_only(
    proxy: FaultProxy, org: Org
) -> None:
    member = org.account("member")
    member_role = f"arn:aws:iam::{member}:role/canopy-discovery"
    proxy.add(Rule(operation="ListRoots", role_arn=member_role, error="AccessDeniedException"))
    assert client("organizations", proxy.url, **assumed(proxy.url, DISCOVERY_ROLE)).list_roots()
    with pytest.raises(ClientError) as caught:
        client("organizations", proxy.url, **assumed(proxy.url, member_role)).list_roots()
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"


def test_entity_rule_refuses_one_roles_listings_of_one_ou_only(proxy: FaultProxy, org: Org) -> None:
    hidden = org.ou("Hidden")
    shown = org.ou("Shown")
    narrow_role = f"arn:aws:iam::{org.management_account_id}:role/canopy-narrow"
    proxy.add(
        Rule(
            service="organizations",
            role_arn=narrow_role,
            entity=hidden,
            error="AccessDeniedException",
            status=400,
        )
    )
    narrow = client("organizations", proxy.url, **assumed(proxy.url, narrow_role))
    broad = client("organizations", proxy.url, **assumed(proxy.url, DISCOVERY_ROLE))
    for call in (narrow.list_accounts_for_parent, narrow.list_organizational_units_for_parent):
        with pytest.raises(ClientError) as caught:
            call(ParentId=hidden)
        assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    with pytest.raises(ClientError):
        narrow.describe_organizational_unit(OrganizationalUnitId=hidden)
    assert narrow.list_accounts_for_parent(ParentId=shown)["Accounts"] == []
    assert broad.list_accounts_for_parent(ParentId=hidden)["Accounts"] == []


def test_latency_rule_delays_matching_requests(proxy: FaultProxy, org: Org) -> None:
    proxy.add(Rule(operation="ListRoots", latency=0.3))
    organizations = client("organizations", proxy.url)
    started = time.monotonic()
    organizations.describe_organization()
    fast = time.monotonic() - started
    started = time.monotonic()
    organizations.list_roots()
    assert time.monotonic() - started >= 0.3 > fast


def test_empty_first_page_rule_puts_an_empty_page_before_the_real_ones(
    proxy: FaultProxy, org: Org
) -> None:
    org.bulk_accounts(3, org.root_id)
    rule = proxy.add(Rule(operation="ListAccountsForParent", empty_first_page=True))
    organizations = client("organizations", proxy.url)
    first = organizations.list_accounts_for_parent(ParentId=org.root_id)
    assert first["Accounts"] == []
    assert first["NextToken"]
    second = organizations.list_accounts_for_parent(
        ParentId=org.root_id, NextToken=first["NextToken"]
    )
    assert len(second["Accounts"]) == 4
    assert "NextToken" not in second
    assert rule.injected == 1


def test_disappearing_endpoint_drops_connections_after_n_requests(
    proxy: FaultProxy, org: Org
) -> None:
    organizations = client("organizations", proxy.url)
    proxy.disappear(after=2)
    organizations.list_roots()
    organizations.list_roots()
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        organizations.list_roots()


def test_disappearing_endpoint_in_503_mode_answers_service_unavailable(
    proxy: FaultProxy, org: Org
) -> None:
    proxy.disappear(after=0, mode="503")
    with pytest.raises(ClientError) as caught:
        client("organizations", proxy.url).list_roots()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503


def test_max_in_flight_counts_concurrent_requests(proxy: FaultProxy, org: Org) -> None:
    proxy.add(Rule(operation="ListRoots", latency=0.2))
    organizations = client("organizations", proxy.url)
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda _: organizations.list_roots(), range(5)))
    assert proxy.max_in_flight == 5


def test_replay_serves_recorded_answers_without_upstream(
    moto_url: str, org: Org, tmp_path: Path
) -> None:
    with FaultProxy(moto_url, mode="record") as recorder:
        organizations = client("organizations", recorder.url)
        roots = organizations.list_roots()["Roots"]
        organizations.describe_organization()
        recorder.save(tmp_path / "answers.json")
    client("organizations", moto_url).delete_organization()
    with FaultProxy(moto_url, mode="replay") as replayer:
        replayer.load(tmp_path / "answers.json")
        replayer.add(Rule(operation="ListRoots", latency=0.05))
        organizations = client("organizations", replayer.url)
        assert organizations.list_roots()["Roots"] == roots  # moto has no organization now
        assert replayer.replayed == 1
        with pytest.raises(ClientError) as caught:
            # A miss is forwarded: moto, whose organization is gone, knows no such parent.
            organizations.list_organizational_units_for_parent(ParentId=roots[0]["Id"])
        assert caught.value.response["Error"]["Code"] == "ParentNotFoundException"


def test_replayed_assume_role_keeps_keys_and_role_and_expires_later(
    moto_url: str, org: Org, tmp_path: Path
) -> None:
    def assume(url: str) -> dict[str, Any]:
        answer = client("sts", url).assume_role(
            RoleArn=DISCOVERY_ROLE, RoleSessionName="test", ExternalId=EXTERNAL_ID
        )
        keys: dict[str, Any] = answer["Credentials"]
        return keys

    with FaultProxy(moto_url, mode="record") as recorder:
        recorded = assume(recorder.url)
        recorder.save(tmp_path / "answers.json")
    with FaultProxy(moto_url, mode="replay") as replayer:
        replayer.load(tmp_path / "answers.json")
        before = time.time()
        replayed = assume(replayer.url)
        assert replayer.replayed == 1
        # moto would have issued new keys: these are the recorded ones, and they name the role.
        assert replayed["AccessKeyId"] == recorded["AccessKeyId"]
        assert replayer.roles_by_key == {recorded["AccessKeyId"]: DISCOVERY_ROLE}
        # The expiry is the serving time's, not the recording's.
        assert replayed["Expiration"].timestamp() >= before + 3600 - 5
        # Another role's AssumeRole is not in the recording: forwarded, and moto issues new keys.
        other = client("sts", replayer.url).assume_role(
            RoleArn=DISCOVERY_ROLE, RoleSessionName="another", ExternalId=EXTERNAL_ID
        )
        assert other["Credentials"]["AccessKeyId"] != recorded["AccessKeyId"]
        assert replayer.replayed == 1


def test_replay_keys_ignore_signatures_and_parameter_order(moto_url: str, org: Org) -> None:
    org.bulk_accounts(2, org.root_id)
    with FaultProxy(moto_url, mode="replay") as proxy:
        first = client("organizations", proxy.url).list_accounts_for_parent(
            ParentId=org.root_id, MaxResults=20
        )
        other_keys = client("organizations", proxy.url, **assumed(proxy.url, DISCOVERY_ROLE))
        again = other_keys.list_accounts_for_parent(MaxResults=20, ParentId=org.root_id)
        assert again["Accounts"] == first["Accounts"]
        assert proxy.replayed == 1  # the first was forwarded and recorded, the second replayed


def test_a_recorded_client_error_is_replayed_as_answered(
    moto_url: str, org: Org, tmp_path: Path
) -> None:
    gone = org.ou("Gone")
    org.delete_ou(gone)
    with FaultProxy(moto_url, mode="record") as recorder:
        with pytest.raises(ClientError):
            client("organizations", recorder.url).describe_organizational_unit(
                OrganizationalUnitId=gone
            )
        recorder.save(tmp_path / "answers.json")
    with FaultProxy(moto_url, mode="replay") as replayer:
        replayer.load(tmp_path / "answers.json")
        with pytest.raises(ClientError) as caught:
            client("organizations", replayer.url).describe_organizational_unit(
                OrganizationalUnitId=gone
            )
        assert caught.value.response["Error"]["Code"] == "OrganizationalUnitNotFoundException"
        assert replayer.replayed == 1
