"""CloudFormation templates (YAML) for the IAM roles Canopy assumes.

The discovery role goes in the management (or a delegated-administrator) account; the member
role goes in every member account through a StackSet. Each trusts the platform account with the
integration's external id and grants `ReadOnlyAccess`. The trusted principal names the partition
the deployment serves: IAM trust never crosses partitions, and the same account number in
another partition belongs to someone else, so a stack deployed in the wrong partition fails
instead of trusting a stranger. Every value is written as a JSON string,
which is also a YAML double-quoted scalar, so no input can change the template's structure; the
output is the same for the same input.

The discovery role's template can also create what live updates need (`event_queue=True`): an
EventBridge rule matching the organization's structure changes, the SQS queue it sends them to
with a dead-letter queue, a queue policy letting only that rule send, and the role's permission
to read the queue. AWS Organizations records its calls in us-east-1 only, so that stack must be
deployed there.
"""

from __future__ import annotations

import enum
import json
import re

from canopy_integration.aws import (
    ACCOUNT_ID,
    DEFAULT_PARTITION,
    MAX_ROLE_PATH_LENGTH,
    PARTITIONS,
    RoleArn,
    parse_role_arn,
    role_name_problem,
)

MAX_SESSION_DURATION_SECONDS = 3600
# What STS accepts as an external id.
EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_+=,.@:/-]{2,1224}\Z", re.ASCII)
ROLE_PATH = re.compile(r"^/(?:[A-Za-z0-9_+=,.@-]+/)*\Z", re.ASCII)

DISCOVERY_RESOURCE = "CanopyDiscoveryRole"
MEMBER_RESOURCE = "CanopyMemberRole"
QUEUE_RESOURCE = "CanopyOrganizationEventsQueue"
DEAD_LETTER_RESOURCE = "CanopyOrganizationEventsDeadLetterQueue"
RULE_RESOURCE = "CanopyOrganizationEventsRule"
QUEUE_POLICY_RESOURCE = "CanopyOrganizationEventsQueuePolicy"

# The events that may change the tree: accounts created, joined, moved, closed, left or removed;
# OUs created, renamed or deleted (AWS Organizations); accounts renamed (the Account Management
# API, when called from this account). Listed by name so that nothing else (policies, tags,
# Canopy's own reads) reaches the queue; failed calls (`errorCode`) are left out too.
ORGANIZATIONS_EVENTS = (
    "AcceptHandshake",
    "CloseAccount",
    "CloseAccountResult",
    "CreateAccount",
    "CreateAccountResult",
    "CreateGovCloudAccount",
    "CreateOrganizationalUnit",
    "DeleteOrganizationalUnit",
    "LeaveOrganization",
    "MoveAccount",
    "RemoveAccountFromOrganization",
    "UpdateOrganizationalUnit",
)
ACCOUNT_EVENTS = ("PutAccountName",)
QUEUE_ACTIONS = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ChangeMessageVisibility",
)
EVENTS_REGION = "us-east-1"
MAX_RECEIVE_COUNT = 5
QUEUE_RETENTION_SECONDS = 4 * 24 * 3600
DEAD_LETTER_RETENTION_SECONDS = 14 * 24 * 3600  # SQS's longest
VISIBILITY_TIMEOUT_SECONDS = 60


class RoleTemplateKind(enum.Enum):
    """Which template: the discovery role, or the member role deployed with a StackSet."""

    DISCOVERY_ROLE = "DISCOVERY_ROLE"
    MEMBER_ROLE_STACK_SET = "MEMBER_ROLE_STACK_SET"


_FILE_NAMES = {
    RoleTemplateKind.DISCOVERY_ROLE: "canopy-discovery-role.yaml",
    RoleTemplateKind.MEMBER_ROLE_STACK_SET: "canopy-member-role-stackset.yaml",
}


def file_name_for(kind: RoleTemplateKind | str) -> str:
    """The suggested file name of a template: `canopy-discovery-role.yaml` or
    `canopy-member-role-stackset.yaml`. Raises ValueError for an unknown kind."""
    return _FILE_NAMES[RoleTemplateKind(kind)]


def render_discovery_role(
    role_arn_or_name: RoleArn | str,
    external_id: str,
    trusted_account_id: str,
    partition: str = DEFAULT_PARTITION,
    *,
    event_queue: bool = False,
) -> str:
    """The template of the discovery role, named by its ARN (with its path) or by its name,
    trusting `trusted_account_id` of `partition`; with `event_queue`, also the rule, queues
    and permissions of live updates (partition `aws` only).

    A string starting `arn:` is parsed as a role ARN. Raises ValueError for a malformed name,
    ARN, external id, account id or partition, and for an ARN of another partition.
    """
    if isinstance(role_arn_or_name, RoleArn):
        role = role_arn_or_name
    elif role_arn_or_name.startswith("arn:"):
        role = parse_role_arn(role_arn_or_name)
    else:
        role = RoleArn(partition="", account_id="", path="/", name=role_arn_or_name)
    if role.partition and role.partition != partition:
        raise ValueError(f"role {role.arn} is not in partition {partition!r}")
    where = (
        f"account {role.account_id}, the organization's management account or a "
        "delegated administrator for AWS Organizations"
        if role.account_id
        else "the organization's management account or a delegated administrator for "
        "AWS Organizations"
    )
    description = (
        f"Canopy discovery role: deploy this stack in {where}. It creates the IAM role "
        f"{role.name} that Canopy's AWS account {trusted_account_id} assumes, with the "
        "integration's external id, to read the organization's accounts and OUs."
    )
    if event_queue:
        if partition != DEFAULT_PARTITION:
            raise ValueError(f"event queues are for partition {DEFAULT_PARTITION!r} only")
        description += (
            f" Deploy it in {EVENTS_REGION}: it also creates an EventBridge rule that sends the "
            "organization's changes to an SQS queue (with a dead-letter queue) the role may "
            "read; enter the QueueUrl output in the integration's discovery_access.event_queue. "
            "The rule sees AWS API calls only while CloudTrail is enabled (a trail logging "
            f"management events in {EVENTS_REGION})."
        )
    return _render_role(
        resource=DISCOVERY_RESOURCE,
        description=description,
        role_name=role.name,
        role_path=role.path,
        external_id=external_id,
        trusted_account_id=trusted_account_id,
        partition=partition,
        role_description="Lets Canopy discover the accounts and OUs of this AWS Organization.",
        output_description="The ARN of the discovery role, to enter in Canopy.",
        event_queue=event_queue,
    )


def render_member_role(
    role_name: str, external_id: str, trusted_account_id: str, partition: str = DEFAULT_PARTITION
) -> str:
    """The template of the member role, to deploy to every member account with a StackSet,
    trusting `trusted_account_id` of `partition`.

    Raises ValueError for a malformed role name, external id, account id or partition.
    """
    description = (
        "Canopy member role: deploy this template to every member account of the organization "
        "with a CloudFormation StackSet, from the management account or a delegated "
        f"administrator. It creates the IAM role {role_name} that Canopy's AWS account "
        f"{trusted_account_id} assumes, with the integration's external id, to read the "
        "account's resources."
    )
    return _render_role(
        resource=MEMBER_RESOURCE,
        description=description,
        role_name=role_name,
        role_path="/",
        external_id=external_id,
        trusted_account_id=trusted_account_id,
        partition=partition,
        role_description="Lets Canopy read this account's resources (ReadOnlyAccess).",
        output_description="The ARN of the member role in this account.",
    )


def _render_role(
    *,
    resource: str,
    description: str,
    role_name: str,
    role_path: str,
    external_id: str,
    trusted_account_id: str,
    partition: str,
    role_description: str,
    output_description: str,
    event_queue: bool = False,
) -> str:
    if (problem := role_name_problem(role_name)) is not None:
        raise ValueError(f"role name {role_name!r} {problem}")
    if not ROLE_PATH.match(role_path) or len(role_path) > MAX_ROLE_PATH_LENGTH:
        raise ValueError(f"role path {role_path!r} is not an IAM path")
    if not EXTERNAL_ID.match(external_id):
        raise ValueError(f"external id {external_id!r} is not one STS accepts")
    if not ACCOUNT_ID.match(trusted_account_id):
        raise ValueError(f"trusted account id {trusted_account_id!r} is not 12 digits")
    if partition not in PARTITIONS:
        raise ValueError(f"partition {partition!r} is not one of {', '.join(PARTITIONS)}")
    principal = f"arn:{partition}:iam::{trusted_account_id}:root"
    path_line = f"      Path: {_q(role_path)}\n" if role_path != "/" else ""
    return (
        f'AWSTemplateFormatVersion: "2010-09-09"\n'
        f"Description: {_q(description)}\n"
        f"{_EVENTS_RULES if event_queue else ''}"
        f"Resources:\n"
        f"  {resource}:\n"
        f'    Type: "AWS::IAM::Role"\n'
        f"    Properties:\n"
        f"      RoleName: {_q(role_name)}\n"
        f"{path_line}"
        f"      Description: {_q(role_description)}\n"
        f"      AssumeRolePolicyDocument:\n"
        f'        Version: "2012-10-17"\n'
        f"        Statement:\n"
        f'          - Effect: "Allow"\n'
        f"            Principal:\n"
        f"              AWS: {_q(principal)}\n"
        f'            Action: "sts:AssumeRole"\n'
        f"            Condition:\n"
        f"              StringEquals:\n"
        f'                "sts:ExternalId": {_q(external_id)}\n'
        f"      ManagedPolicyArns:\n"
        f'        - !Sub "arn:${{AWS::Partition}}:iam::aws:policy/ReadOnlyAccess"\n'
        f"      MaxSessionDuration: {MAX_SESSION_DURATION_SECONDS}\n"
        f"{_EVENTS_POLICY + _EVENTS_RESOURCES if event_queue else ''}"
        f"Outputs:\n"
        f"  RoleArn:\n"
        f"    Description: {_q(output_description)}\n"
        f"    Value: !GetAtt {resource}.Arn\n"
        f"{_EVENTS_OUTPUTS if event_queue else ''}"
    )


def _q(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar; ensure_ascii keeps it to escapes
    # YAML 1.1 (PyYAML, CloudFormation) reads the same way.
    return json.dumps(value, ensure_ascii=True)


def _list(values: tuple[str, ...], indent: int) -> str:
    return "".join(f"{' ' * indent}- {_q(v)}\n" for v in values)


# What live updates add to the discovery role's template; fixed text (no input reaches it).
_EVENTS_RULES = (
    "Rules:\n"
    "  OrganizationEventsRegion:\n"
    "    Assertions:\n"
    f'      - Assert: !Equals [!Ref "AWS::Region", {_q(EVENTS_REGION)}]\n'
    "        AssertDescription: "
    + _q(
        f"Deploy this stack in {EVENTS_REGION}: AWS Organizations delivers its events to "
        "EventBridge there only."
    )
    + "\n"
)
_EVENTS_POLICY = (
    "      Policies:\n"
    '        - PolicyName: "canopy-organization-events"\n'
    "          PolicyDocument:\n"
    '            Version: "2012-10-17"\n'
    "            Statement:\n"
    '              - Effect: "Allow"\n'
    "                Action:\n"
    + _list(QUEUE_ACTIONS, 18)
    + f"                Resource: !GetAtt {QUEUE_RESOURCE}.Arn\n"
)
_EVENTS_RESOURCES = (
    f"  {DEAD_LETTER_RESOURCE}:\n"
    '    Type: "AWS::SQS::Queue"\n'
    "    Properties:\n"
    f"      MessageRetentionPeriod: {DEAD_LETTER_RETENTION_SECONDS}\n"
    "      SqsManagedSseEnabled: true\n"
    f"  {QUEUE_RESOURCE}:\n"
    '    Type: "AWS::SQS::Queue"\n'
    "    Properties:\n"
    f"      MessageRetentionPeriod: {QUEUE_RETENTION_SECONDS}\n"
    "      ReceiveMessageWaitTimeSeconds: 20\n"
    f"      VisibilityTimeout: {VISIBILITY_TIMEOUT_SECONDS}\n"
    "      SqsManagedSseEnabled: true\n"
    "      RedrivePolicy:\n"
    f"        deadLetterTargetArn: !GetAtt {DEAD_LETTER_RESOURCE}.Arn\n"
    f"        maxReceiveCount: {MAX_RECEIVE_COUNT}\n"
    f"  {RULE_RESOURCE}:\n"
    '    Type: "AWS::Events::Rule"\n'
    "    Properties:\n"
    "      Description: "
    + _q("AWS Organizations structure changes and account renames, for Canopy's live updates.")
    + "\n"
    '      EventBusName: "default"\n'
    '      State: "ENABLED"\n'
    "      EventPattern:\n"
    "        source:\n"
    + _list(("aws.organizations", "aws.account"), 10)
    + '        "detail-type":\n'
    + _list(("AWS API Call via CloudTrail", "AWS Service Event via CloudTrail"), 10)
    + "        detail:\n"
    "          eventSource:\n"
    + _list(("organizations.amazonaws.com", "account.amazonaws.com"), 12)
    + "          eventName:\n"
    + _list(ORGANIZATIONS_EVENTS + ACCOUNT_EVENTS, 12)
    + "          errorCode:\n"
    "            - exists: false\n"
    "      Targets:\n"
    '        - Id: "canopy-organization-events"\n'
    f"          Arn: !GetAtt {QUEUE_RESOURCE}.Arn\n"
    f"  {QUEUE_POLICY_RESOURCE}:\n"
    '    Type: "AWS::SQS::QueuePolicy"\n'
    "    Properties:\n"
    "      Queues:\n"
    f"        - !Ref {QUEUE_RESOURCE}\n"
    "      PolicyDocument:\n"
    '        Version: "2012-10-17"\n'
    "        Statement:\n"
    '          - Sid: "OnlyTheRuleSends"\n'
    '            Effect: "Allow"\n'
    "            Principal:\n"
    '              Service: "events.amazonaws.com"\n'
    '            Action: "sqs:SendMessage"\n'
    f"            Resource: !GetAtt {QUEUE_RESOURCE}.Arn\n"
    "            Condition:\n"
    "              ArnEquals:\n"
    f'                "aws:SourceArn": !GetAtt {RULE_RESOURCE}.Arn\n'
)
_EVENTS_OUTPUTS = (
    "  QueueUrl:\n"
    "    Description: "
    + _q(
        "The queue of the organization's change events: enter it in the integration's "
        "discovery_access.event_queue (canopy integrations update ID --event-queue URL)."
    )
    + "\n"
    f"    Value: !Ref {QUEUE_RESOURCE}\n"
    "  QueueArn:\n"
    + "    Description: "
    + _q("The ARN of the same queue (discovery_access.event_queue takes either).")
    + "\n"
    f"    Value: !GetAtt {QUEUE_RESOURCE}.Arn\n"
    "  DeadLetterQueueUrl:\n"
    "    Description: "
    + _q(f"Where SQS moves an event after {MAX_RECEIVE_COUNT} failed receives; kept 14 days.")
    + "\n"
    f"    Value: !Ref {DEAD_LETTER_RESOURCE}\n"
)
