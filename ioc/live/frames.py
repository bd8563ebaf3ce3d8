"""Frames of the /ws protocol, per-client filters, and the coalescing of readings frames.

A frame is ``{"type", "seq", "time", "data"}``; ``data`` is the feed row's payload, passed through
as stored (its JSON text is not re-encoded unless a filter or a merge changes it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ioc.core.localtime import SITE_ZONE, iso_local
from ioc.storage.feed import FeedRow

READINGS = "readings"


def rfc3339(t: datetime) -> str:
    return iso_local(t)


class Frame:
    """One feed event on its way to clients. Immutable once built; shared between clients.

    A frame read from the table keeps only its wire text (one copy in the ring buffer); its
    payload is parsed on demand, for filters and merges, and dropped again after the fan-out.
    Frames derived by a filter or a merge hold their data and are encoded when first sent.
    """

    __slots__ = ("_data", "_text", "city", "kind", "seq", "time", "type", "ward")

    def __init__(
        self,
        seq: int,
        type: str,
        time: str,
        *,
        data: Any = None,
        text: str | None = None,
        city: str | None = None,
        ward: str | None = None,
        kind: str | None = None,
    ) -> None:
        self.seq = seq
        self.type = type
        self.time = time
        self.city = city
        self.ward = ward
        self.kind = kind
        self._data = data
        self._text = text

    @classmethod
    def from_row(cls, row: FeedRow) -> Frame:
        time = rfc3339(row.time)
        text = (
            f'{{"type":{orjson.dumps(row.type).decode()},"seq":{row.seq},'
            f'"time":"{time}","data":{row.payload}}}'
        )
        return cls(row.seq, row.type, time, text=text, city=row.city, ward=row.ward, kind=row.kind)

    @property
    def data(self) -> Any:
        if self._data is None and self._text is not None:
            self._data = orjson.loads(self._text)["data"]
        return self._data

    def drop_parsed(self) -> None:
        """Forget the parsed payload of a frame that has its text (the ring keeps only text)."""
        if self._text is not None:
            self._data = None

    @property
    def size(self) -> int:
        """Bytes the frame holds once it keeps only its wire text (what the ring pays)."""
        return len(self.text())

    def text(self) -> str:
        if self._text is None:
            self._text = orjson.dumps(
                {"type": self.type, "seq": self.seq, "time": self.time, "data": self._data}
            ).decode()
        return self._text

    def readings_devices(self) -> dict[str, Any] | None:
        """``data.devices`` of a readings frame, or None when the payload is not shaped so."""
        if self.type != READINGS:
            return None
        data = self.data
        devices = data.get("devices") if isinstance(data, dict) else None
        return devices if isinstance(devices, dict) else None


def control(type: str, seq: int, **fields: Any) -> str:
    """A control frame (hello, heartbeat, resync): not a feed row, never filtered."""
    return orjson.dumps(
        {"type": type, "seq": seq, "time": rfc3339(datetime.now(SITE_ZONE)), **fields}
    ).decode()


@dataclass(frozen=True, slots=True)
class FeedFilter:
    """What one client asked for; ``None`` means no restriction. Hashable: clients with equal
    filters share the filtered frame during fan-out.

    Places match exactly: a frame (or, for readings, a device) without a city never matches a
    city filter. Readings frames are filtered device by device and dropped when none is left.
    """

    types: frozenset[str] | None = None
    cities: frozenset[str] | None = None
    wards: frozenset[str] | None = None
    kinds: frozenset[str] | None = None

    @property
    def by_place(self) -> bool:
        return self.cities is not None or self.wards is not None or self.kinds is not None

    def place_matches(self, city: Any, ward: Any, kind: Any) -> bool:
        return (
            (self.cities is None or city in self.cities)
            and (self.wards is None or ward in self.wards)
            and (self.kinds is None or kind in self.kinds)
        )

    def apply(self, frame: Frame) -> Frame | None:
        """The frame as this client sees it, or None if it sees nothing of it."""
        if self.types is not None and frame.type not in self.types:
            return None
        if not self.by_place:
            return frame
        devices = frame.readings_devices()
        if devices is None:
            return frame if self.place_matches(frame.city, frame.ward, frame.kind) else None
        kept = {
            device_id: d
            for device_id, d in devices.items()
            if isinstance(d, dict)
            and self.place_matches(d.get("city"), d.get("ward"), d.get("kind"))
        }
        if not kept:
            return None
        if len(kept) == len(devices):
            return frame
        return Frame(frame.seq, frame.type, frame.time, data={**frame.data, "devices": kept})


def merge_readings(frames: Iterable[Frame]) -> Frame:
    """One readings frame holding the newest value per device and metric of ``frames`` (in seq
    order); it takes the seq and time of the last one. A point replaces an earlier one unless its
    own time is older (a device flushing its buffer late does not overwrite a newer value)."""
    devices: dict[str, dict[str, Any]] = {}
    last: Frame | None = None
    for f in frames:
        last = f
        for device_id, d in (f.readings_devices() or {}).items():
            if not isinstance(d, dict):
                continue
            raw = d.get("metrics")
            metrics: dict[str, Any] = raw if isinstance(raw, dict) else {}
            have = devices.get(device_id)
            if have is None:
                devices[device_id] = {**d, "metrics": dict(metrics)}
                continue
            have.update((k, v) for k, v in d.items() if k != "metrics")
            merged = have["metrics"]
            for metric, point in metrics.items():
                old = merged.get(metric)
                if old is None or not _older(point, old):
                    merged[metric] = point
    assert last is not None, "merge_readings needs at least one frame"
    return Frame(last.seq, READINGS, last.time, data={"devices": devices})


def _older(point: Any, than: Any) -> bool:
    with contextlib.suppress(AttributeError, KeyError, TypeError, ValueError):
        return bool(datetime.fromisoformat(point["time"]) < datetime.fromisoformat(than["time"]))
    return False
