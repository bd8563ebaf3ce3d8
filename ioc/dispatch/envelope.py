"""The message an agency receives, identical on every channel (webhook body, MQTT payload)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson

from ioc.dispatch.delivery import Delivery
from ioc.settings import DISPLAY_TIMEZONE

_LOCAL = ZoneInfo(DISPLAY_TIMEZONE)


def envelope(delivery: Delivery, sent_at: datetime) -> bytes:
    """``{"id", "kind", "agency", "incident", "sent_at"}`` as JSON bytes.

    ``id`` is the idempotency key and never changes between attempts; ``sent_at`` is the time of
    this attempt (RFC 3339, +07:00), so a repeat is the same message sent again, not a copy.
    """
    return orjson.dumps(
        {
            "id": delivery.idempotency_key,
            "kind": delivery.kind,
            "agency": delivery.agency_id,
            "incident": delivery.payload,
            "sent_at": sent_at.astimezone(_LOCAL).isoformat(timespec="seconds"),
        }
    )
