"""The one server interceptor: request id, authentication, metrics, access log, the edge's rule
for request bytes and text (`canopy_core.request_checks`), and the single place where exceptions
become gRPC statuses (`google.rpc.Status` + `ErrorInfo` + `BadRequest`).
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf import any_pb2, descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from canopy_core.auth import TokenVerifier
from canopy_core.context import principal_var, request_id_var
from canopy_core.db import is_connection_error
from canopy_core.errors import ERROR_DOMAIN, CanopyError, Code, Unauthenticated
from canopy_core.metrics import IN_FLIGHT, LATENCY, REQUESTS
from canopy_core.request_checks import RefusedRequest, checked_deserializer

log = logging.getLogger("canopy.rpc")

REQUEST_ID_HEADER = "x-request-id"
# Bounds on what an error answer carries (characters; violations).
MAX_MESSAGE_TEXT = 512
MAX_FIELD_TEXT = 100
MAX_DESCRIPTION_TEXT = 200
MAX_METADATA_TEXT = 128
MAX_VIOLATIONS = 8
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_for(
    exc: BaseException, request_id: str | None
) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The status an exception is answered with; unexpected ones hide their internals."""
    if isinstance(exc, CanopyError):
        code, message, reason = exc.code, exc.message, exc.reason
        metadata = dict(exc.metadata)
        violations = exc.violations
    elif isinstance(exc, NotImplementedError):
        code, message, reason, metadata, violations = (
            Code.UNIMPLEMENTED,
            "this RPC is not implemented yet",
            "NOT_IMPLEMENTED",
            {},
            [],
        )
    elif is_connection_error(exc):
        code, message, reason, metadata, violations = (
            Code.UNAVAILABLE,
            "the database is unavailable; retry shortly",
            "DATABASE_UNAVAILABLE",
            {},
            [],
        )
    else:
        code, reason, metadata, violations = Code.INTERNAL, "INTERNAL", {}, []
        message = f"internal error (request id {request_id})"
    if request_id:
        metadata.setdefault("request_id", request_id)
    grpc_code = getattr(grpc.StatusCode, code.value)
    # The status travels in trailers, which clients refuse past 8-16 KB (RESOURCE_EXHAUSTED,
    # and the error is lost): bad input can be echoed at any size, so every part is clipped.
    metadata = {
        _clip(k, MAX_METADATA_TEXT): _clip(v, MAX_METADATA_TEXT) for k, v in metadata.items()
    }
    shown = [
        error_details_pb2.BadRequest.FieldViolation(
            field=_clip(v.field, MAX_FIELD_TEXT),
            description=_clip(v.description, MAX_DESCRIPTION_TEXT),
        )
        for v in violations[:MAX_VIOLATIONS]
    ]
    if len(violations) > MAX_VIOLATIONS:
        message = f"{len(violations)} bad fields, the first {MAX_VIOLATIONS} named: {message}"
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata))
    ]
    if shown:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=shown)))
    status = status_pb2.Status(
        code=grpc_code.value[0], message=_clip(message, MAX_MESSAGE_TEXT), details=details
    )
    return grpc_code, status


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


RpcContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every method handler of a Canopy server."""

    def __init__(self, service: str, verifier: TokenVerifier) -> None:
        self.service = service
        self.verifier = verifier
        self._counters: dict[tuple[str, str], Any] = {}
        self._histograms: dict[str, Any] = {}
        self._gauges: dict[str, Any] = {}
        self._deserializers: dict[str, Callable[[bytes], Any] | None] = {}

    # Metric children by label, looked up once: `labels()` is costly on every call.
    def _requests(self, method: str, code: str) -> Any:
        child = self._counters.get((method, code))
        if child is None:
            child = self._counters[(method, code)] = REQUESTS.labels(self.service, method, code)
        return child

    def _latency(self, method: str) -> Any:
        child = self._histograms.get(method)
        if child is None:
            child = self._histograms[method] = LATENCY.labels(self.service, method)
        return child

    def _in_flight(self, method: str) -> Any:
        child = self._gauges.get(method)
        if child is None:
            child = self._gauges[method] = IN_FLIGHT.labels(self.service, method)
        return child

    def _deserializer(self, method: str, handler: Handler) -> Callable[[bytes], Any] | None:
        """The handler's request deserializer, checked by the edge's rule for request bytes
        and text (`canopy_core.request_checks`); built once per method."""
        if method in self._deserializers:
            return self._deserializers[method]
        deserializer = handler.request_deserializer
        if deserializer is not None:
            try:
                found = descriptor_pool.Default().FindMethodByName(method[1:].replace("/", "."))
            except KeyError:
                pass  # not a method of a Canopy contract: left as it is
            else:
                deserializer = checked_deserializer(deserializer, found.input_type)
        self._deserializers[method] = deserializer
        return deserializer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """Return the handler for this call, wrapped (health and reflection pass through)."""
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=self._deserializer(method, handler),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=self._deserializer(method, handler),
                response_serializer=handler.response_serializer,
            )
        return handler  # client-streaming methods are not part of the Canopy contract

    def _begin(self, context: RpcContext) -> tuple[str, str | None]:
        metadata = dict(context.invocation_metadata() or ())
        request_id = str(metadata.get(REQUEST_ID_HEADER) or uuid.uuid4().hex)[:128]
        request_id_var.set(request_id)
        principal_var.set(None)
        authorization = metadata.get("authorization")
        if not isinstance(authorization, str) or not authorization:
            raise Unauthenticated(
                "this call needs `authorization: Bearer <token>` metadata", reason="TOKEN_MISSING"
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "the authorization metadata must be `Bearer <token>`", reason="TOKEN_MISSING"
            )
        principal = self.verifier.verify(token.strip())
        principal_var.set(principal)
        return request_id, principal.subject

    async def _fail(self, context: RpcContext, exc: BaseException, method: str) -> None:
        request_id = request_id_var.get()
        code, status = status_for(exc, request_id)
        if code == grpc.StatusCode.INTERNAL:
            log.error("unexpected error", exc_info=exc, extra={"method": method})
        grpc_status = rpc_status.to_status(status)
        await context.abort(grpc_status.code, grpc_status.details, grpc_status.trailing_metadata)

    def _finish(
        self,
        method: str,
        context: RpcContext,
        started: float,
        subject: str | None,
        failure: BaseException | None,
        stream: bool,
    ) -> None:
        code = context.code() if failure is None else None
        if failure is not None:
            code = status_for(failure, None)[0]
        name = (code or grpc.StatusCode.OK).name
        elapsed = time.perf_counter() - started
        self._requests(method, name).inc()
        if not stream:
            self._latency(method).observe(elapsed)
        if not log.isEnabledFor(logging.INFO):
            return
        log.info(
            "rpc",
            extra={
                "method": method,
                "code": name,
                "duration_ms": round(elapsed * 1000, 2),
                "subject": subject,
            },
        )

    def _wrap_unary(self, inner: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def behaviour(request: Any, context: RpcContext) -> Any:
            started = time.perf_counter()
            subject: str | None = None
            failure: BaseException | None = None
            in_flight = self._in_flight(method)
            in_flight.inc()
            try:
                _, subject = self._begin(context)
                if isinstance(request, RefusedRequest):
                    raise request.error
                result = inner(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                failure = exc
                await self._fail(context, exc, method)
            finally:
                in_flight.dec()
                self._finish(method, context, started, subject, failure, stream=False)

        return behaviour

    def _wrap_stream(self, inner: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def behaviour(request: Any, context: RpcContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            subject: str | None = None
            failure: BaseException | None = None
            in_flight = self._in_flight(method)
            in_flight.inc()
            try:
                _, subject = self._begin(context)
                if isinstance(request, RefusedRequest):
                    raise request.error
                responses = inner(request, context)
                async for response in responses:
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                failure = exc
                await self._fail(context, exc, method)
            finally:
                in_flight.dec()
                self._finish(method, context, started, subject, failure, stream=True)

        return behaviour
