"""RenderWorkspaceConfig over real gRPC and PostgreSQL: the integration and permissions services
together, the tree applied through ApplyDiscoverySnapshot, the configuration read as a client
reads it (a header, then each file's chunks)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2, health_pb2_grpc

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.permissions.v1 import workspace_config_service_pb2 as crpc
from canopy.permissions.v1 import workspace_config_service_pb2_grpc as cgrpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.type.v1 import types_pb2
from canopy_permissions import api
from tests.helpers import bearer, error_details, token
from tests.integration.conftest import ORG_OWNER, OUTSIDER, ROOT, SYSTEM, account, ou, snapshot
from tests.permissions.test_sharing import (
    WS1,
    Sharing,
    Stream,
    apply,
    available,
    listing,
    projected,
    s,  # noqa: F401
)

MEMBER_ROLE = "canopy-member"
TREE = snapshot(
    [(ou(1), ROOT, "Prod"), (ou(2), ROOT, "Dev"), (ou(3), ou(1), "Europe")],
    [
        (account(1), ou(1), "Web"),
        (account(2), ou(3), "Data"),
        (account(3), ou(2), "Sandbox"),
    ],
)


def connection_config(endpoint_url: str = "") -> pb.ConnectionConfig:
    """Every setting, so that each reaches the files."""
    config = pb.ConnectionConfig(
        regions=types_pb2.StringList(values=["us-east-1", "eu-*"]),
        default_region="us-east-1",
        max_error_retry_attempts=5,
        min_error_retry_delay_ms=50,
        ignore_error_codes=types_pb2.StringList(values=["AccessDenied"]),
        ignore_error_messages=types_pb2.StringList(values=['^explicit "deny" \\d+ ${x}$']),
        s3_force_path_style=True,
    )
    if endpoint_url:
        config.endpoint_url = endpoint_url
    return config


async def shared_workspace(
    s: Sharing,  # noqa: F811
    *,
    endpoint_url: str = "",
    tree: tree_pb.OrganizationSnapshot = TREE,
) -> pb.Integration:
    """An org-wide integration with every connection setting, synced, its root folder attached
    to w_ops1."""
    created: pb.Integration = (
        await s.integrations.CreateIntegration(
            rpc.CreateIntegrationRequest(
                integration=pb.Integration(
                    handle="aws-ops",
                    scope=types_pb2.Scope(org_id="o_ops"),
                    discovery_access=pb.AwsDiscoveryAccess(
                        role_arn="arn:aws:iam::111111111111:role/d",
                        external_id="o_ops:abcd1234",
                    ),
                    member_access=pb.AwsMemberAccess(role_name=MEMBER_ROLE),
                    connection_config=connection_config(endpoint_url),
                ),
                initial_permissions=pb.RootFolderPermissions(
                    mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
                ),
            ),
            metadata=ORG_OWNER,
        )
    ).integration
    await projected(s, created.root_folder_id)
    await apply(s, created.id, tree)
    await available(s, "w_ops1", expect=len(tree.accounts))
    await s.schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id="w_ops1", folder_id=created.root_folder_id),
        metadata=WS1,
    )
    return created


@dataclass
class Rendered:
    """What a client reads from one call."""

    header: crpc.WorkspaceConfigHeader
    chunks: list[crpc.WorkspaceConfigChunk]
    files: dict[str, bytes]

    def text(self, path: str) -> str:
        return self.files[path].decode()


async def render(
    s: Sharing,  # noqa: F811
    workspace_id: str = "w_ops1",
    metadata: Any = SYSTEM,
    **fields: Any,
) -> Rendered:
    stub = cgrpc.WorkspaceConfigServiceStub(s.channels[1])
    replies = [
        reply
        async for reply in stub.RenderWorkspaceConfig(
            crpc.RenderWorkspaceConfigRequest(workspace_id=workspace_id, **fields),
            metadata=metadata,
        )
    ]
    assert replies[0].WhichOneof("part") == "header"
    assert all(r.WhichOneof("part") == "chunk" for r in replies[1:])
    chunks = [r.chunk for r in replies[1:]]
    files: dict[str, bytes] = {}
    for chunk in chunks:
        data = files.setdefault(chunk.path, b"")
        assert chunk.offset == len(data)  # in order, no gap, no overlap
        files[chunk.path] = data + chunk.data
    return Rendered(replies[0].header, chunks, files)


async def refused(s: Sharing, workspace_id: str, metadata: Any, **fields: Any) -> Any:  # noqa: F811
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await render(s, workspace_id, metadata, **fields)
    return error_details(raised.value)


def names_in(spc: str) -> list[str]:
    return re.findall(r'^connection "([a-z0-9_]+)" \{$', spc, re.M)


async def test_a_render_is_a_header_then_the_bytes_of_each_file_it_lists(
    s: Sharing,  # noqa: F811
) -> None:
    created = await shared_workspace(s)
    rendered = await render(s)
    header = rendered.header
    assert header.workspace_id == "w_ops1"
    assert [f.path for f in header.files] == ["aws.spc", "aws_config"]
    # The chunks follow the header's order, file by file.
    assert [c.path for c in rendered.chunks] == ["aws.spc", "aws_config"]
    for listed in header.files:
        data = rendered.files[listed.path]
        assert listed.size == len(data)
        assert listed.sha256 == hashlib.sha256(data).hexdigest()
    _, revision = await listing(s, "w_ops1")
    assert header.revision == revision
    spc, profiles = rendered.text("aws.spc"), rendered.text("aws_config")
    root = "folder__" + created.root_folder_id.removeprefix("f_")
    assert names_in(spc)[:3] == ["data", "sandbox", "web"]
    assert names_in(spc)[3] == root
    assert len(names_in(spc)) == 3 + 4  # the root folder, Prod, Dev and Europe below Prod
    assert list(header.search_path[:1]) == [root]
    assert list(header.search_path[-3:]) == ["data", "sandbox", "web"]
    assert '  regions                  = ["us-east-1", "eu-*"]\n' in spc
    assert '  ignore_error_messages    = ["^explicit \\"deny\\" \\\\d+ $\\u007bx}$"]\n' in spc
    assert f"role_arn = arn:aws:iam::{account(1)}:role/{MEMBER_ROLE}\n" in profiles
    assert "external_id = o_ops:abcd1234\n" in profiles
    assert "credential_source = Environment\n" in profiles


async def test_the_same_revision_and_request_give_the_same_bytes(s: Sharing) -> None:  # noqa: F811
    await shared_workspace(s)
    first, again = await render(s), await render(s)
    assert first.header == again.header
    assert first.files == again.files
    other = await render(
        s, credential_source=crpc.AwsCredentialSource(credential_source="EcsContainer")
    )
    assert other.header.etag != first.header.etag
    assert other.header.revision == first.header.revision


async def test_after_a_rename_the_files_change_and_watching_from_the_revision_shows_it(
    s: Sharing,  # noqa: F811
) -> None:
    created = await shared_workspace(s)
    before = await render(s)
    stream = Stream(s, "w_ops1", before.header.revision)
    await s.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=created.id, handle_prefix="aws_"),
            update_mask=FieldMask(paths=["handle_prefix"]),
        ),
        metadata=ORG_OWNER,
    )
    events = await stream.wait_for(3)
    stream.close()
    assert {e.schema_renamed.new_name for e in events} == {"aws_data", "aws_sandbox", "aws_web"}
    after = await render(s)
    assert after.header.revision >= max(e.revision for e in events)
    assert after.header.etag != before.header.etag
    assert names_in(after.text("aws.spc"))[:3] == ["aws_data", "aws_sandbox", "aws_web"]
    assert "[profile aws_web]\n" in after.text("aws_config")
    # The aggregators keep their names; their lists follow the rename.
    assert names_in(after.text("aws.spc"))[3:] == names_in(before.text("aws.spc"))[3:]


async def test_each_render_reflects_exactly_the_events_up_to_its_revision(
    s: Sharing,  # noqa: F811
) -> None:
    """Renders taken while handles change: replaying the stream up to a render's revision gives
    exactly the schema names of its files, never a state from before or after it."""
    created = await shared_workspace(s)
    start = await render(s)
    listed = await s.tree.ListConnections(
        tree_rpc.ListConnectionsRequest(integration_id=created.id), metadata=SYSTEM
    )
    ids = sorted(c.id for c in listed.connections)
    stream = Stream(s, "w_ops1", start.header.revision)
    renders: list[Rendered] = []

    async def keep_rendering(done: asyncio.Event) -> None:
        while not done.is_set():
            renders.append(await render(s))

    done = asyncio.Event()
    task = asyncio.create_task(keep_rendering(done))
    for step in range(6):
        await s.tree.UpdateConnection(
            tree_rpc.UpdateConnectionRequest(
                connection=tree_pb.Connection(id=ids[step % 3], handle=f"renamed{step}"),
                update_mask=FieldMask(paths=["handle"]),
            ),
            metadata=ORG_OWNER,
        )
        await asyncio.sleep(0.02)
    events = await stream.wait_for(6)
    done.set()
    await task
    renders.append(await render(s))
    stream.close()
    assert [e.WhichOneof("event") for e in events] == ["schema_renamed"] * 6
    for rendered in renders:
        state = set(names_in(start.text("aws.spc"))[:3])
        for event in events:
            if event.revision <= rendered.header.revision:
                state.discard(event.schema_renamed.old_name)
                state.add(event.schema_renamed.new_name)
        assert set(names_in(rendered.text("aws.spc"))[:3]) == state
    assert len(renders) > 1


async def test_patterns_report_their_matches_and_a_prefix_change_empties_one(
    s: Sharing,  # noqa: F811
) -> None:
    created = await shared_workspace(s)
    patterns = ["web*", "aws_*", "*a*", "nothing_*"]
    before = await render(s, connection_patterns=patterns)
    assert [(m.pattern, list(m.schemas)) for m in before.header.pattern_matches] == [
        ("web*", ["web"]),
        ("aws_*", []),
        ("*a*", ["data", "sandbox"]),
        ("nothing_*", []),
    ]
    await s.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=created.id, handle_prefix="aws_"),
            update_mask=FieldMask(paths=["handle_prefix"]),
        ),
        metadata=ORG_OWNER,
    )
    for _ in range(100):
        after = await render(s, connection_patterns=patterns)
        if after.header.revision > before.header.revision + 2:
            break
        await asyncio.sleep(0.05)
    assert [(m.pattern, list(m.schemas)) for m in after.header.pattern_matches] == [
        ("web*", []),  # emptied by the prefix change
        ("aws_*", ["aws_data", "aws_sandbox", "aws_web"]),
        ("*a*", ["aws_data", "aws_sandbox", "aws_web"]),
        ("nothing_*", []),
    ]
    assert after.header.etag != before.header.etag


async def test_a_source_profile_replaces_the_default_credential_source(
    s: Sharing,  # noqa: F811
) -> None:
    await shared_workspace(s)
    rendered = await render(
        s, credential_source=crpc.AwsCredentialSource(source_profile="platform")
    )
    profiles = rendered.text("aws_config")
    assert profiles.count("source_profile = platform\n") == 3
    assert "credential_source =" not in profiles


async def test_a_source_profile_named_like_a_schema_is_refused(s: Sharing) -> None:  # noqa: F811
    await shared_workspace(s)
    found = await refused(
        s, "w_ops1", SYSTEM, credential_source=crpc.AwsCredentialSource(source_profile="web")
    )
    assert found.code == grpc.StatusCode.INVALID_ARGUMENT
    assert found.fields == ["credential_source.source_profile"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"workspace_id": "ops1"}, "workspace_id"),
        ({"workspace_id": ""}, "workspace_id"),
        (
            {"credential_source": crpc.AwsCredentialSource(credential_source="Vault")},
            "credential_source.credential_source",
        ),
        (
            {"credential_source": crpc.AwsCredentialSource(source_profile="")},
            "credential_source.source_profile",
        ),
        (
            {"credential_source": crpc.AwsCredentialSource(source_profile="a b")},
            "credential_source.source_profile",
        ),
        ({"connection_patterns": ["ok_*", "[unclosed"]}, "connection_patterns[1]"),
        ({"connection_patterns": [""]}, "connection_patterns[0]"),
        ({"connection_patterns": ["a\x00*"]}, "connection_patterns[0]"),  # refused at the edge
        ({"connection_patterns": ["a*"] * 101}, "connection_patterns"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    s: Sharing,  # noqa: F811
    fields: dict[str, Any],
    field: str,
) -> None:
    request: dict[str, Any] = {"workspace_id": "w_ops1", **fields}
    found = await refused(s, request.pop("workspace_id"), SYSTEM, **request)
    assert found.code == grpc.StatusCode.INVALID_ARGUMENT
    assert found.fields == [field]


async def test_members_and_owners_render_and_anyone_else_gets_what_a_missing_workspace_gets(
    s: Sharing,  # noqa: F811
) -> None:
    await shared_workspace(s)
    assert (await render(s, metadata=WS1)).header.workspace_id == "w_ops1"
    assert (await render(s, metadata=ORG_OWNER)).header.workspace_id == "w_ops1"
    elsewhere = bearer(token("wanda", w_ops2="member"))  # a member of another workspace
    for principal in (OUTSIDER, elsewhere):
        existing = await refused(s, "w_ops1", principal)
        missing = await refused(s, "w_nosuch", principal)
        assert existing.code == missing.code == grpc.StatusCode.PERMISSION_DENIED
        assert existing.reason == missing.reason
        assert {k: v for k, v in existing.metadata.items() if k != "request_id"} == {
            k: v.replace("w_nosuch", "w_ops1")
            for k, v in missing.metadata.items()
            if k != "request_id"
        }
        assert existing.message == missing.message.replace("w_nosuch", "w_ops1")
    # Another tenant's workspace, to its own outsider, is refused the same way.
    other = await refused(s, "w_other", WS1)
    assert other.code == grpc.StatusCode.PERMISSION_DENIED
    assert (await refused(s, "w_nosuch", SYSTEM)).code == grpc.StatusCode.NOT_FOUND


async def test_large_files_arrive_in_chunks_of_at_most_the_limit(
    s: Sharing,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await shared_workspace(s)
    whole = await render(s)
    monkeypatch.setattr(api, "CHUNK_BYTES", 100)
    chunked = await render(s)
    assert chunked.files == whole.files
    assert all(len(c.data) <= 100 for c in chunked.chunks)
    sizes = {f.path: f.size for f in whole.header.files}
    assert len(chunked.chunks) == sum(-(-size // 100) for size in sizes.values())


async def test_a_workspace_without_schemas_renders_header_only_files(s: Sharing) -> None:  # noqa: F811
    rendered = await render(s, "w_ops2")
    assert rendered.header.search_path == []
    assert "[profile" not in rendered.text("aws_config")
    assert not names_in(rendered.text("aws.spc"))


async def test_health_reports_the_service_serving(s: Sharing) -> None:  # noqa: F811
    channel = s.channels[1]
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(
        health_pb2.HealthCheckRequest(service="canopy.permissions.v1.WorkspaceConfigService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
