"""What the worker hands a channel (a claimed outbox row) and what a channel hands back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

WEBHOOK = "webhook"
MQTT = "mqtt"
CHANNELS = (WEBHOOK, MQTT)


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # worth another attempt later (5xx, 408/409/425/429, timeout, no connection)
    FAILED = "failed"  # permanent: another attempt would be refused the same way


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row claimed for one attempt.

    ``lease`` is the ``next_attempt_at`` the claim wrote: no other worker takes the row before
    then, and the result is written only if the row still carries it (a fencing token), so a
    worker that overran its lease cannot overwrite what a later claim recorded.
    """

    id: int
    idempotency_key: str
    incident_id: int | None
    agency_id: str
    channel: str
    target: str
    kind: str
    payload: dict[str, Any]
    attempts: int  # including the one being made
    created_at: datetime
    lease: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of one try; a row in ``delivery_attempts``."""

    outcome: Outcome
    duration_s: float
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None  # what the receiver asked for (Retry-After)
