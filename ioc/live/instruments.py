"""Prometheus instruments of the live feed (exposed by the API's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CLIENTS = Gauge("ioc_live_clients", "/ws clients connected")
FRAMES_SENT = Counter("ioc_live_frames_sent", "frames sent to /ws clients", ["type"])
RESYNCS = Counter(
    "ioc_live_resyncs",
    "resync frames sent (too_slow: queue overflow, the client is closed; pruned: resume point "
    "older than the retained feed)",
    ["reason"],
)
READINGS_COALESCED = Counter(
    "ioc_live_readings_coalesced",
    "readings frames merged into a newer one because a client's queue was full",
)
BACKLOG_ROWS = Counter(
    "ioc_live_backlog_rows", "feed rows read from the database to resume a client"
)
FEED_SEQ = Gauge("ioc_live_feed_seq", "newest feed seq this process has read")
FEED_LAG = Gauge(
    "ioc_live_feed_lag_seconds",
    "age of the newest feed row when this process read it (commit → /ws fan-out; a growing "
    "value: wall screens show the IOC late)",
)
LISTENER_CONNECTED = Gauge(
    "ioc_live_listener_connected", "1 while the hub's LISTEN connection is up"
)
