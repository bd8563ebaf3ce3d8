"""Why an MQTT message was refused. Every reason is a dead-letter ``reason`` value."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    BAD_TOPIC = "bad_topic"
    OVERSIZE = "oversize"
    MALFORMED_JSON = "malformed_json"
    INVALID_PAYLOAD = "invalid_payload"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_DEVICE = "unknown_device"
    # A device taken out of service (POST /api/v1/devices/{id}/decommission).
    DECOMMISSIONED = "decommissioned"
    DEVICE_MISMATCH = "device_mismatch"
    UNKNOWN_METRIC = "unknown_metric"
    OUT_OF_RANGE = "out_of_range"
    MISSING_TIMESTAMP = "missing_timestamp"
    TIMESTAMP_OUT_OF_BOUNDS = "timestamp_out_of_bounds"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    INVALID_STATUS = "invalid_status"
    # Citizen reports (hg/{city}/reports/{channel}).
    UNKNOWN_CATEGORY = "unknown_category"
    OUTSIDE_SITE = "outside_site"
    CITY_MISMATCH = "city_mismatch"
    TOO_LONG = "too_long"
    # One device publishing faster than IOC_INGEST_DEVICE_RATE_PER_S beyond its burst.
    RATE_LIMITED = "rate_limited"
    # Decoded fine but refused by the database (e.g. its device was deleted in between).
    STORAGE_REJECTED = "storage_rejected"


class DecodeError(ValueError):
    """A message that cannot be stored; ``detail`` names the offending topic level or field."""

    def __init__(self, topic: str, reason: Reason, detail: str) -> None:
        super().__init__(f"{topic}: {reason}: {detail}")
        self.topic = topic
        self.reason = reason
        self.detail = detail
