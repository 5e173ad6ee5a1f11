"""A small HTTP proxy in front of a moto server that injects AWS's real faults, and records and
replays answers.

moto does not check role trust or external ids, never throttles, and answers a member account as
if it were the management account; this proxy adds what it lacks, in AWS's own error shapes, so
the code under test sees what it would see from AWS. Rules match on service and operation (from
`X-Amz-Target` for the JSON protocol, `Action=` for the query protocol), optionally on the role
whose credentials signed the request (the proxy learns which access key STS issued for which
role) and on the OU or account a JSON request names (a role refused on one OU). A rule may also throttle as AWS does, by a token bucket per operation at a rate the client
is not told. Record/replay serves Organizations and AssumeRole answers recorded once (a replayed
AssumeRole's credentials expire an hour after it is served), so a benchmark measures the client
and the injected latency rather than moto's own CPU time.

It runs its own event loop in a thread, so sync and async tests alike can start it.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl

from aiohttp import ClientSession, web

_CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/[^/]+/([^/]+)/")
_ACCESS_KEY = re.compile(r"<AccessKeyId>([^<]+)</AccessKeyId>")
_EXPIRATION = re.compile(r"<Expiration>[^<]*</Expiration>")
_EMPTY_TOKEN = "awsfaults-empty-page"
_LIST_KEYS = {
    "ListAccountsForParent": "Accounts",
    "ListOrganizationalUnitsForParent": "OrganizationalUnits",
    "ListAccounts": "Accounts",
    "ListChildren": "Children",
}
_ENTITY_KEYS = ("ParentId", "ChildId", "OrganizationalUnitId", "AccountId")
_DROP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "date", "server"}
# What Organizations answers, with HTTP 400, when a caller exceeds an API's rate (the message of
# the TooManyRequestsException shape in botocore's model, as AWS sends it).
THROTTLED_CODE = "TooManyRequestsException"
THROTTLED_MESSAGE = (
    "You have sent too many requests in too short a period of time. Try again later."
)

# What Organizations answers, with HTTP 400, a call an IAM policy denies.
DENIED_CODE = "AccessDeniedException"
DENIED_MESSAGE = "You don't have permissions to access this resource."


@dataclass
class Rule:
    """What to do to matching requests. Unset match fields match everything."""

    service: str | None = None  # "organizations", "sts"
    operation: str | None = None  # "ListAccountsForParent", "AssumeRole"…
    role_arn: str | None = None  # AssumeRole of this role, or calls signed with keys issued for it
    # Organizations calls naming this id (ParentId, ChildId, OrganizationalUnitId, AccountId)
    entity: str | None = None
    latency: float = 0.0  # seconds added before the answer
    error: str | None = None  # answer with this AWS error code instead of forwarding
    message: str = "Injected by awsfaults."
    status: int | None = None  # HTTP status of the error: 403 for AccessDenied, 400 otherwise
    # The awsQuery code a query-compatible JSON service (SQS) also sends, in x-amzn-query-error:
    # e.g. error "com.amazonaws.sqs#QueueDoesNotExist" with "AWS.SimpleQueueService.NonExistentQueue"
    query_error: str | None = None
    fraction: float = 1.0  # share of matching requests that get the error
    first: int | None = None  # only the first N matching requests get the error
    empty_first_page: bool = False  # list calls: an empty first page that carries a NextToken
    # Throttle: each operation has a token bucket of `burst` tokens (full at first) refilled at
    # `rate` a second; a matching request that finds its operation's bucket empty on arrival is
    # answered TooManyRequestsException (after the rule's latency) and takes no token.
    rate: float | None = None
    burst: float = 1.0
    matched: int = 0  # matching requests so far
    injected: int = 0  # errors (or empty pages, or throttles) injected so far
    throttled_by_operation: Counter[str] = field(default_factory=Counter)
    throttled_at: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, operation)
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)

    def admits(self, operation: str, now: float) -> bool:
        """Whether a request of `operation` arriving at `now` finds a token (and takes it)."""
        assert self.rate is not None
        tokens, updated = self._buckets.get(operation, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        admitted = tokens >= 1.0
        self._buckets[operation] = (tokens - 1.0 if admitted else tokens, now)
        if not admitted:
            self.injected += 1
            self.throttled_by_operation[operation] += 1
            self.throttled_at.append((now, operation))
        return admitted


def organizations_refusal(**match: Any) -> Rule:
    """A rule answering the Organizations calls it matches as AWS answers a call the caller's IAM
    policy denies (AccessDeniedException, HTTP 400)."""
    return Rule(
        service="organizations", error=DENIED_CODE, status=400, message=DENIED_MESSAGE, **match
    )


@dataclass(frozen=True)
class Recorded:
    """An upstream answer kept for replay."""

    status: int
    content_type: str
    body: str


@dataclass(frozen=True)
class Call:
    """What the proxy knows about one request."""

    service: str
    operation: str
    access_key: str
    body: bytes
    json_protocol: bool
    content_type: str = "application/x-amz-json-1.1"  # of a JSON protocol request


class FaultProxy:
    """The proxy. `url` is what the code under test uses as its AWS endpoint."""

    def __init__(
        self, upstream: str, *, mode: Literal["forward", "record", "replay"] = "forward"
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = mode
        self.rules: list[Rule] = []
        self.recordings: dict[str, Recorded] = {}
        self.counts: Counter[str] = Counter()  # requests received per operation
        self.arrivals: list[tuple[float, str]] = []  # (monotonic time, operation)
        self.in_flight = 0
        self.max_in_flight = 0
        self.replayed = 0
        self.disappear_after: int | None = None  # after this many requests, fail every one
        self.disappear_mode: Literal["close", "503"] = "close"
        self.roles_by_key: dict[str, str] = {}
        self.assumed: list[tuple[str, str]] = []  # (RoleArn, ExternalId) of each AssumeRole
        # Role ARN → another upstream: AssumeRole of that role, and every call signed with the
        # keys issued for it, go there (a role that sees another organization).
        self.routes: dict[str, str] = {}
        self.url = ""
        self._random = random.Random(0)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._client: ClientSession | None = None

    # Control, from any thread

    def add(self, rule: Rule) -> Rule:
        """Apply `rule` from now on; returns it so its counters can be read."""
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Drop every rule and fault, and zero the counters; recordings stay."""
        self.rules = []
        self.disappear_after = None
        self.counts = Counter()
        self.assumed = []
        self.arrivals = []
        self.max_in_flight = self.replayed = 0

    def disappear(self, after: int, mode: Literal["close", "503"] = "close") -> None:
        """After `after` more requests, drop every connection (or answer 503)."""
        self.disappear_after = sum(self.counts.values()) + after
        self.disappear_mode = mode

    def save(self, path: Path) -> None:
        """Write the recordings as JSON."""
        path.write_text(json.dumps({k: vars(v) for k, v in self.recordings.items()}))

    def load(self, path: Path) -> None:
        """Read recordings written by `save`."""
        self.recordings = {k: Recorded(**v) for k, v in json.loads(path.read_text()).items()}

    def start(self) -> FaultProxy:
        """Listen on 127.0.0.1, a free port."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        return self

    def stop(self) -> None:
        """Stop listening and end the thread."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # The server, on its own loop

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._client = ClientSession()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # finishes the requests in flight first
        if self._client is not None:
            await self._client.close()
        # A closed transport lets go of its socket in a callback of a later loop iteration; stop
        # the loop before those have run and the sockets stay open until the garbage collector
        # finds them, in whichever test is running then (an unclosed-transport ResourceWarning).
        await asyncio.sleep(0.01)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        call = _describe(request.headers, await request.read())
        self.counts[call.operation] += 1
        if call.operation == "AssumeRole":
            asked = dict(parse_qsl(call.body.decode()))
            self.assumed.append((asked.get("RoleArn", ""), asked.get("ExternalId", "")))
        self.arrivals.append((time.monotonic(), call.operation))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, call)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, call: Call) -> web.StreamResponse:
        if self.disappear_after is not None and sum(self.counts.values()) > self.disappear_after:
            if self.disappear_mode == "503":
                return web.Response(status=503, text="Service Unavailable")
            assert request.transport is not None
            request.transport.close()  # the client sees the connection drop, no answer
            return web.Response(status=503)
        arrived = time.monotonic()
        matching = [rule for rule in list(self.rules) if self._matches(rule, call)]
        for rule in matching:
            rule.matched += 1
        # Every throttling rule takes its token on arrival, whatever the others decide.
        throttled = [
            rule
            for rule in matching
            if rule.rate is not None and not rule.admits(call.operation, arrived)
        ]
        await asyncio.sleep(sum(rule.latency for rule in matching))
        if throttled:
            return _error(call, THROTTLED_CODE, THROTTLED_MESSAGE, 400)
        body = call.body
        for rule in matching:
            if rule.empty_first_page and call.operation in _LIST_KEYS:
                sent = json.loads(call.body or b"{}")
                if sent.get("NextToken") == _EMPTY_TOKEN:
                    del sent["NextToken"]  # the page after the empty one is the real first page
                    body = json.dumps(sent).encode()
                elif "NextToken" not in sent and self._fires(rule):
                    page = {_LIST_KEYS[call.operation]: [], "NextToken": _EMPTY_TOKEN}
                    return _json_response(200, page)
            elif rule.error and self._fires(rule):
                status = rule.status or (403 if rule.error == "AccessDenied" else 400)
                return _error(call, rule.error, rule.message, status, rule.query_error)
        return await self._forward(request, call, body)

    def _matches(self, rule: Rule, call: Call) -> bool:
        if rule.service not in (None, call.service) or rule.operation not in (None, call.operation):
            return False
        if rule.entity is not None and rule.entity not in _entities(call):
            return False
        if rule.role_arn is not None:
            if call.operation == "AssumeRole":
                return dict(parse_qsl(call.body.decode())).get("RoleArn") == rule.role_arn
            return self.roles_by_key.get(call.access_key) == rule.role_arn
        return True

    def _fires(self, rule: Rule) -> bool:
        if rule.first is not None and rule.injected >= rule.first:
            return False
        if rule.fraction < 1.0 and self._random.random() >= rule.fraction:
            return False
        rule.injected += 1
        return True

    async def _forward(self, request: web.Request, call: Call, body: bytes) -> web.Response:
        key = _recording_key(call, body)
        replayable = call.service == "organizations" or call.operation == "AssumeRole"
        if self.mode == "replay" and replayable and key in self.recordings:
            self.replayed += 1
            kept = self.recordings[key]
            body_text = kept.body
            if call.operation == "AssumeRole":
                self._learn_role(call, body_text)
                expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
                body_text = _EXPIRATION.sub(f"<Expiration>{expires}</Expiration>", body_text)
            return web.Response(status=kept.status, body=body_text, content_type=kept.content_type)
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_HEADERS}
        role = (
            dict(parse_qsl(call.body.decode())).get("RoleArn", "")
            if call.operation == "AssumeRole"
            else self.roles_by_key.get(call.access_key, "")
        )
        target = self.routes.get(role, self.upstream)
        async with self._client.request(
            request.method, target + request.path_qs, headers=headers, data=body
        ) as upstream:
            answer = await upstream.read()
            content_type = upstream.content_type
            status = upstream.status
        if call.operation == "AssumeRole" and status == 200:
            self._learn_role(call, answer.decode())
        # A client error is an answer too (an OU or account no longer found), kept for replay.
        if self.mode != "forward" and replayable and status < 500:
            self.recordings[key] = Recorded(status, content_type, answer.decode())
        return web.Response(status=status, body=answer, content_type=content_type)

    def _learn_role(self, call: Call, answer: str) -> None:
        """Remember which role the access key an AssumeRole answer issues belongs to."""
        issued = _ACCESS_KEY.search(answer)
        if issued:
            self.roles_by_key[issued.group(1)] = dict(parse_qsl(call.body.decode())).get(
                "RoleArn", ""
            )


def _describe(headers: Mapping[str, str], body: bytes) -> Call:
    """Service, operation and signing key of a request, from its headers and body."""
    scope = _CREDENTIAL.search(headers.get("Authorization", ""))
    access_key, service = scope.groups() if scope else ("", "")
    target = headers.get("X-Amz-Target", "")
    if target:
        operation = target.rpartition(".")[2]
        content_type = headers.get("Content-Type", "application/x-amz-json-1.1")
        return Call(service, operation, access_key, body, True, content_type)
    action = dict(parse_qsl(body.decode(errors="replace"))).get("Action", "")
    return Call(service, action, access_key, body, json_protocol=False)


def _entities(call: Call) -> set[str]:
    """The OU, account or root ids a JSON protocol request names."""
    if not call.json_protocol:
        return set()
    sent = json.loads(call.body or b"{}")
    return {str(sent[key]) for key in _ENTITY_KEYS if key in sent}


def _recording_key(call: Call, body: bytes) -> str:
    """The operation and the request's canonical body: no signature, date or ordering."""
    if call.json_protocol:
        canonical = json.dumps(json.loads(body or b"{}"), sort_keys=True)
    else:
        canonical = "&".join(f"{k}={v}" for k, v in sorted(parse_qsl(body.decode())))
    return f"{call.service} {call.operation} {canonical}"


def _json_response(
    status: int,
    payload: Mapping[str, object],
    content_type: str = "application/x-amz-json-1.1",
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(payload),
        content_type=content_type,
        headers={"x-amzn-RequestId": str(uuid.uuid4()), **(headers or {})},
    )


def _error(
    call: Call, code: str, message: str, status: int, query_error: str | None = None
) -> web.Response:
    """AWS's error shape for the request's protocol (with SQS's awsQuery code, if given)."""
    kind = "Sender" if status < 500 else "Receiver"
    if call.json_protocol:
        query = {"x-amzn-query-error": f"{query_error};{kind}"} if query_error else {}
        payload = {"__type": code, "Message": message}
        return _json_response(status, payload, call.content_type, query)
    request_id = uuid.uuid4()
    xml = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message>"
        f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, text=xml, content_type="text/xml")
