"""Crawling an AWS Organization of 5,000 accounts in 500 OUs, five levels deep, with 50 ms added
to every call, against the lower bound for that tree and a plain sequential boto3 crawl.

moto spends milliseconds of CPU on every Organizations call of an organization this size (it
filters every account for each listing), so a crawl served live by moto measures moto. The
organization is therefore built once in a moto server (in this process, through moto's backend
for speed) and crawled once, sequentially, through a recording FaultProxy: that crawl gives
`moto_live_ms_per_call` (its wall time over its calls). Every measured crawl is then served from
those recorded answers by a replaying FaultProxy in a process of its own (`python -m
bench.crawl_bench replay RECORDING UPSTREAM LATENCY`), which adds LATENCY to every call and
forwards misses to moto: any unrecorded request (`proxy_misses`, which should be 0; AssumeRole is
replayed too, since moto spends ~50 ms of CPU on one, in the bench's own process). Before the
measured crawls the setup's objects, moto's backend among them, are frozen out of the garbage
collector and the collector is set as in a service process (`canopy_core.server.tune_gc`): moto
lives in the crawler's process only because the bench puts it there.

Measured crawls, in order, all against the same replay:
- `concurrency_32`: `crawl` with `max_concurrency=32` and no rate limit, the target run (the
  median of RUNS, all in `runs_seconds`);
- `minimal_client_concurrency_32`: calibration, not Canopy: the crawler's schedule (same calls,
  same dependencies, at most 32 in flight) with next to no client, unsigned aiohttp POSTs whose
  answers are only json-decoded, after a LATENCY sleep standing for AssumeRole. What it loses to
  the bound is the tree's ramp and the replay's own cost on this machine at this moment, so
  `concurrency_32.ratio_to_minimal_client` is what the crawler itself adds;
- `default_limits`: `crawl` with `CrawlLimits()` (no target);
- `sequential`: a synchronous boto3 loop in a thread, one call at a time, breadth-first, the
  calls a shell script with the AWS CLI would make.

Lower bound, in seconds, of a crawl making `calls` calls (AssumeRole included) at `latency` each,
with at most `concurrency` in flight and at most `rate` calls a second:

    max(critical_path * latency, calls * latency / concurrency, calls / rate if a rate is set)

`critical_path` is the longest chain of calls that must run one after another, in calls, computed
from the recorded answers (the tree as the crawler sees it, pages included): AssumeRole, then
ListRoots (DescribeOrganization runs beside it), then for every parent P its listings may start
once the page of its own parent's OU listing that names P has arrived. With `ready(root) = 2`,
`ready(child) = ready(P) + k` when the child is on the k-th page of ListOrganizationalUnitsForParent
of P, and `done(P) = ready(P) + max(OU pages of P, account pages of P)` (the pages of one listing
follow each other's NextToken), `critical_path = max(3, max over every parent P of done(P))`. The
bound ignores the ramp at the start (too few known parents to fill the concurrency) and the tail,
so no real crawl reaches it: for this tree a schedule with no cost at all beyond the latency
takes about 1.11 x the bound at concurrency 32. `ratio_to_lower_bound` is wall seconds over it.

`crawl_throttled` (`run_throttled`, a bench of its own with the same setup) measures the crawl
under throttling it is not told about: the replay throttles every Organizations operation by a
token bucket of its own, refilled at RATE calls a second (each of THROTTLE_RATES) and holding at
most THROTTLE_BURST seconds of it (10 tokens at 100 a second; full when the crawl starts). A call
that finds its operation's bucket empty on arrival takes no token and is answered, after the same
LATENCY, as AWS answers: HTTP 400, `{"__type": "TooManyRequestsException", "Message": "You have
sent too many requests in too short a period of time. Try again later."}`. The crawler runs at
concurrency 32 with no rate limit of its own. Per rate (the median of RUNS crawls):
`calls` are the Organizations calls answered successfully (the crawl needs every one),
`calls_over_rate_seconds` is the time the busiest operation's calls take at that rate (max over
operations of its calls / RATE: with a bucket per operation, that is the bound, not all calls /
RATE), `ratio_to_calls_over_rate` the crawl's wall time over it, and `throttled_share` the
throttled answers over `calls` (retries are sent again, so `requests` = calls + throttled).
`unthrottled` is the same crawl without throttling, in the same run: at the higher rates the
crawl's own shape (its ramp, its critical path), not the rate, bounds it.

Per run, besides: `first_organizations_call_after_seconds` (crawl start to the first
Organizations request reaching the replay: session, AssumeRole, clients), `cpu_seconds` (this
process, all threads) and `gc_pause_seconds` (spent in the garbage collector) during the crawl.
`environment` gives the CPUs and the load average when the bench started: the figures are wall
times on a machine that may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from moto.organizations.models import organizations_backends
from moto.server import ThreadedMotoServer

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy_core.server import tune_gc
from canopy_discovery.aws import DEFAULT_SESSION_SECONDS, SESSION_NAME, AwsSettings
from canopy_discovery.crawler import PAGE_SIZE, CrawlLimits, CrawlProgress, crawl
from tests.awsfaults import FaultProxy, Rule

LEVELS = (5, 20, 75, 150, 250)  # 500 OUs, five levels deep
ACCOUNTS = 5_000  # the management account included
LATENCY = 0.05  # seconds added to every call by the replaying proxy
CONCURRENCY = 32
# The hidden per-operation rates of `crawl_throttled`, in calls a second, and how much of a
# second's worth of calls each operation's bucket holds.
THROTTLE_RATES = (100.0, 250.0)
THROTTLE_BURST = 0.1
RUNS = 3  # of the concurrency-32 crawl, which takes about two seconds; the median is reported
MANAGEMENT_ACCOUNT = "123456789012"  # moto's default account
ROLE_ARN = f"arn:aws:iam::{MANAGEMENT_ACCOUNT}:role/canopy-discovery"
EXTERNAL_ID = "t_bench:crawl0001"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
REGION = "us-east-1"
ROOT_DIR = Path(__file__).resolve().parent.parent
_STS = ("AssumeRole", "GetCallerIdentity")


def _log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def aws_settings(url: str) -> AwsSettings:
    return AwsSettings(
        endpoint_url=url, region=REGION, access_key_id="testing", secret_access_key="testing"
    )


# The organization


def build_organization(moto_url: str, seed: int = 7) -> tuple[int, int]:
    """LEVELS of OUs and ACCOUNTS accounts, each under a random parent of the level above (or
    any parent, for accounts), through moto's backend; (OUs, accounts) made."""
    client = boto3.client("organizations", endpoint_url=moto_url, region_name=REGION, **CREDENTIALS)
    organization = client.create_organization(FeatureSet="ALL")["Organization"]
    root_id = client.list_roots()["Roots"][0]["Id"]
    backend = organizations_backends[organization["MasterAccountId"]]["aws"]
    rng = random.Random(seed)
    previous = [root_id]
    parents = [root_id]
    n = 0
    for size in LEVELS:
        level = []
        for _ in range(size):
            n += 1
            unit = backend.create_organizational_unit(
                ParentId=rng.choice(previous), Name=f"Unit {n} {rng.choice(['Prod', 'Dev'])}"
            )
            level.append(unit["OrganizationalUnit"]["Id"])
        parents += level
        previous = level
    for i in range(1, ACCOUNTS):  # the management account is the first
        name = f"team-{i}-{rng.choice(['prod', 'staging', 'dev'])}"
        status = backend.create_account(AccountName=name, Email=f"aws+{i}@example.com")
        account = backend.get_account_by_id(status["CreateAccountStatus"]["AccountId"])
        account.parent_id = rng.choice(parents)
        if i % 50 == 0:
            account.state = account.status = "SUSPENDED"
    return n, len(backend.accounts)


# The lower bound


def critical_path(recording: Path) -> int:
    """The longest chain of dependent calls of a crawl of the recorded organization (see the
    module docstring)."""
    pages: dict[tuple[str, str, str], dict[str, Any]] = {}
    root_id = ""
    for key, kept in json.loads(recording.read_text()).items():
        service, operation, canonical = key.split(" ", 2)
        if service != "organizations":
            continue  # AssumeRole, in STS's XML
        answer = json.loads(kept["body"])
        if operation == "ListRoots":
            root_id = answer["Roots"][0]["Id"]
        elif operation.endswith("ForParent"):
            sent = json.loads(canonical)
            pages[operation, sent["ParentId"], sent.get("NextToken", "")] = answer

    def listing(operation: str, parent_id: str) -> list[list[dict[str, Any]]]:
        key = "OrganizationalUnits" if "Units" in operation else "Accounts"
        found, token = [], ""
        while True:
            answer = pages[operation, parent_id, token]
            found.append(answer.get(key) or [])
            token = answer.get("NextToken") or ""
            if not token:
                return found

    longest = 3  # AssumeRole, ListRoots, and at least one listing of the root
    ready = {root_id: 2}
    queue = deque([root_id])
    while queue:
        parent = queue.popleft()
        units = listing("ListOrganizationalUnitsForParent", parent)
        accounts = listing("ListAccountsForParent", parent)
        longest = max(longest, ready[parent] + max(len(units), len(accounts)))
        for k, page in enumerate(units, start=1):
            for unit in page:
                ready[unit["Id"]] = ready[parent] + k
                queue.append(unit["Id"])
    return longest


def lower_bound(
    calls: int, path: int, concurrency: int, rate: float | None = None
) -> dict[str, float]:
    """The three bounds of the module docstring, and the largest."""
    bounds = {
        "critical_path_seconds": path * LATENCY,
        "concurrency_seconds": calls * LATENCY / max(1, concurrency),
    }
    if rate:
        bounds["rate_seconds"] = calls / rate
    return {"lower_bound_seconds": max(bounds.values()), **bounds}


# The replaying proxy, in its own process


class ReplayProcess:
    """A child process running the replaying FaultProxy; commands go over its stdin."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    async def start(cls, recording: Path, upstream: str) -> ReplayProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.crawl_bench",
            "replay",
            str(recording),
            upstream,
            str(LATENCY),
            cwd=ROOT_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"the replay process exited with {await process.wait()}")
        return cls(process, json.loads(line)["url"])

    async def command(self, name: str) -> Any:
        """Send one command; its JSON answer."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{name}\n".encode())
        await self.process.stdin.drain()
        return json.loads(await self.process.stdout.readline())

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def serve_replay(recording: Path, upstream: str, latency: float) -> None:
    """The child: replay `recording` with `latency` added to every call until stdin closes.

    Prints `{"url": …}` once listening; then answers each stdin line with one JSON line:
    `clear` zeroes the counters and stops throttling, `throttle RATE BURST` throttles every
    Organizations operation from now on by a token bucket of its own (see `tests.awsfaults.Rule`),
    `stats` reports the counters, `arrivals` lists (monotonic time, operation) of every request
    since the last `clear`.
    """
    logging.getLogger("aiohttp").setLevel(logging.ERROR)
    proxy = FaultProxy(upstream, mode="replay")
    proxy.load(recording)
    proxy.add(Rule(latency=latency))
    throttles: list[Rule] = []
    with proxy:
        print(json.dumps({"url": proxy.url}), flush=True)
        for line in sys.stdin:
            command, *args = line.split()
            if command == "clear":
                proxy.clear()
                proxy.add(Rule(latency=latency))
                throttles = []
                print("{}", flush=True)
            elif command == "throttle":
                rate, burst = (float(arg) for arg in args)
                throttles.append(proxy.add(Rule(service="organizations", rate=rate, burst=burst)))
                print("{}", flush=True)
            elif command == "arrivals":
                print(json.dumps(proxy.arrivals), flush=True)
            elif command == "stats":
                counts = dict(proxy.counts)
                organization_arrivals = [t for t, op in proxy.arrivals if op not in _STS]
                throttled: Counter[str] = Counter()
                for rule in throttles:
                    throttled.update(rule.throttled_by_operation)
                stats = {
                    "requests": sum(counts.values()),
                    "first_arrival": min((t for t, _ in proxy.arrivals), default=None),
                    "first_organizations_arrival": min(organization_arrivals, default=None),
                    "last_arrival": max((t for t, _ in proxy.arrivals), default=None),
                    "by_operation": counts,
                    "throttled_by_operation": dict(throttled),
                    "replayed": proxy.replayed,
                    "misses": sum(counts.values()) - proxy.replayed - throttled.total(),
                    "max_in_flight": proxy.max_in_flight,
                }
                print(json.dumps(stats), flush=True)
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)


# The crawls


@dataclass
class Outcome:
    started: float  # time.monotonic(), comparable with the proxy's arrival times
    seconds: float
    api_calls: int
    accounts: int
    organizational_units: int
    snapshot: tree_pb.OrganizationSnapshot | None = None
    cpu_seconds: float = 0.0  # this process's CPU time during the crawl, all threads
    gc_pause_seconds: float = 0.0  # spent in the garbage collector during the crawl
    throttled_calls: int = 0  # as the crawler counted them


class GcPauses:
    """Time spent in the cyclic garbage collector while the context is open."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


async def canopy_crawl(url: str, limits: CrawlLimits) -> Outcome:
    """One crawl by the crawler under test."""
    last = CrawlProgress()

    def on_progress(progress: CrawlProgress) -> None:
        nonlocal last
        last = progress

    cpu = time.process_time()
    with GcPauses() as pauses:
        started = time.monotonic()
        snapshot = await crawl(aws_settings(url), ROLE_ARN, EXTERNAL_ID, limits, on_progress)
        seconds = time.monotonic() - started
    return Outcome(
        started,
        seconds,
        last.api_calls,
        len(snapshot.accounts),
        len(snapshot.organizational_units),
        snapshot,
        cpu_seconds=time.process_time() - cpu,
        gc_pause_seconds=pauses.seconds,
        throttled_calls=last.throttled_calls,
    )


def sequential_crawl(url: str) -> Outcome:
    """A plain boto3 loop: one call at a time, breadth-first, following NextToken."""
    cpu = time.process_time()
    started = time.monotonic()
    config = Config(retries={"total_max_attempts": 1})
    sts = boto3.client("sts", endpoint_url=url, region_name=REGION, config=config, **CREDENTIALS)
    keys = sts.assume_role(
        RoleArn=ROLE_ARN,
        RoleSessionName=SESSION_NAME,
        ExternalId=EXTERNAL_ID,
        DurationSeconds=DEFAULT_SESSION_SECONDS,
    )["Credentials"]
    organizations = boto3.client(
        "organizations",
        endpoint_url=url,
        region_name=REGION,
        config=config,
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
        aws_session_token=keys["SessionToken"],
    )
    calls = 1
    organizations.describe_organization()
    root_id = organizations.list_roots()["Roots"][0]["Id"]
    calls += 2
    accounts = units = 0
    queue = deque([root_id])
    while queue:
        parent = queue.popleft()
        for method, key in (
            (organizations.list_organizational_units_for_parent, "OrganizationalUnits"),
            (organizations.list_accounts_for_parent, "Accounts"),
        ):
            token = ""
            while True:
                params: dict[str, Any] = {"ParentId": parent, "MaxResults": PAGE_SIZE}
                if token:
                    params["NextToken"] = token
                answer = method(**params)
                calls += 1
                found = answer.get(key) or []
                if key == "Accounts":
                    accounts += len(found)
                else:
                    units += len(found)
                    queue.extend(unit["Id"] for unit in found)
                token = answer.get("NextToken") or ""
                if not token:
                    break
    seconds = time.monotonic() - started
    return Outcome(started, seconds, calls, accounts, units, cpu_seconds=time.process_time() - cpu)


# A fake SigV4 scope: the proxy reads the service from it and checks no signature.
_MINIMAL_AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDMINIMAL/20260101/us-east-1/organizations/aws4_request, "
    "SignedHeaders=host;x-amz-date;x-amz-target, Signature=0"
)


async def minimal_crawl(url: str, concurrency: int) -> Outcome:
    """The crawler's schedule with next to no client: the same calls, dependencies and bound on
    calls in flight, but unsigned aiohttp POSTs whose answers are only json-decoded, after a
    sleep of LATENCY standing for AssumeRole. What is left is the replay's own cost and the
    tree's ramp: the floor of this bench on this machine."""
    slots = asyncio.Semaphore(concurrency)
    calls = accounts = units = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def call(operation: str, params: dict[str, Any]) -> dict[str, Any]:
            nonlocal calls
            async with slots:
                calls += 1
                headers = {
                    "Authorization": _MINIMAL_AUTH,
                    "X-Amz-Target": f"AWSOrganizationsV20161128.{operation}",
                    "Content-Type": "application/x-amz-json-1.1",
                }
                async with http.post(url, data=json.dumps(params), headers=headers) as answer:
                    body = await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"{operation}: HTTP {answer.status}: {body[:200]!r}")
            found: dict[str, Any] = json.loads(body)
            return found

        async def pages(tasks: asyncio.TaskGroup, operation: str, parent: str) -> None:
            nonlocal accounts, units
            token = ""
            while True:
                params: dict[str, Any] = {"ParentId": parent, "MaxResults": PAGE_SIZE}
                if token:
                    params["NextToken"] = token
                answer = await call(operation, params)
                accounts += len(answer.get("Accounts") or [])
                for unit in answer.get("OrganizationalUnits") or []:
                    units += 1
                    visit(tasks, unit["Id"])
                token = answer.get("NextToken") or ""
                if not token:
                    return

        def visit(tasks: asyncio.TaskGroup, parent: str) -> None:
            tasks.create_task(pages(tasks, "ListOrganizationalUnitsForParent", parent))
            tasks.create_task(pages(tasks, "ListAccountsForParent", parent))

        cpu = time.process_time()
        started = time.monotonic()
        await asyncio.sleep(LATENCY)
        calls += 1
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(call("DescribeOrganization", {}))
            visit(tasks, (await call("ListRoots", {}))["Roots"][0]["Id"])
        seconds = time.monotonic() - started
    return Outcome(started, seconds, calls, accounts, units, cpu_seconds=time.process_time() - cpu)


def _sorted_ids(snapshot: tree_pb.OrganizationSnapshot) -> tuple[list[str], list[str]]:
    return (
        sorted(f"{u.id}/{u.parent_id}/{u.name}" for u in snapshot.organizational_units),
        sorted(f"{a.id}/{a.parent_id}/{a.name}/{a.state}" for a in snapshot.accounts),
    )


@dataclass
class Measured:
    """A crawl against the replay and the replay's counters of it."""

    outcome: Outcome
    served: dict[str, Any]
    all_seconds: list[float] | None = None  # of every run, when the median of several

    def figures(self, path: int, concurrency: int, rate: float | None) -> dict[str, Any]:
        outcome, served = self.outcome, self.served
        bound = lower_bound(outcome.api_calls, path, concurrency, rate)
        figures: dict[str, Any] = {
            "seconds": round(outcome.seconds, 3),
            "api_calls": outcome.api_calls,
            "concurrency": concurrency,
            "requests_per_second": rate,
            **{key: round(value, 3) for key, value in bound.items()},
            "ratio_to_lower_bound": round(outcome.seconds / bound["lower_bound_seconds"], 3),
        }
        if self.all_seconds is not None:
            figures["runs_seconds"] = self.all_seconds
        figures.update(
            {
                "first_organizations_call_after_seconds": round(
                    served["first_organizations_arrival"] - outcome.started, 3
                ),
                "cpu_seconds": round(outcome.cpu_seconds, 3),
                "gc_pause_seconds": round(outcome.gc_pause_seconds, 3),
                "proxy_requests": served["requests"],
                "proxy_misses": served["misses"],
                "proxy_max_in_flight": served["max_in_flight"],
            }
        )
        return figures


class Replayed:
    """The recorded organization served by a replay process, and how to measure crawls of it."""

    def __init__(
        self, replay: ReplayProcess, live: Outcome, path: int, summary: dict[str, Any]
    ) -> None:
        self.replay = replay
        self.live = live
        self.path = path
        self.summary = summary  # the organization, the recording crawl, the environment
        self.expected = _sorted_ids(live.snapshot) if live.snapshot else None

    async def served(self, crawler: Callable[[], Awaitable[Outcome]]) -> Measured:
        """One crawl against the replay, with what the replay saw of it."""
        await self.replay.command("clear")
        return await self.measure(crawler)

    async def measure(self, crawler: Callable[[], Awaitable[Outcome]]) -> Measured:
        """One crawl against the replay as it is set up now."""
        outcome = await crawler()
        if outcome.snapshot is not None and _sorted_ids(outcome.snapshot) != self.expected:
            raise AssertionError("the replayed crawl differs from the recorded one")
        found = (outcome.accounts, outcome.organizational_units)
        if found != (self.live.accounts, self.live.organizational_units):
            raise AssertionError("a replayed crawl found a different organization")
        return Measured(outcome, await self.replay.command("stats"))

    async def median(
        self,
        name: str,
        crawler: Callable[[], Awaitable[Outcome]],
        setup: Callable[[], Awaitable[Any]] | None = None,
    ) -> Measured:
        """The median of RUNS crawls, each after `clear` (and `setup`, if any)."""
        runs = []
        for _ in range(RUNS):
            await self.replay.command("clear")
            if setup is not None:
                await setup()
            runs.append(await self.measure(crawler))
            _log(f"{name}: {runs[-1].outcome.seconds:.2f} s")
        runs.sort(key=lambda run: run.outcome.seconds)
        middle = runs[len(runs) // 2]
        middle.all_seconds = [round(run.outcome.seconds, 3) for run in runs]
        return middle


@asynccontextmanager
async def replayed_organization() -> AsyncIterator[Replayed]:
    """Build the organization in moto, record one sequential crawl of it, and serve that
    recording from a replay process (see the module docstring)."""
    load_average = round(os.getloadavg()[0], 2)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    workdir = Path(tempfile.mkdtemp(prefix="canopy-bench-crawl-"))
    recording = workdir / "organizations.json"
    try:
        host, port = server.get_host_and_port()
        moto_url = f"http://{host}:{port}"
        # moto keeps its state per process: a bench run before this one left its organization.
        reset = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
        await asyncio.to_thread(lambda: urllib.request.urlopen(reset).close())
        started = time.perf_counter()
        ous, accounts = await asyncio.to_thread(build_organization, moto_url)
        _log(f"built {ous} OUs and {accounts} accounts in {time.perf_counter() - started:.1f} s")

        # Record once, sequentially: moto's live cost per call.
        with FaultProxy(moto_url, mode="record") as recorder:
            live = await canopy_crawl(recorder.url, CrawlLimits(max_concurrency=1))
            recorder.save(recording)
            recorded_calls = sum(recorder.counts.values())
        if (live.accounts, live.organizational_units) != (accounts, ous):
            raise AssertionError("the recording crawl found a different organization")
        moto_ms = live.seconds / live.api_calls * 1000
        _log(f"recorded: {live.api_calls} calls in {live.seconds:.1f} s ({moto_ms:.1f} ms/call)")
        path = critical_path(recording)
        # moto's backend (5,000 accounts) shares this process only because the bench puts it
        # here; keep it and the rest of the setup out of the crawls' garbage collections, and
        # collect as the discovery service's process does (tune_gc).
        gc.collect()
        tune_gc()
        summary: dict[str, Any] = {
            "environment": {"cpus": os.cpu_count(), "load_average_1m": load_average},
            "accounts": live.accounts,
            "organizational_units": live.organizational_units,
            "api_calls": live.api_calls,
            "latency_ms": LATENCY * 1000,
            "critical_path_calls": path,
            "moto_live_ms_per_call": round(moto_ms, 2),
            "moto_live_crawl": {
                "seconds": round(live.seconds, 2),
                "api_calls": live.api_calls,
                "concurrency": 1,
                "proxy_requests": recorded_calls,
            },
        }
        replay = await ReplayProcess.start(recording, moto_url)
        try:
            yield Replayed(replay, live, path, summary)
        finally:
            await replay.stop()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def run(admin_dsn: str) -> dict[str, Any]:
    """Build, record, replay; the figures of the four crawls."""
    del admin_dsn  # no database: the crawl alone
    async with replayed_organization() as replayed:
        path = replayed.path
        results = dict(replayed.summary)
        wide = CrawlLimits(max_concurrency=CONCURRENCY)
        concurrent = await replayed.median(
            f"concurrency {CONCURRENCY}", lambda: canopy_crawl(replayed.replay.url, wide)
        )
        floor = await replayed.median(
            "minimal client", lambda: minimal_crawl(replayed.replay.url, CONCURRENCY)
        )
        defaults = CrawlLimits()
        default = await replayed.served(lambda: canopy_crawl(replayed.replay.url, defaults))
        _log(f"default limits: {default.outcome.seconds:.2f} s")
        sequential = await replayed.served(
            lambda: asyncio.to_thread(sequential_crawl, replayed.replay.url)
        )
        _log(f"sequential: {sequential.outcome.seconds:.2f} s")

    plain = sequential.outcome.seconds
    results["concurrency_32"] = figures = concurrent.figures(path, CONCURRENCY, None)
    figures["speedup_vs_sequential"] = round(plain / concurrent.outcome.seconds, 2)
    figures["targets_met"] = {
        "ratio_to_lower_bound_at_most_1.3": figures["ratio_to_lower_bound"] <= 1.3,
        "speedup_vs_sequential_at_least_10": figures["speedup_vs_sequential"] >= 10,
    }
    results["default_limits"] = figures = default.figures(
        path, defaults.max_concurrency, defaults.max_requests_per_second
    )
    figures["speedup_vs_sequential"] = round(plain / default.outcome.seconds, 2)
    results["sequential"] = sequential.figures(path, 1, None)
    results["minimal_client_concurrency_32"] = floor.figures(path, CONCURRENCY, None)
    results["concurrency_32"]["ratio_to_minimal_client"] = round(
        concurrent.outcome.seconds / floor.outcome.seconds, 3
    )
    return results


async def run_throttled(admin_dsn: str) -> dict[str, Any]:
    """Build, record, replay; the figures of crawls the replay throttles at THROTTLE_RATES."""
    del admin_dsn  # no database: the crawl alone
    async with replayed_organization() as replayed:
        url = replayed.replay.url
        limits = CrawlLimits(max_concurrency=CONCURRENCY)  # no ceiling: the rates are hidden
        unthrottled = await replayed.median("unthrottled", lambda: canopy_crawl(url, limits))
        throttled: dict[float, Measured] = {}
        for rate in THROTTLE_RATES:
            command = f"throttle {rate} {max(1.0, rate * THROTTLE_BURST)}"
            throttled[rate] = await replayed.median(
                f"throttled at {rate:g}/s per operation",
                lambda: canopy_crawl(url, limits),
                setup=lambda command=command: replayed.replay.command(command),  # type: ignore[misc]
            )
        environment = replayed.summary["environment"]
    results: dict[str, Any] = {
        "environment": environment,
        "concurrency": CONCURRENCY,
        "latency_ms": LATENCY * 1000,
        "bucket_burst_seconds": THROTTLE_BURST,
        "unthrottled": {
            "seconds": round(unthrottled.outcome.seconds, 3),
            "runs_seconds": unthrottled.all_seconds,
            "api_calls": unthrottled.outcome.api_calls,
        },
        "rates": {},
    }
    for rate, measured in throttled.items():
        results["rates"][f"{rate:g}"] = throttled_figures(
            measured, rate, unthrottled.outcome.seconds
        )
    return results


def throttled_figures(measured: Measured, rate: float, unthrottled: float) -> dict[str, Any]:
    """The figures of one throttled crawl (see the module docstring)."""
    outcome, served = measured.outcome, measured.served
    refused: dict[str, int] = served["throttled_by_operation"]
    answered = {
        operation: count - refused.get(operation, 0)
        for operation, count in served["by_operation"].items()
        if operation not in _STS
    }
    calls = sum(answered.values())
    busiest = max(answered, key=lambda operation: answered[operation])
    bound = answered[busiest] / rate
    throttled = sum(refused.values())
    ratio = outcome.seconds / bound
    share = throttled / calls
    return {
        "rate_per_operation": rate,
        "bucket_burst": max(1.0, rate * THROTTLE_BURST),
        "seconds": round(outcome.seconds, 3),
        "runs_seconds": measured.all_seconds,
        "calls": calls,
        "calls_by_operation": answered,
        "calls_over_rate_seconds": round(bound, 3),
        "ratio_to_calls_over_rate": round(ratio, 3),
        "ratio_to_unthrottled": round(outcome.seconds / unthrottled, 3),
        "throttled_calls": throttled,
        "throttled_calls_counted_by_crawler": outcome.throttled_calls,
        "throttled_by_operation": refused,
        "throttled_share": round(share, 4),
        "requests": calls + throttled,
        "cpu_seconds": round(outcome.cpu_seconds, 3),
        "proxy_misses": served["misses"],
        "targets_met": {
            "ratio_to_calls_over_rate_at_most_1.15": ratio <= 1.15,
            "throttled_share_at_most_0.05": share <= 0.05,
        },
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.crawl_bench")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="serve recorded answers (the bench's child)")
    replay.add_argument("recording", type=Path)
    replay.add_argument("upstream", help="where misses go: the moto server")
    replay.add_argument("latency", type=float, help="seconds added to every call")
    args = parser.parse_args(argv)
    serve_replay(args.recording, args.upstream, args.latency)


if __name__ == "__main__":
    main(sys.argv[1:])
