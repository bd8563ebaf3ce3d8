"""The message an agency receives, identical on every channel (webhook body, MQTT payload)."""

from __future__ import annotations

from datetime import datetime

import orjson

from ioc.core.localtime import iso_local
from ioc.dispatch.delivery import Delivery
from ioc.dispatch.notification_routes import RECEIVER_PREFIX


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
            "sent_at": iso_local(sent_at, "seconds"),
        }
    )


def body(delivery: Delivery, sent_at: datetime) -> bytes:
    """What goes on the wire: the envelope for an agency; for a notification receiver
    (:mod:`ioc.alerting.notify`) its payload as is, the Alertmanager webhook message."""
    if delivery.agency_id.startswith(RECEIVER_PREFIX):
        return orjson.dumps(delivery.payload)
    return envelope(delivery, sent_at)
