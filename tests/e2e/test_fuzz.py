"""A fuzz test over every RPC of the suite, against the three services running as processes.

The RPCs come from the service descriptors of the generated API (`every_rpc`); each has one or
more valid seed requests (`tests.e2e.fuzz_world.SEEDS`, written by hand against a seeded state).
`tests.e2e.mutations` turns each seed into bad inputs, one field at a time, sent as raw bytes
with a token allowed to make the seed call, so that what is exercised is input validation, not
authentication. Wrong JSON types (`tests.e2e.json_inputs`) go through `buf curl`, as an
operator would send them; the JSON mapping refuses nearly all of them before anything is sent,
and those that reach a service are judged like the rest.

Every call must answer with a status the contract allows when every dependency is up and the
token is allowed: never INTERNAL, UNKNOWN, UNAVAILABLE (an input error reported as an outage,
or a dropped connection), UNAUTHENTICATED, DEADLINE_EXCEEDED (a hang; a stream must send its
first message or end within 5 s) or RESOURCE_EXHAUSTED (an error too large for a client to
read); every error carries a `google.rpc.Status` with an `ErrorInfo` of canopy.dev; every
INVALID_ARGUMENT a `BadRequest` naming a field of the request; no service logs an error, a
traceback or "unexpected error"; and after a refused call no table of any service's schema has
changed (nothing is left out of the digest: the test waits for background work — projection,
triggers, sync runs — to finish before it takes one). A mutation that is a valid request may
succeed: it is counted, the seed's `restore` undoes it, and the state after it is the new
baseline. Every 250 inputs and at the end, every service must answer Health SERVING.

Seeded and bounded: `CANOPY_FUZZ_CASES` (default 2500) wire inputs in all, spread over the
seeds in proportion to their mutations and weight; `CANOPY_FUZZ_SEED` (default 0) picks them;
past the deterministic mutations a long run adds random ones (e.g. `CANOPY_FUZZ_CASES=20000`).
`CANOPY_FUZZ_JSON=all` sends every JSON input instead of one of each kind;
`CANOPY_FUZZ_ONLY=ListFolders,GetFolder` fuzzes only those RPCs. The counts per RPC, and every
cause of failure with one reproducible input, are printed to the terminal.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import re
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.discovery.v1 import discovery_service_pb2_grpc as dgrpc
from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as trpc
from canopy.integration.v1 import connection_tree_service_pb2_grpc as tgrpc
from canopy.integration.v1 import integration_pb2 as ipb
from canopy.integration.v1 import integration_service_pb2 as irpc
from canopy.integration.v1 import integration_service_pb2_grpc as igrpc
from canopy.permissions.v1 import change_impact_service_pb2 as imprpc
from canopy.permissions.v1 import directory_service_pb2 as dirrpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dirgrpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import permission_service_pb2_grpc as pgrpc
from canopy.permissions.v1 import workspace_config_service_pb2 as crpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.permissions.v1 import workspace_schema_service_pb2_grpc as wgrpc
from canopy_core.request_checks import WHOLE_REQUEST
from tests.discovery.conftest import Org
from tests.e2e import json_inputs as jin
from tests.e2e import mutations as mut
from tests.e2e.fuzz_world import SEEDS, Seed, Stubs, World, build_world, digest, settle
from tests.e2e.processes import BUF, SERVICES, ServiceProcess

SERVICE_MODULES: Sequence[ModuleType] = (irpc, trpc, drpc, dirrpc, prpc, wrpc, crpc, imprpc)
PROCESS_OF = {
    "canopy.integration.v1.IntegrationService": "integration",
    "canopy.integration.v1.ConnectionTreeService": "integration",
    "canopy.discovery.v1.DiscoveryService": "discovery",
    "canopy.permissions.v1.DirectoryService": "permissions",
    "canopy.permissions.v1.PermissionService": "permissions",
    "canopy.permissions.v1.WorkspaceSchemaService": "permissions",
    "canopy.permissions.v1.WorkspaceConfigService": "permissions",
    "canopy.permissions.v1.ChangeImpactService": "permissions",
}
C = grpc.StatusCode
# What the contract lets a call answer when every dependency is up and the token is allowed.
ALLOWED = {
    C.OK,
    C.INVALID_ARGUMENT,
    C.NOT_FOUND,
    C.ALREADY_EXISTS,
    C.FAILED_PRECONDITION,
    C.ABORTED,
    C.PERMISSION_DENIED,
    C.OUT_OF_RANGE,
}
CALL_TIMEOUT = 30.0
STREAM_FIRST_MESSAGE = 5.0  # the services send a progress message every second when idle
HEALTH_EVERY = 250
CASES = int(os.environ.get("CANOPY_FUZZ_CASES", "2500"))  # wire inputs in all
SEED = int(os.environ.get("CANOPY_FUZZ_SEED", "0"))
EVERY_JSON = os.environ.get("CANOPY_FUZZ_JSON") == "all"  # else one of each kind
JSON_TIMEOUT = 4.0  # buf curl on a watch: the stream is open, and kept open


# -- the RPCs, from the descriptors --------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One RPC of a Canopy service, as its descriptor describes it."""

    service: str
    name: str
    request: type[Message]
    response: type[Message]
    streaming: bool

    @property
    def method(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def label(self) -> str:
        return f"{self.service.rsplit('.', 1)[-1]}/{self.name}"


def every_rpc() -> list[Rpc]:
    """Every RPC of the seven Canopy services, unary and server-streaming."""
    from google.protobuf import message_factory

    found = []
    for module in SERVICE_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert not method.client_streaming, f"{method.full_name}: client streaming"
                found.append(
                    Rpc(
                        service.full_name,
                        method.name,
                        message_factory.GetMessageClass(method.input_type),
                        message_factory.GetMessageClass(method.output_type),
                        method.server_streaming,
                    )
                )
    return found


# -- calling and judging ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a call answered."""

    code: grpc.StatusCode
    details: str
    trailing: tuple[tuple[str, Any], ...]
    reply: bytes
    seconds: float
    note: str = ""

    @property
    def status(self) -> status_pb2.Status | None:
        packed = dict(self.trailing).get("grpc-status-details-bin")
        return status_pb2.Status.FromString(packed) if packed else None

    @property
    def reason(self) -> str:
        """`domain/REASON` of the ErrorInfo, if any."""
        for detail in self.status.details if self.status else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return f"{info.domain}/{info.reason}"
        return ""

    @property
    def fields(self) -> list[str]:
        """The fields the BadRequest names."""
        found: list[str] = []
        for detail in self.status.details if self.status else ():
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                found += [v.field for v in bad.field_violations]
        return found


@dataclass(frozen=True)
class Case:
    """One input sent: enough to reproduce it."""

    number: int
    rpc: Rpc
    seed: str
    mutation: mut.Mutation
    payload: bytes

    def describe(self) -> str:
        shown = self.payload if len(self.payload) <= 160 else self.payload[:160] + b"..."
        return (
            f"#{self.number} {self.rpc.label} seed={self.seed} field={self.mutation.path} "
            f"mutation={self.mutation.kind} ({self.mutation.detail}); "
            f"{len(self.payload)} bytes {shown!r}"
        )


@dataclass(frozen=True)
class Problem:
    """One rule an answer broke, and what showed it."""

    rule: str  # status | error_details | field_violation | log | data_changed
    evidence: str


@dataclass
class Finding:
    """A case that broke one or more rules."""

    case: Case
    outcome: Outcome
    problems: list[Problem]

    def cause(self) -> tuple[str, str, str]:
        """What makes two findings one cause: the status, the rules broken, and the exception
        and frame that the log names (else the error's reason and normalised message)."""
        rules = ",".join(sorted({p.rule for p in self.problems}))
        logged = [p.evidence for p in self.problems if p.rule == "log"]
        if logged:
            key = _traceback_key(logged[0])
        else:
            key = f"{self.outcome.reason} {_normalised(self.outcome.details)}".strip()
        return self.outcome.code.name, rules, key


def _traceback_key(evidence: str) -> str:
    """The last exception type and the innermost frame of our code (else the last frame)."""
    types = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exhausted|Warning))\b", evidence, re.M)
    frames = re.findall(r'File "([^"]+)", line \d+, in ([\w.<>]+)', evidence)
    ours = [f for f in frames if "/canopy" in f[0] or "/services/" in f[0] or "/libs/" in f[0]]
    frame = (ours or frames or [("", "")])[-1]
    where = f"{Path(frame[0]).name}:{frame[1]}" if frame[0] else ""
    if types or where:
        return f"{types[-1] if types else ''} at {where}".strip()
    return _normalised(evidence)


def _normalised(text: str) -> str:
    """A message with its values left out, so that one cause with many inputs is one group."""
    text = re.sub(r"(.)\1{15,}", "…", text)  # a huge echoed value, perhaps clipped unquoted
    text = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "…", text)
    text = re.sub(r"\b[a-z]_[0-9a-z]{6,}\b|\d+", "#", text)
    # Up to the first value: what follows it may be clipped away in one message, not another.
    head = text.split("'")[0].split("…")[0][:160].rstrip()
    return f"{head} …" if head != text else head


class Logs:
    """New lines of each service's log since the last look: the errors among them, and the
    request ids of the calls they record."""

    def __init__(self, services: dict[str, ServiceProcess]) -> None:
        self.services = services
        self.offsets = {name: s.log.stat().st_size for name, s in services.items()}
        self.request_ids: set[str] = set()

    def errors(self) -> list[str]:
        found = []
        for name, service in self.services.items():
            with service.log.open("rb") as handle:
                handle.seek(self.offsets[name])
                data = handle.read()
            complete = data.rfind(b"\n") + 1
            self.offsets[name] += complete
            for raw in data[:complete].decode(errors="replace").splitlines():
                problem = _problem(raw)
                if problem:
                    found.append(f"{name}: {problem}")
                seen = re.search(r'"request_id": "([^"]+)"', raw)
                if seen:
                    self.request_ids.add(seen.group(1))
        return found


def _problem(line: str) -> str | None:
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        bad = re.search(r"Traceback|Exception|Error|^E\d{4}", line)
        return line[:2000] if bad else None
    level = str(entry.get("level", ""))
    message = str(entry.get("msg", ""))
    if level in ("error", "critical") or "exception" in entry or "unexpected" in message.lower():
        exception = str(entry.get("exception", ""))
        return f"[{level}] {entry.get('logger')}: {message} {exception}"[:4000]
    return None


def request_fields(rpc: Rpc) -> set[str]:
    descriptor = rpc.request.DESCRIPTOR
    return {f.name for f in descriptor.fields} | set(descriptor.oneofs_by_name)


def judge(case: Case, outcome: Outcome) -> list[Problem]:
    """The rules every answer must keep, apart from logs and stored data."""
    problems = []
    if outcome.code not in ALLOWED:
        problems.append(Problem("status", f"{outcome.code.name}: {outcome.details} {outcome.note}"))
    if outcome.code == C.OK or outcome.code not in ALLOWED:
        return problems
    if outcome.status is None:
        problems.append(Problem("error_details", f"no google.rpc.Status: {outcome.details}"))
        return problems
    if not outcome.reason.startswith("canopy.dev/"):
        problems.append(Problem("error_details", f"no ErrorInfo of canopy.dev: {outcome.details}"))
    if outcome.code == C.INVALID_ARGUMENT:
        known = request_fields(case.rpc)
        if case.mutation.path == mut.WHOLE and outcome.reason == "canopy.dev/MALFORMED_REQUEST":
            # Bytes that belong to no field (a tag numbered 0, an unknown field cut short) can
            # only be blamed on the request as a whole, which the edge names `request`.
            known = known | {WHOLE_REQUEST}
        named = [f for f in outcome.fields if re.split(r"[.\[]", f, maxsplit=1)[0] in known]
        if not named:
            problems.append(
                Problem(
                    "field_violation",
                    f"{outcome.reason} names no field of the request "
                    f"(violations: {outcome.fields}): {outcome.details}",
                )
            )
    return problems


class Caller:
    """Raw bytes to any RPC, with a request id per case."""

    def __init__(self, channels: dict[str, grpc.aio.Channel]) -> None:
        self.channels = channels
        self._callables: dict[str, Any] = {}

    async def call(self, rpc: Rpc, payload: bytes, metadata: Sequence[tuple[str, str]]) -> Outcome:
        channel = self.channels[PROCESS_OF[rpc.service]]
        started = time.perf_counter()
        if rpc.streaming:
            return await self._stream(channel, rpc, payload, metadata, started)
        callable_ = self._callables.get(rpc.method)
        if callable_ is None:
            callable_ = self._callables[rpc.method] = channel.unary_unary(rpc.method)
        try:
            reply = await callable_(payload, metadata=metadata, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return Outcome(
                error.code(),
                error.details() or "",
                tuple(error.trailing_metadata() or ()),
                b"",
                time.perf_counter() - started,
            )
        return Outcome(C.OK, "", (), reply, time.perf_counter() - started)

    async def _stream(
        self,
        channel: grpc.aio.Channel,
        rpc: Rpc,
        payload: bytes,
        metadata: Sequence[tuple[str, str]],
        started: float,
    ) -> Outcome:
        """The first message or the status; a stream that stays silent is a hang."""
        stream: Any = channel.unary_stream(rpc.method)
        call: Any = stream(payload, metadata=metadata)
        try:
            first = await asyncio.wait_for(call.read(), STREAM_FIRST_MESSAGE)
        except TimeoutError:
            call.cancel()
            return Outcome(
                C.DEADLINE_EXCEEDED,
                f"no message and no status within {STREAM_FIRST_MESSAGE} s",
                (),
                b"",
                time.perf_counter() - started,
                note="(the stream stayed silent)",
            )
        except grpc.aio.AioRpcError as error:
            return Outcome(
                error.code(),
                error.details() or "",
                tuple(error.trailing_metadata() or ()),
                b"",
                time.perf_counter() - started,
            )
        if first is grpc.aio.EOF:
            code = await call.code()
            trailing = await call.trailing_metadata()
            return Outcome(
                code,
                await call.details() or "",
                tuple(trailing or ()),
                b"",
                time.perf_counter() - started,
            )
        call.cancel()
        return Outcome(C.OK, "", (), bytes(first), time.perf_counter() - started)


# -- JSON type errors, through buf curl ----------------------------------------------------------


@dataclass
class JsonTally:
    """What happened to the JSON inputs."""

    sent: int = 0
    refused_locally: int = 0
    reached: Counter[str] = field(default_factory=Counter)  # status of those that reached
    reached_inputs: list[str] = field(default_factory=list)
    client_errors: Counter[str] = field(default_factory=Counter)  # buf's words, normalised


def buf_curl_call(
    address: str, rpc: Rpc, body: str, headers: Sequence[str]
) -> tuple[int | None, str, str]:
    """`buf curl` with a JSON body: its exit status (None: still streaming), stdout, stderr."""
    command = [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge"]
    for header in headers:
        command += ["-H", header]
    command += ["-d", body, f"http://{address}{rpc.method}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=JSON_TIMEOUT)
    except subprocess.TimeoutExpired as expired:
        out, err = expired.stdout, expired.stderr
        return (
            None,
            out.decode() if isinstance(out, bytes) else out or "",
            err.decode() if isinstance(err, bytes) else err or "",
        )
    return done.returncode, done.stdout, done.stderr


def buf_status(returncode: int | None, stderr: str) -> tuple[grpc.StatusCode, str]:
    """The status buf curl reports (OK for an open stream)."""
    if returncode in (0, None):
        return C.OK, ""
    with contextlib.suppress(ValueError, KeyError):
        answer = json.loads(stderr)
        if isinstance(answer, dict) and "code" in answer:
            code = grpc.StatusCode[str(answer["code"]).upper()]
            return code, str(answer.get("message", ""))
    return C.UNKNOWN, stderr.strip()


def json_reply(rpc: Rpc, stdout: str) -> bytes:
    """The (first) reply buf curl printed, encoded again."""
    with contextlib.suppress(json_format.ParseError, ValueError):
        first = json.loads(stdout) if stdout.strip() else {}
        encoded: bytes = json_format.ParseDict(first, rpc.response()).SerializeToString()
        return encoded
    return b""


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts for the report."""

    tried: Counter[str] = field(default_factory=Counter)
    codes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    changed: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def budgets(
    plan: dict[str, list[mut.Mutation]], weights: dict[str, float], total: int
) -> dict[str, int]:
    """Cases per seed: in proportion to its deterministic mutations and weight, at least 20."""
    size = sum(len(v) * weights[k] for k, v in plan.items()) or 1
    return {
        key: max(20, round(total * len(found) * weights[key] / size)) for key, found in plan.items()
    }


class Fuzz:
    """One run: the calls, what is judged after each, and the tallies."""

    def __init__(
        self,
        services: dict[str, ServiceProcess],
        channels: dict[str, grpc.aio.Channel],
        db: asyncpg.Connection,
        world: World,
    ) -> None:
        self.services = services
        self.caller = Caller(channels)
        self.db = db
        self.world = world
        self.logs = Logs(services)
        self.tally = Tally()
        self.json = JsonTally()
        self.findings: list[Finding] = []
        self.baseline: dict[str, str] = {}
        self.number = 0

    async def check_seeds(self, rpcs: Sequence[Rpc]) -> None:
        """Each seed answers as its table says; list seeds hand out a real next-page token."""
        problems = self.logs.errors()
        assert not problems, "errors in the logs while seeding:\n" + "\n".join(problems)
        for rpc in rpcs:
            for seed in SEEDS[rpc.label]:
                request = mut.encode(seed.build(self.world))
                outcome = await self.caller.call(rpc, request, seed.metadata)
                assert outcome.code == seed.expect, (
                    f"seed {rpc.label}/{seed.name} answered {outcome.code.name} "
                    f"{outcome.details}, not {seed.expect.name}: the seed table is stale"
                )
                if outcome.code == C.OK and seed.restore is not None:
                    await seed.restore(self.world, outcome.reply)
                if seed.list_page_size:
                    reply: Any = rpc.response.FromString(outcome.reply)
                    assert reply.next_page_token, f"{rpc.label}/{seed.name}: one page; seed more"
                    self.world.page_tokens[rpc.label] = reply.next_page_token
        self.baseline = await settle(self.db)

    async def after(
        self, case: Case, outcome: Outcome, seed: Seed, problems: list[Problem]
    ) -> None:
        """The logs and the stored data after a call; a success that changed data is undone."""
        problems += [Problem("log", line) for line in self.logs.errors()]
        now = await digest(self.db)
        if now != self.baseline:
            if outcome.code != C.OK:
                changed = sorted(t for t in now if now[t] != self.baseline.get(t))
                problems.append(Problem("data_changed", f"tables {changed}"))
            else:
                self.tally.changed[case.rpc.label] += 1
                if seed.restore is not None:
                    await seed.restore(self.world, outcome.reply)
            self.baseline = await settle(self.db)
            await self.world.refresh()
            problems += [Problem("log", f"(after) {line}") for line in self.logs.errors()]
        if problems:
            self.findings.append(Finding(case, outcome, problems))

    async def json_inputs(self, rpcs: Sequence[Rpc], rng: random.Random, everything: bool) -> None:
        """Wrong JSON types through buf curl: every one when `everything`, else one of each kind
        of field and wrong value, on a random RPC. Those that reach a service are judged by
        their status (buf curl shows the status, not its details)."""
        candidates: list[tuple[Rpc, Seed, jin.JsonInput]] = []
        for rpc in rpcs:
            seed = SEEDS[rpc.label][0]
            candidates += [(rpc, seed, i) for i in jin.json_inputs(seed.build(self.world))]
        if not everything:
            by_kind: dict[tuple[str, str], list[tuple[Rpc, Seed, jin.JsonInput]]]
            by_kind = defaultdict(list)
            for candidate in candidates:
                by_kind[(candidate[2].kind, candidate[2].value)].append(candidate)
            candidates = [rng.choice(found) for _, found in sorted(by_kind.items())]
        for number, (rpc, seed, given) in enumerate(candidates, 1):
            request_id = f"json-{number}"
            headers = [f"{k}: {v}" for k, v in seed.metadata] + [f"x-request-id: {request_id}"]
            service = self.services[PROCESS_OF[rpc.service]]
            returncode, stdout, stderr = await asyncio.to_thread(
                buf_curl_call, service.address, rpc, given.body, headers
            )
            self.json.sent += 1
            kind = f"json_{given.kind}_{given.value}"
            mutation = mut.Mutation(given.path, kind, given.body, mut.constant(b""))
            case = Case(number, rpc, seed.name, mutation, given.body.encode())
            code, message = buf_status(returncode, stderr)
            outcome = Outcome(code, message, (), json_reply(rpc, stdout), 0.0, "(buf curl)")
            problems = [Problem("log", line) for line in self.logs.errors()]
            if request_id in self.logs.request_ids:
                self.json.reached[code.name] += 1
                self.json.reached_inputs.append(
                    f"{rpc.label} {given.path}={given.value} → {code.name}"
                )
                problems += [p for p in judge(case, outcome) if p.rule == "status"]
            else:
                self.json.refused_locally += 1
                first_line = stderr.strip().splitlines()[0] if stderr.strip() else ""
                self.json.client_errors[_normalised(first_line)] += 1
            await self.after(case, outcome, seed, problems)

    async def wire_inputs(self, rpcs: Sequence[Rpc], total: int, rng_seed: int) -> None:
        """The mutations of every seed, as raw bytes, spread by `budgets`."""
        plan: dict[str, list[mut.Mutation]] = {}
        seeds: dict[str, tuple[Rpc, Seed]] = {}
        tokens = self.world.page_tokens
        for rpc in rpcs:
            for seed in SEEDS[rpc.label]:
                key = f"{rpc.label}/{seed.name}"
                foreign = tuple(v for k, v in sorted(tokens.items()) if k != rpc.label)
                context = mut.Context(tokens.get(rpc.label), foreign[:2], rng_seed)
                plan[key] = mut.mutations(seed.build(self.world), context)
                seeds[key] = (rpc, seed)
        weights = {key: seed.weight for key, (_rpc, seed) in seeds.items()}
        for key, quota in budgets(plan, weights, total).items():
            rpc, seed = seeds[key]
            rng = random.Random(f"{rng_seed}/{key}")
            chosen = mut.select(plan[key], quota, rng, max_expensive=max(2, quota // 40))
            while len(chosen) < quota:  # long runs: random mutations past the deterministic ones
                chosen.append(mut.random_mutation(seed.build(self.world), rng))
            for mutation in chosen:
                await self.wire_input(rpc, seed, mutation)

    async def wire_input(self, rpc: Rpc, seed: Seed, mutation: mut.Mutation) -> None:
        """One mutation sent, and judged."""
        began = time.perf_counter()
        self.number += 1
        payload = mutation.payload(seed.build(self.world))
        case = Case(self.number, rpc, seed.name, mutation, payload)
        metadata = (*seed.metadata, ("x-request-id", f"fuzz-{self.number}"))
        outcome = await self.caller.call(rpc, payload, metadata)
        self.tally.tried[rpc.label] += 1
        self.tally.codes[rpc.label][outcome.code.name] += 1
        await self.after(case, outcome, seed, judge(case, outcome))
        self.tally.seconds[rpc.label] += time.perf_counter() - began
        if self.number % HEALTH_EVERY == 0:
            down = await health(self.services)
            assert not down, f"after {case.describe()}: {down}"


async def health(services: dict[str, ServiceProcess]) -> list[str]:
    """The services that do not answer SERVING (or have exited)."""
    problems = []
    for name, service in services.items():
        if service.process.poll() is not None:
            problems.append(f"{name} exited with {service.process.returncode}")
            continue
        async with grpc.aio.insecure_channel(service.address) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=SERVICES[name][1]), timeout=5
                )
            except grpc.aio.AioRpcError as error:
                problems.append(f"{name}: health {error.code().name}")
                continue
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                problems.append(f"{name}: health {reply.status}")
    return problems


def report(
    tally: Tally, json_tally: JsonTally, findings: list[Finding], seconds: float, seed: int
) -> str:
    """Counts per RPC, then the findings grouped by cause, one reproducible example each."""
    lines = [
        f"fuzz: {sum(tally.tried.values())} inputs over {len(tally.tried)} RPCs in {seconds:.1f} s "
        f"(CANOPY_FUZZ_SEED={seed}); {sum(tally.changed.values())} were valid requests that "
        f"changed data (undone); {len(findings)} broke a rule",
        f"  JSON with a wrong type through buf curl: {json_tally.sent} sent, "
        f"{json_tally.refused_locally} refused by buf before sending "
        f"({'; '.join(f'{k} x{n}' for k, n in json_tally.client_errors.most_common(6))}), "
        f"{sum(json_tally.reached.values())} reached a service "
        f"({', '.join(f'{k} {n}' for k, n in json_tally.reached.most_common())})",
    ]
    lines += [f"    reached: {r}" for r in json_tally.reached_inputs]
    for label in sorted(tally.tried):
        codes = ", ".join(f"{c} {n}" for c, n in tally.codes[label].most_common())
        lines.append(
            f"  {label}: {tally.tried[label]} inputs ({codes}); {tally.changed[label]} changed "
            f"data; {tally.seconds[label]:.1f} s"
        )
    groups: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[finding.cause()].append(finding)
    if groups:
        lines.append(f"{len(groups)} causes:")
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    for number, ((status, rules, key), found) in enumerate(ordered, 1):
        by_rpc = Counter(f.case.rpc.label for f in found)
        inputs = Counter(f"{f.case.mutation.path}:{f.case.mutation.kind}" for f in found)
        lines.append(f"{number}. {status} [{rules}] x{len(found)}: {key}")
        lines.append(f"   rpcs: {', '.join(f'{r} x{n}' for r, n in by_rpc.most_common())}")
        shown = ", ".join(k for k, _ in inputs.most_common(10))
        more = f" (+{len(inputs) - 10} more)" if len(inputs) > 10 else ""
        lines.append(f"   inputs: {shown}{more}")
        example = found[0]
        lines.append(f"   e.g. {example.case.describe()}")
        lines.append(
            f"   answer: {status} {example.outcome.reason} {example.outcome.details[:300]!r}"
        )
        for problem in example.problems:
            if problem.rule != "status":
                lines.append(f"   {problem.rule}: {_tail(problem.evidence)}")
    return "\n".join(lines)


def _tail(evidence: str, lines: int = 6) -> str:
    """The first line of a log entry and the last lines of its traceback, indented."""
    rows = evidence[:20_000].splitlines()
    if len(rows) > lines + 1:
        rows = [rows[0], "...", *rows[-lines:]]
    return "\n      ".join(row[:300] for row in rows)


def test_every_rpc_of_the_suite_has_a_seed() -> None:
    labels = {rpc.label for rpc in every_rpc()}
    assert len(labels) == 39
    assert labels == set(SEEDS), (
        f"no seed for {sorted(labels - set(SEEDS))}; stale {sorted(set(SEEDS) - labels)}"
    )


def test_every_mutation_of_every_seed_builds_its_bytes() -> None:
    """The generator alone, on messages shaped like the seeds (no services)."""
    world = World(stubs=Stubs(*[None] * 6), org=None)  # type: ignore[arg-type]
    world.main = ipb.Integration(id="i_main", root_folder_id="f_root")
    world.scratch = ipb.Integration(id="i_scratch", tree_generation=3)
    world.folders = {t: f"f_{t.lower()}" for t in ("Production", "Europe", "Staging")}
    world.connections = {
        n: tree_pb.Connection(id=f"c_{i}", account_id=f"{i:012d}")
        for i, n in enumerate(("Web Prod", "Data Prod", "Web Staging", "Sandbox"))
    }
    world.runs = ["r_1", "r_2"]
    world.scratch_snapshot = tree_pb.OrganizationSnapshot(
        organization_id="o-x", accounts=[tree_pb.Account(id="1", name="a")]
    )
    rpcs = {rpc.label: rpc for rpc in every_rpc()}
    for label, seeds in SEEDS.items():
        for seed in seeds:
            message = seed.build(world)
            assert isinstance(message, rpcs[label].request), f"{label}/{seed.name}"
            found = mut.mutations(message, mut.Context(page_token="eyJhIjogMX0"))
            assert found, label
            for mutation in found:
                if not mutation.expensive:
                    assert isinstance(mutation.payload(message), bytes)


def test_select_tries_every_field_before_any_field_twice() -> None:
    seed = irpc.UpdateIntegrationRequest(
        integration=ipb.Integration(id="i_a", handle_prefix="p_"),
        update_mask=FieldMask(paths=["handle_prefix"]),
    )
    found = mut.mutations(seed)
    paths = {m.path for m in found}
    chosen = mut.select(found, len(paths), random.Random(1), max_expensive=len(found))
    assert {m.path for m in chosen} == paths
    with_values = {m.path for m in found if not m.structural}
    assert not any(m.structural for m in chosen if m.path in with_values)  # values first
    everything = mut.select(found, len(found), random.Random(1), max_expensive=1)
    assert sum(m.expensive for m in everything) == 1


def test_invalid_utf8_and_nul_land_in_the_field_they_name() -> None:
    seed = trpc.ApplyDiscoverySnapshotRequest(
        integration_id="i_a",
        snapshot=tree_pb.OrganizationSnapshot(
            accounts=[tree_pb.Account(id="1", name="a"), tree_pb.Account(id="2", name="b")]
        ),
    )
    found = {(m.path, m.kind): m for m in mut.mutations(seed)}
    nul = trpc.ApplyDiscoverySnapshotRequest.FromString(
        found[("snapshot.accounts[1].name", "nul")].payload(seed)
    )
    assert [a.name for a in nul.snapshot.accounts] == ["a", "\x00b"]
    with pytest.raises(DecodeError, match="UTF-8"):
        trpc.ApplyDiscoverySnapshotRequest.FromString(
            found[("snapshot.accounts[1].name", "invalid_utf8")].payload(seed)
        )


def test_forged_page_tokens_put_every_bad_shape_in_every_slot_of_a_real_token() -> None:
    real = "eyJhIjogImNfMSIsICJmIjogImFiYyJ9"  # {"a": "c_1", "f": "abc"}, as tokens are today
    forged = dict(mut.forged_page_tokens(real, ["other"], random.Random(0)))
    assert json.loads(base64.urlsafe_b64decode(forged["token_a_nul_string"] + "==")) == {
        "a": "c_a\x00b",
        "f": "abc",
    }
    for shape in mut.TOKEN_SHAPES:
        assert f"token_a_{shape}" in forged
        assert f"token_f_{shape}" in forged
        assert f"token_bare_{shape}" in forged
    assert forged["token_real"] == real
    assert forged["token_foreign_0"] == "other"


def test_an_invalid_argument_without_a_field_and_an_internal_error_break_rules() -> None:
    rpc = next(r for r in every_rpc() if r.name == "GetFolder")
    case = Case(1, rpc, "s", mut.Mutation("id", "k", "d", mut.constant(b"")), b"")
    bare = Outcome(C.INVALID_ARGUMENT, "bad", (), b"", 0.0)
    assert [p.rule for p in judge(case, bare)] == ["error_details"]
    internal = Outcome(C.INTERNAL, "boom", (), b"", 0.0)
    assert [p.rule for p in judge(case, internal)] == ["status"]


@pytest.mark.timeout(120 + CASES // 10 + (1800 if EVERY_JSON else 0))
async def test_bad_input_to_every_rpc_gets_a_clean_refusal_and_changes_nothing(
    services: dict[str, ServiceProcess],
    org: Org,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    only = {n for n in os.environ.get("CANOPY_FUZZ_ONLY", "").split(",") if n}
    rpcs = [r for r in every_rpc() if not only or r.name in only]
    started = time.monotonic()
    size = [
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ]
    channels = {n: grpc.aio.insecure_channel(s.address, options=size) for n, s in services.items()}
    db = await asyncpg.connect(database_url)
    try:
        stubs = Stubs(
            integrations=igrpc.IntegrationServiceStub(channels["integration"]),
            tree=tgrpc.ConnectionTreeServiceStub(channels["integration"]),
            discovery=dgrpc.DiscoveryServiceStub(channels["discovery"]),
            directory=dirgrpc.DirectoryServiceStub(channels["permissions"]),
            permissions=pgrpc.PermissionServiceStub(channels["permissions"]),
            schemas=wgrpc.WorkspaceSchemaServiceStub(channels["permissions"]),
        )
        fuzz = Fuzz(services, channels, db, await build_world(stubs, org, db))
        await fuzz.check_seeds(rpcs)
        await fuzz.json_inputs(rpcs, random.Random(SEED), everything=EVERY_JSON)
        await fuzz.wire_inputs(rpcs, CASES, SEED)
        down = await health(services)
        text = report(fuzz.tally, fuzz.json, fuzz.findings, time.monotonic() - started, SEED)
        record_property("fuzz_inputs", sum(fuzz.tally.tried.values()) + fuzz.json.sent)
        with capsys.disabled():
            print("\n" + text)
        assert not down, f"services no longer serving: {down}"
        assert not fuzz.findings, text
    finally:
        await db.close()
        for channel in channels.values():
            await channel.close()
