"""Bootstrap of a Canopy service process: database, gRPC server, health, reflection, metrics,
background tasks, and a graceful stop on SIGTERM.

A service describes itself with a `ServiceSpec`; `serve()` starts it (tests use it in-process on
port 0) and `run()` is the process entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import start_http_server
from pydantic import ValidationError

from canopy_core.auth import SystemCredentials, TokenVerifier
from canopy_core.db import Database, Migration
from canopy_core.eventlog import EventLog
from canopy_core.interceptor import ServerInterceptor
from canopy_core.logs import configure_logging
from canopy_core.pagination import PageTokens, page_tokens_for
from canopy_core.reflection import enable_reflection
from canopy_core.settings import ServiceSettings
from canopy_core.tasks import cancel_and_wait
from canopy_core.tls import channel_credentials

log = logging.getLogger(__name__)

#: How long stopping waits for the service's background tasks to end once cancelled.
STOP_TASKS_TIMEOUT = 10.0


def peer_credentials(settings: ServiceSettings) -> grpc.ChannelCredentials | None:
    """How a service calls the others: TLS when CANOPY_TLS_CA_FILE is set, presenting its own
    certificate (CANOPY_TLS_CERT_FILE/KEY_FILE) for mTLS."""
    return channel_credentials(settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)


def channel_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    """Message-size and keepalive limits for servers and clients alike."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


@dataclass
class Runtime:
    """What a running service hands to its setup function."""

    settings: ServiceSettings
    db: Database
    server: grpc.aio.Server
    event_log: EventLog
    credentials: SystemCredentials
    page_tokens: PageTokens
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def add_task(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        """Run a background task for the life of the service; it is cancelled at stop."""
        task = asyncio.create_task(coroutine, name=name)
        task.add_done_callback(_log_task_end)
        self.tasks.append(task)

    def channel(self, address: str) -> grpc.aio.Channel:
        """A channel to another Canopy service that presents this service's system token."""
        credentials = self.credentials

        # grpc.aio files an interceptor under one kind only, so one class per kind.
        class _UnaryAuth(grpc.aio.UnaryUnaryClientInterceptor):
            async def intercept_unary_unary(
                self, continuation: Any, details: Any, request: Any
            ) -> Any:
                return await continuation(_with_token(details, credentials.token()), request)

        class _StreamAuth(grpc.aio.UnaryStreamClientInterceptor):
            async def intercept_unary_stream(
                self, continuation: Any, details: Any, request: Any
            ) -> Any:
                return await continuation(_with_token(details, credentials.token()), request)

        options = [
            *channel_options(self.settings),
            # Peers restart in seconds: retry connecting at most every 2 s, not 120 s.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        tls = peer_credentials(self.settings)
        if tls is not None:
            return grpc.aio.secure_channel(
                address, tls, options=options, interceptors=[_UnaryAuth(), _StreamAuth()]
            )
        return grpc.aio.insecure_channel(
            address, options=options, interceptors=[_UnaryAuth(), _StreamAuth()]
        )


def _with_token(details: Any, token: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", f"Bearer {token}")
    # A service that starts before its peer (or outlives its restart) waits for it, within the
    # call's deadline, instead of failing fast while the channel backs off.
    wait = details.wait_for_ready if details.wait_for_ready is not None else True
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, wait
    )


def _log_task_end(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task failed", exc_info=exc, extra={"task": task.get_name()})


@dataclass
class ServiceSpec:
    """What makes a service: its gRPC service names, migrations and setup."""

    name: str
    service_names: Sequence[str]
    migrations: Sequence[Migration]
    setup: Callable[[Runtime], Awaitable[None]]


@dataclass
class RunningService:
    """A started service: its bound port, and how to stop it."""

    spec: ServiceSpec
    runtime: Runtime
    port: int
    metrics_port: int | None
    health: HealthServicer
    _metrics_server: Any = None
    _stopped: bool = False

    async def stop(self) -> None:
        """NOT_SERVING, stop serving with the grace period, end background work, close pools."""
        if self._stopped:
            return
        self._stopped = True
        settings = self.runtime.settings
        await self.health.enter_graceful_shutdown()
        log.info("stopping", extra={"grace_seconds": settings.shutdown_grace.total_seconds()})
        try:
            await asyncio.wait_for(self.runtime.event_log.close(), STOP_TASKS_TIMEOUT)
        except TimeoutError:
            log.error("the event log's tasks did not stop; stopping without them")
        await self.runtime.server.stop(settings.shutdown_grace.total_seconds())
        # Bounded: a task that will not end must not keep the service from stopping.
        stopping = asyncio.ensure_future(cancel_and_wait(*self.runtime.tasks))
        done, _ = await asyncio.wait({stopping}, timeout=STOP_TASKS_TIMEOUT)
        if not done:
            stuck = [t.get_name() for t in self.runtime.tasks if not t.done()]
            log.error(
                "background tasks did not stop; stopping without them", extra={"tasks": stuck}
            )
        for hook in self.runtime.on_stop:
            with contextlib.suppress(Exception):  # a hook that fails or hangs is left behind
                await asyncio.wait_for(hook(), STOP_TASKS_TIMEOUT)
        await self.runtime.db.close()
        if self._metrics_server is not None:
            # shutdown() waits for the serving thread's next poll (up to half a second).
            await asyncio.to_thread(self._metrics_server.shutdown)
            self._metrics_server.server_close()
        log.info("stopped")


async def serve(spec: ServiceSpec, settings: ServiceSettings) -> RunningService:
    """Start a service and return once it is serving."""
    verifier = TokenVerifier(settings)
    page_tokens = page_tokens_for(settings)
    db = await Database.open(settings, spec.migrations)
    server = grpc.aio.server(
        interceptors=[ServerInterceptor(spec.name, verifier)],
        options=channel_options(settings),
    )
    runtime = Runtime(
        settings=settings,
        db=db,
        server=server,
        event_log=EventLog(
            db,
            progress_interval=settings.watch_progress_interval.total_seconds(),
            compact_events=settings.compact_events,
        ),
        credentials=SystemCredentials(settings),
        page_tokens=page_tokens,
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(
        server, [*spec.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    )
    await spec.setup(runtime)
    address = f"{settings.host}:{settings.port}"
    if settings.tls_cert_file and settings.tls_key_file:
        client_ca = (
            settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
        )
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    await server.start()
    for name in spec.service_names:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningService(spec, runtime, port, None, health)
    if settings.metrics_port is not None:
        metrics_server, _thread = start_http_server(settings.metrics_port, settings.metrics_host)
        running._metrics_server = metrics_server
        running.metrics_port = metrics_server.server_port
    runtime.add_task(
        runtime.event_log.run_compaction(settings.event_retention, every=timedelta(hours=1)),
        name="event-log-compaction",
    )
    log.info(
        "serving",
        extra={
            "port": port,
            "metrics_port": running.metrics_port,
            "services": list(spec.service_names),
        },
    )
    return running


def tune_gc() -> None:
    """Once a service process has started: what exists now (modules, stubs, settings) lives as
    long as the process, so keep the cycle collector off it, and let the collector run less
    often on the many short-lived objects of busy calls (a full collection over 100,000s of
    queued events, or a 10,000-account snapshot, stalls every call)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run(spec: ServiceSpec, settings_type: type[ServiceSettings]) -> None:
    """Process entry point: read settings, serve until SIGTERM or SIGINT, stop gracefully."""
    try:
        settings = settings_type()
    except ValidationError as exc:
        for error in exc.errors():
            name = "CANOPY_" + "_".join(str(p) for p in error["loc"]).upper()
            print(f"canopy-{spec.name}: invalid {name}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(spec.name, settings.log_level, settings.log_format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        running = await serve(spec, settings)
        tune_gc()
        await stop.wait()
        await running.stop()

    asyncio.run(main())
