"""Stage *evaluate*: committed ingest records into the pure engine (:mod:`ioc.rules.engine`); the
engine's transitions are what the stages after it store. No database, no clock of its own: the
time comes in — with the records (their own times) or as ``now`` to :func:`advance`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from prometheus_client import Counter

from ioc.ingest.records import CitizenReport, DeviceEvent, Record, StatusChange, Telemetry
from ioc.rules.engine import Engine, Transition

# The event type citizen reports are to the rules (docs/rules.md, "Groups").
REPORT_EVENT = "report"

EVAL_SECONDS = Counter("ioc_rules_eval_seconds_total", "Time spent evaluating rules")


def device_ids(records: Iterable[object]) -> set[str]:
    """The devices the records are about (to learn a device registered since the last load)."""
    return {r.device_id for r in records if isinstance(r, Telemetry | StatusChange | DeviceEvent)}


def without_reports(records: Sequence[Record]) -> Sequence[Record]:
    """The records but citizen reports: ingest's batch brings them, but the rules count every
    report from the ``reports`` table, once (:mod:`ioc.alerting.citizen_reports`)."""
    if not any(isinstance(r, CitizenReport) for r in records):
        return records
    return [r for r in records if not isinstance(r, CitizenReport)]


def observe(engine: Engine, records: Iterable[object]) -> float | None:
    """Feed readings, status changes, device events and citizen reports to the engine, in order;
    returns the newest reading time among them (the stream clock), None without readings."""
    started = time.perf_counter()
    newest: float | None = None
    for rec in records:
        if isinstance(rec, Telemetry):
            engine.observe_telemetry(rec.device_id, rec.time, rec.metrics)
            if newest is None or rec.time > newest:
                newest = rec.time
        elif isinstance(rec, StatusChange):
            engine.observe_status(rec.device_id, rec.online, rec.time)
        elif isinstance(rec, DeviceEvent):
            engine.observe_event(rec.device_id, rec.type, rec.time)
        elif isinstance(rec, CitizenReport):
            # from the reports table (citizen_reports), whatever the channel
            # a `report` event without a device, for group rules that count reports
            # (`count: {event: report}`, grouped by ward and category: reports-cluster)
            engine.observe_event(None, REPORT_EVENT, rec.time, _report_labels(rec))
    EVAL_SECONDS.inc(time.perf_counter() - started)
    return newest


def _report_labels(rec: CitizenReport) -> dict[str, str]:
    # the ward is the current unit's (ingest resolves positions and former names to it)
    return {"city": rec.city, "ward": rec.ward, "category": rec.category}


def advance(engine: Engine, now: float) -> list[Transition]:
    """Timers at ``now``: pending alerts whose ``for`` ended fire, absences, expiries."""
    engine.advance(now)
    return engine.drain()
