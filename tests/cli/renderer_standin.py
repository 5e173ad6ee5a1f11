"""STAND-IN renderers of WorkspaceConfigService, for testing `canopy workspace config` before the
permissions service's own renderer is merged.

- `permissions_spec_with_renderer()` is the one switch: it returns the permissions service as
  it is when that service already serves WorkspaceConfigService (the real renderer is merged:
  every test and the bench then run against it, with no change here), and otherwise the same
  service with `StandInRenderer` registered beside its own servicers. The stand-in answers from
  the real database, in the real service, behind the real authentication: a consistent read
  of the workspace's schemas (`workspace_member` decides who may read, as for every workspace
  RPC), the log revision it reflects, and files in the contract's shape. Its files are NOT the
  real renderer's format — one `connection` block per schema in `aws.spc`, one profile per
  schema in `aws_config`, no aggregators — so tests assert only what any renderer of the
  contract produces: a `connection "<schema>"` per schema in the `.spc` file, and the header.
- `CannedRenderer` serves replies a test gives it, on a gRPC server of its own on port 0: how
  the command treats a server that breaks the contract (bad sizes, hashes, order). It stays a
  stand-in after the merge, on purpose.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from fnmatch import fnmatchcase
from typing import Any

import grpc

from canopy.integration.v1 import integration_pb2 as ipb
from canopy.permissions.v1 import workspace_config_service_pb2 as cpb
from canopy.permissions.v1 import workspace_config_service_pb2_grpc as cgrpc
from canopy_core.context import current_principal
from canopy_core.db import Database
from canopy_core.server import Runtime, ServiceSpec
from canopy_core.validation import Violations
from canopy_permissions import store
from canopy_permissions.grants import workspace_member
from canopy_permissions.server import spec as permissions_spec
from canopy_permissions.sharing import Schema

WORKSPACE_CONFIG_SERVICE = cpb.DESCRIPTOR.services_by_name["WorkspaceConfigService"].full_name
CHUNK = 1 << 20


def uses_stand_in() -> bool:
    """Whether the permissions service lacks its own renderer (so tests use the stand-in)."""
    return WORKSPACE_CONFIG_SERVICE not in permissions_spec().service_names


def permissions_spec_with_renderer() -> ServiceSpec:
    """The permissions service, with the stand-in renderer while it has none of its own."""
    spec = permissions_spec()
    if not uses_stand_in():
        return spec
    own_setup = spec.setup

    async def setup(runtime: Runtime) -> None:
        await own_setup(runtime)
        cgrpc.add_WorkspaceConfigServiceServicer_to_server(
            StandInRenderer(runtime.db), runtime.server
        )

    return replace(spec, service_names=[*spec.service_names, WORKSPACE_CONFIG_SERVICE], setup=setup)


def _quoted(values: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def render_files(
    schemas: Sequence[Schema], request: cpb.RenderWorkspaceConfigRequest
) -> list[tuple[str, bytes]]:
    """The stand-in's files: deterministic for one set of schemas and one request."""
    spc: list[str] = []
    profiles: list[str] = []
    source = request.credential_source
    credentials = (
        f"source_profile = {source.source_profile}"
        if source.WhichOneof("source") == "source_profile"
        else f"credential_source = {source.credential_source or 'Environment'}"
    )
    for schema in sorted(schemas, key=lambda s: s.name):
        config = ipb.EffectiveConnectionConfig.FromString(schema.config)
        spc.append(
            f'connection "{schema.name}" {{\n  plugin  = "aws"\n  profile = "{schema.name}"\n'
            f"  regions = {_quoted(config.regions)}\n}}\n"
        )
        profiles.append(
            f"[profile {schema.name}]\nrole_arn = {config.role_arn}\n"
            f"external_id = {config.external_id}\nrole_session_name = canopy-{schema.name}\n"
            f"{credentials}\n"
        )
    return [("aws.spc", "\n".join(spc).encode()), ("aws_config", "\n".join(profiles).encode())]


class StandInRenderer(cgrpc.WorkspaceConfigServiceServicer):
    """STAND-IN for the permissions service's renderer (see the module docstring)."""

    def __init__(self, db: Database, chunk: int = CHUNK) -> None:
        self.db = db
        self.chunk = chunk

    async def RenderWorkspaceConfig(
        self, request: cpb.RenderWorkspaceConfigRequest, context: Any
    ) -> AsyncIterator[cpb.RenderWorkspaceConfigResponse]:
        """The header, then each file in chunks."""
        with Violations() as v:
            v.resource_id("workspace_id", request.workspace_id, "w")
        async with (
            self.db.connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            await workspace_member(conn, current_principal(), request.workspace_id)
            revision: int = await conn.fetchval("SELECT revision FROM event_log_head")
            schemas = await store.workspace_schemas(conn, request.workspace_id)
        files = render_files(schemas, request)
        for reply in replies(request.workspace_id, revision, files, request, schemas, self.chunk):
            yield reply


def replies(
    workspace_id: str,
    revision: int,
    files: Sequence[tuple[str, bytes]],
    request: cpb.RenderWorkspaceConfigRequest,
    schemas: Sequence[Schema],
    chunk: int = CHUNK,
) -> list[cpb.RenderWorkspaceConfigResponse]:
    """The replies of one render, as the contract lays them out."""
    etag = hashlib.sha256()
    for path, data in files:
        etag.update(path.encode() + b"\0" + hashlib.sha256(data).digest())
    names = sorted(s.name for s in schemas)
    header = cpb.WorkspaceConfigHeader(
        workspace_id=workspace_id,
        revision=revision,
        etag=etag.hexdigest()[:32],
        files=[
            cpb.WorkspaceConfigFile(path=p, size=len(d), sha256=hashlib.sha256(d).hexdigest())
            for p, d in files
        ],
        search_path=names,
        pattern_matches=[
            cpb.ConnectionPatternMatch(pattern=p, schemas=[n for n in names if fnmatchcase(n, p)])
            for p in request.connection_patterns
        ],
    )
    out = [cpb.RenderWorkspaceConfigResponse(header=header)]
    for path, data in files:
        for offset in range(0, len(data), chunk):
            out.append(
                cpb.RenderWorkspaceConfigResponse(
                    chunk=cpb.WorkspaceConfigChunk(
                        path=path, offset=offset, data=data[offset : offset + chunk]
                    )
                )
            )
    return out


class CannedRenderer(cgrpc.WorkspaceConfigServiceServicer):
    """Serves the replies it is given, whatever the request (a server breaking the contract)."""

    def __init__(self, answers: Sequence[cpb.RenderWorkspaceConfigResponse]) -> None:
        self.answers = list(answers)
        self.requests: list[cpb.RenderWorkspaceConfigRequest] = []

    async def RenderWorkspaceConfig(
        self, request: cpb.RenderWorkspaceConfigRequest, context: Any
    ) -> AsyncIterator[cpb.RenderWorkspaceConfigResponse]:
        """The canned replies."""
        self.requests.append(request)
        for answer in self.answers:
            yield answer


async def canned_server(renderer: CannedRenderer) -> tuple[grpc.aio.Server, int]:
    """A gRPC server on port 0 serving a canned renderer; returns it and its port."""
    server = grpc.aio.server()
    cgrpc.add_WorkspaceConfigServiceServicer_to_server(renderer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port
