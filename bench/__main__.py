"""Run the benchmarks and print one JSON object: `{"<bench>": {<figures>}, ...}`.

`python -m bench eventlog` runs only the named ones. PostgreSQL is DATABASE_URL's server if set,
otherwise an embedded one in a temporary directory. Progress goes to stderr.

`scale` (the cost curves, about a quarter of an hour) runs only when named; with `--plot [PATH]`
it also writes the curves as one PNG (default docs/scale.png).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import (
    config_follow_bench,
    crawl_bench,
    eventlog_bench,
    freshness_bench,
    get_connection_bench,
    preview_bench,
    scale_bench,
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
# Run only when named: they take far longer than the others.
ON_REQUEST: dict[str, Callable[[str], Awaitable[dict[str, Any]]]] = {
    "scale": scale_bench.run,
}
DEFAULT_PLOT = Path("docs/scale.png")


async def main(names: list[str]) -> dict[str, Any]:
    """Run each named benchmark (all by default) against a fresh database."""
    known = {**BENCHES, **ON_REQUEST}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; have {', '.join(known)}")
    results: dict[str, Any] = {}
    async with postgres() as admin_dsn:
        for name in names or list(BENCHES):
            print(f"bench: {name} …", file=sys.stderr, flush=True)
            results[name] = await known[name](admin_dsn)
    return results


def plot_path(args: list[str]) -> tuple[list[str], Path | None]:
    """The bench names, and where `--plot [PATH]` asks the scale curves to go."""
    if "--plot" not in args:
        return args, None
    at = args.index("--plot")
    after = args[at + 1 : at + 2]
    if after and not after[0].startswith("-") and after[0].endswith(".png"):
        return args[:at] + args[at + 2 :], Path(after[0])
    return args[:at] + args[at + 1 :], DEFAULT_PLOT


if __name__ == "__main__":
    names, plot = plot_path(sys.argv[1:])
    if plot is not None and "scale" not in names:
        raise SystemExit("--plot draws the scale bench's curves: name it (python -m bench scale)")
    found = asyncio.run(main(names))
    if plot is not None:
        scale_bench.plot(found["scale"], plot)
        print(f"bench: curves written to {plot}", file=sys.stderr)
    print(json.dumps(found, indent=2))
