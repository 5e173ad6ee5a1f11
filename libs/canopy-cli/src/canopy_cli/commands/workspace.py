"""`canopy workspace config`: a workspace's Steampipe configuration in a directory, rendered by
the permissions service and, with `--follow`, kept current from the workspace's schema stream
(see `canopy_cli.config_follow` and, for how files are written, `canopy_cli.outdir`)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from canopy.permissions.v1 import workspace_config_service_pb2 as cpb
from canopy_cli.app import clients_of, workspace_app
from canopy_cli.config_follow import EXIT_EMPTY_PATTERN, ConfigFollower, EmptyPattern
from canopy_cli.outdir import OutputDir, OutputDirError, request_fingerprint
from canopy_cli.spc import read_patterns


class CredentialSource(enum.StrEnum):
    """The AWS `credential_source` values."""

    Environment = "Environment"
    Ec2InstanceMetadata = "Ec2InstanceMetadata"
    EcsContainer = "EcsContainer"


EXIT_CODES = """Exit status: 0 done (one render written; with --follow, the workspace was
deleted, or SIGTERM / Ctrl-C stopped it); 1 error (a call failed — an unknown workspace, no
access, the service unreachable for 60 s —, the render did not check out, or DIR could not be
written: the files written before are left intact); 2 usage (a bad option, a .spc that does
not parse, DIR holding another workspace's configuration or files canopy did not write); 3 a
pattern matches no schema, with --fail-on-empty-pattern (the files are written first)."""


@workspace_app.command(
    "config",
    help=(
        "Write WORKSPACE_ID's Steampipe configuration (connections, aggregators, AWS "
        "profiles) to DIR; with --follow, keep it current.\n\n"
        "Each render is written whole, then made current in one step: DIR/..data is a "
        "symlink swapped by rename, and each file (DIR/aws.spc, …) a symlink through it, so a "
        "reader never opens a partial or mixed file. DIR/.canopy-state.json records the "
        "revision and etag the files reflect; --follow resumes from it after a restart, and "
        "renders afresh if that revision is no longer retained. One line per update on "
        "stdout: `revision R: A added, N renamed, D removed, C reconfigured`.\n\n" + EXIT_CODES
    ),
)
def workspace_config(
    ctx: typer.Context,
    workspace_id: Annotated[str, typer.Argument(help="The workspace (w_…).")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="The directory to write (created if missing); one workspace per directory.",
        ),
    ],
    follow_changes: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Keep DIR current until the workspace is deleted (or SIGTERM).",
        ),
    ] = False,
    spc: Annotated[
        list[Path] | None,
        typer.Option(
            "--spc",
            help="A .spc file of your own AWS aggregators: report which schemas their "
            "connection patterns (`aws_prod_*`) match, and which gain or lose schemas.",
            show_default=False,
        ),
    ] = None,
    fail_on_empty_pattern: Annotated[
        bool,
        typer.Option(
            "--fail-on-empty-pattern",
            help="Exit 3 when a pattern of --spc matches no schema.",
        ),
    ] = False,
    credential_source: Annotated[
        CredentialSource | None,
        typer.Option(
            "--credential-source",
            help="AWS profiles take their credentials from here (`credential_source`).",
            show_default=False,
        ),
    ] = None,
    source_profile: Annotated[
        str | None,
        typer.Option(
            "--source-profile",
            help="… or from this named profile (`source_profile`).",
            show_default=False,
        ),
    ] = None,
    coalesce: Annotated[
        float,
        typer.Option(
            "--coalesce",
            min=0.0,
            max=60.0,
            help="With --follow: seconds to gather changes before rendering again.",
        ),
    ] = 0.5,
) -> None:
    if credential_source is not None and source_profile is not None:
        raise typer.BadParameter(
            "give --credential-source or --source-profile, not both", param_hint="--source-profile"
        )
    patterns: list[str] = []
    for path in spc or []:
        patterns.extend(p for p in read_patterns(path) if p not in patterns)
    request = cpb.RenderWorkspaceConfigRequest(
        workspace_id=workspace_id, connection_patterns=patterns
    )
    source: dict[str, str] = {}
    if credential_source is not None:
        request.credential_source.credential_source = credential_source.value
        source = {"credential_source": credential_source.value}
    elif source_profile is not None:
        request.credential_source.source_profile = source_profile
        source = {"source_profile": source_profile}
    directory = OutputDir(out)
    directory.open()
    try:
        state = directory.state()
        if state is not None and state.workspace_id != workspace_id:
            raise OutputDirError(
                f"{out} holds the configuration of {state.workspace_id}, not {workspace_id}"
            )
        follower = ConfigFollower(
            clients=clients_of(ctx),
            workspace_id=workspace_id,
            out=directory,
            request=request,
            fingerprint=request_fingerprint(source, patterns),
            fail_on_empty_pattern=fail_on_empty_pattern,
            echo=lambda line: typer.echo(line),
            current=state,
            covered=state.revision if state else 0,
        )
        try:
            code = follower.run_following(coalesce) if follow_changes else follower.run_once()
        except EmptyPattern:
            code = EXIT_EMPTY_PATTERN
    finally:
        directory.close()
    if code:
        raise typer.Exit(code)
