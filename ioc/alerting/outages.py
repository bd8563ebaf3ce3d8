"""Planned outages: the power company's list of announced supply cuts, so that a cabinet losing
supply during one is not raised as a fault.

EVN announces planned cuts in advance (maintenance, grid works); most cabinet power losses are
such cuts. The list comes from a file (``IOC_PLANNED_OUTAGES_FILE``, CSV or YAML, re-read when it
changes) and from a retained MQTT message on ``{prefix}/power/planned-outages`` (AsyncAPI:
docs/asyncapi.yaml), both in the same shape, one entry per cut::

    reference: EVN-CT-2026-0412      # the notice's number, shown as the reason
    cabinet: nb-cab-03               # one cabinet, or
    area: phuong-vi-tan              # a ward (current or former id, or its name) or a city id
    start: 2026-11-21T07:00:00+07:00 # local time when no offset is given
    end: 2026-11-21T11:30:00+07:00
    note: Bảo trì đường dây 22 kV    # optional

Each entry becomes a :class:`ioc.rules.suppression.PlannedOutage`: the rules service mutes the
``cabinet-power-loss`` alerts it covers with the outage as the reason (the lamps' alerts are
already inhibited by the power loss). A bad entry is refused alone, logged with its place; the
others stay. The list is bounded (:data:`MAX_OUTAGES` per source).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson

from ioc.core import yamlfile
from ioc.core.backoff import Backoff
from ioc.core.localtime import SITE_ZONE
from ioc.core.site import Site
from ioc.core.topics import planned_outages_topic
from ioc.rules.matchers import make_matcher
from ioc.rules.suppression import PlannedOutage
from mqttclient import Client, MqttError

log = logging.getLogger(__name__)

# The rules whose alerts a planned cut explains: the cabinet's own supply-loss alarm. (A cut
# feeder with supply present, cabinet-feeder-cut, is not explained by an outage.)
MUTED_RULES: Final = ("cabinet-power-loss",)
MAX_OUTAGES: Final = 5_000  # per source; a year of cuts for a province is a few hundred
FIELDS: Final = ("reference", "cabinet", "area", "start", "end", "note")


class OutageError(ValueError):
    """An entry that cannot be used; ``where`` names it (``outages.csv: row 3``)."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class ParsedList:
    outages: tuple[PlannedOutage, ...]
    problems: tuple[str, ...]


def parse_entries(entries: Iterable[Any], site: Site, source: str) -> ParsedList:
    """Outages from mappings with :data:`FIELDS`; bad entries are left out and described."""
    out: list[PlannedOutage] = []
    problems: list[str] = []
    for i, entry in enumerate(entries):
        where = f"{source}: entry {i + 1}"
        if len(out) >= MAX_OUTAGES:
            problems.append(f"{source}: more than {MAX_OUTAGES} outages; the rest ignored")
            break
        try:
            out.append(outage(entry, site, where))
        except OutageError as exc:
            problems.append(str(exc))
    return ParsedList(tuple(out), tuple(problems))


def outage(entry: Any, site: Site, where: str) -> PlannedOutage:
    if not isinstance(entry, Mapping):
        raise OutageError(where, f"expected a mapping of {list(FIELDS)}")
    unknown = sorted(str(k) for k in entry if k not in FIELDS)
    if unknown:
        raise OutageError(where, f"unknown field(s) {unknown} (fields: {list(FIELDS)})")
    reference = _text(entry, "reference", where)
    cabinet = _opt_text(entry, "cabinet")
    area = _opt_text(entry, "area")
    if (cabinet is None) == (area is None):
        raise OutageError(where, "give one of cabinet or area")
    start = _time(entry, "start", where)
    end = _time(entry, "end", where)
    if end <= start:
        raise OutageError(where, f"end {end.isoformat()} is not after start {start.isoformat()}")
    rule = make_matcher("alertname", "=~", "|".join(re.escape(r) for r in MUTED_RULES))
    if cabinet is not None:
        device = site.devices_by_id.get(cabinet)
        if device is None or device.kind != "cabinet":
            raise OutageError(where, f"cabinet {cabinet!r} is not a cabinet of the site")
        matchers = (rule, make_matcher("cabinet", "=", cabinet))
        words = f"{device.name} ({cabinet})"
    else:
        assert area is not None
        ward = site.find_ward(area) or site.ward_named(area)
        if ward is not None:
            ids = "|".join(re.escape(i) for i in ward.ids)
            matchers = (rule, make_matcher("ward", "=~", ids))
            words = site.place_name(ward.id)
        elif area in site.cities_by_id:
            matchers = (rule, make_matcher("city", "=", area))
            words = site.place_name(None, area)
        else:
            raise OutageError(where, f"area {area!r} is no ward or city of the site")
    note = _opt_text(entry, "note")
    return PlannedOutage(
        reference=reference,
        matchers=matchers,
        starts_at=start.timestamp(),
        ends_at=end.timestamp(),
        where=f"{words}: {note}" if note else words,
    )


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = _opt_text(entry, key)
    if value is None:
        raise OutageError(where, f"{key} is required")
    return value


def _opt_text(entry: Mapping[str, Any], key: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text[:500] or None


def _time(entry: Mapping[str, Any], key: str, where: str) -> datetime:
    value = entry.get(key)
    if isinstance(value, datetime):
        t = value
    else:
        try:
            t = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise OutageError(where, f"{key} {value!r} is not an ISO 8601 time") from None
    # the power company's notices are in local time
    return t if t.tzinfo is not None else t.replace(tzinfo=SITE_ZONE)


def parse_file_text(text: str, name: str, site: Site) -> ParsedList:
    """A CSV file (a header row naming :data:`FIELDS`) or a YAML list (or ``outages:`` list)."""
    if name.lower().endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        return parse_entries(({k: v for k, v in r.items() if k} for r in rows), site, name)
    try:
        raw = yamlfile.parse(text, name)
    except yamlfile.DataFileError as exc:
        return ParsedList((), (str(exc),))
    if isinstance(raw, dict):
        raw = raw.get("outages")
    if raw is None:
        return ParsedList((), ())
    if not isinstance(raw, list):
        return ParsedList((), (f"{name}: expected a list of outages",))
    return parse_entries(raw, site, name)


def parse_message(payload: bytes, site: Site, topic: str) -> ParsedList:
    """The MQTT message: ``{"outages": [...]}`` (the whole current list; an empty list clears)."""
    try:
        doc = orjson.loads(payload) if payload else {"outages": []}
    except orjson.JSONDecodeError as exc:
        return ParsedList((), (f"{topic}: not JSON: {exc}",))
    if not isinstance(doc, dict) or not isinstance(doc.get("outages"), list):
        return ParsedList((), (f'{topic}: expected {{"outages": [...]}}',))
    return parse_entries(doc["outages"], site, topic)


class OutageBook:
    """The planned outages in force, from the file and the MQTT feed (each replaces its own part
    whole). The file is re-read when its modification time changes; a file that cannot be read
    keeps the previous list. Thread-safe (a lock guards the two parts)."""

    def __init__(self, site: Site, file: Path | None = None) -> None:
        self._site = site
        self._file = file
        self._file_mtime: float | None = None
        self._from_file: tuple[PlannedOutage, ...] = ()
        self._from_mqtt: tuple[PlannedOutage, ...] = ()
        self._lock = threading.Lock()
        self.problems: tuple[str, ...] = ()

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the list was replaced."""
        if self._file is None:
            return False
        try:
            mtime = self._file.stat().st_mtime
            if mtime == self._file_mtime:
                return False
            text = self._file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            if self._file_mtime is not None or not self.problems:
                log.error("planned outages: cannot read %s (%s); the previous list stays",
                          self._file, exc)  # fmt: skip
            self.problems = (f"{self._file}: {exc}",)
            return False
        parsed = parse_file_text(text, self._file.name, self._site)
        self._report(parsed)
        with self._lock:
            self._from_file, self._file_mtime = parsed.outages, mtime
        log.info("planned outages: %d from %s", len(parsed.outages), self._file)
        return True

    def take_message(self, payload: bytes, topic: str) -> None:
        parsed = parse_message(payload, self._site, topic)
        self._report(parsed)
        if parsed.outages or not parsed.problems:  # a broken message keeps the last list
            with self._lock:
                self._from_mqtt = parsed.outages
            log.info("planned outages: %d from %s", len(parsed.outages), topic)

    def _report(self, parsed: ParsedList) -> None:
        self.problems = parsed.problems
        for problem in parsed.problems[:20]:  # bounded: one bad file must not flood the log
            log.error("planned outage refused: %s", problem)

    def current(self) -> tuple[PlannedOutage, ...]:
        with self._lock:
            return self._from_file + self._from_mqtt


class OutageListener:
    """Subscribes to the retained planned-outage message and hands it to an :class:`OutageBook`.
    An ``mqttclient`` session of its own (MQTT v5, QoS 1, clean start) on the event loop: the
    broker redelivers the retained list on every (re)connect, so a restarted service knows the
    cuts at once."""

    def __init__(self, settings: Any, book: OutageBook, client_suffix: str) -> None:
        self._settings = settings
        self._book = book
        self.topic = planned_outages_topic(settings.mqtt_topic_prefix)
        self._client_id = f"{settings.mqtt_client_id}-outages-{client_suffix}"
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="planned-outages")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        backoff = Backoff()
        backoff.initial_s, backoff.maximum_s = 1.0, 30.0
        backoff.reset()
        while not self._stopping.is_set():
            try:
                async with Client(
                    **self._settings.mqtt.client_options(),
                    client_id=self._client_id,
                    clean_start=True,
                    session_expiry_s=0,
                    keep_alive_s=60,
                    backoff_initial_s=1.0,
                    backoff_maximum_s=30.0,
                ) as client:
                    # the client subscribes again by itself on every reconnect (clean start)
                    await client.subscribe(self.topic, qos=1)
                    stop = asyncio.create_task(self._stopping.wait())
                    while not self._stopping.is_set():  # until stop() (then stop is done)
                        get = asyncio.create_task(client.next_message())
                        await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
                        if not get.done():
                            get.cancel()
                            break
                        message = get.result()
                        try:
                            self._book.take_message(message.payload, message.topic)
                        except Exception:  # the next message may be good
                            log.exception("planned outages: message on %s not taken", self.topic)
                    return
            except (OSError, MqttError) as exc:
                log.warning("planned outages: MQTT %s; retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff.next_delay())
