"""A rolling upgrade: the previous release's three services (from git, protos/STABLE) run beside
the current ones on a database the current ones migrated, and a realistic flow goes through both.

The current services start first and migrate; they write an integration and its first sync alone
(what the old replicas must then read). The old replicas join, applying no migration, and call the
current services as their peers (an old client of new servers; the test's client, built from the
current contracts, is a new client of old servers). Then integrations are created, shared,
attached, synced and renamed through one version while the other's watchers follow, and every
answer is read back through both versions and compared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.discovery.v1 import discovery_service_pb2_grpc as dgrpc
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tree_grpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_service_pb2 as dirrpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dirgrpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import permission_service_pb2_grpc as pgrpc
from canopy.permissions.v1 import workspace_schema_pb2 as wpb
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy.type.v1 import types_pb2
from tests.awsfaults import FaultProxy
from tests.discovery.conftest import Org
from tests.e2e.processes import SERVICES, ServiceProcess, start, stop_all, wait_serving
from tests.integration.conftest import ORG_OWNER, OWNER, SYSTEM, seed_directory
from tests.releases import (
    export_release,
    previous_release,
    python_path,
    unsatisfied_dependencies,
)

ROLE = "arn:aws:iam::123456789012:role/canopy-discovery"
TERMINAL = {
    dpb.SYNC_RUN_STATE_SUCCEEDED,
    dpb.SYNC_RUN_STATE_FAILED,
    dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION,
    dpb.SYNC_RUN_STATE_CANCELLED,
}
M = TypeVar("M", bound=Message)


def comparable(message: M) -> M:
    """A copy without empty sub-messages. A newer release sets message fields the older one does
    not know (at their defaults when unused); with those gone, equal answers compare equal."""
    copy = type(message)()
    copy.CopyFrom(message)
    _drop_empty(copy)
    return copy


def _drop_empty(message: Message) -> None:
    for field, value in message.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        if field.is_repeated:
            for item in value:
                _drop_empty(item)
        else:
            _drop_empty(value)
            if value.ByteSize() == 0:
                message.ClearField(field.name)


class Version:
    """Stubs on one release's three services."""

    def __init__(self, name: str, running: dict[str, ServiceProcess]) -> None:
        self.name = name
        self.running = running
        self.channels = {n: grpc.aio.insecure_channel(s.address) for n, s in running.items()}
        self.integrations = rpc_grpc.IntegrationServiceStub(self.channels["integration"])
        self.tree = tree_grpc.ConnectionTreeServiceStub(self.channels["integration"])
        self.discovery = dgrpc.DiscoveryServiceStub(self.channels["discovery"])
        self.directory = dirgrpc.DirectoryServiceStub(self.channels["permissions"])
        self.permissions = pgrpc.PermissionServiceStub(self.channels["permissions"])
        self.schemas = wgrpc.WorkspaceSchemaServiceStub(self.channels["permissions"])

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()

    async def run_to_end(self, integration_id: str, trigger: int | None = None) -> dpb.SyncRun:
        """The integration's newest run (of `trigger`, if given), once it has ended."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = await self.discovery.ListSyncRuns(
                drpc.ListSyncRunsRequest(integration_id=integration_id), metadata=SYSTEM
            )
            for run in runs.runs:
                if trigger is None or run.trigger == trigger:
                    if run.state in TERMINAL:
                        return run
                    break
            await asyncio.sleep(0.1)
        raise AssertionError(f"no run of {integration_id} ended")

    async def sync(self, integration_id: str) -> dpb.SyncRun:
        started = await self.discovery.SyncIntegration(
            drpc.SyncIntegrationRequest(integration_id=integration_id), metadata=OWNER
        )
        async for reply in self.discovery.WatchSyncRun(
            drpc.WatchSyncRunRequest(id=started.run.id), metadata=SYSTEM
        ):
            if reply.run.state in TERMINAL:
                return reply.run
        raise AssertionError("the run stream ended early")


class Watch:
    """A workspace's schema stream from one release, collected in the background."""

    def __init__(self, version: Version, workspace_id: str, after_revision: int) -> None:
        self.events: list[wpb.SchemaEvent] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.call = version.schemas.WatchWorkspaceSchemas(
            wrpc.WatchWorkspaceSchemasRequest(
                workspace_id=workspace_id, after_revision=after_revision
            ),
            metadata=SYSTEM,
        )
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        try:
            async for reply in self.call:
                self.events.extend(reply.events)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = error

    async def until(self, count: int, timeout: float = 20) -> list[wpb.SchemaEvent]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and self.error is None:
            assert time.monotonic() < deadline, f"waited for {count} events: {self.events}"
            await asyncio.sleep(0.05)
        assert self.error is None, self.error
        return self.events[:count]

    def stop(self) -> None:
        self.call.cancel()


def names(events: list[wpb.SchemaEvent]) -> list[tuple[str, ...]]:
    """Events as comparable tuples (kind and names), sorted."""
    found: list[tuple[str, ...]] = []
    for e in events:
        kind = e.WhichOneof("event")
        if kind == "schema_added":
            found.append(("added", e.schema_added.schema.name))
        elif kind == "schema_renamed":
            found.append(("renamed", e.schema_renamed.old_name, e.schema_renamed.new_name))
        else:
            found.append((str(kind),))
    return sorted(found)


def added(handles: Iterable[str]) -> list[tuple[str, ...]]:
    return sorted(("added", h) for h in handles)


def renames(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, ...]]:
    """The SchemaRenamed events (as `names` has them) that take `before` to `after`."""
    return sorted(("renamed", before[a], after[a]) for a in before if before[a] != after[a])


async def handles(version: Version, integration_id: str) -> dict[str, str]:
    """Account id → connection handle of an integration."""
    listed = await version.tree.ListConnections(
        tree_rpc.ListConnectionsRequest(integration_id=integration_id, page_size=100),
        metadata=SYSTEM,
    )
    return {c.account_id: c.handle for c in listed.connections}


T = TypeVar("T")


async def retried(call: Callable[[], Awaitable[T]], timeout: float = 15) -> T:
    """`call` until it succeeds: the permissions services project the tree log asynchronously,
    so an item just created is NOT_FOUND there for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@dataclass
class Both:
    """The current and the previous release, each asked the same thing."""

    new: Version
    old: Version

    async def same(self, ask: Callable[[Version], Awaitable[M]]) -> M:
        """Ask both; their answers must be equal (as `comparable` compares them)."""
        new, old = await asyncio.gather(ask(self.new), ask(self.old))
        assert comparable(old) == comparable(new), f"previous release:\n{old}\ncurrent:\n{new}"
        return new

    async def same_pages(
        self, ask: Callable[[Version, str], Awaitable[Any]], items: str
    ) -> list[Any]:
        """Page through a list alternating the versions (a token from one, honoured by the
        other), starting with either; both walks and the single pages must agree."""
        walks = []
        for first, second in ((self.new, self.old), (self.old, self.new)):
            found: list[Any] = []
            token, turn = "", 0
            while True:
                reply = await ask((first, second)[turn % 2], token)
                found.extend(getattr(reply, items))
                token, turn = reply.next_page_token, turn + 1
                if not token:
                    break
            assert turn > 1, "the list fits on one page: nothing crossed versions"
            walks.append([comparable(m) for m in found])
        assert walks[0] == walks[1]
        return walks[0]


def clean_log(service: ServiceProcess) -> None:
    """No error in the service's log; otherwise the log from the first one on."""
    text = service.log_text()
    first = min(
        (at for m in ("Traceback", '"level": "error"') if (at := text.find(m)) >= 0), default=-1
    )
    start = text.rfind("\n", 0, max(first, 0)) + 1
    assert first < 0, (
        f"{service.name} ({service.log}) logged an error:\n{text[start : start + 4000]}"
    )


@pytest.fixture
async def previous(
    suite_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[dict[str, ServiceProcess]]]]:
    """Starts the previous release's services on the suite's database when called: they call
    the current services as their peers."""
    checkout = export_release(previous_release(), tmp_path / "previous")
    assert unsatisfied_dependencies(checkout) == [], (
        "the previous release locks packages the current virtualenv does not have"
    )
    running: dict[str, ServiceProcess] = {}

    async def launch() -> dict[str, ServiceProcess]:
        for name in SERVICES:
            running[name] = start(
                name,
                suite_env,
                tmp_path,
                python_path=python_path(checkout),
                log_name=f"previous-{name}",
            )
        await asyncio.gather(*(wait_serving(s) for s in running.values()))
        return running

    try:
        yield launch
    finally:
        stop_all(running.values())


async def test_previous_release_replicas_work_beside_current_ones_on_the_migrated_database(
    services: dict[str, ServiceProcess],
    previous: Callable[[], Awaitable[dict[str, ServiceProcess]]],
    org: Org,
    proxy: FaultProxy,
) -> None:
    new = Version("current", services)
    old: Version | None = None
    watches: list[Watch] = []
    try:
        # The current release alone: it migrated the database, and writes the first integration.
        await seed_directory(new.directory)
        prod = org.ou("Production")
        web = org.account("Web Prod", org.ou("Web", prod))
        org.account("Data Lake", prod)
        org.account("Sandbox")
        first = (
            await new.integrations.CreateIntegration(
                rpc.CreateIntegrationRequest(
                    integration=pb.Integration(
                        handle="aws-ops",
                        scope=types_pb2.Scope(org_id="o_ops"),
                        discovery_access=pb.AwsDiscoveryAccess(
                            role_arn=ROLE, external_id="o_ops:abcd1234"
                        ),
                        member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                    ),
                    initial_permissions=pb.RootFolderPermissions(
                        mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
                    ),
                ),
                metadata=ORG_OWNER,
            )
        ).integration
        created_run = await new.run_to_end(first.id, dpb.SYNC_TRIGGER_CREATED)
        assert created_run.state == dpb.SYNC_RUN_STATE_SUCCEEDED, created_run

        # The previous release joins: its migration runner accepts the newer database as it is.
        old_running = await previous()
        for service in old_running.values():
            assert "migration applied" not in service.log_text(), service.log_text()
        old = Version("previous", old_running)
        both = Both(new, old)

        # What the current release wrote, read through both.
        await both.same(
            lambda v: v.integrations.GetIntegration(
                rpc.GetIntegrationRequest(id=first.id), metadata=ORG_OWNER
            )
        )
        await both.same(
            lambda v: v.discovery.GetSyncRun(
                drpc.GetSyncRunRequest(id=created_run.id), metadata=SYSTEM
            )
        )
        await both.same(
            lambda v: v.tree.GetConnectionTree(
                tree_rpc.GetConnectionTreeRequest(integration_id=first.id), metadata=SYSTEM
            )
        )

        # The previous release creates an integration (tenant scope); either discovery syncs it.
        second = (
            await old.integrations.CreateIntegration(
                rpc.CreateIntegrationRequest(
                    integration=pb.Integration(
                        handle="aws-tenant",
                        scope=types_pb2.Scope(tenant_id="t_acme"),
                        discovery_access=pb.AwsDiscoveryAccess(
                            role_arn=ROLE, external_id="t_acme:abcd1234"
                        ),
                        member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                    )
                ),
                metadata=OWNER,
            )
        ).integration
        second_run = await old.run_to_end(second.id, dpb.SYNC_TRIGGER_CREATED)
        assert second_run.state == dpb.SYNC_RUN_STATE_SUCCEEDED, second_run
        connections = await both.same_pages(
            lambda v, token: v.tree.ListConnections(
                tree_rpc.ListConnectionsRequest(
                    integration_id=second.id, page_size=2, page_token=token
                ),
                metadata=SYSTEM,
            ),
            "connections",
        )
        second_web = next(c for c in connections if c.account_id == web)

        # Each workspace watched through both releases from the same revision.
        for workspace in ("w_ops1", "w_ops2"):
            listed = await both.same(
                lambda v, w=workspace: v.schemas.ListWorkspaceSchemas(  # type: ignore[misc]
                    wrpc.ListWorkspaceSchemasRequest(workspace_id=w), metadata=SYSTEM
                )
            )
            watches += [Watch(v, workspace, listed.revision) for v in (new, old)]

        # Share through the previous release, and through the current one.
        await retried(
            lambda: old.permissions.SetPermissions(
                prpc.SetPermissionsRequest(
                    folder_id=second.root_folder_id,
                    grantees=[types_pb2.Grantee(workspace_id="w_ops1")],
                ),
                metadata=OWNER,
            )
        )
        await retried(
            lambda: new.permissions.SetPermissions(
                prpc.SetPermissionsRequest(
                    connection_id=second_web.id,
                    grantees=[types_pb2.Grantee(workspace_id="w_ops2")],
                ),
                metadata=OWNER,
            )
        )
        for item in (
            prpc.GetPermissionsRequest(folder_id=second.root_folder_id),
            prpc.GetPermissionsRequest(connection_id=second_web.id),
        ):
            await both.same(
                lambda v, i=item: v.permissions.GetPermissions(i, metadata=OWNER)  # type: ignore[misc]
            )

        # Attach: the previous release writes what current watchers see, and the other way.
        attach = wrpc.AttachSchemaRequest
        await old.schemas.AttachSchema(
            attach(workspace_id="w_ops1", folder_id=second.root_folder_id), metadata=SYSTEM
        )
        await new.schemas.AttachSchema(
            attach(workspace_id="w_ops2", connection_id=second_web.id), metadata=SYSTEM
        )
        await old.schemas.AttachSchema(
            attach(workspace_id="w_ops2", folder_id=first.root_folder_id), metadata=SYSTEM
        )
        second_before = {c.account_id: c.handle for c in connections}
        first_before = await handles(new, first.id)
        ops1, ops1_old, ops2, ops2_old = watches
        assert names(await ops1.until(len(second_before))) == added(second_before.values())
        assert names(await ops2_old.until(1 + len(first_before))) == added(
            [second_web.handle, *first_before.values()]
        )

        # The organization changes; the previous release's discovery syncs one integration,
        # the current one the other (either replica may crawl: they share the leases).
        org.rename_account(web, "Website")
        assert (await old.sync(second.id)).state == dpb.SYNC_RUN_STATE_SUCCEEDED
        assert (await new.sync(first.id)).state == dpb.SYNC_RUN_STATE_SUCCEEDED
        second_after = await handles(old, second.id)
        first_synced = await handles(old, first.id)
        # A handle prefix set through the previous release renames every schema of `first`.
        await old.integrations.UpdateIntegration(
            rpc.UpdateIntegrationRequest(
                integration=pb.Integration(id=first.id, handle_prefix="aws_"),
                update_mask=FieldMask(paths=["handle_prefix"]),
            ),
            metadata=ORG_OWNER,
        )
        first_after = await handles(new, first.id)
        assert set(first_after.values()) == {f"aws_{h}" for h in first_synced.values()}
        second_renames = renames(second_before, second_after)
        assert second_renames == [("renamed", second_web.handle, second_after[web])]
        ops1_events = await ops1.until(len(second_before) + 1)
        assert names(ops1_events[len(second_before) :]) == second_renames
        expected = sorted(
            second_renames
            + renames(first_before, first_synced)
            + renames(first_synced, first_after)
        )
        ops2_events = await ops2_old.until(1 + len(first_before) + len(expected))
        assert names(ops2_events[1 + len(first_before) :]) == expected

        # Both releases streamed the same events, with the same revisions.
        assert [comparable(e) for e in await ops1_old.until(len(ops1_events))] == [
            comparable(e) for e in ops1_events
        ]
        assert [comparable(e) for e in await ops2.until(len(ops2_events))] == [
            comparable(e) for e in ops2_events
        ]

        # Everything read back through both releases.
        for workspace in ("w_ops1", "w_ops2"):
            await both.same(
                lambda v, w=workspace: v.schemas.ListWorkspaceSchemas(  # type: ignore[misc]
                    wrpc.ListWorkspaceSchemasRequest(workspace_id=w), metadata=SYSTEM
                )
            )
        for integration in (first, second):
            await both.same(
                lambda v, i=integration: v.integrations.GetIntegration(  # type: ignore[misc]
                    rpc.GetIntegrationRequest(id=i.id), metadata=OWNER
                )
            )
            await both.same(
                lambda v, i=integration: v.tree.GetConnectionTree(  # type: ignore[misc]
                    tree_rpc.GetConnectionTreeRequest(integration_id=i.id), metadata=SYSTEM
                )
            )
            await both.same(
                lambda v, i=integration: v.discovery.ListSyncRuns(  # type: ignore[misc]
                    drpc.ListSyncRunsRequest(integration_id=i.id), metadata=SYSTEM
                )
            )
        await both.same(
            lambda v: v.directory.ListWorkspaces(
                dirrpc.ListWorkspacesRequest(org_id="o_ops"), metadata=SYSTEM
            )
        )
    finally:
        for watch in watches:
            watch.stop()
        await new.close()
        if old is not None:
            await old.close()
    # No replica of either release logged an error, and every one stops cleanly. (Logs are
    # read before the stop: a replica stopping while its peer already has may log that.)
    everyone = [*services.values(), *(old.running.values() if old else ())]
    for service in everyone:
        clean_log(service)
    stop_all(everyone)
    for service in everyone:
        assert service.process.returncode == 0, service.log_text()
