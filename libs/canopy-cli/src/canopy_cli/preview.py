"""Changes that can reach a workspace, made the way `--dry-run` and `--yes` ask: previewed
(`validate_only`) first, and confirmed by a person when they would remove or rename a schema in
any workspace, or the mass-deletion guard would stop them.

Exit status: 0 done (or, with `--dry-run`, the impact printed); 1 a call failed, or the person
declined; 3 the change needs confirmation but there is no terminal to ask on and no `--yes`.
In the last two cases nothing was changed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Protocol, TypeVar

import grpc
import typer
from google.protobuf.message import Message
from rich.console import Console

from canopy.type.v1 import impact_pb2
from canopy_cli.app import PIPE_WIDTH, Output, show
from canopy_cli.client import CliError
from canopy_cli.impact import impact_view, removes_or_renames

DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Change nothing: print what the change would do to the tree and to every workspace.",
    ),
]
YesOption = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Do not ask for confirmation, even if schemas would be removed or renamed.",
    ),
]


class NotConfirmed(CliError):
    """The person answered no: nothing was changed (exit 1)."""

    def __init__(self) -> None:
        super().__init__("not confirmed: nothing changed")


class ConfirmationNeeded(CliError):
    """The change needs confirmation, and there is no terminal to ask on (exit 3)."""

    exit_code = 3

    def __init__(self) -> None:
        super().__init__(
            "this change removes or renames schemas in workspaces (or the deletion guard would "
            "stop it), and there is no terminal to confirm it on: give --yes to make it anyway, "
            "or --dry-run to only see it; nothing changed"
        )


class _Previewable(Protocol):
    """A change request with `validate_only` (AIP-163)."""

    validate_only: bool


class _WithImpact(Protocol):
    """A change's reply, carrying its impact when previewed."""

    @property
    def impact(self) -> impact_pb2.ChangeImpact: ...


_PREVIEW_ATTEMPTS = 3

RequestT = TypeVar("RequestT", bound=Message)
ReplyT = TypeVar("ReplyT", bound=_WithImpact)


def stdin_is_terminal() -> bool:
    """Whether a person can answer a question on stdin."""
    return sys.stdin.isatty()


def error_console() -> Console:
    """Where the impact is shown before a question: stderr, so stdout keeps only the result."""
    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=True, highlight=False, width=PIPE_WIDTH)
    return console


def preview(call: Callable[[RequestT], ReplyT], request: RequestT) -> impact_pb2.ChangeImpact:
    """The impact of `request`, asked with `validate_only` (the request itself is unchanged)."""
    previewed = type(request)()
    previewed.CopyFrom(request)
    previewed.validate_only = True  # type: ignore[attr-defined]
    return call(previewed).impact


def print_impact(impact: impact_pb2.ChangeImpact) -> None:
    """Show the impact before a question (on stderr)."""
    error_console().print(impact_view(impact))


def confirm_impact(impact: impact_pb2.ChangeImpact, question: str = "Make this change?") -> None:
    """Show the impact and ask; raise `NotConfirmed` on no, `ConfirmationNeeded` when no one
    can be asked."""
    print_impact(impact)
    if not stdin_is_terminal():
        raise ConfirmationNeeded()
    if not typer.confirm(question, default=False, err=True):
        raise NotConfirmed()


def make_change(
    call: Callable[[RequestT], ReplyT],
    request: RequestT,
    *,
    dry_run: bool,
    yes: bool,
    output: Output,
    pin_etag: Callable[[RequestT], None] | None = None,
) -> ReplyT | None:
    """Make the change `request` describes. With `dry_run`, print its impact and return None.
    Otherwise, unless `yes`, preview it first and ask when it removes or renames schemas; then
    make it. A change that was asked about is made with the etag `pin_etag` sets on a request
    (the resource's current one, read before the preview): the change made is the change
    shown, or it fails ABORTED. Other changes are made as given, so that a resource that
    changes often (an integration's sync state) does not fail them."""
    if dry_run:
        impact = preview(call, request)
        show(output, impact, impact_view(impact))
        return None
    if yes:
        return call(request)
    pinned = type(request)()
    pinned.CopyFrom(request)
    for attempt in range(_PREVIEW_ATTEMPTS):
        if pin_etag is not None:
            pin_etag(pinned)
        try:
            impact = preview(call, pinned)
            break
        except grpc.RpcError as error:
            # Changed between the read and the preview: read it again.
            if error.code() != grpc.StatusCode.ABORTED or attempt + 1 == _PREVIEW_ATTEMPTS:
                raise
    if removes_or_renames(impact):
        confirm_impact(impact)
        return call(pinned)
    return call(request)
