"""AWS identifiers and external ids: what passes, what is refused, and why."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from canopy_integration.aws import (
    ACCOUNT_ID,
    EXTERNAL_ID_OWNER_MISMATCH,
    EXTERNAL_ID_SUFFIX,
    INVALID_EXTERNAL_ID,
    ORGANIZATION_ID,
    OU_ID,
    ROLE_ARN,
    ROOT_ID,
    RoleArn,
    external_id_problem,
    external_id_suffix_problem,
    new_external_id,
    parse_role_arn,
    partition_problem,
    role_arn_problem,
    role_name_problem,
)

OWNER = "o_cugqnt0sb890gkker123"
TENANT = "t_01jd8x4k2m"

owner_ids = st.from_regex(re.compile(r"[to]_[a-z0-9]{1,60}", re.ASCII), fullmatch=True)
suffixes = st.from_regex(re.compile(r"[a-z0-9]{8}", re.ASCII), fullmatch=True)


# Role ARNs


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::123456789012:role/canopy-discovery",
        "arn:aws-cn:iam::123456789012:role/canopy-discovery",
        "arn:aws-us-gov:iam::123456789012:role/canopy-discovery",
        "arn:aws:iam::123456789012:role/service-role/canopy",
        "arn:aws:iam::123456789012:role/a/b/c/Name_with+=,.@-chars",
        "arn:aws:iam::123456789012:role/" + "r" * 64,
    ],
)
def test_well_formed_role_arn_has_no_problem(arn: str) -> None:
    assert role_arn_problem(arn) is None


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws-iso:iam::123456789012:role/canopy",  # partition not supported
        "arn:aws:iam::12345678901:role/canopy",  # 11 digits
        "arn:aws:iam::1234567890123:role/canopy",  # 13 digits
        "arn:aws:iam::123456789012:user/canopy",  # a user, not a role
        "arn:aws:iam::123456789012:role/",  # no name
        "arn:aws:iam::123456789012:role/path/",  # path but no name
        "arn:aws:iam::123456789012:role//canopy",  # empty path segment
        "arn:aws:iam::123456789012:role/" + "r" * 65,  # name too long
        "arn:aws:iam::123456789012:role/café",  # non-ASCII name
        "arn:aws:iam::١٢٣٤٥٦٧٨٩٠١٢:role/canopy",  # non-ASCII digits
        "arn:aws:iam::123456789012:role/canopy\n",  # trailing newline
        "arn:aws:sts::123456789012:role/canopy",  # not IAM
        " arn:aws:iam::123456789012:role/canopy",
        "canopy",
    ],
)
def test_malformed_role_arn_is_described(arn: str) -> None:
    problem = role_arn_problem(arn)
    assert problem is not None
    assert problem.startswith("must look like 'arn:<aws|aws-cn|aws-us-gov>:iam::<12 digits>")


def test_empty_role_arn_is_required() -> None:
    assert role_arn_problem("") == "is required"


def test_role_arn_longer_than_2048_characters_is_refused() -> None:
    arn = "arn:aws:iam::123456789012:role/" + "p/" * 1010 + "name"
    assert len(arn) > 2048
    assert ROLE_ARN.match(arn)
    assert role_arn_problem(arn) == "must be at most 2048 characters"


def test_role_arn_with_path_longer_than_512_characters_is_refused() -> None:
    arn = "arn:aws:iam::123456789012:role/" + "p/" * 256 + "name"
    assert role_arn_problem(arn) == "must have a role path of at most 512 characters"


def test_parse_role_arn_without_path_gives_root_path() -> None:
    assert parse_role_arn("arn:aws:iam::123456789012:role/canopy") == RoleArn(
        partition="aws", account_id="123456789012", path="/", name="canopy"
    )


def test_parse_role_arn_keeps_path_and_partition() -> None:
    role = parse_role_arn("arn:aws-us-gov:iam::210987654321:role/team/ops/canopy")
    assert role == RoleArn(
        partition="aws-us-gov", account_id="210987654321", path="/team/ops/", name="canopy"
    )


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::123456789012:role/canopy",
        "arn:aws-cn:iam::123456789012:role/a/b/canopy",
    ],
)
def test_parsed_role_arn_renders_back_to_the_same_text(arn: str) -> None:
    assert parse_role_arn(arn).arn == arn
    assert str(parse_role_arn(arn)) == arn


@pytest.mark.parametrize("served", ["aws", "aws-cn", "aws-us-gov"])
def test_a_role_arn_of_the_served_partition_only_has_no_partition_problem(served: str) -> None:
    for partition in ("aws", "aws-cn", "aws-us-gov"):
        problem = partition_problem(f"arn:{partition}:iam::123456789012:role/canopy", served)
        if partition == served:
            assert problem is None
        else:
            assert problem is not None
            assert f"partition {partition!r}" in problem
            assert f"serves partition {served!r} only" in problem


def test_a_malformed_arn_is_left_to_role_arn_problem() -> None:
    assert partition_problem("arn:aws-cn:iam::123:role/x", "aws") is None


def test_parse_role_arn_of_malformed_arn_raises_value_error() -> None:
    with pytest.raises(ValueError, match="must look like"):
        parse_role_arn("arn:aws:iam::123:role/x")


# Role names


@pytest.mark.parametrize("name", ["canopy", "Canopy-Member_Role", "a", "r" * 64, "x+=,.@-_9", "A1"])
def test_valid_role_name_has_no_problem(name: str) -> None:
    assert role_name_problem(name) is None


@pytest.mark.parametrize(
    "name", ["r" * 65, "has space", "slash/name", "rôle", "name\n", "colon:name", "name*"]
)
def test_invalid_role_name_is_described(name: str) -> None:
    assert role_name_problem(name) == "must be 1-64 characters of letters, digits and '_+=,.@-'"


def test_empty_role_name_is_required() -> None:
    assert role_name_problem("") == "is required"


# External ids


def test_new_external_id_is_owner_then_eight_random_characters() -> None:
    external_id = new_external_id(OWNER)
    owner, _, suffix = external_id.partition(":")
    assert owner == OWNER
    assert EXTERNAL_ID_SUFFIX.match(suffix)


def test_new_external_id_keeps_a_given_suffix() -> None:
    assert new_external_id(TENANT, "k3j9x0ab") == f"{TENANT}:k3j9x0ab"


def test_new_external_id_with_seeded_rng_is_reproducible() -> None:
    first = new_external_id(OWNER, rng=random.Random(7))
    assert first == new_external_id(OWNER, rng=random.Random(7))


def test_new_external_ids_differ_between_calls() -> None:
    assert len({new_external_id(OWNER) for _ in range(20)}) == 20


@pytest.mark.parametrize("suffix", ["short", "toolong123", "UPPER123", "abc-1234", ""])
def test_new_external_id_refuses_malformed_suffix(suffix: str) -> None:
    with pytest.raises(ValueError, match="must be 8 characters of"):
        new_external_id(OWNER, suffix)


@pytest.mark.parametrize("owner", ["w_abc", "o_", "O_abc", "o-abc", "", "o_abc:def"])
def test_new_external_id_refuses_owner_that_is_not_tenant_or_org(owner: str) -> None:
    with pytest.raises(ValueError, match="not a tenant or org id"):
        new_external_id(owner)


@given(owner=owner_ids, seed=st.integers())
def test_generated_external_id_always_passes_for_its_owner(owner: str, seed: int) -> None:
    assert external_id_problem(new_external_id(owner, rng=random.Random(seed)), owner) == (
        None,
        None,
    )


@given(owner=owner_ids, suffix=suffixes)
def test_external_id_with_user_suffix_passes_for_its_owner(owner: str, suffix: str) -> None:
    assert external_id_problem(new_external_id(owner, suffix), owner) == (None, None)


@given(owner=owner_ids, other=owner_ids, suffix=suffixes)
def test_external_id_of_another_owner_is_always_refused(
    owner: str, other: str, suffix: str
) -> None:
    assume(owner != other)
    description, reason = external_id_problem(f"{other}:{suffix}", owner)
    assert reason == EXTERNAL_ID_OWNER_MISMATCH
    assert description == f"names another owner (must start with '{owner}:')"


def test_tenant_external_id_is_refused_for_org_integration_of_that_tenant() -> None:
    # An org-scoped integration must use the org's id, not its tenant's.
    description, reason = external_id_problem(f"{TENANT}:abcd1234", OWNER)
    assert reason == EXTERNAL_ID_OWNER_MISMATCH
    assert description == f"names another owner (must start with '{OWNER}:')"


@pytest.mark.parametrize(
    "external_id",
    [
        f"{OWNER}",  # no suffix
        f"{OWNER}:",  # empty suffix
        f"{OWNER}:abc1234",  # 7 characters
        f"{OWNER}:abc123456",  # 9 characters
        f"{OWNER}:ABCD1234",  # upper case
        f"{OWNER}:abcd-123",
        f"{OWNER}:abcd1234:x",
        f"{OWNER}:abcd1234\n",
        "w_abc:abcd1234",  # a workspace is not an owner
        ":abcd1234",
        "abcd1234",
    ],
)
def test_malformed_external_id_is_invalid(external_id: str) -> None:
    description, reason = external_id_problem(external_id, OWNER)
    assert reason == INVALID_EXTERNAL_ID
    assert description is not None
    assert description.startswith("must be '<tenant or org id>:<suffix>'")


def test_empty_external_id_is_required() -> None:
    assert external_id_problem("", OWNER) == ("is required", INVALID_EXTERNAL_ID)


@pytest.mark.parametrize("suffix", ["abcd1234", "00000000", "zzzzzzzz"])
def test_valid_external_id_suffix_has_no_problem(suffix: str) -> None:
    assert external_id_suffix_problem(suffix) is None


@pytest.mark.parametrize("suffix", ["abcd123", "abcd12345", "ABCD1234", "abcd_123", ""])
def test_invalid_external_id_suffix_is_described(suffix: str) -> None:
    assert external_id_suffix_problem(suffix) == "must be 8 characters of [a-z0-9]"


# Organizations identifiers


@pytest.mark.parametrize(
    ("pattern", "valid", "invalid"),
    [
        (
            ACCOUNT_ID,
            ["123456789012", "000000000000"],
            ["12345678901", "1234567890123", "12345678901a", "123456789012\n", "١٢٣٤٥٦٧٨٩٠١٢"],
        ),
        (
            OU_ID,
            ["ou-ab12-cdef3456", "ou-" + "a" * 32 + "-" + "b" * 32],
            ["ou-abc-cdef3456", "ou-ab12-cdef345", "OU-ab12-cdef3456", "ou-ab12-cdef3456\n"],
        ),
        (
            ROOT_ID,
            ["r-ab12", "r-" + "a" * 32],
            ["r-ab1", "r-" + "a" * 33, "r-AB12", "root-ab12", "r-ab12\n"],
        ),
        (
            ORGANIZATION_ID,
            ["o-abcdefghij", "o-" + "a1" * 16],
            ["o-abcdefghi", "o-" + "a" * 33, "o-ABCDEFGHIJ", "o_abcdefghij", "o-abcdefghij\n"],
        ),
    ],
    ids=["account", "ou", "root", "organization"],
)
def test_organizations_id_patterns_accept_aws_shapes_only(
    pattern: re.Pattern[str], valid: list[str], invalid: list[str]
) -> None:
    assert [value for value in valid if not pattern.match(value)] == []
    assert [value for value in invalid if pattern.match(value)] == []
