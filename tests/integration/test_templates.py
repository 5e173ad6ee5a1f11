"""CloudFormation role templates: what they say once parsed, and that cfn-lint finds nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import cfnlint.api  # type: ignore[import-untyped]  # cfn-lint ships no type information
import pytest
import yaml
from moto.events.models import EventPattern

from canopy_integration.aws import RoleArn, parse_role_arn
from canopy_integration.templates import (
    RoleTemplateKind,
    file_name_for,
    render_discovery_role,
    render_member_role,
)

TRUSTED = "316881668097"
EXTERNAL_ID = "o_cugqnt0sb890gkker123:k3j9x0ab"
READ_ONLY = {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/ReadOnlyAccess"}


class CloudFormationLoader(yaml.SafeLoader):
    """A safe loader that reads CloudFormation's short-form tags as their long forms."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def parse(template: str) -> dict[str, Any]:
    parsed = yaml.load(template, Loader=CloudFormationLoader)
    assert isinstance(parsed, dict)
    return parsed


def lint(template: str, region: str) -> list[str]:
    """cfn-lint's default rules (errors and warnings) in one region of the partition."""
    return [str(match) for match in cfnlint.api.lint(template, regions=[region])]


@dataclass(frozen=True)
class Variant:
    """One template to check, and what its role must look like."""

    id: str
    template: str
    resource: str
    role_name: str
    role_path: str | None
    region: str
    partition: str = "aws"
    extra_resources: tuple[str, ...] = ()  # beside the role: the event queue option's


QUEUE = "CanopyOrganizationEventsQueue"
DEAD_LETTER = "CanopyOrganizationEventsDeadLetterQueue"
RULE = "CanopyOrganizationEventsRule"
QUEUE_POLICY = "CanopyOrganizationEventsQueuePolicy"
EVENT_RESOURCES = (DEAD_LETTER, QUEUE, RULE, QUEUE_POLICY)


VARIANTS = [
    Variant(
        "discovery-aws-no-path",
        render_discovery_role(
            "arn:aws:iam::123456789012:role/canopy-discovery", EXTERNAL_ID, TRUSTED
        ),
        "CanopyDiscoveryRole",
        "canopy-discovery",
        None,
        "us-east-1",
    ),
    Variant(
        "discovery-aws-path",
        render_discovery_role(
            "arn:aws:iam::123456789012:role/platform/canopy/canopy-discovery", EXTERNAL_ID, TRUSTED
        ),
        "CanopyDiscoveryRole",
        "canopy-discovery",
        "/platform/canopy/",
        "eu-west-1",
    ),
    Variant(
        "discovery-aws-cn",
        render_discovery_role(
            "arn:aws-cn:iam::123456789012:role/ops/CanopyDiscovery",
            EXTERNAL_ID,
            TRUSTED,
            partition="aws-cn",
        ),
        "CanopyDiscoveryRole",
        "CanopyDiscovery",
        "/ops/",
        "cn-north-1",
        "aws-cn",
    ),
    Variant(
        "discovery-aws-us-gov",
        render_discovery_role(
            parse_role_arn("arn:aws-us-gov:iam::123456789012:role/canopy-discovery"),
            "t_01jd8x4k2m:abcd1234",
            TRUSTED,
            partition="aws-us-gov",
        ),
        "CanopyDiscoveryRole",
        "canopy-discovery",
        None,
        "us-gov-west-1",
        "aws-us-gov",
    ),
    Variant(
        "discovery-by-name",
        render_discovery_role("canopy-discovery", EXTERNAL_ID, TRUSTED),
        "CanopyDiscoveryRole",
        "canopy-discovery",
        None,
        "us-east-1",
    ),
    Variant(
        "discovery-name-with-every-allowed-character",
        render_discovery_role("a_b+c=d,e.f@g-h", EXTERNAL_ID, TRUSTED),
        "CanopyDiscoveryRole",
        "a_b+c=d,e.f@g-h",
        None,
        "us-east-1",
    ),
    Variant(
        "member",
        render_member_role("canopy-member", EXTERNAL_ID, TRUSTED),
        "CanopyMemberRole",
        "canopy-member",
        None,
        "us-east-1",
    ),
    Variant(
        "member-aws-cn",
        render_member_role("canopy-member", EXTERNAL_ID, TRUSTED, partition="aws-cn"),
        "CanopyMemberRole",
        "canopy-member",
        None,
        "cn-northwest-1",
        "aws-cn",
    ),
]
QUEUE_VARIANTS = [
    Variant(
        "discovery-with-event-queue",
        render_discovery_role(
            "arn:aws:iam::123456789012:role/platform/canopy-discovery",
            EXTERNAL_ID,
            TRUSTED,
            event_queue=True,
        ),
        "CanopyDiscoveryRole",
        "canopy-discovery",
        "/platform/",
        "us-east-1",
        extra_resources=EVENT_RESOURCES,
    ),
    Variant(
        "discovery-longest-name-with-event-queue",
        render_discovery_role("r" * 64, EXTERNAL_ID, TRUSTED, event_queue=True),
        "CanopyDiscoveryRole",
        "r" * 64,
        None,
        "us-east-1",
        extra_resources=EVENT_RESOURCES,
    ),
]
VARIANTS += QUEUE_VARIANTS
variants = pytest.mark.parametrize("variant", VARIANTS, ids=[v.id for v in VARIANTS])


def role_properties(variant: Variant) -> dict[str, Any]:
    resources = parse(variant.template)["Resources"]
    assert list(resources) == [variant.resource, *variant.extra_resources]
    assert resources[variant.resource]["Type"] == "AWS::IAM::Role"
    properties = resources[variant.resource]["Properties"]
    assert isinstance(properties, dict)
    return properties


@variants
def test_template_passes_cfn_lint_without_errors_or_warnings(variant: Variant) -> None:
    assert lint(variant.template, variant.region) == []


def test_cfn_lint_check_reports_a_broken_template() -> None:
    # Guards the test above: a lint that never finds anything would pass it too.
    broken = VARIANTS[0].template.replace("MaxSessionDuration: 3600", "MaxSessionDuration: 60")
    assert any("E3034" in finding for finding in lint(broken, "us-east-1"))


@variants
def test_template_declares_the_format_version_and_a_description(variant: Variant) -> None:
    parsed = parse(variant.template)
    assert parsed["AWSTemplateFormatVersion"] == "2010-09-09"
    assert isinstance(parsed["Description"], str)
    assert 0 < len(parsed["Description"]) <= 1024


@variants
def test_role_trusts_only_the_platform_account_of_its_partition_with_the_external_id(
    variant: Variant,
) -> None:
    policy = role_properties(variant)["AssumeRolePolicyDocument"]
    assert policy["Version"] == "2012-10-17"
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow"
    # The partition is written out, not `${AWS::Partition}`: deployed in another partition, the
    # template must fail rather than trust that partition's holder of the account number.
    assert statement["Principal"] == {"AWS": f"arn:{variant.partition}:iam::{TRUSTED}:root"}
    assert statement["Action"] == "sts:AssumeRole"
    external_id = "t_01jd8x4k2m:abcd1234" if variant.id == "discovery-aws-us-gov" else EXTERNAL_ID
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": external_id}}


@variants
def test_role_has_read_only_access_and_one_hour_sessions(variant: Variant) -> None:
    properties = role_properties(variant)
    assert properties["ManagedPolicyArns"] == [READ_ONLY]
    assert properties["MaxSessionDuration"] == 3600


@variants
def test_role_has_the_given_name_and_path(variant: Variant) -> None:
    properties = role_properties(variant)
    assert properties["RoleName"] == variant.role_name
    assert properties.get("Path") == variant.role_path


@variants
def test_template_outputs_the_role_arn(variant: Variant) -> None:
    outputs = parse(variant.template)["Outputs"]
    assert outputs["RoleArn"]["Value"] == {"Fn::GetAtt": [variant.resource, "Arn"]}


def test_member_template_description_says_to_deploy_it_with_a_stackset() -> None:
    description = parse(render_member_role("canopy-member", EXTERNAL_ID, TRUSTED))["Description"]
    assert "every member account" in description
    assert "StackSet" in description


def test_discovery_template_description_names_the_account_of_the_arn() -> None:
    template = render_discovery_role(
        "arn:aws:iam::123456789012:role/canopy-discovery", EXTERNAL_ID, TRUSTED
    )
    assert "account 123456789012" in parse(template)["Description"]


def test_discovery_template_from_arn_text_equals_from_parsed_arn() -> None:
    arn = "arn:aws:iam::123456789012:role/a/b/canopy"
    assert render_discovery_role(arn, EXTERNAL_ID, TRUSTED) == render_discovery_role(
        parse_role_arn(arn), EXTERNAL_ID, TRUSTED
    )


def test_rendering_twice_gives_the_same_text() -> None:
    assert render_member_role("canopy-member", EXTERNAL_ID, TRUSTED) == render_member_role(
        "canopy-member", EXTERNAL_ID, TRUSTED
    )


@pytest.mark.parametrize(
    ("role_name", "external_id", "trusted", "message"),
    [
        ("bad name", EXTERNAL_ID, TRUSTED, "role name"),
        ("", EXTERNAL_ID, TRUSTED, "role name"),
        ("x" * 65, EXTERNAL_ID, TRUSTED, "role name"),
        ("canopy", 'o_x:abc"\nEvil: 1', TRUSTED, "external id"),
        ("canopy", "", TRUSTED, "external id"),
        ("canopy", EXTERNAL_ID, "31688166809", "trusted account id"),
        ("canopy", EXTERNAL_ID, "root", "trusted account id"),
    ],
)
def test_member_template_refuses_malformed_input(
    role_name: str, external_id: str, trusted: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        render_member_role(role_name, external_id, trusted)


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws-cn:iam::123456789012:role/canopy-discovery",
        "arn:aws-us-gov:iam::123456789012:role/canopy-discovery",
    ],
)
def test_discovery_template_refuses_a_role_of_another_partition(arn: str) -> None:
    with pytest.raises(ValueError, match="not in partition 'aws'"):
        render_discovery_role(arn, EXTERNAL_ID, TRUSTED)
    with pytest.raises(ValueError, match="not in partition 'aws'"):
        render_discovery_role(parse_role_arn(arn), EXTERNAL_ID, TRUSTED, partition="aws")


def test_templates_refuse_an_unknown_partition() -> None:
    with pytest.raises(ValueError, match="partition 'aws-iso'"):
        render_member_role("canopy-member", EXTERNAL_ID, TRUSTED, partition="aws-iso")


def test_discovery_template_refuses_malformed_arn() -> None:
    with pytest.raises(ValueError, match="must look like"):
        render_discovery_role("arn:aws:iam::123:role/x", EXTERNAL_ID, TRUSTED)


def test_discovery_template_refuses_role_arn_with_malformed_path() -> None:
    role = RoleArn(partition="aws", account_id="123456789012", path="no-slashes", name="canopy")
    with pytest.raises(ValueError, match="role path"):
        render_discovery_role(role, EXTERNAL_ID, TRUSTED)


@pytest.mark.parametrize(
    ("kind", "file_name"),
    [
        (RoleTemplateKind.DISCOVERY_ROLE, "canopy-discovery-role.yaml"),
        ("DISCOVERY_ROLE", "canopy-discovery-role.yaml"),
        (RoleTemplateKind.MEMBER_ROLE_STACK_SET, "canopy-member-role-stackset.yaml"),
        ("MEMBER_ROLE_STACK_SET", "canopy-member-role-stackset.yaml"),
    ],
)
def test_file_name_for_each_kind(kind: RoleTemplateKind | str, file_name: str) -> None:
    assert file_name_for(kind) == file_name


def test_file_name_for_unknown_kind_raises_value_error() -> None:
    with pytest.raises(ValueError, match="UNSPECIFIED"):
        file_name_for("UNSPECIFIED")


# The event queue option: the rule, the queues, who may send and who may read.


def queued() -> dict[str, Any]:
    return parse(QUEUE_VARIANTS[0].template)


def arn_of(resource: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [resource, "Arn"]}


def test_event_queue_template_may_only_be_deployed_in_us_east_1() -> None:
    (rule,) = queued()["Rules"].values()
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}
    assert "us-east-1" in assertion["AssertDescription"]


def test_event_queue_template_says_where_to_deploy_it_that_cloudtrail_is_needed_and_what_next() -> (
    None
):
    description = queued()["Description"]
    assert "us-east-1" in description
    assert "CloudTrail" in description
    assert "discovery_access.event_queue" in description


def test_the_rule_sends_the_organizations_structure_changes_and_account_renames_to_the_queue() -> (
    None
):
    rule = queued()["Resources"][RULE]
    assert rule["Type"] == "AWS::Events::Rule"
    properties = rule["Properties"]
    assert (properties["EventBusName"], properties["State"]) == ("default", "ENABLED")
    pattern = properties["EventPattern"]
    assert pattern["source"] == ["aws.organizations", "aws.account"]
    assert pattern["detail-type"] == [
        "AWS API Call via CloudTrail",
        "AWS Service Event via CloudTrail",
    ]
    assert pattern["detail"]["eventSource"] == [
        "organizations.amazonaws.com",
        "account.amazonaws.com",
    ]
    assert {
        "MoveAccount",
        "CreateAccountResult",
        "CloseAccountResult",
        "RemoveAccountFromOrganization",
        "CreateOrganizationalUnit",
        "UpdateOrganizationalUnit",
        "DeleteOrganizationalUnit",
        "PutAccountName",
    } <= set(pattern["detail"]["eventName"])
    assert pattern["detail"]["errorCode"] == [{"exists": False}]
    (target,) = properties["Targets"]
    assert target["Arn"] == arn_of(QUEUE)
    assert "RoleArn" not in target  # an SQS target is allowed by the queue's policy


# Events as EventBridge delivers them (trimmed): a MoveAccount captured from a real trail
# (aws-samples/aws-secure-environment-accelerator), the CreateAccountResult service event of
# nuvibit's account factory documentation, and AWS's own documentation samples.
def _event(
    name: str, detail_type: str = "AWS API Call via CloudTrail", **detail: Any
) -> dict[str, Any]:
    source = "aws.account" if name == "PutAccountName" else "aws.organizations"
    service = "account" if name == "PutAccountName" else "organizations"
    return {
        "version": "0",
        "id": "579d06ba-c104-8760-5882-bd2a3275791d",
        "detail-type": detail_type,
        "source": source,
        "account": "538235518685",
        "time": "2020-07-28T11:35:28Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "eventSource": f"{service}.amazonaws.com",
            "eventName": name,
            "awsRegion": "us-east-1",
            **detail,
        },
    }


DELIVERED = [
    _event(
        "MoveAccount",
        requestParameters={
            "accountId": "549271133721",
            "destinationParentId": "ou-yjkv-lmdswesj",
            "sourceParentId": "ou-yjkv-hhd1qqua",
        },
        responseElements=None,
        eventType="AwsApiCall",
    ),
    _event(
        "CreateAccountResult",
        "AWS Service Event via CloudTrail",
        serviceEventDetails={"createAccountStatus": {"state": "SUCCEEDED"}},
        eventType="AwsServiceEvent",
    ),
    _event(
        "CreateOrganizationalUnit",
        requestParameters={"parentId": "r-examplerootid", "name": "TestCWEOU"},
        eventType="AwsApiCall",
    ),
    _event("PutAccountName", requestParameters={"accountId": "549271133721"}),
]
LEFT_OUT = [
    # A failed call changes nothing.
    _event(
        "AttachPolicy",
        errorCode="PolicyTypeNotEnabledException",
        requestParameters={"policyId": "p-examplepolicyid111"},
    ),
    _event(
        "MoveAccount",
        errorCode="AccessDeniedException",
        requestParameters={"accountId": "549271133721"},
    ),
    # Neither do reads (Canopy's own crawls among them) nor policy changes.
    _event("ListAccounts"),
    _event("DescribeAccount"),
    _event("AttachPolicy"),
    {**_event("MoveAccount"), "source": "aws.ec2"},
]


def test_the_rule_matches_the_events_that_change_the_tree_and_nothing_else() -> None:
    # moto's implementation of EventBridge's pattern matching, in process.
    rule = queued()["Resources"][RULE]["Properties"]
    pattern = EventPattern.load(json.dumps(rule["EventPattern"]))

    def matched(events: list[dict[str, Any]]) -> list[str]:
        return [e["detail"]["eventName"] for e in events if pattern.matches_event(e)]  # type: ignore[arg-type]  # a TypedDict in moto's stubs

    assert matched(DELIVERED) == [e["detail"]["eventName"] for e in DELIVERED]
    assert matched(LEFT_OUT) == []


def test_the_queue_moves_a_message_received_5_times_to_a_dead_letter_queue_kept_14_days() -> None:
    resources = queued()["Resources"]
    queue = resources[QUEUE]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": arn_of(DEAD_LETTER),
        "maxReceiveCount": 5,
    }
    assert queue["SqsManagedSseEnabled"] is True
    assert "FifoQueue" not in queue
    dead_letter = resources[DEAD_LETTER]["Properties"]
    assert dead_letter["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_only_the_rule_may_send_to_the_queue() -> None:
    policy = queued()["Resources"][QUEUE_POLICY]["Properties"]
    assert policy["Queues"] == [{"Ref": QUEUE}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == arn_of(QUEUE)
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": arn_of(RULE)}}


def test_the_role_may_read_and_delete_from_that_queue_only() -> None:
    (policy,) = role_properties(QUEUE_VARIANTS[0])["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
    ]
    assert statement["Resource"] == arn_of(QUEUE)


def test_the_stack_outputs_the_queue_url_to_enter_in_the_integration() -> None:
    outputs = queued()["Outputs"]
    assert outputs["QueueUrl"]["Value"] == {"Ref": QUEUE}
    assert "discovery_access.event_queue" in outputs["QueueUrl"]["Description"]
    assert outputs["QueueArn"]["Value"] == arn_of(QUEUE)
    assert outputs["DeadLetterQueueUrl"]["Value"] == {"Ref": DEAD_LETTER}


def test_without_the_option_the_discovery_template_has_no_rules_or_queue() -> None:
    plain = parse(VARIANTS[0].template)
    assert "Rules" not in plain
    assert "Policies" not in role_properties(VARIANTS[0])
    assert set(plain["Outputs"]) == {"RoleArn"}


def test_the_event_queue_option_is_refused_outside_the_aws_partition() -> None:
    with pytest.raises(ValueError, match="partition 'aws'"):
        render_discovery_role(
            "canopy-discovery", EXTERNAL_ID, TRUSTED, partition="aws-cn", event_queue=True
        )
