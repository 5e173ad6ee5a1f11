"""Run the benchmarks and print one JSON object: `{"<bench>": {<figures>}, ...}`.

`python -m bench eventlog` runs only the named ones. PostgreSQL is DATABASE_URL's server if set,
otherwise an embedded one in a temporary directory. Progress goes to stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from bench import (
    config_follow_bench,
    crawl_bench,
    eventlog_bench,
    freshness_bench,
    get_connection_bench,
    preview_bench,
    sharing_bench,
    snapshot_bench,
    workspace_config_bench,
)
from bench.support import postgres


async def workspace_config(admin_dsn: str) -> dict[str, Any]:
    """One workspace's render on the server, then `canopy workspace config --follow` on it."""
    return {
        **await workspace_config_bench.run(admin_dsn),
        **await config_follow_bench.run(admin_dsn),
    }


BENCHES: dict[str, Callable[[str], Awaitable[dict[str, Any]]]] = {
    "eventlog": eventlog_bench.run,
    "snapshot_apply": snapshot_bench.run,
    "get_connection": get_connection_bench.run,
    "schema_streams": sharing_bench.run,
    "crawl": crawl_bench.run,
    "workspace_config": workspace_config,
    "freshness": freshness_bench.run,
    "crawl_throttled": crawl_bench.run_throttled,
    "preview": preview_bench.run,
}


async def main(names: list[str]) -> dict[str, Any]:
    """Run each named benchmark (all by default) against a fresh database."""
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; have {', '.join(BENCHES)}")
    results: dict[str, Any] = {}
    async with postgres() as admin_dsn:
        for name in names or list(BENCHES):
            print(f"bench: {name} …", file=sys.stderr, flush=True)
            results[name] = await BENCHES[name](admin_dsn)
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1:])), indent=2))
