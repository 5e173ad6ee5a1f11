"""The directory `canopy workspace config` keeps a workspace's configuration in: every render
written whole in a directory of its own, then made current in one step, the way kubelet
updates a mounted ConfigMap (readers of ConfigMap volumes already cope with this layout):

    DIR/..data -> ..rev-<revision>-<random>   the current render: one symlink, swapped by rename
    DIR/..rev-<revision>-<random>/            one render's files, and .canopy-state.json
    DIR/aws.spc -> ..data/aws.spc             what readers open (each file name, once)
    DIR/.canopy-state.json -> ..data/.canopy-state.json
    DIR/..lock                                held by the one canopy writing DIR

Writing a render: its files and the state into a fresh `..tmp-…` directory, each file fsynced,
the directory fsynced and renamed to `..rev-…`; then a new symlink renamed over `..data`
(rename(2) is atomic) and DIR fsynced. A reader that opens `DIR/aws.spc` gets the whole file of
one render, old or new, never a part or a mix; the state can never claim a render that is not
on disk. A failure anywhere before the swap leaves `..data`, and so every file, as it was. The
render before the current one is kept, so a reader that resolved `..data` just before a swap
can still open its files. Each file's symlink is then renamed afresh (same target), so that
a watcher of DIR that only looks at `*.spc` names sees the change.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canopy_cli.client import CliError
from canopy_cli.config_files import FileEntry, RenderedConfig

DATA = "..data"
STATE = ".canopy-state.json"
LOCK = "..lock"
GENERATION = "..rev-"
TEMPORARY = "..tmp-"
STATE_FORMAT = 1


class OutputDirError(CliError):
    """DIR cannot hold this workspace's configuration as it is (a usage error: exit 2)."""

    exit_code = 2


class WriteFailed(CliError):
    """Writing a render failed; the files written before are still the current ones."""


@dataclass(frozen=True)
class ConfigState:
    """What the current files of DIR reflect, as `.canopy-state.json` records it."""

    workspace_id: str
    revision: int
    etag: str
    files: tuple[FileEntry, ...]
    #: A hash of the request options the files were rendered with (credential source, patterns).
    request: str
    pattern_matches: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The state file's bytes."""
        return (
            json.dumps(
                {
                    "format": STATE_FORMAT,
                    "workspace_id": self.workspace_id,
                    "revision": self.revision,
                    "etag": self.etag,
                    "files": [
                        {"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files
                    ],
                    "request": self.request,
                    "pattern_matches": {k: list(v) for k, v in self.pattern_matches.items()},
                },
                indent=2,
                sort_keys=True,
            )
            + "\n"
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ConfigState | None:
        """The state a state file records; None for anything canopy did not write."""
        try:
            raw: Any = json.loads(data)
            if raw.get("format") != STATE_FORMAT:
                return None
            return cls(
                workspace_id=str(raw["workspace_id"]),
                revision=int(raw["revision"]),
                etag=str(raw["etag"]),
                files=tuple(
                    FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"]))
                    for f in raw["files"]
                ),
                request=str(raw["request"]),
                pattern_matches={
                    str(k): tuple(str(s) for s in v) for k, v in raw["pattern_matches"].items()
                },
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def request_fingerprint(credential_source: Mapping[str, str], patterns: Sequence[str]) -> str:
    """The request options a render depends on besides the workspace's schemas."""
    encoded = json.dumps({"credential_source": credential_source, "patterns": list(patterns)})
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputDir:
    """DIR: its current state, and `publish` to make a new render current."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create DIR if needed and take its lock (one canopy writes a DIR at a time)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise self._failed(error, None) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputDirError(
                f"{self.path} is being written by another canopy (it holds {self.path / LOCK})"
            ) from None
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def state(self) -> ConfigState | None:
        """What the current files reflect; None when DIR has none canopy wrote."""
        try:
            data = (self.path / DATA / STATE).read_bytes()
        except OSError:
            return None
        return ConfigState.from_json(data)

    def publish(self, rendered: RenderedConfig, state: ConfigState) -> None:
        """Write a render and make it current in one step; on failure nothing changes."""
        previous = self.state()
        names = sorted({f.path.split("/")[0] for f in rendered.files} | {STATE})
        self._check_names(names)
        replaced = os.readlink(self.path / DATA) if (self.path / DATA).is_symlink() else None
        temporary = self.path / f"{TEMPORARY}{secrets.token_hex(4)}"
        try:
            os.mkdir(temporary, 0o755)
            try:
                for entry in rendered.files:
                    target = temporary / entry.path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _write_file(target, rendered.contents[entry.path])
                _write_file(temporary / STATE, state.to_json())
                for directory in sorted({(temporary / f.path).parent for f in rendered.files}):
                    _fsync_directory(directory)
                generation = f"{GENERATION}{rendered.revision}-{secrets.token_hex(4)}"
                os.rename(temporary, self.path / generation)
            except BaseException:
                shutil.rmtree(temporary, ignore_errors=True)
                raise
            self._swap(DATA, generation)
        except OSError as error:
            raise self._failed(error, previous) from None
        # The render is current. What follows tidies up; a failure here loses nothing.
        try:
            for name in names:
                self._link(name)
            _fsync_directory(self.path)
            stale = {f.path.split("/")[0] for f in previous.files} if previous else set()
            for name in sorted(stale - set(names)):
                path = self.path / name
                if path.is_symlink() and os.readlink(path) == f"{DATA}/{name}":
                    os.unlink(path)
            self._remove_old_generations(keep={generation, replaced or generation})
        except OSError as error:
            raise self._failed(error, None, tidying=True) from None

    def _check_names(self, names: Sequence[str]) -> None:
        """Refuse to replace a file canopy did not write."""
        for name in names:
            path = self.path / name
            if not os.path.lexists(path):
                continue
            if not path.is_symlink() or os.readlink(path) != f"{DATA}/{name}":
                raise OutputDirError(
                    f"{path} is not a file canopy wrote; write the configuration to a "
                    "directory of its own"
                )

    def _swap(self, name: str, target: str) -> None:
        """Point DIR/name at target in one step: a new symlink renamed over the old one."""
        temporary = self.path / f"{TEMPORARY}link-{secrets.token_hex(4)}"
        os.symlink(target, temporary)
        try:
            os.rename(temporary, self.path / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_directory(self.path)

    def _link(self, name: str) -> None:
        # Renamed afresh even when it is in place: a watcher that filters on `*.spc` (as
        # Steampipe's does) sees no event for `..data`, but sees this one.
        self._swap(name, f"{DATA}/{name}")

    def _remove_old_generations(self, keep: set[str]) -> None:
        """Every render but the current one and the one before it; leftovers of crashed runs."""
        for entry in os.scandir(self.path):
            if entry.name.startswith(TEMPORARY) or (
                entry.name.startswith(GENERATION) and entry.name not in keep
            ):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)

    def _failed(
        self, error: OSError, previous: ConfigState | None, tidying: bool = False
    ) -> WriteFailed:
        reason = error.strerror or str(error)
        if error.errno == errno.EFBIG:
            reason += " (the file size limit)"
        where = f" ({error.filename})" if error.filename else ""
        if tidying:
            kept = "the new files are current; tidying up failed"
        elif previous is not None:
            kept = f"the files of revision {previous.revision} are unchanged"
        else:
            kept = "nothing was written"
        return WriteFailed(f"cannot write {self.path}: {reason}{where}; {kept}")
