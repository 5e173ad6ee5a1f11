"""Connection settings: validation, inheritance, derived credentials, field-mask updates."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canopy_core.errors import FieldViolation, InvalidArgument
from canopy_core.validation import Violations
from canopy_integration.config import (
    apply_config_mask,
    config_changes,
    effective_config,
    member_role_arn,
    resolve,
    validate_config,
)
from canopy_integration.model import (
    CONFIG_FIELDS,
    DEFAULT_CONFIG,
    ConnectionConfig,
    EffectiveConfig,
    Integration,
    Scope,
)

INTEGRATION_PATH = "integration.connection_config"
OVERRIDES_PATH = "connection.config_overrides"


def violations_of(
    config: ConnectionConfig, *, overrides: bool = False, partition: str = "aws"
) -> list[FieldViolation]:
    v = Violations()
    path = OVERRIDES_PATH if overrides else INTEGRATION_PATH
    validate_config(config, path, v, overrides=overrides, partition=partition)
    return v.found


def fields_of(
    config: ConnectionConfig, *, overrides: bool = False, partition: str = "aws"
) -> list[str]:
    return [
        found.field for found in violations_of(config, overrides=overrides, partition=partition)
    ]


def make_integration(**changes: object) -> Integration:
    integration = Integration(
        id="i_01jd8x4k2m",
        scope=Scope(tenant_id="t_acme", org_id="o_cugqnt0sb890gkker123"),
        handle="aws_org",
        discovery_role_arn="arn:aws:iam::111111111111:role/ops/canopy-discovery",
        discovery_external_id="o_cugqnt0sb890gkker123:disc0ver",
        member_role_name="canopy-member",
    )
    return replace(integration, **changes)  # type: ignore[arg-type]


# validate_config: what is checked


@pytest.mark.parametrize("overrides", [False, True])
def test_unset_config_has_no_violations(overrides: bool) -> None:
    assert violations_of(ConnectionConfig(), overrides=overrides) == []


def test_default_config_is_valid() -> None:
    assert violations_of(replace(DEFAULT_CONFIG, default_region="us-east-1")) == []


def test_every_bad_field_is_reported_at_once() -> None:
    config = ConnectionConfig(
        regions=("US-EAST-1",),
        default_region="*",
        max_error_retry_attempts=0,
        min_error_retry_delay_ms=0,
        ignore_error_codes=("bad code",),
        ignore_error_messages=("(",),
        endpoint_url="ftp://example.com",
    )
    assert fields_of(config, overrides=True) == [
        f"{OVERRIDES_PATH}.regions[0]",
        f"{OVERRIDES_PATH}.default_region",
        f"{OVERRIDES_PATH}.max_error_retry_attempts",
        f"{OVERRIDES_PATH}.min_error_retry_delay_ms",
        f"{OVERRIDES_PATH}.ignore_error_codes[0]",
        f"{OVERRIDES_PATH}.ignore_error_messages[0]",
        f"{OVERRIDES_PATH}.endpoint_url",
    ]


def test_bad_config_in_violations_context_raises_invalid_argument_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as raised, Violations() as v:
        validate_config(
            ConnectionConfig(max_error_retry_attempts=101),
            INTEGRATION_PATH,
            v,
            overrides=False,
            partition="aws",
        )
    assert raised.value.violations == [
        FieldViolation(f"{INTEGRATION_PATH}.max_error_retry_attempts", "must be between 1 and 100")
    ]


# regions


@pytest.mark.parametrize(
    ("partition", "regions"),
    [
        ("aws", ("*",)),
        ("aws", ("us-east-1",)),
        ("aws-us-gov", ("us-gov-west-1",)),
        ("aws-cn", ("cn-north-1",)),
        ("aws-cn", ("*", "cn-*")),
        ("aws", ("eu-*",)),
        ("aws", ("us-east-*",)),
        ("aws", ("us-east-?",)),
        ("aws", ("ap-southeast-1", "eu-west-2", "us-*")),
        ("aws", ("?a-*",)),  # ca-central-1, sa-east-1
    ],
)
def test_regions_of_the_partition_and_patterns_matching_them_are_valid(
    partition: str, regions: tuple[str, ...]
) -> None:
    assert violations_of(ConnectionConfig(regions=regions), partition=partition) == []


@pytest.mark.parametrize(
    ("partition", "region", "problem"),
    [
        ("aws", "us", "'us' is not a region of the AWS partition 'aws'"),
        ("aws", "zz-foo", "'zz-foo' is not a region of the AWS partition 'aws'"),
        ("aws", "eu-west-10", "'eu-west-10' is not a region of the AWS partition 'aws'"),
        ("aws", "us-gov-west-1", "'us-gov-west-1' is not a region of the AWS partition 'aws'"),
        ("aws-cn", "us-east-1", "'us-east-1' is not a region of the AWS partition 'aws-cn'"),
        ("aws", "zz-*", "the pattern 'zz-*' matches no region of the AWS partition 'aws'"),
        ("aws", "us-east-?0", "the pattern 'us-east-?0' matches no region"),
        ("aws-us-gov", "eu-*", "the pattern 'eu-*' matches no region of the AWS partition"),
    ],
)
def test_region_or_pattern_naming_no_region_of_the_partition_is_refused_at_its_index(
    partition: str, region: str, problem: str
) -> None:
    found = violations_of(
        ConnectionConfig(regions=("*", region)), overrides=True, partition=partition
    )
    assert [v.field for v in found] == [f"{OVERRIDES_PATH}.regions[1]"]
    assert found[0].description.startswith(problem)


@pytest.mark.parametrize(
    "region",
    [
        "us--east",
        "US-EAST-1",
        "us east",
        "",
        "u",
        "usa-east-1",
        "us-east-1-",
        "-us-east-1",
        "*-east-1",
        "us*",
        "us-*-1",
        "**",
        "us-east-1\n",
        "us_east_1",
    ],
)
def test_malformed_region_is_reported_at_its_index(region: str) -> None:
    found = violations_of(ConnectionConfig(regions=("us-east-1", region)))
    assert [v.field for v in found] == [f"{INTEGRATION_PATH}.regions[1]"]
    assert found[0].description.startswith("must be '*', an AWS region such as 'us-east-1'")


def test_region_longer_than_32_characters_is_reported() -> None:
    region = "us-" + "a" * 30
    found = violations_of(ConnectionConfig(regions=(region,)))
    assert found == [
        FieldViolation(f"{INTEGRATION_PATH}.regions[0]", "must be at most 32 characters")
    ]


def test_duplicate_region_is_reported_at_the_repeat() -> None:
    found = violations_of(ConnectionConfig(regions=("us-east-1", "eu-*", "us-east-1")))
    assert found == [
        FieldViolation(
            f"{INTEGRATION_PATH}.regions[2]", f"duplicates {INTEGRATION_PATH}.regions[0]"
        )
    ]


def test_empty_override_regions_tell_to_leave_unset_to_inherit() -> None:
    assert violations_of(ConnectionConfig(regions=()), overrides=True) == [
        FieldViolation(f"{OVERRIDES_PATH}.regions", "must not be empty; leave unset to inherit")
    ]


def test_empty_integration_regions_tell_to_leave_unset_for_the_default() -> None:
    assert violations_of(ConnectionConfig(regions=())) == [
        FieldViolation(
            f"{INTEGRATION_PATH}.regions", "must not be empty; leave unset for the default"
        )
    ]


def test_more_than_100_regions_are_refused() -> None:
    regions = tuple(f"us-east-{i}" for i in range(101))
    assert fields_of(ConnectionConfig(regions=regions))[0] == f"{INTEGRATION_PATH}.regions"


# default_region


@pytest.mark.parametrize(
    ("partition", "region"),
    [("aws", "us-east-1"), ("aws-us-gov", "us-gov-west-1"), ("aws-cn", "cn-northwest-1")],
)
def test_default_region_of_the_partition_is_valid(partition: str, region: str) -> None:
    assert violations_of(ConnectionConfig(default_region=region), partition=partition) == []


@pytest.mark.parametrize(
    ("partition", "region"),
    [("aws", "eu-west-10"), ("aws", "zz-foo-1"), ("aws", "cn-north-1"), ("aws-cn", "us-east-1")],
)
def test_default_region_not_of_the_partition_is_refused_naming_it(
    partition: str, region: str
) -> None:
    found = violations_of(ConnectionConfig(default_region=region), partition=partition)
    assert [v.field for v in found] == [f"{INTEGRATION_PATH}.default_region"]
    assert found[0].description.startswith(
        f"{region!r} is not a region of the AWS partition {partition!r}"
    )


@pytest.mark.parametrize(
    "region", ["*", "us-east-*", "us-east", "US-EAST-1", "us-east-1a", "useast1", "us-east-1\n"]
)
def test_wildcard_or_malformed_default_region_is_refused(region: str) -> None:
    assert violations_of(ConnectionConfig(default_region=region)) == [
        FieldViolation(
            f"{INTEGRATION_PATH}.default_region",
            "must be one AWS region such as 'us-east-1' (no wildcards)",
        )
    ]


def test_empty_default_region_override_means_none_for_the_connection() -> None:
    assert violations_of(ConnectionConfig(default_region=""), overrides=True) == []


def test_empty_default_region_on_integration_is_refused() -> None:
    assert fields_of(ConnectionConfig(default_region="")) == [f"{INTEGRATION_PATH}.default_region"]


# retries


@pytest.mark.parametrize("attempts", [1, 9, 100])
def test_retry_attempts_within_1_to_100_are_valid(attempts: int) -> None:
    assert violations_of(ConnectionConfig(max_error_retry_attempts=attempts)) == []


@pytest.mark.parametrize("attempts", [-1, 0, 101])
def test_retry_attempts_outside_1_to_100_are_refused(attempts: int) -> None:
    assert violations_of(ConnectionConfig(max_error_retry_attempts=attempts)) == [
        FieldViolation(f"{INTEGRATION_PATH}.max_error_retry_attempts", "must be between 1 and 100")
    ]


@pytest.mark.parametrize("delay", [1, 25, 60_000])
def test_retry_delay_within_1_to_60000_ms_is_valid(delay: int) -> None:
    assert violations_of(ConnectionConfig(min_error_retry_delay_ms=delay)) == []


@pytest.mark.parametrize("delay", [-5, 0, 60_001])
def test_retry_delay_outside_1_to_60000_ms_is_refused(delay: int) -> None:
    assert violations_of(ConnectionConfig(min_error_retry_delay_ms=delay)) == [
        FieldViolation(
            f"{INTEGRATION_PATH}.min_error_retry_delay_ms", "must be between 1 and 60000"
        )
    ]


# ignore_error_codes


@pytest.mark.parametrize(
    "code", ["AccessDenied", "UnauthorizedOperation", "*NotFound*", "Throttl?ng", "ns:Code.x-1_2"]
)
def test_valid_error_code_is_accepted(code: str) -> None:
    assert violations_of(ConnectionConfig(ignore_error_codes=(code,))) == []


def test_error_code_of_128_characters_is_accepted() -> None:
    assert violations_of(ConnectionConfig(ignore_error_codes=("A" * 128,))) == []


@pytest.mark.parametrize("code", ["", "A" * 129, "Access Denied", "Denied!", "Dénied", "a/b"])
def test_invalid_error_code_is_reported_at_its_index(code: str) -> None:
    found = violations_of(ConnectionConfig(ignore_error_codes=("AccessDenied", code)))
    assert [v.field for v in found] == [f"{INTEGRATION_PATH}.ignore_error_codes[1]"]


def test_more_than_100_error_codes_are_refused() -> None:
    codes = tuple(f"Code{i}" for i in range(101))
    assert fields_of(ConnectionConfig(ignore_error_codes=codes)) == [
        f"{INTEGRATION_PATH}.ignore_error_codes"
    ]


def test_empty_error_code_list_is_valid() -> None:
    assert violations_of(ConnectionConfig(ignore_error_codes=()), overrides=True) == []


# ignore_error_messages


@pytest.mark.parametrize(
    "pattern", ["^AccessDenied", ".*not authorized.*", r"(?i)opt-?in required", "x" * 512]
)
def test_compiling_error_message_pattern_is_accepted(pattern: str) -> None:
    assert violations_of(ConnectionConfig(ignore_error_messages=(pattern,))) == []


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("(", "missing ), unterminated subpattern at position 0"),
        ("[a-", "unterminated character set at position 0"),
        ("*x", "nothing to repeat at position 0"),
    ],
)
def test_error_message_pattern_that_does_not_compile_names_the_re_error(
    pattern: str, error: str
) -> None:
    assert violations_of(ConnectionConfig(ignore_error_messages=("ok", pattern))) == [
        FieldViolation(
            f"{INTEGRATION_PATH}.ignore_error_messages[1]",
            f"must be a valid regular expression: {error}",
        )
    ]


def test_error_message_pattern_longer_than_512_characters_is_refused() -> None:
    assert violations_of(ConnectionConfig(ignore_error_messages=("x" * 513,))) == [
        FieldViolation(
            f"{INTEGRATION_PATH}.ignore_error_messages[0]", "must be at most 512 characters"
        )
    ]


def test_empty_error_message_pattern_is_refused() -> None:
    assert fields_of(ConnectionConfig(ignore_error_messages=("",))) == [
        f"{INTEGRATION_PATH}.ignore_error_messages[0]"
    ]


def test_more_than_100_error_message_patterns_are_refused() -> None:
    patterns = tuple(f"message {i}" for i in range(101))
    assert fields_of(ConnectionConfig(ignore_error_messages=patterns)) == [
        f"{INTEGRATION_PATH}.ignore_error_messages"
    ]


# endpoint_url


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:4566",
        "https://s3.example.com",
        "https://vpce-123.example.com/base/path?x=1",
        "http://127.0.0.1:5000/",
        "http://[::1]:4566",
    ],
)
def test_http_or_https_endpoint_with_host_is_valid(url: str) -> None:
    assert violations_of(ConnectionConfig(endpoint_url=url)) == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com",
        "localhost:4566",
        "example.com",
        "http://",
        "https:///path",
        "http://host:99999",
        "http://host:port",
        "http://exa mple.com",
        "http://example.com\n",
        "HTTP//example.com",
    ],
)
def test_endpoint_that_is_not_http_url_with_host_is_refused(url: str) -> None:
    assert violations_of(ConnectionConfig(endpoint_url=url)) == [
        FieldViolation(
            f"{INTEGRATION_PATH}.endpoint_url",
            "must be an http:// or https:// URL with a host, e.g. 'http://localhost:4566'",
        )
    ]


def test_endpoint_longer_than_2048_characters_is_refused() -> None:
    url = "https://example.com/" + "p" * 2029
    assert len(url) == 2049
    assert violations_of(ConnectionConfig(endpoint_url=url)) == [
        FieldViolation(f"{INTEGRATION_PATH}.endpoint_url", "must be at most 2048 characters")
    ]


def test_empty_endpoint_override_means_aws_for_the_connection() -> None:
    assert violations_of(ConnectionConfig(endpoint_url=""), overrides=True) == []


def test_empty_endpoint_on_integration_is_refused() -> None:
    assert violations_of(ConnectionConfig(endpoint_url="")) == [
        FieldViolation(
            f"{INTEGRATION_PATH}.endpoint_url", "must not be empty; leave unset for the default"
        )
    ]


# resolve

# A value for every field, different from the default and from each other source.
INTEGRATION_VALUES = ConnectionConfig(
    regions=("eu-*",),
    default_region="eu-west-1",
    max_error_retry_attempts=5,
    min_error_retry_delay_ms=100,
    ignore_error_codes=("AccessDenied",),
    ignore_error_messages=("^denied",),
    endpoint_url="http://localhost:4566",
    s3_force_path_style=True,
)
OVERRIDE_VALUES = ConnectionConfig(
    regions=("us-east-1",),
    default_region="us-east-1",
    max_error_retry_attempts=3,
    min_error_retry_delay_ms=50,
    ignore_error_codes=(),
    ignore_error_messages=("timeout",),
    endpoint_url="",
    s3_force_path_style=False,
)


@pytest.mark.parametrize("name", CONFIG_FIELDS)
def test_resolve_takes_override_over_integration(name: str) -> None:
    overrides = ConnectionConfig(**{name: getattr(OVERRIDE_VALUES, name)})
    resolved = resolve(INTEGRATION_VALUES, overrides)
    assert getattr(resolved, name) == getattr(OVERRIDE_VALUES, name)


@pytest.mark.parametrize("name", CONFIG_FIELDS)
def test_resolve_takes_integration_over_default(name: str) -> None:
    integration_config = ConnectionConfig(**{name: getattr(INTEGRATION_VALUES, name)})
    resolved = resolve(integration_config, ConnectionConfig())
    assert getattr(resolved, name) == getattr(INTEGRATION_VALUES, name)


def test_resolve_with_nothing_set_is_the_default() -> None:
    assert resolve(ConnectionConfig(), ConnectionConfig()) == DEFAULT_CONFIG


def test_resolve_keeps_integration_fields_the_override_leaves_unset() -> None:
    resolved = resolve(INTEGRATION_VALUES, ConnectionConfig(regions=("us-east-1",)))
    assert resolved == replace(INTEGRATION_VALUES, regions=("us-east-1",))


optional_configs = st.builds(
    ConnectionConfig,
    regions=st.none() | st.just(("us-east-1",)),
    default_region=st.none() | st.sampled_from(["", "eu-west-1"]),
    max_error_retry_attempts=st.none() | st.integers(1, 100),
    min_error_retry_delay_ms=st.none() | st.integers(1, 60_000),
    ignore_error_codes=st.none() | st.just(()) | st.just(("AccessDenied",)),
    ignore_error_messages=st.none() | st.just(()) | st.just(("^x",)),
    endpoint_url=st.none() | st.sampled_from(["", "http://localhost:4566"]),
    s3_force_path_style=st.none() | st.booleans(),
)


@given(integration_config=optional_configs, overrides=optional_configs)
def test_resolve_takes_each_field_from_the_first_source_that_sets_it(
    integration_config: ConnectionConfig, overrides: ConnectionConfig
) -> None:
    resolved = resolve(integration_config, overrides)
    for name in CONFIG_FIELDS:
        sources = (overrides, integration_config, DEFAULT_CONFIG)
        expected = next((getattr(s, name) for s in sources if getattr(s, name) is not None), None)
        assert getattr(resolved, name) == expected


# member_role_arn


@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
def test_member_role_arn_takes_the_discovery_role_partition(partition: str) -> None:
    discovery = f"arn:{partition}:iam::111111111111:role/path/canopy-discovery"
    assert (
        member_role_arn(discovery, "222222222222", "canopy-member")
        == f"arn:{partition}:iam::222222222222:role/canopy-member"
    )


def test_member_role_arn_of_malformed_discovery_arn_raises_value_error() -> None:
    with pytest.raises(ValueError, match="must look like"):
        member_role_arn("not-an-arn", "222222222222", "canopy-member")


# effective_config


def test_effective_config_with_nothing_set_is_the_defaults_with_empty_strings() -> None:
    config = effective_config(make_integration(), ConnectionConfig(), "222222222222")
    assert config == EffectiveConfig(
        regions=("*",),
        default_region="",
        max_error_retry_attempts=9,
        min_error_retry_delay_ms=25,
        ignore_error_codes=(),
        ignore_error_messages=(),
        endpoint_url="",
        s3_force_path_style=False,
        role_arn="arn:aws:iam::222222222222:role/canopy-member",
        external_id="o_cugqnt0sb890gkker123:disc0ver",
        overridden_fields=(),
    )


def test_effective_config_role_arn_uses_partition_of_discovery_role() -> None:
    integration = make_integration(
        discovery_role_arn="arn:aws-us-gov:iam::111111111111:role/canopy-discovery"
    )
    config = effective_config(integration, ConnectionConfig(), "333333333333")
    assert config.role_arn == "arn:aws-us-gov:iam::333333333333:role/canopy-member"


def test_effective_config_external_id_falls_back_to_the_discovery_one() -> None:
    config = effective_config(
        make_integration(member_external_id=""), ConnectionConfig(), "222222222222"
    )
    assert config.external_id == "o_cugqnt0sb890gkker123:disc0ver"


def test_effective_config_external_id_is_the_member_one_when_set() -> None:
    integration = make_integration(member_external_id="o_cugqnt0sb890gkker123:memb3r00")
    config = effective_config(integration, ConnectionConfig(), "222222222222")
    assert config.external_id == "o_cugqnt0sb890gkker123:memb3r00"


def test_effective_config_lists_overridden_fields_in_declaration_order() -> None:
    overrides = ConnectionConfig(s3_force_path_style=False, regions=("us-east-1",))
    config = effective_config(make_integration(), overrides, "222222222222")
    assert config.overridden_fields == ("regions", "s3_force_path_style")


def test_effective_config_combines_override_integration_and_default() -> None:
    integration = make_integration(
        connection_config=ConnectionConfig(regions=("eu-*",), endpoint_url="http://moto:5000")
    )
    overrides = ConnectionConfig(regions=("us-east-1",), max_error_retry_attempts=2)
    config = effective_config(integration, overrides, "222222222222")
    assert (config.regions, config.endpoint_url, config.max_error_retry_attempts) == (
        ("us-east-1",),
        "http://moto:5000",
        2,
    )
    assert config.min_error_retry_delay_ms == 25


def test_effective_config_empty_endpoint_override_clears_the_integration_endpoint() -> None:
    integration = make_integration(
        connection_config=ConnectionConfig(endpoint_url="http://moto:5000")
    )
    config = effective_config(integration, ConnectionConfig(endpoint_url=""), "222222222222")
    assert config.endpoint_url == ""
    assert config.overridden_fields == ("endpoint_url",)


# config_changes


def base_effective() -> EffectiveConfig:
    return effective_config(make_integration(), ConnectionConfig(), "222222222222")


def test_config_changes_of_equal_configs_is_empty() -> None:
    assert config_changes(base_effective(), base_effective()) == ()


def test_config_changes_names_each_changed_field_in_declaration_order() -> None:
    after = replace(base_effective(), external_id="o_x:abcd1234", regions=("us-east-1",))
    assert config_changes(base_effective(), after) == ("regions", "external_id")


def test_config_changes_counts_a_new_override_with_the_same_value() -> None:
    before = base_effective()
    after = effective_config(make_integration(), ConnectionConfig(regions=("*",)), "222222222222")
    assert config_changes(before, after) == ("overridden_fields",)


@pytest.mark.parametrize("name", [f.name for f in fields(EffectiveConfig)])
def test_config_changes_sees_every_field(name: str) -> None:
    before = base_effective()
    value = getattr(before, name)
    changed: Any
    if isinstance(value, bool):
        changed = not value
    elif isinstance(value, int):
        changed = value + 1
    elif isinstance(value, tuple):
        changed = (*value, "extra")
    else:
        changed = value + "x"
    assert config_changes(before, replace(before, **{name: changed})) == (name,)


# apply_config_mask

CURRENT = ConnectionConfig(regions=("eu-*",), max_error_retry_attempts=4, endpoint_url="http://a")
GIVEN = ConnectionConfig(regions=("us-east-1",), default_region="us-east-1")


def test_mask_field_takes_the_given_value() -> None:
    assert apply_config_mask(CURRENT, GIVEN, ["regions"]) == replace(
        CURRENT, regions=("us-east-1",)
    )


def test_mask_field_unset_in_given_is_cleared() -> None:
    assert apply_config_mask(CURRENT, GIVEN, ["max_error_retry_attempts", "endpoint_url"]) == (
        ConnectionConfig(regions=("eu-*",))
    )


def test_mask_field_unset_in_current_becomes_set() -> None:
    assert apply_config_mask(CURRENT, GIVEN, ["default_region"]).default_region == "us-east-1"


def test_empty_mask_changes_nothing() -> None:
    assert apply_config_mask(CURRENT, GIVEN, []) == CURRENT


def test_whole_config_path_replaces_everything() -> None:
    assert apply_config_mask(CURRENT, GIVEN, [""]) == GIVEN


@pytest.mark.parametrize("path", ["region", "connection_config.regions", "regions.0", "REGIONS"])
def test_unknown_mask_path_raises_value_error(path: str) -> None:
    with pytest.raises(ValueError, match="unknown ConnectionConfig field"):
        apply_config_mask(CURRENT, GIVEN, ["regions", path])
