"""GetConnection's reads: the hottest call of the service, made cheap without ever being stale.

Concurrent reads go to the database together (`Coalescer`: one statement for every id asked
for while the previous statement ran). What a read found is kept, with the version of its two
rows (the connection's and its integration's); a later read of the same id asks the database
only for those versions, a statement of three narrow columns, and reuses what it kept when both
are unchanged. Every read still consults the database after it began, so a change committed
by any process before a call starts is in its answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from canopy_core.batch import Coalescer
from canopy_core.cache import LruCache
from canopy_core.db import Database
from canopy_integration import store
from canopy_integration.model import ConnectionRead

CAPACITY = 10_000  # connections kept per process (about 3.4 KB each, measured)


class ConnectionReads:
    """`await get(id)`: the connection with its integration, or None when there is none."""

    def __init__(self, db: Database, capacity: int = CAPACITY) -> None:
        self._db = db
        self._kept: LruCache[str, ConnectionRead] = LruCache(capacity)
        self._coalescer: Coalescer[str, ConnectionRead] = Coalescer(self._read)

    async def get(self, connection_id: str) -> ConnectionRead | None:
        """The current connection and integration."""
        return await self._coalescer.get(connection_id)

    async def _read(self, connection_ids: Sequence[str]) -> dict[str, ConnectionRead]:
        found: dict[str, ConnectionRead] = {}
        kept = {i: read for i in connection_ids if (read := self._kept.get(i)) is not None}
        to_read = [i for i in connection_ids if i not in kept]
        async with self._db.connection() as conn:
            if kept:
                versions = await store.connection_versions(conn, list(kept))
                for connection_id, read in kept.items():
                    version = versions.get(connection_id)
                    if version is None:  # deleted
                        self._kept.pop(connection_id)
                    elif version == read.version:
                        found[connection_id] = read
                    else:
                        to_read.append(connection_id)
            if to_read:
                for connection_id, read in (await store.read_connections(conn, to_read)).items():
                    self._kept.put(connection_id, read)
                    found[connection_id] = read
        return found
