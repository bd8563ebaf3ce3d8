"""The rules service: hosts the alerting stages (:mod:`ioc.alerting.pipeline`) in a process.

- ``on_batch`` is an ingest commit listener: each committed batch is evaluated, and the
  resulting transitions go through persist → mute → announce in one transaction, before the
  batch's messages are acknowledged. Its citizen reports are not: those come from the table.
- ``tick`` runs every ``IOC_RULES_TICK_S`` with the alerting clock (the wall clock, read only
  here; or in stream mode the newest reading time): timers (pending alerts whose ``for`` ended,
  absences, expiries), then mute with the silences and windows re-read, escalate, announce;
  alerts resolved by hand; devices and rule files changed.
- Citizen reports, whatever their channel (MQTT relays, Open311 POSTs): a LISTEN on
  ``ioc_reports`` claims the committed reports no rules service has taken and evaluates them
  (:mod:`ioc.alerting.citizen_reports`), whether this host runs in ingest or as ``ioc rules run``.
- Restart: :mod:`ioc.alerting.restore`.

What stays here is what a host does: one engine behind one lock, one database connection, the
backlog of transitions not yet stored (:class:`~ioc.alerting.persist.Backlog`) while the
database is away, and the reloads (devices, rule files with their audit entry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from prometheus_client import Counter, Gauge

from ioc.alerting import citizen_reports, evaluate, mute, pipeline, store
from ioc.alerting.announce import announce
from ioc.alerting.escalate import Escalate
from ioc.alerting.notify import Notify
from ioc.alerting.outages import OutageBook, OutageListener
from ioc.alerting.persist import Backlog, persist
from ioc.alerting.pipeline import OpenAlerts, Pass
from ioc.alerting.restore import restore
from ioc.alerting.rule_files import RuleFiles, rules_path
from ioc.alerting.tide_source import PredictedTide, site_predictor
from ioc.core.devices import Device
from ioc.core.low_water import LowWaterAdvisor
from ioc.core.names import Names
from ioc.core.settings import Settings
from ioc.core.site import load_site
from ioc.core.tides import TidePredictor
from ioc.core.workers import listen, stop_task
from ioc.dispatch.notification_routes import load_routes, routes_file
from ioc.ingest.records import Record
from ioc.routing.table import load_routing
from ioc.rules.engine import Engine
from ioc.rules.language import Problem, RuleErrors, RuleSet
from ioc.rules.suppression import MaintenanceWindow, Silence
from ioc.rules.tide import TideSource
from ioc.storage import audit
from ioc.storage import devices as device_store
from ioc.storage.devices import decommissioned_ids

__all__ = ["RulesService", "RulesStatus", "rules_path"]

log = logging.getLogger(__name__)

_DEVICE_REFRESH_S = 60.0

TRANSITIONS = Counter("ioc_alert_transitions_total", "Alert transitions stored", ["to"])
OPEN = Gauge("ioc_alerts_open", "Open alerts by state", ["state"])
RULES_LOADED = Gauge("ioc_rules_loaded", "Rules in force")
RELOAD_FAILURES = Counter("ioc_rules_reload_failures_total", "Rule reloads refused (bad file)")


@dataclass
class RulesStatus:
    source: str
    loaded_at: float
    problems: list[Problem] = field(default_factory=list)  # of the last refused reload


class RulesService:
    def __init__(self, settings: Settings, conninfo: str, tide: TideSource | None = None) -> None:
        self._settings = settings
        self._conninfo = conninfo
        # predicted tide for the residual and forecast rules (ioc.rules.tide); by default the site's
        # tide model (ioc.core.tides), built on entry
        self._tide = tide
        self._predicted: PredictedTide | None = None
        self._lock = asyncio.Lock()
        self._conn: psycopg.AsyncConnection | None = None
        self._backlog = Backlog()
        self._book = OpenAlerts()
        # silences and maintenance windows: few, re-read every tick
        self._silences: list[Silence] = []
        self._windows: list[MaintenanceWindow] = []
        self._escalate = Escalate(settings.alert_escalate_max, settings.alert_escalate_after_s)
        # a bad routes file refuses to start, naming the file and the field
        self._notify = Notify(load_routes(routes_file(settings.notification_routes_file)))
        self._devices_at = 0.0
        self._hand_event_id = 0
        self._files = RuleFiles(rules_path(settings))
        self.engine: Engine | None = None
        self.status = RulesStatus(str(rules_path(settings)), 0.0)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reports_task: asyncio.Task[None] | None = None  # LISTEN ioc_reports
        self._watermark: float | None = None  # newest reading time seen (stream clock)
        # the power company's planned cuts (file and MQTT): read in __aenter__
        self.outages: OutageBook | None = None
        self._outage_listener: OutageListener | None = None

    def _device(self, device_id: str) -> Device | None:
        return self.engine.devices.get(device_id) if self.engine is not None else None

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> RulesService:
        self._files = RuleFiles(rules_path(self._settings))
        ruleset = self._files.load()  # a bad rule set refuses to start
        conn = await self._connection()
        devices = await device_store.list_devices(conn, limit=1_000_000)
        if self._tide is None:
            self._tide = self._predicted = PredictedTide(
                site_predictor(self._settings), lambda d: self._device(d)
            )
        self.engine = engine = Engine(
            ruleset,
            devices,
            tide=self._tide,
            advisor=_advisor(self._settings),
            names=self._label_names().in_sentence,
        )
        self._devices_at = time.monotonic()
        if self._predicted is not None:
            flood = [d.id for d in devices if d.kind == "flood"]
            await asyncio.to_thread(self._predicted.warm, flood, time.time())
        self.status.loaded_at = time.time()
        RULES_LOADED.set(len(engine.rules))
        now = time.time()
        orphans = await restore(conn, engine, self._book, now)
        self._hand_event_id = await store.last_event_id(conn)
        if self._settings.rules_clock == "wall":
            engine.advance(now)  # arms absence timers from now for devices never heard of
        log.info(
            "rules: %d in force from %s; %d open alerts restored, %d orphans resolved",
            len(engine.rules), self.status.source, len(self._book), orphans,
        )  # fmt: skip
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
        # citizen reports: those committed while nobody listened on connecting, then on each
        # NOTIFY
        self._reports_task = asyncio.create_task(
            listen(
                self._conninfo,
                [citizen_reports.CHANNEL],
                self._take_reports,
                what="rules: citizen reports",
                on_connected=self._take_reports,
            ),
            name="rules-citizen-reports",
        )
        return self

    def _label_names(self) -> Names:
        """Names for the ids in group annotations ("Phường Ngã Bảy", not "phuong-nga-bay")."""
        site = load_site(self._settings.site_path())
        return Names(site, load_routing(self._settings.routing_path(), site).categories)

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._outage_listener is not None:
            await self._outage_listener.stop()
        await stop_task(self._reports_task)
        await stop_task(self._task)
        with contextlib.suppress(Exception):
            async with self._lock:
                await self._store(self._clock_now())
        if self._conn is not None:
            await self._conn.close()

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=5
            )
        return self._conn

    # -- the two entry points ----------------------------------------------------------------

    async def on_batch(self, records: Sequence[Record]) -> None:
        """Ingest commit listener. The batch's citizen reports are left out: every report comes
        from the table, once (:meth:`take_reports`)."""
        engine = self.engine
        assert engine is not None
        records = evaluate.without_reports(records)
        if time.monotonic() - self._devices_at > 1.0 and not (
            evaluate.device_ids(records) <= engine.devices.keys()
        ):
            # a device registered since the last load: learn it before evaluating its reading
            # (ingest stored it, so it exists; at most one reload a second)
            await self.reload_devices()
        async with self._lock:
            newest = evaluate.observe(engine, records)
            if newest is not None and (self._watermark is None or newest > self._watermark):
                self._watermark = newest
            await self._store(self._clock_now())

    async def take_reports(self, conn: psycopg.AsyncConnection | None = None) -> int:
        """Committed citizen reports no rules service has taken: claimed (marked in the
        database, :mod:`ioc.alerting.citizen_reports`), then evaluated and stored like a batch.
        ``conn``: the LISTEN connection (default: the service's). Returns how many were
        claimed."""
        engine = self.engine
        assert engine is not None
        total = 0
        while True:
            async with self._lock:
                records, claimed = await citizen_reports.claim(conn or await self._connection())
                if records:
                    evaluate.observe(engine, records)
                    await self._store(self._clock_now())
            total += claimed
            if claimed < citizen_reports.BATCH:
                return total

    async def _take_reports(self, conn: psycopg.AsyncConnection) -> None:
        try:
            await self.take_reports(conn)
        except psycopg.Error:
            raise  # the LISTEN loop reconnects (with backoff) and takes them then
        except Exception:
            # the LISTEN task must outlive a bug: the claimed rows are counted no more, the
            # next ones are
            log.exception("rules: evaluating citizen reports failed")

    async def tick(self, now: float) -> None:
        engine = self.engine
        assert engine is not None
        async with self._lock:
            self._backlog.add(evaluate.advance(engine, now))
            await self._store(now)
            try:
                conn = await self._connection()
                await self._hand_resolved(conn)
                if self.outages is not None:
                    self.outages.refresh()  # the file, when it changed (a stat per tick)
                self._silences, self._windows = await mute.load(conn)
                await pipeline.run(
                    conn,
                    Pass(now, self._book),
                    [self._muting(), self._escalate, announce, self._notify],
                )
            except psycopg.Error as exc:
                log.warning("rules tick: database unavailable (%s); retrying", exc)
                self._conn = None
        if time.monotonic() - self._devices_at > _DEVICE_REFRESH_S:
            await self.reload_devices()
        await self.reload_rules_if_changed()

    def _clock_now(self) -> float:
        """Now for muting: the wall clock, or in stream mode the newest reading time (a replay
        of last week must meet last week's silences and maintenance windows)."""
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

    async def _store(self, now: float) -> None:
        """The engine's new transitions, and any the database missed before, through persist →
        mute → announce. Call holding the lock. On a database error they stay in the backlog."""
        engine = self.engine
        assert engine is not None
        self._backlog.add(engine.drain())
        if not self._backlog:
            return
        transitions = self._backlog.items()
        try:
            conn = await self._connection()
            await pipeline.run(
                conn,
                Pass(now, self._book, transitions),
                [persist, self._muting(), announce, self._notify],
            )
        except psycopg.Error as exc:
            log.warning("storing %d alert transitions failed (%s); kept", len(transitions), exc)
            self._conn = None
            return
        self._backlog.clear()
        for tr in transitions:
            TRANSITIONS.labels(tr.to).inc()
        OPEN.labels("pending").set(self._book.count("pending"))
        OPEN.labels("firing").set(self._book.count("firing"))

    def _muting(self) -> mute.Mute:
        """The mute stage with what mutes now: the silences and windows of the last tick, the
        rule set's inhibit rules and the planned outages."""
        engine = self.engine
        assert engine is not None
        return mute.Mute(
            self._silences,
            self._windows,
            engine.ruleset.inhibit_rules,
            self.outages.current() if self.outages is not None else (),
        )

    async def _hand_resolved(self, conn: psycopg.AsyncConnection) -> None:
        """Alerts an operator resolved: the engine starts their series afresh."""
        engine = self.engine
        assert engine is not None
        self._hand_event_id, fps = await store.hand_resolved_since(conn, self._hand_event_id)
        for fp in fps:
            engine.forget(fp)
            self._book.forget(fp)

    # -- reloads -----------------------------------------------------------------------------

    async def reload_devices(self) -> None:
        engine = self.engine
        assert engine is not None
        self._devices_at = time.monotonic()
        try:
            conn = await self._connection()
            devices = await device_store.list_devices(conn, limit=1_000_000)
            retired = await decommissioned_ids(conn)
        except psycopg.Error as exc:
            log.warning("rules: device reload failed: %s", exc)
            self._conn = None
            return
        # a decommissioned device is no longer watched (no "silent" alert); its open alerts end
        devices = [d for d in devices if d.id not in retired]
        if {d.id: d for d in devices} != engine.devices:
            async with self._lock:
                engine.set_devices(devices)
                if self._predicted is not None:
                    self._predicted.forget()  # a device's station may have changed
                await self._store(self._clock_now())

    async def reload_rules_if_changed(self) -> bool:
        if not self._files.changed():
            return False
        return await self.reload_rules()

    async def reload_rules(self) -> bool:
        """Re-read the rule files; a set with any problem is refused and the old one stays."""
        try:
            ruleset = self._files.load()
        except RuleErrors as exc:
            RELOAD_FAILURES.inc()
            self.status.problems = exc.problems
            log.error("rule files refused, the previous rules stay in force:\n%s", exc)
            await self._audit(
                "rules.refused", f"{len(exc.problems)} problem(s); {self._files.digest()}"
            )
            return False
        await self.install(ruleset)
        await self._audit("rules.loaded", f"{len(ruleset.rules)} rules; {self._files.digest()}")
        return True

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
            await self._store(self._clock_now())
        log.info("rules reloaded: %d in force", len(engine.rules))


def _advisor(settings: Settings) -> LowWaterAdvisor:
    """Alerts of rules labelled ``advisory: low-water`` get the next low water (+07:00) from the
    site's tide prediction (none without a tide data file: then no advisory annotations)."""
    try:
        site = load_site(settings.site_path())
        return LowWaterAdvisor(TidePredictor.from_site(site), site.timezone)
    except (OSError, ValueError):  # the IOC refuses a bad site or tide file elsewhere
        return LowWaterAdvisor(TidePredictor({}))
