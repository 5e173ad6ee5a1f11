"""`canopy workspace config` against a server that breaks the contract, and the pure parts:
putting chunks back together, the user's `.spc` patterns, the pattern report.

The server here is `CannedRenderer` (tests/cli/canned_renderer.py): a real gRPC server on port
0 that serves the replies each test gives it, since a correct renderer never sends them.
tests/cli/test_workspace_config.py runs the command against the services."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from canopy.permissions.v1 import workspace_config_service_pb2 as cpb
from canopy_cli.config_files import RenderMismatch, assemble
from canopy_cli.config_follow import pattern_report
from canopy_cli.main import app
from canopy_cli.outdir import DATA, LOCK, STATE
from canopy_cli.spc import SpcError, parse_aggregators, read_patterns
from tests.cli.canned_renderer import CannedRenderer, canned_server
from tests.cli.conftest import cli_env

Replies = list[cpb.RenderWorkspaceConfigResponse]

SPC = b"""connection "web" {\n  plugin = "aws"\n}\n"""
CONFIG = b"[profile web]\nrole_arn = arn:aws:iam::000000000001:role/m\n"


def header(
    files: list[tuple[str, bytes]],
    *,
    revision: int = 7,
    etag: str = "etag-1",
    patterns: dict[str, list[str]] | None = None,
) -> cpb.RenderWorkspaceConfigResponse:
    return cpb.RenderWorkspaceConfigResponse(
        header=cpb.WorkspaceConfigHeader(
            workspace_id="w_ops1",
            revision=revision,
            etag=etag,
            files=[
                cpb.WorkspaceConfigFile(path=p, size=len(d), sha256=hashlib.sha256(d).hexdigest())
                for p, d in files
            ],
            search_path=["web"],
            pattern_matches=[
                cpb.ConnectionPatternMatch(pattern=p, schemas=s)
                for p, s in (patterns or {}).items()
            ],
        )
    )


def chunk(path: str, offset: int, data: bytes) -> cpb.RenderWorkspaceConfigResponse:
    return cpb.RenderWorkspaceConfigResponse(
        chunk=cpb.WorkspaceConfigChunk(path=path, offset=offset, data=data)
    )


def chunked(path: str, data: bytes, size: int) -> Replies:
    return [chunk(path, o, data[o : o + size]) for o in range(0, len(data), size)]


def good(**kw: Any) -> Replies:
    files = [("aws.spc", SPC), ("aws_config", CONFIG)]
    return [header(files, **kw), *chunked("aws.spc", SPC, 5), *chunked("aws_config", CONFIG, 7)]


def test_chunks_of_any_size_are_put_back_together() -> None:
    rendered = assemble(good(), [])
    assert rendered.contents == {"aws.spc": SPC, "aws_config": CONFIG}
    assert (rendered.revision, rendered.etag) == (7, "etag-1")
    empty = assemble([header([("empty.spc", b"")])], [])
    assert empty.contents == {"empty.spc": b""}


def broken(change: Callable[[Replies], Replies]) -> Replies:
    return change(good())


def _tampered_sha(replies: Replies) -> Replies:
    replies[0].header.files[0].sha256 = hashlib.sha256(b"other").hexdigest()
    return replies


def _upper_sha(replies: Replies) -> Replies:
    replies[0].header.files[0].sha256 = replies[0].header.files[0].sha256.upper()
    return replies


def _renamed(path: str) -> Callable[[Replies], Replies]:
    def change(replies: Replies) -> Replies:
        replies[0].header.files[0].path = path
        for reply in replies[1:]:
            if reply.chunk.path == "aws.spc":
                reply.chunk.path = path
        return replies

    return change


BROKEN: dict[str, tuple[Callable[[Replies], Replies], str]] = {
    "no header": (lambda r: r[1:], "did not start with a header"),
    "a second header": (lambda r: [*r, r[0]], "a second header"),
    "a short file": (
        lambda r: [x for i, x in enumerate(r) if i != len(chunked("aws.spc", SPC, 5))],
        "aws.spc has 35 bytes, the header says 38",
    ),
    "a file cut at its end": (lambda r: r[:-1], "aws_config has"),
    "bytes past the size": (
        lambda r: [*r[:-1], chunk("aws_config", r[-1].chunk.offset, r[-1].chunk.data + b"!")],
        "longer than the header",
    ),
    "a gap": (lambda r: [r[0], r[1], *r[3:]], "starts at"),
    "the files' order swapped": (
        lambda r: (
            [r[0], *[x for x in r[1:] if x.chunk.path == "aws_config"]]
            + [x for x in r[1:] if x.chunk.path == "aws.spc"]
        ),
        "aws.spc has 0 bytes, the header says 38",
    ),
    "a chunk of an unnamed file": (lambda r: [*r, chunk("extra", 0, b"x")], "out of the"),
    "another SHA-256": (_tampered_sha, "does not have the header's SHA-256"),
    "upper-case hex": (_upper_sha, "does not have the header's SHA-256"),
    "a path out of DIR": (_renamed("../aws.spc"), "which canopy will not write"),
    "an absolute path": (_renamed("/etc/aws.spc"), "which canopy will not write"),
    "canopy's own name": (_renamed("..data"), "which canopy will not write"),
    "a hidden name": (_renamed(".canopy-state.json"), "which canopy will not write"),
    "a path named twice": (_renamed("aws_config"), "twice"),
    "a file beneath another": (_renamed("aws_config/aws.spc"), "beneath another file"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_render_that_breaks_the_contract_is_refused(case: str) -> None:
    change, expected = BROKEN[case]
    with pytest.raises(RenderMismatch) as caught:
        assemble(broken(change), [])
    assert expected in str(caught.value)


def test_a_render_must_answer_the_patterns_asked_in_order() -> None:
    assert assemble(good(patterns={"w*": ["web"]}), ["w*"]).pattern_matches == {"w*": ("web",)}
    with pytest.raises(RenderMismatch, match="connection patterns"):
        assemble(good(patterns={"w*": ["web"]}), ["w*", "d*"])
    with pytest.raises(RenderMismatch, match="connection patterns"):
        assemble(good(), ["w*"])


# -- the command against a canned server -----------------------------------------------------


@pytest.fixture
async def canned(tmp_path: Path) -> AsyncIterator[tuple[CannedRenderer, dict[str, str | None]]]:
    renderer = CannedRenderer(good())
    server, port = await canned_server(renderer)
    yield renderer, cli_env(tmp_path, permissions=f"127.0.0.1:{port}")
    await server.stop(0)


async def canopy(env: dict[str, str | None], *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


def one_line(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def on_disk(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if not p.name.startswith(".")}


async def test_a_canned_render_is_written_and_its_state_recorded(
    canned: tuple[CannedRenderer, dict[str, str | None]], tmp_path: Path
) -> None:
    renderer, env = canned
    out = tmp_path / "out"
    result = await canopy(env, "workspace", "config", "w_ops1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == "revision 7: rendered aws.spc, aws_config (etag etag-1)\n"
    assert on_disk(out) == {"aws.spc": SPC, "aws_config": CONFIG}
    assert os.readlink(out / "aws.spc") == f"{DATA}/aws.spc"
    assert os.readlink(out / DATA).startswith("..rev-7-")
    assert (out / STATE).read_text().count('"revision": 7') == 1
    assert renderer.requests[0].workspace_id == "w_ops1"
    again = await canopy(env, "workspace", "config", "w_ops1", "--out", str(out))
    assert again.stdout == "revision 7: files unchanged (etag etag-1)\n"


@pytest.mark.parametrize("case", ["another SHA-256", "a short file", "a path out of DIR"])
async def test_a_render_that_does_not_check_out_writes_nothing_and_exits_1(
    canned: tuple[CannedRenderer, dict[str, str | None]], tmp_path: Path, case: str
) -> None:
    renderer, env = canned
    out = tmp_path / "out"
    assert (await canopy(env, "workspace", "config", "w_ops1", "--out", str(out))).exit_code == 0
    before = on_disk(out)
    renderer.answers = broken(BROKEN[case][0])
    for reply in renderer.answers[:1]:
        reply.header.revision, reply.header.etag = 8, "etag-2"
    result = await canopy(env, "workspace", "config", "w_ops1", "--out", str(out))
    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith("canopy: the configuration rendered for w_ops1 does not check out: ")
    assert line.endswith("; nothing was written")
    assert BROKEN[case][1] in line
    assert on_disk(out) == before


async def test_the_same_etag_with_other_files_is_refused(
    canned: tuple[CannedRenderer, dict[str, str | None]], tmp_path: Path
) -> None:
    renderer, env = canned
    out = tmp_path / "out"
    assert (await canopy(env, "workspace", "config", "w_ops1", "--out", str(out))).exit_code == 0
    other = b'connection "data" {\n  plugin = "aws"\n}\n'
    renderer.answers = [header([("aws.spc", other)], revision=9), chunk("aws.spc", 0, other)]
    result = await canopy(env, "workspace", "config", "w_ops1", "--out", str(out))
    assert result.exit_code == 1
    assert "etag etag-1 is the one already written, but the files differ" in one_line(result)
    assert on_disk(out) == {"aws.spc": SPC, "aws_config": CONFIG}


async def test_credential_source_and_source_profile_reach_the_request(
    canned: tuple[CannedRenderer, dict[str, str | None]], tmp_path: Path
) -> None:
    renderer, env = canned
    out = str(tmp_path / "out")
    base = ("workspace", "config", "w_ops1", "--out", out)
    ok = await canopy(env, *base, "--credential-source", "Ec2InstanceMetadata")
    assert ok.exit_code == 0, ok.output
    assert renderer.requests[-1].credential_source.credential_source == "Ec2InstanceMetadata"
    ok = await canopy(env, *base, "--source-profile", "platform")
    assert ok.exit_code == 0, ok.output
    assert renderer.requests[-1].credential_source.source_profile == "platform"
    assert renderer.requests[-1].credential_source.WhichOneof("source") == "source_profile"
    both = await canopy(
        env, *base, "--source-profile", "platform", "--credential-source", "Environment"
    )
    assert both.exit_code == 2
    unknown = await canopy(env, *base, "--credential-source", "Keychain")
    assert unknown.exit_code == 2
    assert len(renderer.requests) == 2


async def test_a_dir_of_another_workspace_or_with_foreign_files_is_a_usage_error(
    canned: tuple[CannedRenderer, dict[str, str | None]], tmp_path: Path
) -> None:
    _, env = canned
    out = tmp_path / "out"
    assert (await canopy(env, "workspace", "config", "w_ops1", "--out", str(out))).exit_code == 0
    other = await canopy(env, "workspace", "config", "w_ops2", "--out", str(out))
    assert other.exit_code == 2
    assert one_line(other) == f"canopy: {out} holds the configuration of w_ops1, not w_ops2"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "aws.spc").write_text("# mine\n")
    mine = await canopy(env, "workspace", "config", "w_ops1", "--out", str(foreign))
    assert mine.exit_code == 2
    assert one_line(mine).startswith(f"canopy: {foreign / 'aws.spc'} is not a file canopy wrote")
    assert (foreign / "aws.spc").read_text() == "# mine\n"
    assert not (foreign / DATA).exists()


async def test_a_dir_another_canopy_is_writing_is_refused_and_left_alone(
    canned: tuple[CannedRenderer, dict[str, str | None]], tmp_path: Path
) -> None:
    renderer, env = canned
    out = tmp_path / "out"
    assert (await canopy(env, "workspace", "config", "w_ops1", "--out", str(out))).exit_code == 0
    before = on_disk(out)
    with (out / LOCK).open("r+") as held:  # what a running `--follow` holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = await canopy(env, "workspace", "config", "w_ops1", "--out", str(out))
    assert result.exit_code == 2
    assert one_line(result) == (
        f"canopy: {out} is being written by another canopy (it holds {out / LOCK})"
    )
    assert len(renderer.requests) == 1
    assert on_disk(out) == before


async def test_a_spc_that_does_not_parse_is_one_line_with_line_and_column_and_exit_2(
    canned: tuple[CannedRenderer, dict[str, str | None]], tmp_path: Path
) -> None:
    renderer, env = canned
    spc = tmp_path / "mine.spc"
    spc.write_text(
        'connection "all" {\n  plugin = "aws"\n  type = "aggregator"\n  connections = [\n'
    )
    out = tmp_path / "out"
    result = await canopy(
        env, "workspace", "config", "w_ops1", "--out", str(out), "--spc", str(spc)
    )
    assert result.exit_code == 2
    assert one_line(result) == f"canopy: {spc}:5:1: unexpected end of file"
    assert renderer.requests == []  # refused before any call
    assert not out.exists()
    missing = await canopy(
        env, "workspace", "config", "w_ops1", "--out", str(out), "--spc", str(tmp_path / "no.spc")
    )
    assert missing.exit_code == 2
    assert (
        one_line(missing) == f"canopy: cannot read {tmp_path / 'no.spc'}: No such file or directory"
    )


# -- the pure parts ------------------------------------------------------------------------------

USER_SPC = """
# My aggregators
connection "aws_prod" {
  plugin      = "aws"
  type        = "aggregator"
  connections = ["aws_prod_*", "aws_shared"]
}

connection "gcp_all" {
  plugin      = "gcp"
  type        = "aggregator"
  connections = ["gcp_*"]
}

connection "everything" {
  plugin      = "hub.steampipe.io/plugins/turbot/aws@latest"
  type        = "aggregator"
  connections = ["*", "aws_prod_*"]
}

connection "mine" {
  plugin  = "aws"
  profile = "me"
}
"""


def test_patterns_are_read_from_the_users_aws_aggregators(tmp_path: Path) -> None:
    path = tmp_path / "user.spc"
    path.write_text(USER_SPC)
    assert read_patterns(path) == ["aws_prod_*", "aws_shared", "*"]
    names = [a.name for a in parse_aggregators(USER_SPC, "user.spc")]
    assert names == ["aws_prod", "everything"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('connection "a" {\n  plugin = \n}\n', "2:12: unexpected line break"),
        ('connection "a" {\n  plugin = "aws"\n', "3:1: unexpected end of file"),
        ('connection "a" {\n  plugin = "aws\n}\n', "2:13: unexpected end of file"),
        ('connection "a" {\n  x = @\n}\n', "2:7: unexpected '@'"),
        ('connection "a" {\n}\n  ]\n', "3:3: unexpected ']'"),
    ],
)
def test_a_spc_that_does_not_parse_names_line_and_column(text: str, where: str) -> None:
    with pytest.raises(SpcError) as caught:
        parse_aggregators(text, "user.spc")
    assert caught.value.message == f"user.spc:{where}"
    assert caught.value.exit_code == 2


def test_a_spc_that_is_not_utf8_names_where(tmp_path: Path) -> None:
    path = tmp_path / "user.spc"
    path.write_bytes(b'connection "a" {\n  plugin = "\xff"\n}\n')
    with pytest.raises(SpcError) as caught:
        read_patterns(path)
    assert caught.value.message == f"{path}:2:13: not UTF-8"


def test_connections_that_are_not_a_list_of_strings_are_refused() -> None:
    text = 'connection "a" {\n  plugin = "aws"\n  type = "aggregator"\n  connections = "x"\n}\n'
    with pytest.raises(SpcError, match="connections must be a list of strings"):
        parse_aggregators(text, "user.spc")


def test_the_first_report_lists_matches_and_warns_of_empty_patterns() -> None:
    lines, warnings = pattern_report(None, {"aws_*": ("aws_b", "aws_a"), "gone_*": ()}, 5)
    assert lines == ["  pattern aws_*: 2 schemas: aws_a, aws_b", "  pattern gone_*: no schema"]
    assert warnings == ["warning: pattern gone_* matches no schema"]


def test_an_update_reports_gains_and_losses_and_a_pattern_that_empties_loudly() -> None:
    before = {"aws_*": ("aws_a", "aws_b"), "x_*": ("x_a",), "same": ("s",), "none": ()}
    after = {"aws_*": (), "x_*": ("x_a", "x_b"), "same": ("s",), "none": ()}
    lines, warnings = pattern_report(before, after, 9)
    assert lines == [
        "  pattern aws_*: lost aws_a, aws_b (now 0 schemas)",
        "  pattern x_*: gained x_b (now 2 schemas)",
    ]
    assert warnings == [
        "warning: pattern aws_* matches no schema since revision 9 (it matched aws_a, aws_b)"
    ]
