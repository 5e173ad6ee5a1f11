"""The AWS regions of a partition, as botocore's endpoint data lists them, and what a region or
a region pattern in the connection settings must match.

botocore ships `endpoints.json`: per partition, the regions AWS has announced. A botocore release
that predates a new region refuses it until botocore is upgraded; that is the price of refusing
`us`, `zz-foo` and `eu-west-10`, which the AWS plugin would silently query nothing in.
"""

from __future__ import annotations

import fnmatch
import functools

import botocore.loaders  # type: ignore[import-untyped]


@functools.cache
def partition_regions(partition: str) -> frozenset[str]:
    """The region names of `partition` (`aws`, `aws-cn`, `aws-us-gov`, …); empty if botocore
    does not know the partition."""
    endpoints = botocore.loaders.create_loader().load_data("endpoints")
    for entry in endpoints["partitions"]:
        if entry["partition"] == partition:
            return frozenset(entry["regions"])
    return frozenset()


def region_problem(region: str, partition: str) -> str | None:
    """Why `region` is not one region of `partition`, or None."""
    if region in partition_regions(partition):
        return None
    return f"{region!r} is not a region of the AWS partition {partition!r}{_examples(partition)}"


def pattern_problem(pattern: str, partition: str) -> str | None:
    """Why `pattern` (a region, `*`, or a pattern with `*` and `?` as the AWS plugin matches
    them) names no region of `partition`, or None."""
    regions = partition_regions(partition)
    if pattern in regions or any(fnmatch.fnmatchcase(r, pattern) for r in regions):
        return None
    if "*" in pattern or "?" in pattern:
        return f"the pattern {pattern!r} matches no region of the AWS partition {partition!r}"
    return region_problem(pattern, partition)


def _examples(partition: str) -> str:
    regions = sorted(partition_regions(partition))
    if not regions:
        return ""
    return f" (e.g. {', '.join(regions[:3])})"
