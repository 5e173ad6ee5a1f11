"""Tree events: what the integration service appends to its log for every change.

Each event is a `TreeEvent` (revision and time are filled in when read) keyed by its
integration, tenant and, for org-scoped integrations, org — the filters `WatchTreeEvents` offers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy_core.convert import timestamp
from canopy_core.eventlog import NewEvent, StoredEvent
from canopy_integration.convert import (
    connection_to_proto,
    deletion_reason_to_proto,
    folder_to_proto,
    integration_to_proto,
    permissions_to_proto,
    scope_to_proto,
)
from canopy_integration.model import (
    Connection,
    DeletionReason,
    Folder,
    Integration,
    RootFolderPermissions,
    Scope,
)


def keys_for(scope: Scope, integration_id: str) -> tuple[str, ...]:
    """The watch keys of an integration's events."""
    keys = [f"integration:{integration_id}", f"tenant:{scope.tenant_id}"]
    if scope.org_id:
        keys.append(f"org:{scope.org_id}")
    return tuple(keys)


class TreeEvents:
    """Builds the events of one transaction, for one integration."""

    def __init__(self, integration: Integration, paths: Mapping[str, Sequence[str]] | None = None):
        self.integration = integration
        self.paths = paths or {}
        self.events: list[NewEvent] = []

    def _add(self, kind: str, event: tree_pb.TreeEvent) -> None:
        event.integration_id = self.integration.id
        event.scope.CopyFrom(scope_to_proto(self.integration.scope))
        event.tenant_id = self.integration.scope.tenant_id
        self.events.append(
            NewEvent(
                kind=kind,
                keys=keys_for(self.integration.scope, self.integration.id),
                payload=event.SerializeToString(),
            )
        )

    def _folder(self, folder: Folder) -> tree_pb.Folder:
        return folder_to_proto(folder, self.paths.get(folder.id, ()))

    def _connection(
        self, connection: Connection, integration: Integration | None = None
    ) -> tree_pb.Connection:
        return connection_to_proto(connection, integration or self.integration)

    def integration_created(self, permissions: RootFolderPermissions) -> None:
        self._add(
            "IntegrationCreated",
            tree_pb.TreeEvent(
                integration_created=tree_pb.IntegrationCreated(
                    integration=integration_to_proto(self.integration),
                    initial_permissions=permissions_to_proto(permissions),
                )
            ),
        )

    def integration_updated(
        self, before: Integration, after: Integration, changed: Sequence[str]
    ) -> None:
        self._add(
            "IntegrationUpdated",
            tree_pb.TreeEvent(
                integration_updated=tree_pb.IntegrationUpdated(
                    before=integration_to_proto(before),
                    after=integration_to_proto(after),
                    changed_fields=list(changed),
                )
            ),
        )

    def integration_deleted(self) -> None:
        self._add(
            "IntegrationDeleted",
            tree_pb.TreeEvent(
                integration_deleted=tree_pb.IntegrationDeleted(
                    integration=integration_to_proto(self.integration)
                )
            ),
        )

    def folder_created(self, folder: Folder) -> None:
        self._add(
            "FolderCreated",
            tree_pb.TreeEvent(folder_created=tree_pb.FolderCreated(folder=self._folder(folder))),
        )

    def folder_updated(
        self, before: Folder, after: Folder, changed: Sequence[str], before_path: Sequence[str] = ()
    ) -> None:
        self._add(
            "FolderUpdated",
            tree_pb.TreeEvent(
                folder_updated=tree_pb.FolderUpdated(
                    before=folder_to_proto(before, before_path),
                    after=self._folder(after),
                    changed_fields=list(changed),
                )
            ),
        )

    def folder_deleted(
        self, folder: Folder, reason: DeletionReason, path: Sequence[str] = ()
    ) -> None:
        self._add(
            "FolderDeleted",
            tree_pb.TreeEvent(
                folder_deleted=tree_pb.FolderDeleted(
                    folder=folder_to_proto(folder, path), reason=deletion_reason_to_proto(reason)
                )
            ),
        )

    def connection_created(self, connection: Connection) -> None:
        self._add(
            "ConnectionCreated",
            tree_pb.TreeEvent(
                connection_created=tree_pb.ConnectionCreated(
                    connection=self._connection(connection)
                )
            ),
        )

    def connection_updated(
        self,
        before: Connection,
        after: Connection,
        changed: Sequence[str],
        before_integration: Integration | None = None,
    ) -> None:
        self._add(
            "ConnectionUpdated",
            tree_pb.TreeEvent(
                connection_updated=tree_pb.ConnectionUpdated(
                    before=self._connection(before, before_integration),
                    after=self._connection(after),
                    changed_fields=list(changed),
                )
            ),
        )

    def connection_deleted(self, connection: Connection, reason: DeletionReason) -> None:
        self._add(
            "ConnectionDeleted",
            tree_pb.TreeEvent(
                connection_deleted=tree_pb.ConnectionDeleted(
                    connection=self._connection(connection),
                    reason=deletion_reason_to_proto(reason),
                )
            ),
        )


def decode(stored: StoredEvent) -> tree_pb.TreeEvent:
    """A stored event as clients see it, with its revision and time."""
    event = tree_pb.TreeEvent.FromString(stored.payload)
    event.revision = stored.revision
    event_time = timestamp(stored.created_at)
    if event_time is not None:
        event.event_time.CopyFrom(event_time)
    return event
