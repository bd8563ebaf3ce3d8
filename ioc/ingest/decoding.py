"""Topic and payload decoding against the contract and the metric catalogue.

This is the ingest hot path: it runs once per message in the MQTT pump (on the event loop), so it
avoids allocations it does not need (one ``orjson.loads``, one tuple of metrics) and raises a
``DecodeError`` naming the problem for anything it cannot accept. A message is accepted whole or
refused whole: a reading set with one bad value is dead-lettered rather than half stored, so a
dead letter always stands for the complete message.

Citizen reports (``{prefix}/{city}/reports/{channel}``) are decoded here too, against a
:class:`ReportVocabulary` (site wards, report categories); they are recognised only after a
topic failed the device scheme, so the telemetry path does not change for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ioc.core.catalogue import BOUNDS, EVENT_TYPES, METRICS
from ioc.core.site import Site
from ioc.core.topics import (
    REPORTS,
    Channel,
    DeviceTopic,
    TopicError,
    parse_device_topic,
    parse_report_topic,
)
from ioc.ingest.errors import DecodeError, Reason
from ioc.ingest.records import (
    CitizenReport,
    DeadLetter,
    DeviceEvent,
    Record,
    StatusChange,
    Telemetry,
)

# device id -> (kind, city); replaced wholesale (never mutated) when the registry changes, so the
# pump reads it without a lock.
DeviceIndex = Mapping[str, tuple[str, str]]

# Longest report id and media URL kept; anything longer is not an id or a link but a mistake.
REPORT_ID_MAX = 128
MEDIA_URL_MAX = 2048
PLACE_MAX = 200  # a ward id or name when a report has no position


@dataclass(frozen=True, slots=True)
class ReportVocabulary:
    """What citizen reports are checked against: the site (cities, ward outlines), the category
    codes citizens may use (the routing file's public categories) and the description limit."""

    site: Site
    categories: frozenset[str]
    max_description: int


_STATUS_WORDS = {"online": True, "offline": False}


class Decoder:
    def __init__(
        self,
        *,
        topic_prefix: str,
        devices: DeviceIndex,
        max_payload_bytes: int,
        max_age_s: float,
        max_future_s: float,
        reports: ReportVocabulary | None = None,
        device_rate: tuple[float, int] | None = None,
    ) -> None:
        """``reports=None``: citizen-report topics are refused (``bad_topic``).
        ``device_rate=(per_s, burst)``: a token bucket per device, on the messages' receive
        times (no clock read here); None: no limit."""
        self.topic_prefix = topic_prefix
        self._root_levels = topic_prefix.count("/") + 1
        self.reports = reports
        # topic -> (device id, kind, channel) for topics that passed every registry check: the
        # pump then skips parsing a topic it has seen (devices publish on the same few). Bounded
        # by the registry (registered devices × channels; a refused topic is never kept) and
        # emptied whenever the registry is replaced.
        self._accepted: dict[str, tuple[str, str, Channel]] = {}
        self._devices = devices
        # ids of decommissioned devices (still in ``devices``: their rows stay); replaced whole
        self._decommissioned: frozenset[str] = frozenset()
        self.max_payload_bytes = max_payload_bytes
        self.max_age_s = max_age_s
        self.max_future_s = max_future_s
        self._device_rate = device_rate
        # device id → [allowance left, when], updated in place (the pump's hot path): one entry
        # per registered device that published, so bounded by the registry (unknown devices are
        # refused before this)
        self._allowance: dict[str, list[float]] = {}

    def decode_or_dead_letter(self, topic: str, payload: bytes, received_at: float) -> Record:
        """Never raises: anything unacceptable becomes a ``DeadLetter`` (intake must go on)."""
        try:
            return self.decode(topic, payload, received_at)
        except DecodeError as exc:
            return DeadLetter(topic, payload, exc.reason, exc.detail, received_at)
        except Exception as exc:  # a decoder bug must not stop intake either
            return DeadLetter(
                topic, payload, Reason.INVALID_PAYLOAD, f"decoder error: {exc!r}", received_at
            )

    @property
    def devices(self) -> DeviceIndex:
        return self._devices

    @devices.setter
    def devices(self, index: DeviceIndex) -> None:
        self._devices = index
        self._accepted = {}

    @property
    def decommissioned(self) -> frozenset[str]:
        return self._decommissioned

    @decommissioned.setter
    def decommissioned(self, ids: frozenset[str]) -> None:
        self._decommissioned = ids
        self._accepted = {}

    def decode(self, topic: str, payload: bytes, received_at: float) -> Record:
        if len(payload) > self.max_payload_bytes:
            raise DecodeError(
                topic,
                Reason.OVERSIZE,
                f"payload is {len(payload)} bytes, limit {self.max_payload_bytes}",
            )
        accepted = self._accepted.get(topic)
        if accepted is None:
            try:
                where = parse_device_topic(self.topic_prefix, topic)
            except TopicError as exc:
                # Reports are looked for only once the device scheme failed, so telemetry pays
                # nothing for them.
                return self._report_or_refuse(topic, payload, received_at, exc)
            accepted = self._accept(topic, where)
        device_id, kind, channel = accepted
        if self._device_rate is not None:
            self._admit(topic, device_id, received_at)
        if channel is Channel.TELEMETRY:
            return self._telemetry(topic, device_id, kind, payload, received_at)
        if channel is Channel.STATUS:
            return self._status(topic, device_id, payload, received_at)
        return self._event(topic, device_id, kind, payload, received_at)

    def _accept(self, topic: str, where: DeviceTopic) -> tuple[str, str, Channel]:
        """The registry's checks of a device topic; the topic is remembered once it passes."""
        known = self._devices.get(where.device_id)
        if known is None:
            raise DecodeError(
                topic, Reason.UNKNOWN_DEVICE, f"device {where.device_id!r} is not registered"
            )
        if where.device_id in self._decommissioned:
            raise DecodeError(
                topic, Reason.DECOMMISSIONED, f"device {where.device_id!r} was decommissioned"
            )
        kind, city = known
        if kind != where.kind or city != where.city:
            raise DecodeError(
                topic,
                Reason.DEVICE_MISMATCH,
                f"device {where.device_id!r} is registered as {city}/{kind}, "
                f"topic says {where.city}/{where.kind}",
            )
        accepted = self._accepted[topic] = (where.device_id, kind, where.channel)
        return accepted

    def _admit(self, topic: str, device_id: str, at: float) -> None:
        assert self._device_rate is not None
        rate, burst = self._device_rate
        bucket = self._allowance.get(device_id)
        if bucket is None:
            bucket = self._allowance[device_id] = [float(burst), at]
        elif at > bucket[1]:  # refill (a message received earlier than the last adds nothing)
            bucket[0] = min(float(burst), bucket[0] + (at - bucket[1]) * rate)
            bucket[1] = at
        if bucket[0] < 1.0:
            raise DecodeError(
                topic, Reason.RATE_LIMITED,
                f"device {device_id!r} is over {rate:g} messages/s (burst {burst})",
            )  # fmt: skip
        bucket[0] -= 1.0

    def _object(self, topic: str, payload: bytes) -> dict[str, Any]:
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(
                topic, Reason.MALFORMED_JSON, f"not valid UTF-8 JSON: {exc}"
            ) from None
        if not isinstance(doc, dict):
            raise DecodeError(
                topic,
                Reason.INVALID_PAYLOAD,
                f"payload must be a JSON object, got {type(doc).__name__}",
            )
        return doc

    def _time(self, topic: str, doc: dict[str, Any], received_at: float) -> float:
        ts = doc.get("ts")
        if ts is None:
            raise DecodeError(topic, Reason.MISSING_TIMESTAMP, "field 'ts' is missing")
        if isinstance(ts, str):
            try:
                parsed = datetime.fromisoformat(ts)
            except ValueError:
                raise DecodeError(
                    topic, Reason.WRONG_TYPE, f"ts {ts[:40]!r} is not an RFC 3339 time"
                ) from None
            if parsed.tzinfo is None:
                raise DecodeError(topic, Reason.WRONG_TYPE, f"ts {ts!r} has no UTC offset")
            t = parsed.timestamp()
        elif isinstance(ts, int | float) and not isinstance(ts, bool):
            t = ts / 1000.0
        else:
            raise DecodeError(
                topic, Reason.WRONG_TYPE, "ts must be an RFC 3339 string or epoch milliseconds"
            )
        if t > received_at + self.max_future_s or t < received_at - self.max_age_s:
            raise DecodeError(
                topic,
                Reason.TIMESTAMP_OUT_OF_BOUNDS,
                f"ts {ts!r} is outside the accepted window "
                f"(-{self.max_age_s:.0f} s .. +{self.max_future_s:.0f} s of receipt)",
            )
        return t

    def _telemetry(
        self, topic: str, device_id: str, kind: str, payload: bytes, received_at: float
    ) -> Telemetry:
        doc = self._object(topic, payload)
        t = self._time(topic, doc, received_at)
        seq = doc.get("seq")
        if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 0):
            raise DecodeError(topic, Reason.WRONG_TYPE, "seq must be a non-negative integer")
        metrics = doc.get("metrics")
        if not isinstance(metrics, dict) or not metrics:
            raise DecodeError(
                topic, Reason.INVALID_PAYLOAD, "field 'metrics' must be a non-empty object"
            )
        bounds = BOUNDS[kind]
        values = []
        for name, value in metrics.items():
            limits = bounds.get(name)
            if limits is None:
                raise DecodeError(
                    topic,
                    Reason.UNKNOWN_METRIC,
                    f"metric {name[:64]!r} is not in the {kind} catalogue",
                )
            kind_of_value = type(value)  # exact types: bool is an int subclass and is refused
            if kind_of_value is int:
                value = float(value)
            elif kind_of_value is not float:
                raise DecodeError(
                    topic,
                    Reason.WRONG_TYPE,
                    f"metric {name!r} must be a number, got {kind_of_value.__name__}",
                )
            if not limits[0] <= value <= limits[1]:
                spec = METRICS[kind][name]
                raise DecodeError(
                    topic,
                    Reason.OUT_OF_RANGE,
                    f"metric {name!r} = {value} is outside"
                    f" {spec.minimum}..{spec.maximum} {spec.unit}",
                )
            values.append((name, value))
        return Telemetry(device_id, t, seq, tuple(values))

    def _status(
        self, topic: str, device_id: str, payload: bytes, received_at: float
    ) -> StatusChange:
        word: object = payload.strip().decode("utf-8", "replace")
        if isinstance(word, str) and word[:1] in ('"', "{"):
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise DecodeError(topic, Reason.MALFORMED_JSON, f"not valid JSON: {exc}") from None
            word = doc.get("status") if isinstance(doc, dict) else doc
        online = _STATUS_WORDS.get(word) if isinstance(word, str) else None
        if online is None:
            raise DecodeError(
                topic,
                Reason.INVALID_STATUS,
                f"status must be 'online' or 'offline', got {str(word)[:40]!r}",
            )
        return StatusChange(device_id, online, received_at)

    def _event(
        self, topic: str, device_id: str, kind: str, payload: bytes, received_at: float
    ) -> DeviceEvent:
        doc = self._object(topic, payload)
        t = self._time(topic, doc, received_at)
        etype = doc.get("type")
        if not isinstance(etype, str):
            raise DecodeError(topic, Reason.INVALID_PAYLOAD, "field 'type' must be a string")
        if etype not in EVENT_TYPES[kind]:
            raise DecodeError(
                topic,
                Reason.UNKNOWN_EVENT_TYPE,
                f"event type {etype[:64]!r} is not one of {sorted(EVENT_TYPES[kind])}",
            )
        data = {k: v for k, v in doc.items() if k not in ("ts", "type")}
        return DeviceEvent(device_id, t, etype, orjson.dumps(data))

    # -- citizen reports ---------------------------------------------------------------------

    def _report_or_refuse(
        self, topic: str, payload: bytes, received_at: float, device_error: TopicError
    ) -> CitizenReport:
        levels = topic.split("/")
        if len(levels) != self._root_levels + 3 or levels[self._root_levels + 1] != REPORTS:
            raise DecodeError(topic, Reason.BAD_TOPIC, str(device_error))
        if self.reports is None:
            raise DecodeError(topic, Reason.BAD_TOPIC, "citizen reports are not taken in here")
        return self._report(topic, payload, received_at, self.reports)

    def _report(
        self, topic: str, payload: bytes, received_at: float, vocab: ReportVocabulary
    ) -> CitizenReport:
        try:
            where = parse_report_topic(self.topic_prefix, topic)
        except TopicError as exc:
            raise DecodeError(topic, Reason.BAD_TOPIC, str(exc)) from None
        if where.city not in vocab.site.cities_by_id:
            raise DecodeError(
                topic,
                Reason.BAD_TOPIC,
                f"unknown city {where.city[:40]!r} (one of {sorted(vocab.site.cities_by_id)})",
            )
        doc = self._object(topic, payload)
        t = self._time(topic, doc, received_at)
        external_id = _text(topic, doc, "id", REPORT_ID_MAX)
        category = doc.get("category")
        if not isinstance(category, str):
            raise DecodeError(
                topic,
                Reason.INVALID_PAYLOAD if category is None else Reason.WRONG_TYPE,
                "field 'category' must be a category code (a string)",
            )
        if category not in vocab.categories:
            raise DecodeError(
                topic,
                Reason.UNKNOWN_CATEGORY,
                f"category {category[:64]!r} is not one of {sorted(vocab.categories)}",
            )
        lat: float | None
        lon: float | None
        if doc.get("lat") is None and doc.get("lon") is None and doc.get("place") is not None:
            # No position: the place named (a ward id, a former ward's id such as "phuong-5",
            # or a name such as "Phường 5") puts the report in the current unit.
            lat = lon = None
            place = _text(topic, doc, "place", PLACE_MAX)
            ward = vocab.site.find_ward(place) or vocab.site.ward_named(place)
            if ward is None:
                raise DecodeError(
                    topic, Reason.OUTSIDE_SITE, f"place {place[:64]!r} names no ward of the site"
                )
            where_text = f"place {place[:64]!r}"
        else:
            lat = _coordinate(topic, doc, "lat")
            lon = _coordinate(topic, doc, "lon")
            ward = vocab.site.ward_of(lat, lon)
            if ward is None:
                raise DecodeError(
                    topic,
                    Reason.OUTSIDE_SITE,
                    f"position lat={lat}, lon={lon} is in no ward of the site",
                )
            where_text = f"position lat={lat}, lon={lon}"
        if ward.city != where.city:
            raise DecodeError(
                topic,
                Reason.CITY_MISMATCH,
                f"{where_text} is in {ward.city}/{ward.id}, topic says {where.city}",
            )
        description = _text(topic, doc, "description", vocab.max_description)
        media_url = doc.get("media_url")
        if media_url is not None:
            if not isinstance(media_url, str):
                raise DecodeError(topic, Reason.WRONG_TYPE, "media_url must be a URL or null")
            if not media_url.startswith(("https://", "http://")):
                raise DecodeError(
                    topic,
                    Reason.INVALID_PAYLOAD,
                    f"media_url {media_url[:64]!r} is not an http(s) URL",
                )
            if len(media_url) > MEDIA_URL_MAX:
                raise DecodeError(
                    topic,
                    Reason.TOO_LONG,
                    f"media_url is {len(media_url)} characters, limit {MEDIA_URL_MAX}",
                )
        return CitizenReport(
            where.city,
            where.channel,
            external_id,
            t,
            category,
            None if lat is None else float(lat),
            None if lon is None else float(lon),
            ward.id,
            description,
            media_url,
        )


def _text(topic: str, doc: dict[str, Any], name: str, limit: int) -> str:
    """A required, non-blank string field of at most ``limit`` characters (stripped)."""
    value = doc.get(name)
    if value is None:
        raise DecodeError(topic, Reason.INVALID_PAYLOAD, f"field {name!r} is missing")
    if not isinstance(value, str):
        raise DecodeError(
            topic, Reason.WRONG_TYPE, f"{name} must be a string, got {type(value).__name__}"
        )
    value = value.strip()
    if not value:
        raise DecodeError(topic, Reason.INVALID_PAYLOAD, f"field {name!r} is empty")
    if len(value) > limit:
        raise DecodeError(
            topic, Reason.TOO_LONG, f"{name} is {len(value)} characters, limit {limit}"
        )
    return value


def _coordinate(topic: str, doc: dict[str, Any], name: str) -> float:
    value = doc.get(name)
    if value is None:
        raise DecodeError(topic, Reason.INVALID_PAYLOAD, f"field {name!r} is missing")
    if type(value) is int:
        return float(value)
    if type(value) is not float:  # exact types: bool is an int subclass and is refused
        raise DecodeError(
            topic, Reason.WRONG_TYPE, f"{name} must be a number, got {type(value).__name__}"
        )
    return value
