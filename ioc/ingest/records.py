"""Decoded MQTT messages: immutable, built once in the MQTT pump and never copied.

``Telemetry``, one per message on the hot path, is a named tuple: a frozen dataclass's
``__init__`` sets each field through ``object.__setattr__`` and was the ingest process's biggest
single leaf in the drain profile (7 % of its busy samples; docs/benchmarks.md). The rarer records
stay frozen, slotted dataclasses.

Times are UTC epoch seconds (float): cheap to compare and to write with COPY.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ioc.ingest.errors import Reason


class Telemetry(NamedTuple):
    device_id: str
    time: float
    seq: int | None
    metrics: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class StatusChange:
    device_id: str
    online: bool
    time: float


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    device_id: str
    time: float
    type: str
    data_json: bytes


@dataclass(frozen=True, slots=True)
class CitizenReport:
    """A citizen report relayed on ``{prefix}/{city}/reports/{channel}``; ``ward`` and ``city``
    come from the position (the site's ward outlines) or, without one, from the place the report
    names (a current or former ward), checked against the topic's city."""

    city: str
    channel: str
    external_id: str
    time: float
    category: str
    lat: float | None
    lon: float | None
    ward: str
    description: str
    media_url: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: Reason
    detail: str
    received_at: float


Record = Telemetry | StatusChange | DeviceEvent | CitizenReport | DeadLetter
