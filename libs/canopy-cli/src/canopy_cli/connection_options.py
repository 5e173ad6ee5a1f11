"""The connection settings as command-line options (`--regions`, `--default-region`,
`--max-error-retry-attempts`, …, `--unset`), declared once for the three commands that take them:
`integrations create` and `integrations update` (the settings every connection inherits) and
`connections update` (one connection's overrides).

`with_connection_options` adds the options to a command and hands it one `ConnectionSettings`
instead; it writes the given settings into a `ConnectionConfig` and names their update-mask paths.
"""

from __future__ import annotations

import enum
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from canopy.integration.v1 import integration_pb2 as pb
from canopy.type.v1 import types_pb2


class Setting(enum.StrEnum):
    """A connection setting, as `--unset` names it: its option without the dashes."""

    regions = "regions"
    default_region = "default-region"
    max_error_retry_attempts = "max-error-retry-attempts"
    min_error_retry_delay = "min-error-retry-delay"
    ignore_error_codes = "ignore-error-codes"
    ignore_error_messages = "ignore-error-messages"
    endpoint_url = "endpoint-url"
    s3_force_path_style = "s3-force-path-style"


#: The `ConnectionConfig` field each setting writes.
FIELDS = {
    Setting.regions: "regions",
    Setting.default_region: "default_region",
    Setting.max_error_retry_attempts: "max_error_retry_attempts",
    Setting.min_error_retry_delay: "min_error_retry_delay_ms",
    Setting.ignore_error_codes: "ignore_error_codes",
    Setting.ignore_error_messages: "ignore_error_messages",
    Setting.endpoint_url: "endpoint_url",
    Setting.s3_force_path_style: "s3_force_path_style",
}
_LISTS = {"regions", "ignore_error_codes", "ignore_error_messages"}

# The command's parameter name for each setting, and its option.
_OPTIONS: dict[Setting, Any] = {
    Setting.regions: Annotated[
        str | None,
        typer.Option(
            "--regions", help='Comma-separated regions, wildcards allowed (us-*); default "*".'
        ),
    ],
    Setting.default_region: Annotated[
        str | None,
        typer.Option("--default-region", help="The region of global services such as IAM."),
    ],
    Setting.max_error_retry_attempts: Annotated[
        int | None,
        typer.Option(
            "--max-error-retry-attempts", min=1, help="Attempts before an AWS error is final (9)."
        ),
    ],
    Setting.min_error_retry_delay: Annotated[
        int | None,
        typer.Option(
            "--min-error-retry-delay", min=1, help="Shortest backoff between attempts, in ms (25)."
        ),
    ],
    Setting.ignore_error_codes: Annotated[
        str | None,
        typer.Option(
            "--ignore-error-codes",
            help="Comma-separated AWS error codes read as no rows (AccessDenied; wildcards).",
        ),
    ],
    Setting.ignore_error_messages: Annotated[
        list[str] | None,
        typer.Option(
            "--ignore-error-message",
            metavar="REGEX",
            help="An error whose message matches this regular expression reads as no rows; "
            "repeat for several.",
        ),
    ],
    Setting.endpoint_url: Annotated[
        str | None,
        typer.Option("--endpoint-url", help="A custom AWS endpoint (http:// or https://)."),
    ],
    Setting.s3_force_path_style: Annotated[
        bool | None,
        typer.Option(
            "--s3-force-path-style/--no-s3-force-path-style",
            help="Address S3 buckets by path rather than virtual host.",
            show_default=False,
        ),
    ],
}


@dataclass(frozen=True)
class ConnectionSettings:
    """The connection settings given on the command line: values to set, settings to unset."""

    values: dict[str, Any]  # ConnectionConfig field → value; None (from "") unsets it
    unset: frozenset[str]  # ConnectionConfig fields

    def write(self, config: pb.ConnectionConfig, prefix: str) -> list[str]:
        """Set the given values in `config` (a new one: a setting to unset is left unset); the
        mask paths (`prefix` + field) of every setting given or unset, in declaration order."""
        paths: list[str] = []
        for field in FIELDS.values():
            value = self.values.get(field)
            if field in _LISTS and value is not None:
                getattr(config, field).CopyFrom(types_pb2.StringList(values=value))
            elif value is not None:
                setattr(config, field, value)
            if field in self.values or field in self.unset:
                paths.append(prefix + field)
        return paths


def _value(field: str, given: Any) -> Any:
    """The option's value as the field holds it; None (unset) for "" and lists of nothing."""
    if field in ("regions", "ignore_error_codes"):
        given = [part.strip() for part in given.split(",") if part.strip()]
    if given == "" or given == []:
        return None
    return list(given) if field in _LISTS else given


def settings_of(given: dict[Setting, Any], unset: list[Setting]) -> ConnectionSettings:
    """The settings of the options given; an option given and unset at once is a usage error."""
    both = [setting for setting in unset if given.get(setting) is not None]
    if both:
        raise typer.BadParameter(f"{', '.join(both)} is both given and unset", param_hint="--unset")
    values = {
        FIELDS[setting]: _value(FIELDS[setting], value)
        for setting, value in given.items()
        if value is not None
    }
    return ConnectionSettings(values, frozenset(FIELDS[setting] for setting in unset))


#: The default of a command's `connection` parameter (the decorator always passes one).
NO_SETTINGS = ConnectionSettings({}, frozenset())

_Command = TypeVar("_Command", bound=Callable[..., None])


def with_connection_options(*, unset_help: str | None) -> Callable[[_Command], _Command]:
    """Give the command the connection settings options (and `--unset SETTING` with this help,
    unless None), placed before its `--dry-run`, `--yes` and `--output`; it receives them as
    `connection: ConnectionSettings`."""

    def decorate(command: _Command) -> _Command:
        signature = inspect.signature(command, eval_str=True)
        added = [
            inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, annotation=t, default=None)
            for s, t in _OPTIONS.items()
        ]
        if unset_help is not None:
            unset_type = Annotated[
                list[Setting] | None,
                typer.Option(
                    "--unset",
                    metavar="SETTING",
                    help=f"{unset_help} SETTING: {', '.join(Setting)}.",
                ),
            ]
            added.append(
                inspect.Parameter(
                    "unset", inspect.Parameter.KEYWORD_ONLY, annotation=unset_type, default=None
                )
            )
        kept = [p for p in signature.parameters.values() if p.name != "connection"]
        ends = ("dry_run", "yes", "output")
        at = next((i for i, p in enumerate(kept) if p.name in ends), len(kept))
        after = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept[at:]]
        parameters = [*kept[:at], *added, *after]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            given = {setting: kwargs.pop(setting.name) for setting in _OPTIONS}
            unset = kwargs.pop("unset", None) or []
            command(*args, connection=settings_of(given, unset), **kwargs)

        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # typer must read the new signature, not the command's
        return wrapper  # type: ignore[return-value]

    return decorate
