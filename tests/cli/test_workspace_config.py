"""`canopy workspace config` against the permissions and integration services: files written
whole, kept current with `--follow` across kills, restarts and compaction, and the user's
patterns reported.

The renderer is the permissions service's own. `--follow` runs as a real process (it is killed,
and reads its own signals); one-shot commands run in this process through CliRunner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import hcl2
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from hcl2.utils import SerializationOptions
from typer.testing import CliRunner, Result

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_service_pb2 as dirrpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dgrpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import permission_service_pb2_grpc as pgrpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2
from canopy_cli.main import app
from canopy_cli.outdir import DATA, STATE
from canopy_core.server import RunningService, serve
from canopy_integration.server import spec as integration_spec
from canopy_integration.settings import IntegrationSettings
from canopy_permissions.server import spec as permissions_spec
from canopy_permissions.settings import PermissionsSettings
from tests.cli.conftest import cli_env
from tests.helpers import free_port, token
from tests.integration.conftest import ORG_OWNER, ROOT, SYSTEM, account, seed_directory, snapshot

CANOPY = "from canopy_cli.main import app; app()"


@dataclass
class Stack:
    """The integration and permissions services (with a renderer), stubs, and the environment
    a `canopy` beside them has."""

    env: dict[str, str | None]
    services: dict[str, RunningService]
    permissions_settings: PermissionsSettings
    integrations: Any
    tree: Any
    directory: Any
    permissions: Any
    schemas: Any
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    integration_id: str = ""
    root_folder_id: str = ""

    async def run(self, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
        """`canopy ARGS…` in this process (a worker thread)."""
        return await asyncio.to_thread(
            CliRunner().invoke, app, list(args), env={**self.env, **(env or {})}
        )

    async def stop_permissions(self) -> None:
        await self.services["permissions"].stop()

    async def start_permissions(self) -> None:
        """Again, on the same database and port."""
        self.services["permissions"] = await serve(permissions_spec(), self.permissions_settings)


@pytest.fixture
async def stack(service_env: dict[str, Any], tmp_path: Path) -> AsyncIterator[Stack]:
    integration_port, permissions_port = free_port(), free_port()
    permissions_settings = PermissionsSettings(
        **{
            **service_env,
            "db_schema": "permissions",
            "port": permissions_port,
            "integration_address": f"127.0.0.1:{integration_port}",
        }
    )
    permissions = await serve(permissions_spec(), permissions_settings)
    integration = await serve(
        integration_spec(),
        IntegrationSettings(
            **{
                **service_env,
                "db_schema": "integration",
                "port": integration_port,
                "permissions_address": f"127.0.0.1:{permissions_port}",
            }
        ),
    )
    ichannel = grpc.aio.insecure_channel(f"127.0.0.1:{integration_port}")
    pchannel = grpc.aio.insecure_channel(f"127.0.0.1:{permissions_port}")
    directory = dgrpc.DirectoryServiceStub(pchannel)
    await seed_directory(directory)
    built = Stack(
        env=cli_env(
            tmp_path,
            integration=f"127.0.0.1:{integration_port}",
            permissions=f"127.0.0.1:{permissions_port}",
        ),
        services={"permissions": permissions, "integration": integration},
        permissions_settings=permissions_settings,
        integrations=rpc_grpc.IntegrationServiceStub(ichannel),
        tree=tree_grpc.ConnectionTreeServiceStub(ichannel),
        directory=directory,
        permissions=pgrpc.PermissionServiceStub(pchannel),
        schemas=wgrpc.WorkspaceSchemaServiceStub(pchannel),
        channels=[ichannel, pchannel],
    )
    yield built
    for channel in built.channels:
        await channel.close()
    await integration.stop()
    await built.services["permissions"].stop()


# -- the organization and the workspace ------------------------------------------------------


def organization(names: dict[int, str]) -> tree_pb.OrganizationSnapshot:
    """Accounts (number → name) under the root."""
    return snapshot([], [(account(n), ROOT, name) for n, name in sorted(names.items())])


async def apply(stack: Stack, names: dict[int, str]) -> None:
    """A discovery snapshot, applied by a system caller as discovery would."""
    current = await stack.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=stack.integration_id), metadata=SYSTEM
    )
    await stack.tree.ApplyDiscoverySnapshot(
        tree_rpc.ApplyDiscoverySnapshotRequest(
            integration_id=stack.integration_id,
            snapshot=organization(names),
            expected_generation=current.integration.tree_generation,
            confirm_deletions=True,
        ),
        metadata=SYSTEM,
    )


async def set_prefix(stack: Stack, prefix: str) -> None:
    await stack.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=stack.integration_id, handle_prefix=prefix),
            update_mask=FieldMask(paths=["handle_prefix"]),
        ),
        metadata=ORG_OWNER,
    )


async def listed(stack: Stack, workspace: str = "w_ops1") -> tuple[set[str], int]:
    names: set[str] = set()
    request = wrpc.ListWorkspaceSchemasRequest(workspace_id=workspace, page_size=100)
    while True:
        page = await stack.schemas.ListWorkspaceSchemas(request, metadata=SYSTEM)
        names.update(s.name for s in page.schemas)
        if not page.next_page_token:
            return names, page.revision
        request.page_token = page.next_page_token


async def until_listed(stack: Stack, expected: set[str]) -> int:
    """Wait until w_ops1's schemas are `expected` (the tree reaches permissions
    asynchronously); the revision they reflect."""
    for _ in range(300):
        names, revision = await listed(stack)
        if names == expected:
            return revision
        await asyncio.sleep(0.05)
    raise AssertionError(f"w_ops1 never had {sorted(expected)}; it has {sorted(names)}")


async def attached(stack: Stack, names: dict[int, str]) -> int:
    """An org-wide integration with these accounts, its root attached to w_ops1; the revision
    once every account is a schema."""
    created = (
        await stack.integrations.CreateIntegration(
            rpc.CreateIntegrationRequest(
                integration=pb.Integration(
                    handle="aws-ops",
                    scope=types_pb2.Scope(org_id="o_ops"),
                    discovery_access=pb.AwsDiscoveryAccess(
                        role_arn="arn:aws:iam::111111111111:role/d",
                        external_id="o_ops:abcd1234",
                    ),
                    member_access=pb.AwsMemberAccess(role_name="m"),
                ),
                initial_permissions=pb.RootFolderPermissions(
                    mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
                ),
            ),
            metadata=ORG_OWNER,
        )
    ).integration
    stack.integration_id, stack.root_folder_id = created.id, created.root_folder_id
    for _ in range(200):
        with contextlib.suppress(grpc.aio.AioRpcError):
            await stack.permissions.GetPermissions(
                prpc.GetPermissionsRequest(folder_id=created.root_folder_id), metadata=SYSTEM
            )
            break
        await asyncio.sleep(0.05)
    await apply(stack, names)
    for _ in range(200):
        with contextlib.suppress(grpc.aio.AioRpcError):
            await stack.schemas.AttachSchema(
                wrpc.AttachSchemaRequest(workspace_id="w_ops1", folder_id=created.root_folder_id),
                metadata=SYSTEM,
            )
            break
        await asyncio.sleep(0.05)
    return await until_listed(stack, {handle(n) for n in names.values()})


def handle(name: str, prefix: str = "") -> str:
    return prefix + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# -- what is on disk ------------------------------------------------------------------------


def spc_file(out: Path) -> Path:
    """The rendered .spc file (whatever the renderer names it)."""
    found = [p for p in out.iterdir() if p.name.endswith(".spc")]
    assert len(found) == 1, sorted(p.name for p in out.iterdir())
    return found[0]


def connections_on_disk(out: Path) -> set[str]:
    """The schemas the .spc file connects (its aggregators left out), read with HCL2."""
    parsed = hcl2.loads(
        spc_file(out).read_text(),
        serialization_options=SerializationOptions(
            strip_string_quotes=True, explicit_blocks=False, with_comments=False
        ),
    )
    return {
        name
        for block in parsed.get("connection", [])
        for name, body in block.items()
        if body.get("type") != "aggregator"
    }


def state(out: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / STATE).read_text())
    return loaded


def snapshot_of(out: Path) -> dict[str, bytes]:
    """Every entry of DIR as a reader sees it (links followed), and where ..data points."""
    seen = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    seen[DATA] = os.readlink(out / DATA).encode()
    return seen


async def until_on_disk(out: Path, expected: set[str], timeout: float = 30) -> None:
    for _ in range(int(timeout * 20)):
        with contextlib.suppress(OSError, AssertionError):
            if connections_on_disk(out) == expected:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{out} never held {sorted(expected)}: {sorted(connections_on_disk(out))}")


# -- canopy as a process --------------------------------------------------------------------


class Canopy:
    """`canopy …` as a child process: its stdout lines as they come, its stderr collected."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr = ""
        assert process.stderr is not None
        self._errors = asyncio.create_task(self._collect(process.stderr))

    @classmethod
    async def start(cls, stack: Stack, *args: str, prelude: str = "") -> Canopy:
        """`prelude`: Python the child runs first (limits it puts on itself; no preexec_fn,
        which is unsafe in this process's threads)."""
        env = {k: v for k, v in {**os.environ, **stack.env}.items() if v is not None}
        env.pop("CANOPY_TOKEN", None)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            f"{prelude}\n{CANOPY}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        return cls(process)

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.stderr += line.decode()

    async def line(self, timeout: float = 30) -> str:
        """The next stdout line."""
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            await self._errors
            raise AssertionError(f"canopy ended: {self.stderr}")
        return raw.decode().rstrip("\n")

    async def until(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Read stdout lines until one matches; the match."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.line()
                found = re.fullmatch(pattern, line)
                if found:
                    return found

    async def wait(self, timeout: float = 30) -> int:
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await self._errors
        return code

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()
        await self._errors


@pytest.fixture
async def processes() -> AsyncIterator[list[Canopy]]:
    """Every `canopy` process a test starts, killed at the end if it still runs."""
    started: list[Canopy] = []
    yield started
    for process in started:
        await process.kill()


async def follow(stack: Stack, processes: list[Canopy], out: Path, *extra: str) -> Canopy:
    started = await Canopy.start(
        stack, "workspace", "config", "w_ops1", "--out", str(out), "--follow", *extra
    )
    processes.append(started)
    return started


UPDATE = r"revision (\d+): (\d+) added, (\d+) renamed, (\d+) removed, (\d+) reconfigured"


# -- one render -----------------------------------------------------------------------------


async def test_config_writes_every_schema_and_records_the_revision_and_etag(
    stack: Stack, tmp_path: Path
) -> None:
    revision = await attached(stack, {1: "Web", 2: "Data", 3: "Sandbox"})
    out = tmp_path / "out"
    result = await stack.run("workspace", "config", "w_ops1", "--out", str(out))
    assert result.exit_code == 0, result.output
    recorded = state(out)
    assert recorded["workspace_id"] == "w_ops1"
    assert recorded["revision"] == revision  # nothing changed since the listing
    assert result.stdout.splitlines() == [
        f"revision {revision}: rendered "
        + ", ".join(f["path"] for f in recorded["files"])
        + f" (etag {recorded['etag']})"
    ]
    assert connections_on_disk(out) == {"web", "data", "sandbox"}
    for entry in recorded["files"]:  # each file a link through ..data, as the state says
        path = out / entry["path"].split("/")[0]
        assert os.readlink(path) == f"{DATA}/{path.name}"
        assert len((out / entry["path"]).read_bytes()) == entry["size"]
    assert os.readlink(out / DATA).startswith(f"..rev-{revision}-")
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("..tmp")) == []


async def test_a_later_render_swaps_every_file_at_once_and_keeps_the_one_before(
    stack: Stack, tmp_path: Path
) -> None:
    await attached(stack, {1: "Web", 2: "Data"})
    out = tmp_path / "out"
    assert (await stack.run("workspace", "config", "w_ops1", "--out", str(out))).exit_code == 0
    first = os.readlink(out / DATA)
    link = os.lstat(spc_file(out)).st_ino
    opened = spc_file(out).open("rb")  # a reader in the middle of the old file …
    old_bytes = spc_file(out).read_bytes()
    await apply(stack, {1: "Web", 2: "Warehouse"})
    await until_listed(stack, {"web", "warehouse"})
    assert (await stack.run("workspace", "config", "w_ops1", "--out", str(out))).exit_code == 0
    second = os.readlink(out / DATA)
    assert second != first
    assert connections_on_disk(out) == {"web", "warehouse"}
    assert opened.read() == old_bytes  # … reads the old file whole
    opened.close()
    assert (out / first).is_dir()  # the render before the current one is kept
    # The file's own link was renamed afresh: watchers that filter on *.spc see an event.
    assert os.lstat(spc_file(out)).st_ino != link
    await apply(stack, {1: "Web", 2: "Warehouse", 3: "Lake"})
    await until_listed(stack, {"web", "warehouse", "lake"})
    assert (await stack.run("workspace", "config", "w_ops1", "--out", str(out))).exit_code == 0
    generations = sorted(p.name for p in out.iterdir() if p.name.startswith("..rev-"))
    assert generations == sorted([second, os.readlink(out / DATA)])


async def test_an_unknown_workspace_and_another_tenants_get_the_same_answer(
    stack: Stack, tmp_path: Path
) -> None:
    await attached(stack, {1: "Web"})
    owner = {"CANOPY_TOKEN": token("olivia", t_acme="owner")}
    answers = {}
    for workspace in ("w_nope", "w_other"):  # w_other is t_other's
        out = tmp_path / workspace
        result = await stack.run("workspace", "config", workspace, "--out", str(out), env=owner)
        assert result.exit_code == 1
        answers[workspace] = result.stderr.replace(workspace, "W")
        assert not (out / DATA).exists()
    assert answers["w_nope"] == answers["w_other"]
    assert answers["w_nope"].count("\n") == 1
    assert answers["w_nope"].split()[1] in {"PERMISSION_DENIED", "NOT_FOUND"}
    system = await stack.run("workspace", "config", "w_nope", "--out", str(tmp_path / "s"))
    assert system.exit_code == 1
    assert system.stderr.startswith("canopy: NOT_FOUND")


async def test_the_users_patterns_are_reported_and_an_empty_one_is_loud(
    stack: Stack, tmp_path: Path
) -> None:
    await attached(stack, {1: "Web", 2: "Data", 3: "Warehouse"})
    spc = tmp_path / "mine.spc"
    spc.write_text(
        'connection "w" {\n  plugin = "aws"\n  type = "aggregator"\n'
        '  connections = ["w*", "data", "prod_*"]\n}\n'
    )
    out = tmp_path / "out"
    args = ("workspace", "config", "w_ops1", "--out", str(out), "--spc", str(spc))
    result = await stack.run(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == [
        "  pattern w*: 2 schemas: warehouse, web",
        "  pattern data: 1 schemas: data",
        "  pattern prod_*: no schema",
    ]
    assert result.stderr == "canopy: warning: pattern prod_* matches no schema\n"
    assert state(out)["pattern_matches"]["w*"] == ["warehouse", "web"]
    strict = await stack.run(*args, "--fail-on-empty-pattern")
    assert strict.exit_code == 3
    assert "prod_* matches no schema" in strict.stderr


# -- faults while writing (the command as a process, under the limits the kernel enforces) ----


# Root ignores permission bits: a child running as root drops CAP_DAC_OVERRIDE from its
# bounding set (prctl PR_CAPBSET_DROP) and execs itself again without it, so that a read-only
# directory is read-only to it too.
WITHOUT_DAC_OVERRIDE = f"""
import ctypes, os, sys
if os.geteuid() == 0:
    if ctypes.CDLL(None, use_errno=True).prctl(24, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")
    os.execv(sys.executable, [sys.executable, "-c", {CANOPY!r}, *sys.argv[1:]])
"""


async def test_an_unwritable_dir_leaves_the_previous_files_intact(
    stack: Stack, tmp_path: Path, processes: list[Canopy]
) -> None:
    await attached(stack, {1: "Web"})
    out = tmp_path / "out"
    assert (await stack.run("workspace", "config", "w_ops1", "--out", str(out))).exit_code == 0
    before, revision = snapshot_of(out), state(out)["revision"]
    await apply(stack, {1: "Web", 2: "Data"})
    await until_listed(stack, {"web", "data"})
    out.chmod(0o555)
    try:
        run = await Canopy.start(
            stack, "workspace", "config", "w_ops1", "--out", str(out), prelude=WITHOUT_DAC_OVERRIDE
        )
        processes.append(run)
        assert await run.wait() == 1
    finally:
        out.chmod(0o755)
    assert run.stderr.count("\n") == 1
    assert run.stderr.startswith(f"canopy: cannot write {out}: Permission denied ({out}/..")
    assert run.stderr.endswith(f"; the files of revision {revision} are unchanged\n")
    assert snapshot_of(out) == before


async def test_a_full_disk_leaves_the_previous_files_intact_and_no_partial_render(
    stack: Stack, tmp_path: Path, processes: list[Canopy]
) -> None:
    await attached(stack, {1: "Web"})
    out = tmp_path / "out"
    assert (await stack.run("workspace", "config", "w_ops1", "--out", str(out))).exit_code == 0
    before, revision = snapshot_of(out), state(out)["revision"]
    limit = max(len(data) for data in before.values()) + 512
    await apply(stack, {n: f"Account {n}" for n in range(1, 200)})
    await until_listed(stack, {f"account_{n}" for n in range(1, 200)})

    # Writes past the limit fail EFBIG (Python ignores SIGXFSZ), as on a full disk.
    small_files = f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))"
    run = await Canopy.start(
        stack, "workspace", "config", "w_ops1", "--out", str(out), prelude=small_files
    )
    processes.append(run)
    assert await run.wait() == 1
    assert run.stderr.startswith(
        f"canopy: cannot write {out}: File too large (the file size limit)"
    )
    assert run.stderr.endswith(f"; the files of revision {revision} are unchanged\n")
    assert snapshot_of(out) == before
    assert [p.name for p in out.iterdir() if p.name.startswith("..tmp")] == []
    # With room again, the same directory takes the new render.
    assert (await stack.run("workspace", "config", "w_ops1", "--out", str(out))).exit_code == 0
    assert len(connections_on_disk(out)) == 199


# -- following -------------------------------------------------------------------------------


async def test_follow_rewrites_the_files_after_each_change_with_one_line_each(
    stack: Stack, tmp_path: Path, processes: list[Canopy]
) -> None:
    await attached(stack, {1: "Web", 2: "Data"})
    spc = tmp_path / "mine.spc"
    spc.write_text(
        'connection "w" {\n  plugin = "aws"\n  type = "aggregator"\n  connections = ["w*"]\n}\n'
    )
    out = tmp_path / "out"
    canopy = await follow(stack, processes, out, "--spc", str(spc), "--coalesce", "0.2")
    first = await canopy.until(r"revision (\d+): rendered .*")
    assert await canopy.line() == "  pattern w*: 1 schemas: web"
    assert connections_on_disk(out) == {"web", "data"}

    await apply(stack, {1: "Web", 2: "Warehouse", 3: "Wiki"})  # one renamed, one added
    update = await canopy.until(UPDATE)
    assert update.group(2, 3, 4, 5) == ("1", "1", "0", "0")
    assert int(update.group(1)) > int(first.group(1))
    assert await canopy.line() == "  pattern w*: gained warehouse, wiki (now 3 schemas)"
    assert connections_on_disk(out) == {"web", "warehouse", "wiki"}
    assert state(out)["revision"] == int(update.group(1))

    await set_prefix(stack, "aws_")  # every schema renamed: w* is empty
    update = await canopy.until(UPDATE)
    renamed = int(update.group(3))
    while renamed < 3:  # the renames may take two renders
        renamed += int((await canopy.until(UPDATE)).group(3))
    assert renamed == 3
    assert connections_on_disk(out) == {"aws_web", "aws_warehouse", "aws_wiki"}
    await stack.directory.DeleteWorkspace(
        dirrpc.DeleteWorkspaceRequest(id="w_ops1"), metadata=SYSTEM
    )
    deleted = await canopy.until(r"revision \d+: workspace deleted \((\d+) removed\).*")
    assert deleted.group(1) == "3"
    assert await canopy.wait() == 0
    assert "canopy: warning: pattern w* matches no schema since revision" in canopy.stderr
    assert connections_on_disk(out) == {"aws_web", "aws_warehouse", "aws_wiki"}  # left as is


async def test_follow_resumes_from_the_revision_recorded_in_dir_after_a_kill(
    stack: Stack, tmp_path: Path, processes: list[Canopy]
) -> None:
    await attached(stack, {1: "Web", 2: "Data"})
    out = tmp_path / "out"
    canopy = await follow(stack, processes, out)
    await canopy.until(r"revision \d+: rendered .*")
    recorded = state(out)["revision"]
    await canopy.kill()  # SIGKILL: no chance to tidy up
    await apply(stack, {1: "Web", 2: "Warehouse"})
    await until_listed(stack, {"web", "warehouse"})
    again = await follow(stack, processes, out)
    update = await again.until(UPDATE)  # counts only what changed after the recorded revision
    assert update.group(2, 3, 4, 5) == ("0", "1", "0", "0")
    assert connections_on_disk(out) == {"web", "warehouse"}
    assert f"resuming w_ops1 after revision {recorded}, recorded in {out}" in again.stderr


async def test_follow_renders_afresh_when_the_recorded_revision_was_compacted(
    stack: Stack, tmp_path: Path, processes: list[Canopy]
) -> None:
    await attached(stack, {1: "Web"})
    out = tmp_path / "out"
    assert (await stack.run("workspace", "config", "w_ops1", "--out", str(out))).exit_code == 0
    recorded = state(out)["revision"]
    await apply(stack, {1: "Web", 2: "Data"})
    await until_listed(stack, {"web", "data"})
    log = stack.services["permissions"].runtime.event_log
    assert await log.compact(timedelta(0)) > recorded
    canopy = await follow(stack, processes, out)
    fresh = await canopy.until(r"revision (\d+): rendered afresh .*")
    assert int(fresh.group(1)) > recorded
    assert connections_on_disk(out) == {"web", "data"}
    assert f"revision {recorded} is no longer retained" in canopy.stderr
    await apply(stack, {1: "Web", 2: "Data", 3: "Lake"})  # and it follows on from there
    assert (await canopy.until(UPDATE)).group(2) == "1"
    assert connections_on_disk(out) == {"web", "data", "lake"}


async def test_follow_renders_afresh_when_dir_records_a_revision_past_the_services(
    stack: Stack, tmp_path: Path, processes: list[Canopy]
) -> None:
    await attached(stack, {1: "Web"})
    out = tmp_path / "out"
    assert (await stack.run("workspace", "config", "w_ops1", "--out", str(out))).exit_code == 0
    written = out / DATA / STATE  # as if DIR had been written against another database
    written.write_text(
        written.read_text().replace(f'"revision": {state(out)["revision"]}', '"revision": 999999')
    )
    canopy = await follow(stack, processes, out)
    fresh = await canopy.until(r"revision (\d+): rendered afresh .*")
    assert "revision 999999 is past the service's latest" in canopy.stderr
    assert state(out)["revision"] == int(fresh.group(1)) < 999999  # recorded, files the same
    await apply(stack, {1: "Web", 2: "Data"})
    assert (await canopy.until(UPDATE)).group(2) == "1"
    assert connections_on_disk(out) == {"web", "data"}


async def test_follow_resumes_across_a_permissions_restart_and_misses_no_change(
    stack: Stack, tmp_path: Path, processes: list[Canopy]
) -> None:
    await attached(stack, {1: "Web", 2: "Data"})
    out = tmp_path / "out"
    canopy = await follow(stack, processes, out)
    await canopy.until(r"revision \d+: rendered .*")
    await asyncio.sleep(0.5)  # the watch is open (progress every 0.3 s)
    await stack.stop_permissions()
    # Changed while the service is away: the workspace learns it when the service is back.
    await apply(stack, {1: "Web", 2: "Warehouse"})
    await asyncio.sleep(1)  # the watch fails to reconnect at least once
    await stack.start_permissions()
    update = await canopy.until(UPDATE)
    assert update.group(2, 3, 4, 5) == ("0", "1", "0", "0")
    assert connections_on_disk(out) == {"web", "warehouse"}
    assert "the permissions service went away; reconnecting after revision" in canopy.stderr


async def test_sigterm_stops_follow_with_exit_0_and_whole_files(
    stack: Stack, tmp_path: Path, processes: list[Canopy]
) -> None:
    await attached(stack, {1: "Web"})
    out = tmp_path / "out"
    canopy = await follow(stack, processes, out)
    await canopy.until(r"revision \d+: rendered .*")
    canopy.process.send_signal(signal.SIGTERM)
    code = await canopy.wait()
    assert code == 0, canopy.stderr
    assert connections_on_disk(out) == {"web"}


def test_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(app, ["workspace", "config", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.stdout.split())
    assert "Exit status: 0 done" in text
    assert "1 error" in text
    assert "2 usage" in text
    assert "3 a pattern matches no schema, with --fail-on-empty-pattern" in text
