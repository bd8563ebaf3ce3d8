"""Prometheus instruments of the ingest pipeline (exposed by the API's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter("ioc_ingest_messages_received", "MQTT messages taken from the broker")
READINGS_STORED = Counter("ioc_ingest_readings_stored", "readings rows committed")
READINGS_DUPLICATE = Counter(
    "ioc_ingest_readings_duplicate",
    "readings skipped as already stored (same device, metric, time)",
)
REPORTS_STORED = Counter(
    "ioc_ingest_reports_stored", "citizen reports committed (repeats of a stored one excluded)"
)
DEAD_LETTERS = Counter("ioc_ingest_dead_letters", "messages dead-lettered", ["reason"])
BATCH_MESSAGES = Histogram(
    "ioc_ingest_batch_messages",
    "messages per committed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000),
)
COMMIT_SECONDS = Histogram(
    "ioc_ingest_commit_seconds",
    "time to write and commit one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LAG_SECONDS = Gauge(
    "ioc_ingest_lag_seconds",
    "receive → commit age of the oldest message of the last committed batch (a growing value: "
    "ingest falls behind the broker)",
)
QUEUE_DEPTH = Gauge("ioc_ingest_queue_depth", "messages received but not yet committed")
DROPPED_QOS0 = Counter(
    "ioc_ingest_dropped_qos0", "QoS 0 messages dropped because the hand-off was full"
)
WRITE_FAILURES = Counter("ioc_ingest_write_failures", "batch writes that failed and were retried")
BROKER_CONNECTED = Gauge("ioc_ingest_broker_connected", "1 while connected to the MQTT broker")
