"""Connection settings: validation, inheritance (connection over integration over defaults), the
derived member credentials, and field-mask updates.

Pure functions over `ConnectionConfig`; `api.py` maps them to and from protobuf.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any, TypeVar

from canopy_core.validation import Violations
from canopy_integration.aws import parse_role_arn
from canopy_integration.model import (
    CONFIG_FIELDS,
    DEFAULT_CONFIG,
    ConnectionConfig,
    EffectiveConfig,
    Integration,
)
from canopy_integration.regions import pattern_problem, region_problem

MAX_REGION_LENGTH = 32
MAX_LIST_ITEMS = 100
MAX_ERROR_CODE_LENGTH = 128
MAX_ERROR_MESSAGE_LENGTH = 512
MAX_ENDPOINT_URL_LENGTH = 2048
MAX_RETRY_ATTEMPTS = 100
MAX_RETRY_DELAY_MS = 60_000

# A region, or a pattern of regions: `*`, `us-east-1`, `eu-*`, `us-east-*`, `us-east-?`.
REGION_PATTERN = re.compile(r"^(?:\*|[a-z?]{2}(?:-[a-z0-9?]+)*(?:-\*)?)\Z", re.ASCII)
# One concrete region: `us-east-1`, `us-gov-west-1`, `cn-north-1`.
REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+\Z", re.ASCII)
ERROR_CODE = re.compile(r"^[A-Za-z0-9_.*?:-]{1,128}\Z", re.ASCII)

WHOLE_CONFIG = ""

_T = TypeVar("_T")


def validate_config(
    config: ConnectionConfig, path: str, v: Violations, *, overrides: bool, partition: str
) -> None:
    """Record a violation at `<path>.<field>` for each set field of `config` that is invalid.

    Regions must be regions of `partition` (the deployment's), and a pattern must match one.

    `overrides` says `config` is a connection's overrides rather than an integration's settings:
    there an empty `default_region` or `endpoint_url` is allowed and means "none for this
    connection" (the plugin's region choice, AWS's endpoints) instead of inheriting.
    """
    unset_hint = "leave unset to inherit" if overrides else "leave unset for the default"
    if config.regions is not None:
        _validate_regions(config.regions, f"{path}.regions", v, unset_hint, partition)
    if config.default_region == "":
        if not overrides:
            v.add(f"{path}.default_region", f"must not be empty; {unset_hint}")
    elif config.default_region is not None:
        if not REGION.match(config.default_region):
            v.add(
                f"{path}.default_region",
                "must be one AWS region such as 'us-east-1' (no wildcards)",
            )
        elif problem := region_problem(config.default_region, partition):
            v.add(f"{path}.default_region", problem)
    _validate_range(
        config.max_error_retry_attempts,
        f"{path}.max_error_retry_attempts",
        v,
        1,
        MAX_RETRY_ATTEMPTS,
    )
    _validate_range(
        config.min_error_retry_delay_ms,
        f"{path}.min_error_retry_delay_ms",
        v,
        1,
        MAX_RETRY_DELAY_MS,
    )
    if config.ignore_error_codes is not None:
        _validate_error_codes(config.ignore_error_codes, f"{path}.ignore_error_codes", v)
    if config.ignore_error_messages is not None:
        _validate_error_messages(config.ignore_error_messages, f"{path}.ignore_error_messages", v)
    if config.endpoint_url == "":
        if not overrides:
            v.add(f"{path}.endpoint_url", f"must not be empty; {unset_hint}")
    elif config.endpoint_url is not None:
        problem = _endpoint_url_problem(config.endpoint_url)
        if problem is not None:
            v.add(f"{path}.endpoint_url", problem)


def _validate_regions(
    regions: Sequence[str], path: str, v: Violations, unset_hint: str, partition: str
) -> None:
    if not regions:
        v.add(path, f"must not be empty; {unset_hint}")
        return
    if len(regions) > MAX_LIST_ITEMS:
        v.add(path, f"must have at most {MAX_LIST_ITEMS} items")
    first_index: dict[str, int] = {}
    for index, region in enumerate(regions):
        item = f"{path}[{index}]"
        if len(region) > MAX_REGION_LENGTH:
            v.add(item, f"must be at most {MAX_REGION_LENGTH} characters")
        elif not REGION_PATTERN.match(region):
            v.add(
                item,
                "must be '*', an AWS region such as 'us-east-1', or a pattern such as 'eu-*' "
                "(lower case, '-' between parts, '*' only at the end, '?' for one character)",
            )
        elif region in first_index:
            v.add(item, f"duplicates {path}[{first_index[region]}]")
        elif problem := pattern_problem(region, partition):
            v.add(item, problem)
        else:
            first_index[region] = index


def _validate_range(value: int | None, path: str, v: Violations, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        v.add(path, f"must be between {low} and {high}")


def _validate_error_codes(codes: Sequence[str], path: str, v: Violations) -> None:
    if len(codes) > MAX_LIST_ITEMS:
        v.add(path, f"must have at most {MAX_LIST_ITEMS} items")
    for index, code in enumerate(codes):
        if not ERROR_CODE.match(code):
            v.add(
                f"{path}[{index}]",
                f"must be 1-{MAX_ERROR_CODE_LENGTH} characters of letters, digits and '_.:-', "
                "with '*' and '?' wildcards",
            )


def _validate_error_messages(patterns: Sequence[str], path: str, v: Violations) -> None:
    if len(patterns) > MAX_LIST_ITEMS:
        v.add(path, f"must have at most {MAX_LIST_ITEMS} items")
    for index, pattern in enumerate(patterns):
        item = f"{path}[{index}]"
        if not pattern:
            v.add(item, "must not be empty (it would match every error)")
        elif len(pattern) > MAX_ERROR_MESSAGE_LENGTH:
            v.add(item, f"must be at most {MAX_ERROR_MESSAGE_LENGTH} characters")
        else:
            try:
                re.compile(pattern)
            except re.error as error:
                v.add(item, f"must be a valid regular expression: {error}")


def _endpoint_url_problem(url: str) -> str | None:
    if len(url) > MAX_ENDPOINT_URL_LENGTH:
        return f"must be at most {MAX_ENDPOINT_URL_LENGTH} characters"
    rule = "must be an http:// or https:// URL with a host, e.g. 'http://localhost:4566'"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return rule
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return rule
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return rule
    return None


def resolve(integration_config: ConnectionConfig, overrides: ConnectionConfig) -> ConnectionConfig:
    """Each field from `overrides` if set, else from `integration_config` if set, else the
    default (`DEFAULT_CONFIG`; its `default_region` and `endpoint_url` stay None)."""
    values: dict[str, Any] = {}
    for name in CONFIG_FIELDS:
        for source in (overrides, integration_config, DEFAULT_CONFIG):
            value = getattr(source, name)
            if value is not None:
                values[name] = value
                break
    return ConnectionConfig(**values)


def member_role_arn(discovery_role_arn: str, account_id: str, member_role_name: str) -> str:
    """`arn:<partition of the discovery role>:iam::<account_id>:role/<member_role_name>`.

    Raises ValueError if `discovery_role_arn` is not a role ARN.
    """
    return f"arn:{_partition(discovery_role_arn)}:iam::{account_id}:role/{member_role_name}"


@functools.lru_cache(maxsize=1024)
def _partition(role_arn: str) -> str:
    # Every connection read needs it; an integration has one discovery role.
    return parse_role_arn(role_arn).partition


def effective_config(
    integration: Integration, overrides: ConnectionConfig, account_id: str
) -> EffectiveConfig:
    """What the connection to `account_id` ends up with: its overrides over the integration's
    settings over the defaults, the member role in that account, and the member external id
    (the discovery one when the integration has none)."""
    resolved = resolve(integration.connection_config, overrides)
    return EffectiveConfig(
        regions=_required(resolved.regions),
        default_region=resolved.default_region or "",
        max_error_retry_attempts=_required(resolved.max_error_retry_attempts),
        min_error_retry_delay_ms=_required(resolved.min_error_retry_delay_ms),
        ignore_error_codes=_required(resolved.ignore_error_codes),
        ignore_error_messages=_required(resolved.ignore_error_messages),
        endpoint_url=resolved.endpoint_url or "",
        s3_force_path_style=_required(resolved.s3_force_path_style),
        role_arn=member_role_arn(
            integration.discovery_role_arn, account_id, integration.member_role_name
        ),
        external_id=integration.member_external_id or integration.discovery_external_id,
        overridden_fields=overrides.set_fields(),
    )


def _required(value: _T | None) -> _T:
    # DEFAULT_CONFIG sets every field but default_region and endpoint_url.
    if value is None:
        raise AssertionError("DEFAULT_CONFIG leaves a required setting unset")
    return value


def config_changes(before: EffectiveConfig, after: EffectiveConfig) -> tuple[str, ...]:
    """Names of the EffectiveConfig fields that differ, in declaration order.

    `overridden_fields` counts too: a connection that starts or stops overriding a setting has
    changed even when the value it ends up with is the same.
    """
    return tuple(
        f.name for f in fields(EffectiveConfig) if getattr(before, f.name) != getattr(after, f.name)
    )


def apply_config_mask(
    current: ConnectionConfig, given: ConnectionConfig, paths: Sequence[str]
) -> ConnectionConfig:
    """`current` with each field named in `paths` taken from `given` (None clears it).

    `paths` are ConnectionConfig field names relative to the config (`regions`), or `""` for the
    whole config. Raises ValueError for any other name: callers validate the mask first.
    """
    unknown = [path for path in paths if path != WHOLE_CONFIG and path not in CONFIG_FIELDS]
    if unknown:
        raise ValueError(f"unknown ConnectionConfig field(s): {', '.join(map(repr, unknown))}")
    if WHOLE_CONFIG in paths:
        return given
    return replace(current, **{name: getattr(given, name) for name in paths})
