"""The rules service: runs the pure engine on the ingest stream and keeps alerts in PostgreSQL.

- ``on_batch`` is an ingest commit listener: each committed batch's records are fed to the engine
  (readings, statuses, device events), the resulting transitions are stored with their history
  and the live feed gets the alert changes — in one transaction, before the batch's messages are
  acknowledged. (The batch's readings/device frames are ingest's: appended in its own commit.)
- ``tick`` runs once a second with the wall clock (the only clock read, here at the boundary):
  pending alerts fire when their ``for`` ends, absences, expiries; then suppression (silences,
  maintenance windows, inhibition), escalation of unacknowledged critical alerts, alerts
  resolved by hand, and rule files changed on disk.
- Restart: open alerts are restored from the ``alerts`` table (pending timers keep their
  deadlines, firing alerts are not fired again); rate/aggregate windows are refilled from stored
  readings; anomaly rules get their per-hour history from stored readings.

If the database is away, transitions wait in a bounded backlog and are stored once it is back.
Past ``_MAX_BACKLOG`` the backlog is compacted (:func:`compact_backlog`: per alert only the
first, the last and the last row-opening transition stay, so every stored alert still ends in
its true state; the history in between is lost and counted); only if that is not enough are the
oldest dropped (counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from prometheus_client import Counter, Gauge
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ingest.records import DeviceEvent, Record, StatusChange, Telemetry
from ioc.alerting import store
from ioc.alerting.tide_source import PredictedTide, site_predictor
from ioc.devices import Device
from ioc.low_water import LowWaterAdvisor
from ioc.names import Names
from ioc.outages import OutageBook, OutageListener
from ioc.routing import load_routing
from ioc.settings import Settings
from ioc.site import load_site
from ioc.storage import audit
from ioc.storage import devices as device_store
from ioc.storage.feed import FeedEvent, append
from ioc.tides import TidePredictor
from rules.engine import Engine, Transition
from rules.language import DEFAULT_PACK, Problem, RuleErrors, RuleSet, load_rules, rule_files
from rules.matchers import parse_matcher
from rules.suppression import AlertView, MaintenanceWindow, Silence, suppressions
from rules.tide import TideSource

log = logging.getLogger(__name__)

_MAX_BACKLOG = 100_000
_DEVICE_REFRESH_S = 60.0

TRANSITIONS = Counter("ioc_alert_transitions_total", "Alert transitions stored", ["to"])
LOST = Counter("ioc_alert_transitions_dropped_total", "Transitions dropped: backlog full")
OPEN = Gauge("ioc_alerts_open", "Open alerts by state", ["state"])
RULES_LOADED = Gauge("ioc_rules_loaded", "Rules in force")
RELOAD_FAILURES = Counter("ioc_rules_reload_failures_total", "Rule reloads refused (bad file)")
EVAL_SECONDS = Counter("ioc_rules_eval_seconds_total", "Time spent evaluating rules")


@dataclass
class _Open:
    id: int
    labels: dict[str, str]
    state: str
    suppressed_by: dict[str, Any] | None


@dataclass
class RulesStatus:
    source: str
    loaded_at: float
    problems: list[Problem] = field(default_factory=list)  # of the last refused reload


def rules_path(settings: Settings) -> Path:
    return settings.rules_dir if settings.rules_dir is not None else DEFAULT_PACK


class RulesService:
    def __init__(self, settings: Settings, conninfo: str, tide: TideSource | None = None) -> None:
        self._settings = settings
        self._conninfo = conninfo
        # predicted tide for the residual and forecast rules (rules.tide); by default the site's
        # tide model (ioc.tides), built on entry
        self._tide = tide
        self._predicted: PredictedTide | None = None
        self._lock = asyncio.Lock()
        self._conn: psycopg.AsyncConnection | None = None
        self._backlog: deque[Transition] = deque()
        self._open: dict[str, _Open] = {}
        self._silences: list[Silence] = []
        self._windows: list[MaintenanceWindow] = []
        self._devices_at = 0.0
        self._hand_event_id = 0
        self._files_mtime: dict[Path, float] = {}
        self.engine: Engine | None = None
        self.status = RulesStatus(str(rules_path(settings)), 0.0)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watermark: float | None = None  # newest reading time seen (stream clock)
        # the power company's planned cuts (file and MQTT): read in __aenter__
        self.outages: OutageBook | None = None
        self._outage_listener: OutageListener | None = None

    def _device(self, device_id: str) -> Device | None:
        return self.engine.devices.get(device_id) if self.engine is not None else None

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> RulesService:
        ruleset = load_rules(rules_path(self._settings))  # a bad rule set refuses to start
        self._files_mtime = self._mtimes()
        conn = await self._connection()
        devices = await device_store.list_devices(conn, limit=1_000_000)
        if self._tide is None:
            self._tide = self._predicted = PredictedTide(
                site_predictor(self._settings), lambda d: self._device(d)
            )
        self.engine = Engine(
            ruleset,
            devices,
            tide=self._tide,
            advisor=_advisor(self._settings),
            names=self._label_names().in_sentence,
        )
        self._devices_at = time.monotonic()
        self.status.loaded_at = time.time()
        RULES_LOADED.set(len(self.engine.rules))
        await self._restore(conn)
        self.outages = OutageBook(
            load_site(self._settings.site_path()), self._settings.planned_outages_file
        )
        self.outages.refresh()
        if self._settings.planned_outages_mqtt and self._settings.mqtt_url:
            self._outage_listener = OutageListener(
                self._settings, self.outages, secrets.token_hex(4)
            )
            self._outage_listener.start()
        self._task = asyncio.create_task(self._tick_loop(), name="rules-tick")
        return self

    def _label_names(self) -> Names:
        """Names for the ids in group annotations ("Phường Ngã Bảy", not "phuong-nga-bay")."""
        site = load_site(self._settings.site_path())
        return Names(site, load_routing(self._settings.routing_path(), site))

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._outage_listener is not None:
            await self._outage_listener.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            async with self._lock:
                await self._flush([])
        if self._conn is not None:
            await self._conn.close()

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=5
            )
        return self._conn

    async def _restore(self, conn: psycopg.AsyncConnection) -> None:
        engine = self.engine
        assert engine is not None
        opened = await store.open_alerts(conn)
        orphans = engine.restore(opened)
        now = time.time()
        async with conn.transaction():
            rows = await store.resolve_orphans(conn, orphans, now)
            await append(conn, [store.feed_event(r) for r in rows])
        for a in opened:
            if a not in orphans:
                self._open[a.fingerprint] = _Open(0, dict(a.labels), a.state, None)
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT fingerprint, id, suppressed_by FROM alerts WHERE state <> 'resolved'"
            )
            for fp, alert_id, suppressed in await cur.fetchall():
                if fp in self._open:
                    self._open[fp].id = alert_id
                    self._open[fp].suppressed_by = suppressed
            # windows of rate/aggregate rules, from stored readings
            windows: dict[str, float] = {}
            history: set[str] = set()
            for r in engine.rules.values():
                if r.type in ("rate", "aggregate") and r.select.metric:
                    windows[r.select.metric] = max(windows.get(r.select.metric, 0), r.window_s)
                if r.type == "anomaly" and r.select.metric:
                    history.add(r.select.metric)
            for metric, window in windows.items():
                await cur.execute(
                    "SELECT device_id, extract(epoch FROM time), value FROM readings"
                    " WHERE metric = %s AND time > now() - make_interval(secs => %s)"
                    " ORDER BY device_id, time",
                    (metric, window),
                )
                by_device: dict[str, list[tuple[float, float]]] = {}
                for device_id, t, v in await cur.fetchall():
                    by_device.setdefault(device_id, []).append((float(t), v))
                for device_id, samples in by_device.items():
                    engine.preload(device_id, metric, samples)
            for metric in history:
                await cur.execute(
                    "SELECT device_id, extract(epoch FROM time), value FROM readings"
                    " WHERE metric = %s AND time > now() - interval '28 days'"
                    " ORDER BY device_id",
                    (metric,),
                )
                rows_h = await cur.fetchall()
                by_dev: dict[str, list[tuple[float, float]]] = {}
                for device_id, t, v in rows_h:
                    by_dev.setdefault(device_id, []).append((float(t), v))
                for device_id, pts in by_dev.items():
                    arr = np.array(pts)
                    engine.seed_history(device_id, metric, arr[:, 0], arr[:, 1])
            await cur.execute(
                "SELECT device_id, extract(epoch FROM last_seen_at) FROM device_state"
                " WHERE last_seen_at IS NOT NULL"
            )
            for device_id, t in await cur.fetchall():
                engine.seen(device_id, float(t))
        self._hand_event_id = await store.last_event_id(conn)
        if self._settings.rules_clock == "wall":
            engine.advance(now)  # arms absence timers from now for devices never heard of
        log.info(
            "rules: %d in force from %s; %d open alerts restored, %d orphans resolved",
            len(engine.rules), self.status.source, len(self._open), len(orphans),
        )  # fmt: skip

    # -- inputs ------------------------------------------------------------------------------

    async def on_batch(self, records: Sequence[Record]) -> None:
        """Ingest commit listener."""
        engine = self.engine
        assert engine is not None
        known = engine.devices
        if time.monotonic() - self._devices_at > 1.0 and any(
            getattr(rec, "device_id", None) not in known
            for rec in records
            if isinstance(rec, Telemetry | StatusChange | DeviceEvent)
        ):
            # a device registered since the last load: learn it before evaluating its reading
            # (ingest stored it, so it exists; at most one reload a second)
            await self.reload_devices()
        async with self._lock:
            started = time.perf_counter()
            for rec in records:
                if isinstance(rec, Telemetry):
                    engine.observe_telemetry(rec.device_id, rec.time, rec.metrics)
                    if self._watermark is None or rec.time > self._watermark:
                        self._watermark = rec.time
                elif isinstance(rec, StatusChange):
                    engine.observe_status(rec.device_id, rec.online, rec.time)
                elif isinstance(rec, DeviceEvent):
                    engine.observe_event(rec.device_id, rec.type, rec.time)
            EVAL_SECONDS.inc(time.perf_counter() - started)
            await self._flush([])

    async def tick(self, now: float) -> None:
        engine = self.engine
        assert engine is not None
        async with self._lock:
            engine.advance(now)
            await self._flush([], now=now)
            try:
                conn = await self._connection()
                await self._hand_resolved(conn)
                # silences and maintenance windows are few: re-read every tick, so one created
                # in any API process takes effect within a tick
                await self._load_silences(conn)
                if self.outages is not None:
                    self.outages.refresh()  # the file, when it changed (a stat per tick)
                async with conn.transaction():
                    await append(conn, await self._apply_suppression(conn, now))
                await self._escalate(conn, now)
            except psycopg.Error as exc:
                log.warning("rules tick: database unavailable (%s); retrying", exc)
                self._conn = None
        if time.monotonic() - self._devices_at > _DEVICE_REFRESH_S:
            await self.reload_devices()
        await self.reload_rules_if_changed()

    def _clock_now(self) -> float:
        """Now for suppression: the wall clock, or in stream mode the newest reading time (a
        replay of last week must meet last week's silences and maintenance windows)."""
        if self._settings.rules_clock == "stream" and self._watermark is not None:
            return self._watermark
        return time.time()

    async def _tick_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                now = time.time() if self._settings.rules_clock == "wall" else self._watermark
                if now is not None:
                    await self.tick(now)
            except Exception:
                log.exception("rules tick failed; next tick retries")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._settings.rules_tick_s)

    # -- storing -----------------------------------------------------------------------------

    async def _flush(self, feed: list[FeedEvent], *, now: float | None = None) -> None:
        engine = self.engine
        assert engine is not None
        self._backlog.extend(engine.drain())
        if len(self._backlog) > _MAX_BACKLOG:
            kept = compact_backlog(self._backlog)
            LOST.inc(len(self._backlog) - len(kept))
            self._backlog = deque(kept)
        while len(self._backlog) > _MAX_BACKLOG:
            self._backlog.popleft()
            LOST.inc()
        if not self._backlog and not feed:
            return
        transitions = list(self._backlog)
        try:
            conn = await self._connection()
            async with conn.transaction():
                rows = await store.apply_transitions(conn, transitions)
                events = [store.feed_event(r) for r in rows]
                self._track(rows)
                events.extend(await self._apply_suppression(conn, now or self._clock_now()))
                await append(conn, events + feed)
        except psycopg.Error as exc:
            log.warning("storing %d alert transitions failed (%s); kept", len(transitions), exc)
            self._conn = None
            return
        self._backlog.clear()
        for tr in transitions:
            TRANSITIONS.labels(tr.to).inc()
        OPEN.labels("pending").set(sum(1 for o in self._open.values() if o.state == "pending"))
        OPEN.labels("firing").set(sum(1 for o in self._open.values() if o.state == "firing"))

    def _track(self, rows: Sequence[dict[str, Any]]) -> None:
        for r in rows:
            if r["state"] == "resolved":
                self._open.pop(r["fingerprint"], None)
            else:
                self._open[r["fingerprint"]] = _Open(
                    r["id"], r["labels"], r["state"], r["suppressed_by"]
                )

    async def _apply_suppression(
        self, conn: psycopg.AsyncConnection, now: float
    ) -> list[FeedEvent]:
        """Recompute why each open alert is muted; store changes, return their feed events.
        Call inside a transaction and append the events in it."""
        engine = self.engine
        assert engine is not None
        views = [AlertView(fp, o.labels, o.state == "firing") for fp, o in self._open.items()]
        why = suppressions(
            views,
            now,
            silences=self._silences,
            windows=self._windows,
            inhibit_rules=engine.ruleset.inhibit_rules,
            outages=self.outages.current() if self.outages is not None else (),
        )
        events: list[FeedEvent] = []
        for fp, reason in why.items():
            o = self._open[fp]
            if reason == o.suppressed_by or not o.id:
                continue
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    f"UPDATE alerts a SET suppressed_by = %s, updated_at = now()"
                    f" WHERE id = %s AND state <> 'resolved' RETURNING {store._COLUMNS}",
                    (Jsonb(reason) if reason else None, o.id),
                )
                row = await cur.fetchone()
                if row is None:
                    continue
                await cur.execute(
                    "INSERT INTO alert_events (alert_id, time, kind, reason)"
                    " VALUES (%s, %s, %s, %s)",
                    (
                        o.id,
                        datetime.fromtimestamp(now, UTC),
                        "suppressed" if reason else "unsuppressed",
                        Jsonb(reason or {}),
                    ),
                )
            o.suppressed_by = reason
            events.append(store.feed_event(row))
        return events

    async def _escalate(self, conn: psycopg.AsyncConnection, now: float) -> None:
        s = self._settings
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"""UPDATE alerts a SET escalation_level = escalation_level + 1,
                       escalated_at = %(now)s, updated_at = now()
                    WHERE state = 'firing' AND severity = 'critical'
                      AND acknowledged_at IS NULL AND suppressed_by IS NULL
                      AND escalation_level < %(max)s
                      AND COALESCE(escalated_at, started_at)
                          <= %(now)s - make_interval(secs => %(after)s)
                    RETURNING {store._COLUMNS}""",
                {
                    "now": datetime.fromtimestamp(now, UTC),
                    "max": s.alert_escalate_max,
                    "after": s.alert_escalate_after_s,
                },
            )
            rows = await cur.fetchall()
            for r in rows:
                await cur.execute(
                    "INSERT INTO alert_events (alert_id, time, kind, reason)"
                    " VALUES (%s, %s, 'escalated', %s)",
                    (
                        r["id"],
                        datetime.fromtimestamp(now, UTC),
                        Jsonb(
                            {
                                "level": r["escalation_level"],
                                "unacknowledged_for_s": now - (r["started_at"].timestamp()),
                            }
                        ),
                    ),
                )
            await append(conn, [store.feed_event(r) for r in rows])

    async def _hand_resolved(self, conn: psycopg.AsyncConnection) -> None:
        engine = self.engine
        assert engine is not None
        self._hand_event_id, fps = await store.hand_resolved_since(conn, self._hand_event_id)
        for fp in fps:
            engine.forget(fp)
            self._open.pop(fp, None)

    async def _load_silences(self, conn: psycopg.AsyncConnection) -> None:
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT id, matchers, extract(epoch FROM starts_at),"
                " extract(epoch FROM COALESCE(expired_at, ends_at)) FROM silences"
                " WHERE COALESCE(expired_at, ends_at) > now()"
            )
            silences = []
            for sid, matchers, start, end in await cur.fetchall():
                try:
                    ms = tuple(parse_matcher(m) for m in matchers)
                except ValueError:
                    continue  # validated on creation; never let one row stop the rest
                silences.append(Silence(sid, ms, float(start), float(end)))
            await cur.execute(
                "SELECT id, name, matchers, weekdays, start_time, extract(epoch FROM duration),"
                " extract(epoch FROM valid_from), extract(epoch FROM valid_to)"
                " FROM maintenance_windows"
            )
            windows = []
            for wid, name, matchers, days, start, dur, vf, vt in await cur.fetchall():
                try:
                    ms = tuple(parse_matcher(m) for m in matchers)
                except ValueError:
                    continue
                windows.append(
                    MaintenanceWindow(
                        wid, name, ms, frozenset(days), start if isinstance(start, dtime)
                        else dtime(0), float(dur), float(vf) if vf else None,
                        float(vt) if vt else None,
                    )
                )  # fmt: skip
        self._silences, self._windows = silences, windows

    # -- reloads -----------------------------------------------------------------------------

    async def reload_devices(self) -> None:
        engine = self.engine
        assert engine is not None
        self._devices_at = time.monotonic()
        try:
            conn = await self._connection()
            devices = await device_store.list_devices(conn, limit=1_000_000)
        except psycopg.Error as exc:
            log.warning("rules: device reload failed: %s", exc)
            self._conn = None
            return
        if {d.id: d for d in devices} != engine.devices:
            async with self._lock:
                engine.set_devices(devices)
                if self._predicted is not None:
                    self._predicted.forget()  # a device's station may have changed
                await self._flush([])

    def _mtimes(self) -> dict[Path, float]:
        out: dict[Path, float] = {}
        with contextlib.suppress(OSError):
            for f in rule_files(rules_path(self._settings)):
                out[f] = f.stat().st_mtime
        return out

    async def reload_rules_if_changed(self) -> bool:
        mtimes = self._mtimes()
        if mtimes == self._files_mtime:
            return False
        self._files_mtime = mtimes
        return await self.reload_rules()

    async def reload_rules(self) -> bool:
        """Re-read the rule files; a set with any problem is refused and the old one stays."""
        try:
            ruleset = load_rules(rules_path(self._settings))
        except RuleErrors as exc:
            RELOAD_FAILURES.inc()
            self.status.problems = exc.problems
            log.error("rule files refused, the previous rules stay in force:\n%s", exc)
            await self._audit("rules.refused", f"{len(exc.problems)} problem(s); {self._digest()}")
            return False
        await self.install(ruleset)
        await self._audit("rules.loaded", f"{len(ruleset.rules)} rules; {self._digest()}")
        return True

    def _digest(self) -> str:
        """Which rule files, by content: the audit log then shows when a rule set changed."""
        h = hashlib.sha256()
        with contextlib.suppress(OSError):
            for f in sorted(rule_files(rules_path(self._settings))):
                h.update(f.name.encode() + b"\0" + f.read_bytes())
        return f"{rules_path(self._settings)} sha256:{h.hexdigest()[:16]}"

    async def _audit(self, action: str, target: str) -> None:
        """Rule changes are made to files, outside the API: the reload is their audit entry."""
        try:
            await audit.record(
                await self._connection(), actor="rules directory", role="system",
                action=action, target=target,
            )  # fmt: skip
        except psycopg.Error:
            log.warning("rules: could not write the audit row for %s", action, exc_info=True)

    async def install(self, ruleset: RuleSet) -> None:
        engine = self.engine
        assert engine is not None
        async with self._lock:
            engine.set_rules(ruleset)
            self.status.problems = []
            self.status.loaded_at = time.time()
            RULES_LOADED.set(len(engine.rules))
            await self._flush([])
        log.info("rules reloaded: %d in force", len(engine.rules))


def _opens_row(tr: Transition) -> bool:
    return tr.to == "pending" or (tr.to == "firing" and tr.started_at == tr.active_at)


def compact_backlog(transitions: Sequence[Transition]) -> list[Transition]:
    """The transitions that keep stored alerts right when the backlog is too long: per alert
    (fingerprint) the first, the last and the last one that opens a row, in their order."""
    keep: set[int] = set()
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    last_open: dict[str, int] = {}
    for i, tr in enumerate(transitions):
        first.setdefault(tr.fingerprint, i)
        last[tr.fingerprint] = i
        if _opens_row(tr):
            last_open[tr.fingerprint] = i
    keep.update(first.values(), last.values(), last_open.values())
    return [tr for i, tr in enumerate(transitions) if i in keep]


def _advisor(settings: Settings) -> LowWaterAdvisor:
    """Alerts of rules labelled ``advisory: low-water`` get the next low water (+07:00) from the
    site's tide prediction (none without a tide data file: then no advisory annotations)."""
    try:
        site = load_site(settings.site_path())
        return LowWaterAdvisor(TidePredictor.from_site(site), site.timezone)
    except (OSError, ValueError):  # the IOC refuses a bad site or tide file elsewhere
        return LowWaterAdvisor(TidePredictor({}))
