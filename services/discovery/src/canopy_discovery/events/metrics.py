"""Prometheus metrics of following event queues (exported with the service's others)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_RECEIVED = Counter(
    "canopy_discovery_events_received_total",
    "Messages received from integrations' event queues (a message received again counts again).",
)
EVENTS_APPLIED = Counter(
    "canopy_discovery_events_applied_total",
    "Change events whose effect is stored: by a targeted refresh (`refresh`), or by the full "
    "crawl a refresh fell back to, which was queued (`full_crawl`).",
    ["via"],
)
EVENTS_IGNORED = Counter(
    "canopy_discovery_events_ignored_total",
    "Messages dropped without a refresh, by reason (NOT_JSON, WRONG_SOURCE, OTHER_ORGANIZATION, "
    "UNKNOWN_EVENT, NOTHING_TO_REFRESH, INTEGRATION_SUSPENDED…).",
    ["reason"],
)
EVENT_AGE = Histogram(
    "canopy_discovery_event_age_seconds",
    "From the change (the event's time) to its effect being stored.",
    buckets=(0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300, 900, 3600),
)
REFRESH_API_CALLS = Histogram(
    "canopy_discovery_refresh_api_calls",
    "Organizations API calls of one targeted refresh (retries included).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
REFRESH_FALLBACKS = Counter(
    "canopy_discovery_refresh_fallbacks_total",
    "Targeted refreshes that asked for a full crawl instead, by reason.",
    ["reason"],
)
REFRESH_FAILURES = Counter(
    "canopy_discovery_refresh_failures_total",
    "Batches of events whose refresh failed (their messages return to the queue), by reason.",
    ["reason"],
)
QUEUE_FAILURES = Counter(
    "canopy_discovery_event_queue_failures_total",
    "Failed attempts to read an event queue, by reason (EVENT_QUEUE_NOT_FOUND…).",
    ["reason"],
)
