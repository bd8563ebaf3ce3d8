"""The incident worker: turns new citizen reports and firing alerts into incidents, and watches
deadlines.

One pass (:meth:`IncidentWorker.run_once`) does three things, independently (one failing stage
does not hold up the others), each report and alert in a transaction of its own:

1. **Reports** not yet routed (``reports.routed_at IS NULL``): join the nearest open incident of
   the same category within the join radius and window, else open (and dispatch) a new one.
2. **Firing alerts** that the routing file says open incidents (``alert_incidents``), not
   silenced or inhibited: link to an open incident of the same category on the same device or
   nearby, else open one.
3. **Deadlines**: open incidents past their deadline are marked overdue and raise an
   ``ioc.incident-overdue`` alert.

Rows are claimed with ``FOR UPDATE SKIP LOCKED``, "join the nearest, else open" holds a
per-category advisory lock (:func:`store.lock_category`) and alerts open at most one incident
(unique index), so several API processes may each run a worker without opening one problem twice.
A report or alert whose routing fails is logged and retried on the next pass; it never blocks
the others. A pass runs at one ``now``, read here and passed to every store function.

It wakes on ``NOTIFY ioc_reports`` (new report) and ``ioc_alerts`` (alerts changed:
:mod:`ioc.alerting.announce`) — not on the live feed, which carries every readings batch — at
most every ``_DEBOUNCE_S``, and at least every ``IOC_INCIDENT_TICK_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import psycopg
from prometheus_client import Counter
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ioc.alerting import store as alert_store
from ioc.alerting.announce import ALERTS_CHANNEL
from ioc.core.names import channel_name
from ioc.core.workers import listen, stop_task
from ioc.incidents import store
from ioc.incidents.store import SYSTEM, Context
from ioc.storage import reports

log = logging.getLogger(__name__)

SIGNS = Counter(
    "ioc_incident_signs_total",
    "Reports and alerts the incident worker handled, by source and outcome",
    ["source", "outcome"],  # report|alert × opened|joined
)
OVERDUE = Counter("ioc_incidents_overdue_total", "Incidents that went past their deadline")

_DEBOUNCE_S = 0.2
_BATCH = 100
_SEVERITIES = {"critical": "critical", "warning": "warning"}  # anything else opens as info


@dataclass
class PassResult:
    reports_joined: int = 0
    incidents_opened: int = 0
    alerts_linked: int = 0
    overdue: int = 0
    opened_ids: list[int] = field(default_factory=list)


class IncidentWorker:
    def __init__(self, ctx: Context, conninfo: str, pool: AsyncConnectionPool) -> None:
        self.ctx = ctx
        self._conninfo = conninfo
        self._pool = pool
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # Firing alerts already judged "opens no incident"; pruned to the currently firing set
        # each pass, so it is bounded by the number of firing alerts.
        self._declined: set[int] = set()

    @property
    def join_radius_m(self) -> float:
        return self.ctx.settings.incident_join_radius_m or self.ctx.routing.join_radius_m

    @property
    def join_window(self) -> timedelta:
        hours = self.ctx.settings.incident_join_window_h or self.ctx.routing.join_window_h
        return timedelta(hours=hours)

    async def __aenter__(self) -> IncidentWorker:
        self._task = asyncio.create_task(self._run(), name="incident-worker")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await stop_task(self._task)

    async def _run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="incident-listen")
        try:
            while True:
                try:
                    await self.run_once(datetime.now(UTC))
                except Exception:
                    # database down: the next pass retries; nothing is lost (rows stay unrouted)
                    log.warning("incident pass failed; retrying", exc_info=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.ctx.settings.incident_tick_s)
                self._wake.clear()
                await asyncio.sleep(_DEBOUNCE_S)
        finally:
            await stop_task(listener)

    async def _listen(self) -> None:
        await listen(
            self._conninfo, [reports.CHANNEL, ALERTS_CHANNEL], self._woken, what="incident worker"
        )

    async def _woken(self, conn: psycopg.AsyncConnection) -> None:
        self._wake.set()

    async def run_once(self, now: datetime) -> PassResult:
        result = PassResult()
        failures: list[BaseException] = []
        for stage in (self._route_reports, self._open_from_alerts, self._mark_overdue):
            try:
                await stage(now, result)
            except Exception as exc:  # database down: the other stages still get their try
                failures.append(exc)
        if failures:
            raise failures[0]
        return result

    async def _mark_overdue(self, now: datetime, result: PassResult) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            result.overdue = len(await store.mark_overdue(conn, self.ctx, now))
        OVERDUE.inc(result.overdue)

    async def _route_reports(self, now: datetime, result: PassResult) -> None:
        failed: list[int] = []  # this pass only: retried on the next one
        while True:
            async with self._pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(
                    """SELECT id FROM reports WHERE routed_at IS NULL AND id <> ALL(%s)
                       ORDER BY id LIMIT %s""",
                    (failed, _BATCH),
                )
                ids = [int(r[0]) for r in await cur.fetchall()]
            for report_id in ids:
                try:
                    async with self._pool.connection() as conn, conn.transaction():
                        await self._route_report(conn, report_id, now, result)
                except psycopg.OperationalError:
                    raise  # the database is away: end the pass, the next one retries
                except Exception:
                    log.exception("routing report %s failed; it stays unrouted and is retried",
                                  report_id)  # fmt: skip
                    failed.append(report_id)
            if len(ids) < _BATCH:
                return

    async def _route_report(
        self, conn: psycopg.AsyncConnection, report_id: int, now: datetime, result: PassResult
    ) -> None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """SELECT id, service_code, city, ward, lat, lon, description, address, source,
                          received_at
                   FROM reports WHERE id = %s AND routed_at IS NULL FOR UPDATE SKIP LOCKED""",
                (report_id,),
            )
            report = await cur.fetchone()
        if report is None:
            return  # another worker has it
        category = report["service_code"]
        if category not in self.ctx.routing.by_code:
            category = "khac"  # validated at intake; a category removed since goes to "other"
        await store.lock_category(conn, category)
        if report["lat"] is not None and report["lon"] is not None:
            near = await store.nearest_open(
                conn, category=category, lat=report["lat"], lon=report["lon"],
                radius_m=self.join_radius_m, since=now - self.join_window,
            )  # fmt: skip
            if near is not None and await store.join_report(
                conn, near[0], report["id"], SYSTEM, near[1], at=now
            ):
                result.reports_joined += 1
                SIGNS.labels("report", "joined").inc()
                return
        # The report is linked before the incident is opened, so the dispatch the opening
        # writes to the outbox already carries it.
        row = await store.open_incident(
            conn, self.ctx, category=category, severity="warning",
            title=store.report_title(self.ctx, category, report["ward"]),
            description=report["description"], city=report["city"], ward=report["ward"],
            lat=report["lat"], lon=report["lon"], who=SYSTEM, dispatch=False, source="report",
            route_text=f"{report['description'] or ''}\n{report['address'] or ''}",
            at=min(report["received_at"], now),  # the deadline runs from the report's receipt
            note=f"Mở từ phản ánh #{report['id']} qua {channel_name(report['source'])}",
        )  # fmt: skip
        await conn.execute(
            "UPDATE reports SET incident_id = %s, routed_at = now() WHERE id = %s",
            (row["id"], report["id"]),
        )
        if row["agency_id"]:
            await store.take_step(conn, self.ctx, row["id"], "dispatch", SYSTEM, note=None, at=now)
        result.incidents_opened += 1
        result.opened_ids.append(row["id"])
        SIGNS.labels("report", "opened").inc()

    async def _open_from_alerts(self, now: datetime, result: PassResult) -> None:
        async with self._pool.connection() as conn:
            candidates = await alert_store.firing_without_incident(conn)
        self._declined &= set(candidates)
        for alert_id in candidates:
            if alert_id in self._declined:
                continue
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    outcome = await self._open_from_alert(conn, alert_id, now, result)
            except psycopg.OperationalError:
                raise  # the database is away: end the pass, the next one retries
            except Exception:
                log.exception("opening an incident for alert %s failed; retried next pass",
                              alert_id)  # fmt: skip
                continue
            if outcome == "declined":
                self._declined.add(alert_id)

    async def _open_from_alert(
        self, conn: psycopg.AsyncConnection, alert_id: int, now: datetime, result: PassResult
    ) -> str:
        alert = await alert_store.claim_without_incident(conn, alert_id)
        if alert is None:
            return "gone"  # taken by another worker, resolved or silenced meanwhile
        labels = {str(k): str(v) for k, v in (alert["labels"] or {}).items()}
        labels.setdefault("alertname", alert["rule"])
        category = self.ctx.routing.category_for_alert(labels)
        if category is None:
            return "declined"
        city = alert["city"] or labels.get("city") or None
        ward = alert["ward"] or labels.get("ward") or None
        await store.lock_category(conn, category)
        existing = await self._same_problem(conn, category, alert, now)
        if existing is not None and await self._still_open(conn, existing):
            await conn.execute(
                "INSERT INTO incident_alerts (alert_id, incident_id) VALUES (%s, %s)",
                (alert_id, existing),
            )
            async with conn.cursor(row_factory=dict_row) as cur:
                await store.record_event(
                    cur, existing, "alert_linked", SYSTEM, at=now,
                    data={"alert": alert_id, "rule": alert["rule"]},
                )  # fmt: skip
            result.alerts_linked += 1
            SIGNS.labels("alert", "joined").inc()
            return "linked"
        annotations = alert["annotations"] or {}
        if alert["road"]:  # routes by road (QL1A) look at the device's road
            labels.setdefault("road", str(alert["road"]))
        row = await store.open_incident(
            conn, self.ctx, category=category,
            severity=_SEVERITIES.get(alert["severity"], "info"),
            title=str(annotations.get("summary_vi") or annotations.get("summary") or alert["rule"]),
            description=str(annotations.get("description_vi") or ""),
            city=city, ward=ward, lat=alert["lat"], lon=alert["lon"],
            labels=labels,  # the routing file decides, then the alert's agency label
            source_alert_id=alert_id, who=SYSTEM, at=now,
            note=f"Mở từ cảnh báo #{alert_id}",  # the title is the alert's summary
        )  # fmt: skip
        result.incidents_opened += 1
        result.opened_ids.append(row["id"])
        SIGNS.labels("alert", "opened").inc()
        return "opened"

    async def _same_problem(
        self, conn: psycopg.AsyncConnection, category: str, alert: dict[str, Any], now: datetime
    ) -> int | None:
        """An open incident this alert is another sign of: one opened by an alert of the same
        device, or one of the same category nearby (a flooded street reported by citizens
        before the gauge fired)."""
        found = await alert_store.newest_incident_of_device(
            conn, alert["device_id"], category=category, open_sql=store.OPEN_SQL
        )
        if found is not None:
            return found
        if alert["lat"] is None or alert["lon"] is None:
            return None
        near = await store.nearest_open(
            conn, category=category, lat=alert["lat"], lon=alert["lon"],
            radius_m=self.join_radius_m, since=now - self.join_window,
        )  # fmt: skip
        return near[0] if near else None

    async def _still_open(self, conn: psycopg.AsyncConnection, incident_id: int) -> bool:
        """Lock the incident and check an operator did not resolve, close or merge it since it
        was found (operators do not take the category lock)."""
        async with conn.cursor() as cur:
            await cur.execute(
                f"SELECT 1 FROM incidents i WHERE i.id = %s AND {store.OPEN_SQL} FOR UPDATE",
                (incident_id,),
            )
            return await cur.fetchone() is not None
