"""The service runtime over real gRPC: authentication, the error interceptor, health,
reflection, metrics and a graceful stop. A small probe service stands in for real ones."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from canopy_core import server as server_module
from canopy_core.context import current_principal
from canopy_core.errors import FieldViolation, InvalidArgument, NotFound
from canopy_core.server import RunningService, Runtime, ServiceSpec, serve
from canopy_core.settings import ServiceSettings
from tests.helpers import bearer, error_details, token

PROBE = "canopy.test.v1.ProbeService"


async def whoami(request: bytes, context: Any) -> bytes:
    return current_principal().subject.encode()


async def fail(request: bytes, context: Any) -> bytes:
    if request == b"invalid":
        raise InvalidArgument(
            [FieldViolation("tenant.handle", "bad"), FieldViolation("tenant.plan", "bad")]
        )
    if request == b"missing":
        raise NotFound("tenant", "t_nope")
    if request == b"echoed":  # bad input echoed back at the size it came
        raise NotFound("tenant", "t_" + "a" * 100_000)
    if request == b"everywhere":
        raise InvalidArgument([FieldViolation(f"regions[{i}]", "x" * 100_000) for i in range(1000)])
    if request == b"database":
        raise ConnectionRefusedError("connect call failed")
    raise RuntimeError("secret internal detail")


async def count(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for i in range(3):
        yield str(i).encode()
    raise NotFound("workspace", "w_gone")


async def setup(runtime: Runtime) -> None:
    identity: Any = lambda b: b  # noqa: E731
    handlers = {
        "WhoAmI": grpc.unary_unary_rpc_method_handler(whoami, identity, identity),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, identity, identity),
        "Count": grpc.unary_stream_rpc_method_handler(count, identity, identity),
    }
    runtime.server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(PROBE, handlers),)
    )


@pytest.fixture(params=[None])
async def probe(
    service_env: dict[str, Any], request: pytest.FixtureRequest
) -> AsyncIterator[RunningService]:
    settings = ServiceSettings(
        **{**service_env, "metrics_port": request.param, "service_name": "probe"}
    )
    running = await serve(ServiceSpec("probe", [PROBE], [], setup), settings)
    yield running
    await running.stop()


@pytest.fixture
async def channel(probe: RunningService) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe.port}") as ch:
        yield ch


def call(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_unary(f"/{PROBE}/{method}")


async def expect_error(awaitable: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    return caught.value


async def test_a_valid_token_reaches_the_handler_as_the_principal(
    channel: grpc.aio.Channel,
) -> None:
    reply = await call(channel, "WhoAmI")(b"", metadata=bearer(token("alice", t_acme="owner")))
    assert reply == b"alice"


async def test_a_call_without_a_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    details = error_details(await expect_error(call(channel, "WhoAmI")(b"")))
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.reason == "TOKEN_MISSING"
    assert details.domain == "canopy.dev"


async def test_a_token_signed_with_another_secret_is_unauthenticated(
    channel: grpc.aio.Channel,
) -> None:
    from canopy_core.auth import mint_token

    forged = mint_token("not-the-secret-but-long-enough-0123456789", "mallory", system=True)
    details = error_details(
        await expect_error(call(channel, "WhoAmI")(b"", metadata=bearer(forged)))
    )
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.reason == "TOKEN_SIGNATURE_INVALID"


async def test_an_expired_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    expired = token("alice", ttl=-60)
    details = error_details(
        await expect_error(call(channel, "WhoAmI")(b"", metadata=bearer(expired)))
    )
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.reason == "TOKEN_EXPIRED"


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer not.a.jwt", "token-without-scheme"]
)
async def test_a_malformed_authorization_header_is_unauthenticated(
    channel: grpc.aio.Channel, header: str
) -> None:
    error = await expect_error(call(channel, "WhoAmI")(b"", metadata=(("authorization", header),)))
    assert error_details(error).code == grpc.StatusCode.UNAUTHENTICATED


async def test_bad_input_names_every_field_in_bad_request(channel: grpc.aio.Channel) -> None:
    error = await expect_error(call(channel, "Fail")(b"invalid", metadata=bearer(token())))
    details = error_details(error)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["tenant.handle", "tenant.plan"]
    assert details.metadata["field"] == "tenant.handle"
    assert "tenant.handle: bad" in details.message


async def test_a_domain_error_keeps_its_reason_and_metadata(channel: grpc.aio.Channel) -> None:
    error = await expect_error(
        call(channel, "Fail")(b"missing", metadata=(*bearer(token()), ("x-request-id", "req-42")))
    )
    details = error_details(error)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "TENANT_NOT_FOUND"
    assert details.metadata["id"] == "t_nope"
    assert details.metadata["request_id"] == "req-42"


async def test_an_error_echoing_huge_input_still_reaches_a_client_with_default_limits(
    channel: grpc.aio.Channel,
) -> None:
    # Trailers past a client's metadata limit (16 KB by default) used to reach it as
    # RESOURCE_EXHAUSTED "Stream removed", the error itself lost.
    echoed = error_details(
        await expect_error(call(channel, "Fail")(b"echoed", metadata=bearer(token())))
    )
    assert echoed.code == grpc.StatusCode.NOT_FOUND
    assert echoed.reason == "TENANT_NOT_FOUND"
    assert len(echoed.message) <= 512
    assert echoed.metadata["id"].startswith("t_aaa")
    everywhere = error_details(
        await expect_error(call(channel, "Fail")(b"everywhere", metadata=bearer(token())))
    )
    assert everywhere.code == grpc.StatusCode.INVALID_ARGUMENT
    assert everywhere.fields == [f"regions[{i}]" for i in range(8)]
    assert everywhere.message.startswith("1000 bad fields, the first 8 named: regions[0]: xxx")


async def test_an_unexpected_exception_is_internal_without_its_details(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    error = await expect_error(
        call(channel, "Fail")(b"boom", metadata=(*bearer(token()), ("x-request-id", "req-7")))
    )
    details = error_details(error)
    assert details.code == grpc.StatusCode.INTERNAL
    assert "secret internal detail" not in details.message
    assert "req-7" in details.message
    logged = [r for r in caplog.records if r.getMessage() == "unexpected error"]
    assert logged
    exc_info = logged[0].exc_info
    assert exc_info is not None
    assert "secret internal detail" in str(exc_info[1])


async def test_a_lost_database_connection_is_unavailable(channel: grpc.aio.Channel) -> None:
    details = error_details(
        await expect_error(call(channel, "Fail")(b"database", metadata=bearer(token())))
    )
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.reason == "DATABASE_UNAVAILABLE"


async def test_a_stream_that_fails_after_some_messages_ends_with_the_mapped_status(
    channel: grpc.aio.Channel,
) -> None:
    count_method: Any = channel.unary_stream(f"/{PROBE}/Count")
    stream = count_method(b"", metadata=bearer(token()))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in stream:
            received.append(message)
    assert received == [b"0", b"1", b"2"]
    assert error_details(caught.value).reason == "WORKSPACE_NOT_FOUND"


async def test_an_unknown_method_is_unimplemented(channel: grpc.aio.Channel) -> None:
    error = await expect_error(call(channel, "Nope")(b"", metadata=bearer(token())))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_health_and_reflection_need_no_token(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=PROBE))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert overall.status == health_pb2.HealthCheckResponse.SERVING

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = []
    async for answer in stub.ServerReflectionInfo(ask()):
        names = [s.name for s in answer.list_services_response.service]
    assert PROBE in names
    assert "grpc.health.v1.Health" in names


async def test_reflection_finds_the_file_of_a_method_as_grpcurl_describe_asks(
    channel: grpc.aio.Channel,
) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        for symbol in ("grpc.health.v1.Health.Check", "grpc.health.v1.Health.Nope"):
            yield reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)

    answers = [answer async for answer in stub.ServerReflectionInfo(ask())]
    found = descriptor_pb2.FileDescriptorProto.FromString(
        answers[0].file_descriptor_response.file_descriptor_proto[0]
    )
    assert found.name == health_pb2.DESCRIPTOR.name  # grpc_health/v1/health.proto
    assert answers[1].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


@pytest.mark.parametrize("probe", [0], indirect=True)  # metrics on a free port
async def test_metrics_count_requests_by_method_and_code(
    probe: RunningService, channel: grpc.aio.Channel
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await call(channel, "Fail")(b"invalid", metadata=bearer(token()))
    await call(channel, "WhoAmI")(b"", metadata=bearer(token()))
    text = await asyncio.to_thread(
        lambda: (
            urllib.request.urlopen(f"http://127.0.0.1:{probe.metrics_port}/metrics").read().decode()
        )
    )
    assert (
        'canopy_grpc_requests_total{code="INVALID_ARGUMENT",'
        'method="/canopy.test.v1.ProbeService/Fail",service="probe"}'
    ) in text
    assert (
        'canopy_grpc_request_duration_seconds_count{method="/canopy.test.v1.ProbeService/WhoAmI"'
        in text
    )


async def test_stop_turns_health_to_not_serving_and_refuses_new_calls(
    probe: RunningService, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=PROBE))
    assert (await anext(aiter(watch))).status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.create_task(probe.stop())
    assert (await anext(aiter(watch))).status == health_pb2.HealthCheckResponse.NOT_SERVING
    await stopping
    error = await expect_error(call(channel, "WhoAmI")(b"", metadata=bearer(token()), timeout=2))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_stopping_does_not_wait_forever_for_a_task_that_will_not_end(
    service_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server_module, "STOP_TASKS_TIMEOUT", 0.3)
    settings = ServiceSettings(**{**service_env, "service_name": "probe"})
    running = await serve(ServiceSpec("probe", [PROBE], [], setup), settings)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    task = asyncio.create_task(stubborn(), name="stubborn")
    running.runtime.tasks.append(task)
    await asyncio.sleep(0)
    await asyncio.wait_for(running.stop(), 10)
    assert "background tasks did not stop" in caplog.text
    assert "stubborn" in str([r.__dict__.get("tasks") for r in caplog.records])
    release.set()
    task.cancel()
    await task


async def test_stopping_does_not_wait_forever_for_the_event_log_or_a_hook(
    service_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server_module, "STOP_TASKS_TIMEOUT", 0.3)
    settings = ServiceSettings(**{**service_env, "service_name": "probe"})
    running = await serve(ServiceSpec("probe", [PROBE], [], setup), settings)
    hung = asyncio.Event()
    closed = running.runtime.event_log.close

    async def close_then_hang() -> None:
        await closed()
        await hung.wait()  # e.g. a tail task stuck on a database that went away

    async def hook_that_hangs() -> None:
        await hung.wait()

    monkeypatch.setattr(running.runtime.event_log, "close", close_then_hang)
    running.runtime.on_stop.append(hook_that_hangs)
    await asyncio.wait_for(running.stop(), 10)
    assert "the event log's tasks did not stop" in caplog.text
    assert running.runtime.db.pool.is_closing()
