"""`canopy workspace config`: render a workspace's configuration into a directory, and with
`--follow` keep it current from the workspace's schema stream.

Following: render, write, then watch the workspace's schemas after the revision the files
reflect. Changes are gathered for a short window (a prefix change arrives as thousands of
events in a few batches), then the configuration is rendered again and written if it differs.
The revision the files reflect is recorded with them (`canopy_cli.outdir`), so a restart
resumes from it; a revision the log no longer keeps (OUT_OF_RANGE) means a fresh render. The
watch itself reconnects and resumes when the service goes away (`canopy_cli.streams.follow`),
and a render retries while the service is unreachable, for as long as a watch would.

Output: one line per update on stdout (`revision R: A added, N renamed, D removed, C
reconfigured`), printed once the stream has passed R so that it counts every event the files
took in; the user's connection patterns below it; warnings and notes on stderr.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import grpc

from canopy.permissions.v1 import workspace_config_service_pb2 as cpb
from canopy.permissions.v1 import workspace_schema_pb2 as wpb
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy_cli.client import Clients, CliError, eprint
from canopy_cli.config_files import RenderedConfig, RenderMismatch, assemble, check_etag
from canopy_cli.outdir import ConfigState, OutputDir
from canopy_cli.streams import FIRST_DELAY, MAX_DELAY, RECONNECT_FOR, follow, retryable
from canopy_core.remote import error_info

EXIT_DONE = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_EMPTY_PATTERN = 3

#: How many schema names a pattern line shows; the state file keeps every match.
SHOWN_NAMES = 100
#: How long a render that found no workspace waits for the stream's `workspace_deleted`.
DELETION_GRACE = 10.0
#: How long stopping waits for the stream's thread (it may be between two reconnections).
STOP_TIMEOUT = 10.0


_CANNOT_RESUME = {
    "REVISION_COMPACTED": "is no longer retained",
    "REVISION_NOT_YET_WRITTEN": "is past the service's latest (DIR was written elsewhere?)",
}


class EmptyPattern(Exception):
    """`--fail-on-empty-pattern`, and a pattern matches no schema."""


class _Stop(Exception):
    """SIGTERM: stop following (the files on disk are always one whole render)."""


@dataclass
class Counts:
    """The schema events one update took in."""

    added: int = 0
    renamed: int = 0
    removed: int = 0
    reconfigured: int = 0

    def count(self, event: wpb.SchemaEvent) -> None:
        """Count one event by its kind."""
        kind = event.WhichOneof("event")
        if kind == "schema_added":
            self.added += 1
        elif kind == "schema_renamed":
            self.renamed += 1
        elif kind == "schema_removed":
            self.removed += 1
        elif kind == "schema_config_changed":
            self.reconfigured += 1

    def __str__(self) -> str:
        return (
            f"{self.added} added, {self.renamed} renamed, {self.removed} removed, "
            f"{self.reconfigured} reconfigured"
        )


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    if len(names) > SHOWN_NAMES:
        shown += f", … ({len(names) - SHOWN_NAMES} more)"
    return shown


def pattern_report(
    before: Mapping[str, Sequence[str]] | None,
    after: Mapping[str, Sequence[str]],
    revision: int,
) -> tuple[list[str], list[str]]:
    """The lines (stdout) and warnings (stderr) about the user's patterns: with no `before`,
    what each matches; otherwise which gained or lost schemas. A pattern that matches nothing
    is a warning when first seen empty and whenever it becomes empty."""
    lines: list[str] = []
    warnings: list[str] = []
    for pattern, matched in after.items():
        now = sorted(matched)
        if before is None:
            lines.append(
                f"  pattern {pattern}: {len(now)} schemas: {_names(now)}"
                if now
                else f"  pattern {pattern}: no schema"
            )
            if not now:
                warnings.append(f"warning: pattern {pattern} matches no schema")
            continue
        earlier = set(before.get(pattern, ()))
        gained = sorted(set(now) - earlier)
        lost = sorted(earlier - set(now))
        if not gained and not lost:
            continue
        parts = []
        if gained:
            parts.append(f"gained {_names(gained)}")
        if lost:
            parts.append(f"lost {_names(lost)}")
        lines.append(f"  pattern {pattern}: {'; '.join(parts)} (now {len(now)} schemas)")
        if not now:
            warnings.append(
                f"warning: pattern {pattern} matches no schema since revision {revision} "
                f"(it matched {_names(sorted(earlier))})"
            )
    return lines, warnings


@dataclass
class _Pending:
    """An update written but not yet printed: the stream has not passed its revision."""

    revision: int
    counts: Counts
    unchanged: bool
    lines: list[str]
    warnings: list[str]


class _Watch:
    """The workspace's schema stream, read in a thread of its own into a queue, so the command
    can wait for changes with a deadline (the coalescing window)."""

    def __init__(self, clients: Clients, workspace_id: str, after_revision: int) -> None:
        self.replies: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._clients = clients
        self._workspace_id = workspace_id
        self._call: Any = None
        self._stopped = False
        self._launched = False
        self._thread = threading.Thread(
            target=self._run, args=(after_revision,), name="canopy-watch", daemon=True
        )

    def start(self) -> None:
        """Start reading. SIGTERM and SIGINT wait until the thread has started: raised in the
        middle of `Thread.start`, their exception would leave a thread that `stop` cannot
        tell is running (and the thread inherits them blocked: they are the main thread's)."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            self._thread.start()
            self._launched = True
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _open(self, after_revision: int) -> Any:
        call = self._clients.schemas.WatchWorkspaceSchemas(
            wrpc.WatchWorkspaceSchemasRequest(
                workspace_id=self._workspace_id, after_revision=after_revision
            )
        )
        self._call = call
        if self._stopped:
            call.cancel()
        return call

    def _run(self, after_revision: int) -> None:
        def reconnecting(position: int, error: Exception) -> None:
            eprint(f"the permissions service went away; reconnecting after revision {position}")

        try:
            for reply in follow(self._open, after_revision, on_reconnect=reconnecting):
                self.replies.put(("reply", reply))
            self.replies.put(("end", None))
        except Exception as error:
            self.replies.put(("error", error))

    def stop(self) -> None:
        """Cancel the stream and wait for the thread to end: a thread still inside a gRPC call
        when the interpreter exits can crash it."""
        self._stopped = True
        if self._call is not None:
            self._call.cancel()
        if self._launched and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_TIMEOUT)


@dataclass
class ConfigFollower:
    """One workspace's configuration kept in one directory."""

    clients: Clients
    workspace_id: str
    out: OutputDir
    request: cpb.RenderWorkspaceConfigRequest
    fingerprint: str
    fail_on_empty_pattern: bool = False
    echo: Callable[[str], None] = print
    warn: Callable[[str], None] = eprint
    sleep: Callable[[float], None] = time.sleep
    current: ConfigState | None = None
    #: The revision the files on disk cover (may be past `current.revision` when a render
    #: found the files unchanged and left them as they were).
    covered: int = 0
    _pending: _Pending | None = field(default=None, repr=False)

    # -- rendering and writing -------------------------------------------------------------

    def render(self) -> RenderedConfig:
        """One RenderWorkspaceConfig call, put back together and checked."""
        stream = self.clients.workspace_config.RenderWorkspaceConfig(self.request)
        try:
            rendered = assemble(stream, list(self.request.connection_patterns))
            if rendered.workspace_id != self.workspace_id:
                raise RenderMismatch(f"the header is of workspace {rendered.workspace_id!r}")
            if self.current is None:
                check_etag(rendered, None, None)
            else:
                check_etag(rendered, self.current.etag, self.current.files)
        except RenderMismatch as error:
            raise CliError(
                f"the configuration rendered for {self.workspace_id} does not check out: "
                f"{error}; nothing was written"
            ) from None
        finally:
            stream.cancel()
        return rendered

    def render_retrying(self) -> RenderedConfig:
        """`render`, again while the service is unreachable (restarting), up to
        RECONNECT_FOR seconds."""
        delay, away_since = FIRST_DELAY, None
        while True:
            try:
                return self.render()
            except (CliError, grpc.RpcError) as error:
                if not retryable(error):
                    raise
                now = time.monotonic()
                away_since = now if away_since is None else away_since
                if now - away_since > RECONNECT_FOR:
                    raise
                self.warn("the permissions service is unreachable; rendering again shortly")
            self.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)

    def write(self, rendered: RenderedConfig, *, force: bool = False) -> bool:
        """Make a render current unless the files already are it (`force`: record its
        revision even so); whether DIR changed."""
        current = self.current
        if current is not None and rendered.revision < self.covered:
            return False  # never go back to an older render
        self.covered = max(self.covered, rendered.revision)
        if (
            not force
            and current is not None
            and current.etag == rendered.etag
            and current.request == self.fingerprint
        ):
            return False
        state = ConfigState(
            workspace_id=self.workspace_id,
            revision=rendered.revision,
            etag=rendered.etag,
            files=rendered.files,
            request=self.fingerprint,
            pattern_matches=rendered.pattern_matches,
        )
        self.out.publish(rendered, state)
        self.current = state
        return True

    def first(self, rendered: RenderedConfig, note: str = "rendered") -> None:
        """Write a render made without a stream before it, and report it whole."""
        before = self.current
        changed = self.write(rendered, force=note != "rendered")
        names = ", ".join(f.path for f in rendered.files)
        outcome = f"{note} {names}" if changed else "files unchanged"
        self.echo(f"revision {rendered.revision}: {outcome} (etag {rendered.etag})")
        previous = before.pattern_matches if before and note != "rendered" else None
        lines, warnings = pattern_report(previous, rendered.pattern_matches, rendered.revision)
        self._report(lines, warnings, rendered.pattern_matches)

    def _report(
        self, lines: list[str], warnings: list[str], matches: Mapping[str, Sequence[str]]
    ) -> None:
        for line in lines:
            self.echo(line)
        for warning in warnings:
            self.warn(f"canopy: {warning}")
        if self.fail_on_empty_pattern and any(not m for m in matches.values()):
            raise EmptyPattern

    # -- following ---------------------------------------------------------------------------

    def run_once(self) -> int:
        """Render and write once."""
        self.first(self.render())
        return EXIT_DONE

    def run_following(self, coalesce: float) -> int:
        """Render (or resume from DIR), then keep DIR current until the workspace is deleted
        or SIGTERM."""
        sigterm = _SigtermStops()
        watch: _Watch | None = None
        try:
            if self.current is None or self.current.request != self.fingerprint:
                self.first(self.render_retrying())
            else:
                self.covered = self.current.revision
                self.warn(
                    f"resuming {self.workspace_id} after revision {self.current.revision}, "
                    f"recorded in {self.out.path}"
                )
            while True:
                watch = _Watch(self.clients, self.workspace_id, self.covered)
                watch.start()
                ended = self._follow(watch, coalesce)
                watch.stop()
                if ended:
                    return EXIT_DONE
                # The revision cannot be resumed from: start over from a fresh render, and
                # record its revision even if the files are the same.
                self.covered = 0
                self.first(self.render_retrying(), note="rendered afresh")
        except (_Stop, KeyboardInterrupt):
            self._flush()
            return EXIT_DONE
        finally:
            sigterm.hold()
            if watch is not None:
                watch.stop()
            sigterm.restore()

    def _follow(self, watch: _Watch, coalesce: float) -> bool:
        """Until the workspace is deleted (True) or its revision is compacted (False)."""
        pending: list[wpb.SchemaEvent] = []
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                kind, item = watch.replies.get(timeout=timeout)
            except queue.Empty:
                try:
                    pending = self._update(pending)
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    # Deleted, most likely: its last events may still be on their way.
                    self._await_deletion(watch, error)
                    return True
                deadline = time.monotonic() + coalesce if pending else None
                continue
            if kind == "end":
                self._flush()
                return True
            if kind == "error":
                if isinstance(item, grpc.RpcError) and item.code() == grpc.StatusCode.OUT_OF_RANGE:
                    self._flush()
                    reason, _ = error_info(item)
                    why = _CANNOT_RESUME.get(reason, f"cannot be resumed from ({reason})")
                    self.warn(f"revision {self.covered} {why}; rendering afresh")
                    return False
                raise item
            reply: wrpc.WatchWorkspaceSchemasResponse = item
            for event in reply.events:
                if event.revision <= self.covered:
                    if self._pending is not None:
                        self._pending.counts.count(event)  # taken in by the last render
                    continue
                self._flush()  # a later event: the last update's events have all arrived
                if event.WhichOneof("event") == "workspace_deleted":
                    self._deleted(event, pending)
                    return True
                pending.append(event)
            if self._pending is not None and reply.latest_revision >= self._pending.revision:
                self._flush()
            if pending and deadline is None:
                deadline = time.monotonic() + coalesce

    def _await_deletion(self, watch: _Watch, error: grpc.RpcError) -> None:
        """After a render found no workspace: end as for a deletion if the stream says so
        within a few seconds, otherwise fail with the render's answer."""
        deadline = time.monotonic() + DELETION_GRACE
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, item = watch.replies.get(timeout=left)
            except queue.Empty:
                break
            if kind != "reply":
                break
            for event in item.events:
                if event.WhichOneof("event") == "workspace_deleted":
                    self._flush()
                    self._deleted(event, [])
                    return
        raise error

    def _update(self, pending: list[wpb.SchemaEvent]) -> list[wpb.SchemaEvent]:
        """Render after a window of changes; returns the events the render did not cover."""
        rendered = self.render_retrying()
        before = self.current
        changed = self.write(rendered)
        counts = Counts()
        for event in pending:
            if event.revision <= rendered.revision:
                counts.count(event)
        previous = before.pattern_matches if before is not None else None
        lines, warnings = pattern_report(previous, rendered.pattern_matches, rendered.revision)
        self._flush()
        self._pending = _Pending(self.covered, counts, not changed, lines, warnings)
        return [e for e in pending if e.revision > rendered.revision]

    def _flush(self) -> None:
        """Print the written update, now that every event it took in has been counted."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        suffix = "; files unchanged" if pending.unchanged else ""
        self.echo(f"revision {pending.revision}: {pending.counts}{suffix}")
        matches = self.current.pattern_matches if self.current else {}
        self._report(pending.lines, pending.warnings, matches)

    def _deleted(self, event: wpb.SchemaEvent, pending: list[wpb.SchemaEvent]) -> None:
        removed = sum(1 for e in pending if e.WhichOneof("event") == "schema_removed")
        kept = self.current.revision if self.current else self.covered
        self.echo(
            f"revision {event.revision}: workspace deleted ({removed} removed); "
            f"the files of revision {kept} are left as they were"
        )


class _SigtermStops:
    """SIGTERM raises `_Stop` in the main thread (a pod stopping its sidecar) while following,
    and is ignored while the command is already stopping (so that the stream's thread is
    always waited for). Elsewhere (tests call the command from a worker thread) signals are
    left alone."""

    def __init__(self) -> None:
        self._main = threading.current_thread() is threading.main_thread()
        self._previous: Any = None
        if self._main:
            self._previous = signal.signal(signal.SIGTERM, self._stop)

    @staticmethod
    def _stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    def hold(self) -> None:
        """From now on, SIGTERM changes nothing: the command is stopping anyway."""
        if self._main:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def restore(self) -> None:
        """The handler from before."""
        if self._main:
            signal.signal(signal.SIGTERM, self._previous)
