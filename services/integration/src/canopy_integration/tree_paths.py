"""Folder paths: the handles from the root folder down to each folder."""

from __future__ import annotations

from collections.abc import Iterable

from canopy_integration.model import Folder


def folder_paths(folders: Iterable[Folder]) -> dict[str, list[str]]:
    """Each folder's path of handles, root first (later duplicates of an id win)."""
    by_id = {f.id: f for f in folders}
    paths: dict[str, list[str]] = {}

    def path(folder_id: str, depth: int = 0) -> list[str]:
        if folder_id in paths:
            return paths[folder_id]
        folder = by_id[folder_id]
        if folder.parent_id is None or folder.parent_id not in by_id or depth > len(by_id):
            result = [folder.handle]
        else:
            result = [*path(folder.parent_id, depth + 1), folder.handle]
        paths[folder_id] = result
        return result

    for folder_id in by_id:
        path(folder_id)
    return paths
