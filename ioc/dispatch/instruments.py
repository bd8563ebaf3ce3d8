"""Prometheus metrics of dispatch delivery."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ATTEMPTS = Counter(
    "ioc_dispatch_deliveries",
    "delivery attempts by agency, channel and outcome (delivered, retry, failed)",
    ["agency", "channel", "outcome"],
)
BACKLOG = Gauge(
    "ioc_dispatch_outbox_backlog",
    "outbox rows not delivered, by state (pending: waiting or in flight; failed: for operators)",
    ["state"],
)
ATTEMPT_SECONDS = Histogram(
    "ioc_dispatch_attempt_seconds",
    "duration of one delivery attempt",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERY_LATENCY = Histogram(
    "ioc_dispatch_delivery_latency_seconds",
    "from the outbox write (incident change committed) to delivered, retries included",
    ["channel"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
IN_FLIGHT = Gauge("ioc_dispatch_in_flight", "deliveries being attempted by this process")
LISTENER_CONNECTED = Gauge(
    "ioc_dispatch_listener_connected", "1 while the worker LISTENs on ioc_outbox"
)
