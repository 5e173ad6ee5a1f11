"""AWS identifiers and external ids: their shapes, parsing, and what is wrong with a bad one.

Pure functions; every pattern is ASCII-only (Python's `\\w` and `\\d` otherwise match any
script) and anchored with `\\Z`, so a trailing newline never passes as part of an identifier.
"""

from __future__ import annotations

import random
import re
import secrets
from dataclasses import dataclass

PARTITIONS: tuple[str, ...] = ("aws", "aws-cn", "aws-us-gov")
DEFAULT_PARTITION = "aws"
UNSUPPORTED_PARTITION = "UNSUPPORTED_PARTITION"
MAX_ROLE_ARN_LENGTH = 2048
MAX_ROLE_PATH_LENGTH = 512

_ROLE_CHAR = r"[A-Za-z0-9_+=,.@-]"
ROLE_ARN = re.compile(
    rf"^arn:(aws|aws-cn|aws-us-gov):iam::(\d{{12}}):role/((?:{_ROLE_CHAR}+/)*)({_ROLE_CHAR}{{1,64}})\Z",
    re.ASCII,
)
ROLE_NAME = re.compile(rf"^{_ROLE_CHAR}{{1,64}}\Z", re.ASCII)
ROLE_NAME_RULE = "must be 1-64 characters of letters, digits and '_+=,.@-'"

ACCOUNT_ID = re.compile(r"^\d{12}\Z", re.ASCII)
OU_ID = re.compile(r"^ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}\Z", re.ASCII)
ROOT_ID = re.compile(r"^r-[0-9a-z]{4,32}\Z", re.ASCII)
ORGANIZATION_ID = re.compile(r"^o-[a-z0-9]{10,32}\Z", re.ASCII)

EXTERNAL_ID_OWNER = re.compile(r"^[to]_[a-z0-9]{1,60}\Z", re.ASCII)
EXTERNAL_ID_SUFFIX = re.compile(r"^[a-z0-9]{8}\Z", re.ASCII)
EXTERNAL_ID_SUFFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
EXTERNAL_ID_SUFFIX_RULE = "must be 8 characters of [a-z0-9]"
EXTERNAL_ID_RULE = (
    "must be '<tenant or org id>:<suffix>', the suffix 8 characters of [a-z0-9] "
    "(e.g. 'o_cugqnt0sb890gkker123:k3j9x0ab')"
)

INVALID_EXTERNAL_ID = "INVALID_EXTERNAL_ID"
EXTERNAL_ID_OWNER_MISMATCH = "EXTERNAL_ID_OWNER_MISMATCH"


@dataclass(frozen=True)
class RoleArn:
    """A parsed IAM role ARN; `path` is IAM's form, `/` or `/division/team/`."""

    partition: str
    account_id: str
    path: str
    name: str

    @property
    def arn(self) -> str:
        """The ARN text this was parsed from."""
        return f"arn:{self.partition}:iam::{self.account_id}:role{self.path}{self.name}"

    def __str__(self) -> str:
        return self.arn


def role_arn_problem(arn: str) -> str | None:
    """What is wrong with an IAM role ARN, or None if it is well-formed."""
    if not arn:
        return "is required"
    if len(arn) > MAX_ROLE_ARN_LENGTH:
        return f"must be at most {MAX_ROLE_ARN_LENGTH} characters"
    match = ROLE_ARN.match(arn)
    if match is None:
        return (
            "must look like 'arn:<aws|aws-cn|aws-us-gov>:iam::<12 digits>:role/<optional path/>"
            "<name>', the name 1-64 characters of letters, digits and '_+=,.@-'"
        )
    if len(match.group(3)) + 1 > MAX_ROLE_PATH_LENGTH:
        return f"must have a role path of at most {MAX_ROLE_PATH_LENGTH} characters"
    return None


def partition_problem(arn: str, partition: str) -> str | None:
    """What is wrong with a well-formed role ARN for a deployment serving `partition`, or None.

    A deployment's platform account lives in one partition and IAM trust never crosses
    partitions, so a role in another one could never be assumed (and the same account number
    there belongs to someone else).
    """
    match = ROLE_ARN.match(arn)
    if match is None or match.group(1) == partition:
        return None
    return (
        f"is in partition {match.group(1)!r}; this deployment serves partition {partition!r} "
        "only (CANOPY_AWS_PARTITION)"
    )


def role_name_problem(name: str) -> str | None:
    """What is wrong with an IAM role name, or None if it is well-formed."""
    if not name:
        return "is required"
    if not ROLE_NAME.match(name):
        return ROLE_NAME_RULE
    return None


def parse_role_arn(arn: str) -> RoleArn:
    """The parts of a role ARN; raises ValueError when `role_arn_problem` finds one."""
    problem = role_arn_problem(arn)
    match = ROLE_ARN.match(arn)
    if problem is not None or match is None:
        raise ValueError(f"role ARN {arn!r} {problem}")
    partition, account_id, path, name = match.groups()
    return RoleArn(partition=partition, account_id=account_id, path=f"/{path}", name=name)


def external_id_suffix_problem(suffix: str) -> str | None:
    """What is wrong with a user-chosen external id suffix, or None if it is usable."""
    if not EXTERNAL_ID_SUFFIX.match(suffix):
        return EXTERNAL_ID_SUFFIX_RULE
    return None


def new_external_id(
    owner_id: str, suffix: str | None = None, rng: random.Random | None = None
) -> str:
    """`<owner_id>:<suffix>`, with 8 random characters of [a-z0-9] unless `suffix` is given.

    The suffix comes from `secrets` unless an `rng` is given (tests). Raises ValueError for an
    owner id that is not a tenant or org id, or a suffix `external_id_suffix_problem` refuses.
    """
    if not EXTERNAL_ID_OWNER.match(owner_id):
        raise ValueError(f"owner id {owner_id!r} is not a tenant or org id")
    if suffix is None:
        choose = secrets.choice if rng is None else rng.choice
        suffix = "".join(choose(EXTERNAL_ID_SUFFIX_ALPHABET) for _ in range(8))
    elif (problem := external_id_suffix_problem(suffix)) is not None:
        raise ValueError(f"external id suffix {suffix!r} {problem}")
    return f"{owner_id}:{suffix}"


def external_id_problem(external_id: str, owner_id: str) -> tuple[str | None, str | None]:
    """(description, reason) of what is wrong with an external id for `owner_id`'s integration.

    (None, None) when it is fine. A well-formed id naming another tenant or org is refused with
    `EXTERNAL_ID_OWNER_MISMATCH`: the role would otherwise trust whoever wrote that id into its
    policy (confused-deputy protection). Format problems are `INVALID_EXTERNAL_ID`.
    """
    if not external_id:
        return "is required", INVALID_EXTERNAL_ID
    owner, separator, suffix = external_id.partition(":")
    if not separator or not EXTERNAL_ID_OWNER.match(owner) or not EXTERNAL_ID_SUFFIX.match(suffix):
        return EXTERNAL_ID_RULE, INVALID_EXTERNAL_ID
    if owner != owner_id:
        return f"names another owner (must start with '{owner_id}:')", EXTERNAL_ID_OWNER_MISMATCH
    return None, None
