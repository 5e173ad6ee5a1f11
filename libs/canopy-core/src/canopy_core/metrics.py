"""Prometheus metrics every service exports over HTTP."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "canopy_grpc_requests_total",
    "gRPC requests handled, by method and status code.",
    ["service", "method", "code"],
)
LATENCY = Histogram(
    "canopy_grpc_request_duration_seconds",
    "Time to answer a unary gRPC request (server side).",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge(
    "canopy_grpc_in_flight",
    "gRPC calls being served now (streams included).",
    ["service", "method"],
)
