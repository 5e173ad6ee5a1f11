"""A rendered workspace configuration as RenderWorkspaceConfig streams it: the header, then each
file's bytes in chunks, put back together and checked before anything is written.

Pure: a sequence of replies in, a `RenderedConfig` or a `RenderMismatch` out. What is checked:
every path is a plain relative path named once; chunks follow the header's file order, each at
the offset where the previous one ended; each file has the header's size and SHA-256; the
header answers every connection pattern that was asked, in order. The etag's algorithm is the
server's own, so it is checked the one way the contract allows — equal etags, equal files —
against the configuration already written (`check_etag`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from canopy.permissions.v1 import workspace_config_service_pb2 as cpb

#: One path component of a rendered file: no leading dot (`..data`, the state file and the
#: generation directories of `canopy_cli.outdir` start with one), nothing a shell must quote.
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MAX_DEPTH = 4


class RenderMismatch(Exception):
    """The replies do not make the configuration their header describes."""


@dataclass(frozen=True)
class FileEntry:
    """One file as the header describes it."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class RenderedConfig:
    """A complete, checked configuration: what it reflects and its files' bytes."""

    workspace_id: str
    revision: int
    etag: str
    files: tuple[FileEntry, ...]
    contents: Mapping[str, bytes]
    search_path: tuple[str, ...]
    pattern_matches: Mapping[str, tuple[str, ...]]


def check_path(path: str) -> None:
    """A header's path must stay inside the output directory and clear of canopy's own names."""
    parts = path.split("/")
    if len(parts) > MAX_DEPTH or not all(_COMPONENT.fullmatch(part) for part in parts):
        raise RenderMismatch(f"the server named a file {path!r}, which canopy will not write")


def assemble(
    replies: Iterable[cpb.RenderWorkspaceConfigResponse], patterns: Sequence[str]
) -> RenderedConfig:
    """Put the streamed files back together, checking them against the header."""
    stream = iter(replies)
    first = next(stream, None)
    if first is None or first.WhichOneof("part") != "header":
        raise RenderMismatch("the render did not start with a header")
    header = first.header
    files = tuple(FileEntry(f.path, f.size, f.sha256) for f in header.files)
    seen: set[str] = set()
    for entry in files:
        check_path(entry.path)
        if entry.path in seen:
            raise RenderMismatch(f"the header names {entry.path} twice")
        if entry.size < 0:
            raise RenderMismatch(f"the header gives {entry.path} a negative size")
        seen.add(entry.path)
    # Nested paths must not collide with files (`a` and `a/b`).
    for entry in files:
        for depth in range(1, entry.path.count("/") + 1):
            if "/".join(entry.path.split("/")[:depth]) in seen:
                raise RenderMismatch(f"the header names {entry.path} beneath another file")
    contents: dict[str, bytearray] = {entry.path: bytearray() for entry in files}
    position = 0  # index in `files` of the file being received
    for reply in stream:
        if reply.WhichOneof("part") != "chunk":
            raise RenderMismatch("a second header arrived after the first")
        chunk = reply.chunk
        while position < len(files) and files[position].path != chunk.path:
            _complete(files[position], contents[files[position].path])
            position += 1
        if position == len(files):
            raise RenderMismatch(f"a chunk of {chunk.path!r} arrived out of the header's order")
        entry = files[position]
        received = contents[entry.path]
        if chunk.offset != len(received):
            raise RenderMismatch(
                f"a chunk of {entry.path} starts at {chunk.offset}, after {len(received)} bytes"
            )
        if len(received) + len(chunk.data) > entry.size:
            raise RenderMismatch(f"{entry.path} is longer than the header's {entry.size} bytes")
        received.extend(chunk.data)
    for entry in files[position:]:
        _complete(entry, contents[entry.path])
    matches = {m.pattern: tuple(m.schemas) for m in header.pattern_matches}
    if [m.pattern for m in header.pattern_matches] != list(patterns):
        raise RenderMismatch("the header does not answer the connection patterns asked, in order")
    return RenderedConfig(
        workspace_id=header.workspace_id,
        revision=header.revision,
        etag=header.etag,
        files=files,
        contents={path: bytes(data) for path, data in contents.items()},
        search_path=tuple(header.search_path),
        pattern_matches=matches,
    )


def _complete(entry: FileEntry, data: bytearray) -> None:
    if len(data) != entry.size:
        raise RenderMismatch(f"{entry.path} has {len(data)} bytes, the header says {entry.size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:  # the contract: lower-case hex
        raise RenderMismatch(f"{entry.path} does not have the header's SHA-256 ({digest})")


def check_etag(
    rendered: RenderedConfig, etag: str | None, files: Sequence[FileEntry] | None
) -> None:
    """Equal etags, equal files: a render whose etag is the written one's must have its files."""
    if not rendered.etag:
        raise RenderMismatch("the header has no etag")
    if etag != rendered.etag or files is None:
        return
    if sorted(files, key=lambda f: f.path) != sorted(rendered.files, key=lambda f: f.path):
        raise RenderMismatch(
            f"etag {rendered.etag} is the one already written, but the files differ"
        )
