"""The live-feed rows of an ingest batch: what the wall learns from telemetry, devices and events.

The writer appends them in the batch's own transaction (``ioc.storage.feed.append``), so a feed
row exists exactly when the data it announces committed — whether or where the rule engine runs.

- one ``readings`` row per batch: per device its place and, per metric, the newest point of the
  batch (``{"devices": {id: {"city", "ward", "kind", "metrics": {name: {"time", "value"}}}}}``);
- one ``device`` row per status message (``online``) and one ``event`` row per device event.

Times are RFC 3339 in the operators' zone (+07:00), as in every other frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from ioc.core.localtime import SITE_ZONE
from ioc.ingest.records import DeviceEvent, StatusChange, Telemetry
from ioc.live.frames import READINGS
from ioc.storage.feed import FeedEvent

# device id -> (kind, city, ward), replaced whole when the registry changes
Places = Mapping[str, tuple[str, str, str | None]]
# device id -> metric -> (time, value): a batch's newest point per device and metric (the writer
# also upserts ``latest_readings`` and ``device_state`` from it)
Newest = dict[str, dict[str, tuple[float, float]]]


def add_points(newest: Newest, rec: Telemetry) -> None:
    """Fold a reading in: a point replaces another unless it is older (a device flushing its
    buffer late does not replace a newer value with an older one)."""
    points = newest.get(rec.device_id)
    if points is None:
        points = newest[rec.device_id] = {}
    t = rec.time
    for name, value in rec.metrics:
        old = points.get(name)
        if old is None or old[0] <= t:
            points[name] = (t, value)


def feed_events(
    records: Iterable[object], places: Places, newest: Newest | None = None
) -> list[FeedEvent]:
    """The batch's feed rows, device and event rows in arrival order, the readings row last.
    ``newest``: the readings already folded by :func:`add_points` (else folded here).

    A record of a device missing from ``places`` (deleted since it was decoded) is announced
    nowhere: the wall has nowhere to draw it."""
    events: list[FeedEvent] = []
    fold = newest is None
    if newest is None:
        newest = {}
    for rec in records:
        if type(rec) is Telemetry:
            if fold:
                add_points(newest, rec)
        elif type(rec) is StatusChange:
            event = _device_event("device", rec.device_id, {"online": rec.online}, rec.time, places)
            if event is not None:
                events.append(event)
        elif type(rec) is DeviceEvent:
            event = _device_event("event", rec.device_id, {"event": rec.type}, rec.time, places)
            if event is not None:
                events.append(event)
    devices: dict[str, Any] = {}
    iso: dict[float, str] = {}  # a batch's points share few distinct times
    for device_id, points in newest.items():
        place = places.get(device_id)
        if place is None:
            continue
        kind, city, ward = place
        metrics: dict[str, Any] = {}
        for name, (t, value) in points.items():
            when = iso.get(t)
            if when is None:
                when = iso[t] = _iso(t)
            metrics[name] = {"time": when, "value": value}
        devices[device_id] = {"city": city, "ward": ward, "kind": kind, "metrics": metrics}
    if devices:
        events.append(FeedEvent(READINGS, {"devices": devices}))
    return events


def _device_event(
    type: str, device_id: str, data: dict[str, Any], t: float, places: Places
) -> FeedEvent | None:
    place = places.get(device_id)
    if place is None:
        return None
    kind, city, ward = place
    payload = {"device_id": device_id, "city": city, "ward": ward, "kind": kind, **data}
    payload["time"] = _iso(t)
    return FeedEvent(type, payload, city=city, ward=ward, kind=kind)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, SITE_ZONE).isoformat()
