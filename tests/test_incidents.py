"""Incidents: routing data, deadline arithmetic in Asia/Ho_Chi_Minh, the lifecycle, and the
incident worker against the real database (reports and alerts → incidents → outbox), plus the
operator and agency APIs end to end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ioc.core.settings import Settings
from ioc.core.site import Site, load_site
from ioc.incidents import store
from ioc.incidents.lifecycle import Actor, StepError, check
from ioc.incidents.store import SYSTEM, Context, Who
from ioc.incidents.worker import IncidentWorker
from ioc.routing.table import RoutingError, load_routing
from ioc.storage import devices as device_store
from ioc.storage import tokens
from ioc.storage.database import open_pool
from tests.conftest import TOKEN, running_service

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
ROUTING = Path(__file__).parents[1] / "ioc" / "site_data" / "routing.yaml"


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(Path(__file__).parents[1] / "ioc" / "site_data" / "hau-giang.yaml")


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=HCM)


# ------------------------------------------------------------------------ routing data ---


def test_working_day_deadline_skips_evening_weekend_and_lunch(site: Site) -> None:
    routing = load_routing(ROUTING, site)
    # Friday 27/11/2026 16:00 + 3 working days (3 × 8 = 24 working hours): 1.5 h on Friday,
    # 8 h Monday, 8 h Tuesday, 6.5 h Wednesday → Wednesday 2/12 16:00.
    assert routing.deadline("chieu-sang", "warning", local(2026, 11, 27, 16, 0)) == local(
        2026, 12, 2, 16, 0
    )
    # Opened at 11:00 with 1 working hour: 30 min before lunch (11:30), 30 min after → 14:00.
    cal = routing.calendar
    assert cal.add_working_time(local(2026, 11, 26, 11, 0), 1) == local(2026, 11, 26, 14, 0)
    # Opened at night: the clock starts at 07:30 next working day.
    assert cal.add_working_time(local(2026, 11, 26, 22, 0), 2) == local(2026, 11, 27, 9, 30)
    # Instant given in UTC is read in local time (00:30 UTC = 07:30 +07:00).
    assert cal.add_working_time(datetime(2026, 11, 26, 0, 30, tzinfo=UTC), 1) == local(
        2026, 11, 26, 8, 30
    )


def test_deadlines_skip_public_holidays_and_calendar_hours_do_not(site: Site) -> None:
    routing = load_routing(ROUTING, site)
    cal = routing.calendar
    # 29/04/2026 (Wed) 16:00 + 2 working hours: 1.5 h to 17:30; 30/04 and 01/05 are holidays,
    # 02–03/05 a weekend → Monday 04/05 07:30 + 0.5 h.
    assert cal.add_working_time(local(2026, 4, 29, 16, 0), 2) == local(2026, 5, 4, 8, 0)
    # A BĐ III flood: 4 calendar hours, through the night and the holiday alike.
    assert routing.deadline("ngap-nuoc", "critical", local(2026, 4, 29, 22, 0)) == local(
        2026, 4, 30, 2, 0
    )
    # Working time between two instants is the inverse of adding it.
    start = local(2026, 11, 27, 16, 0)
    end = cal.add_working_time(start, 13.5)
    assert cal.working_time_between(start, end) == timedelta(hours=13.5)


def test_severity_without_its_own_deadline_falls_back(site: Site) -> None:
    routing = load_routing(ROUTING, site)
    # rac-thai has only `warning`; critical uses it, an unlisted category uses the default.
    assert str(routing.deadline_rule("rac-thai", "critical")) == "2 working days"
    assert str(routing.deadline_rule("trat-tu", "info")) == "3 working days"


def test_agency_for_category_ward_and_overrides(site: Site) -> None:
    routing = load_routing(ROUTING, site)
    assert routing.assign("chieu-sang", "vi-thanh", "phuong-5", site).agency == "urban-works"
    # flooding: the civil-defence command of the ward (Lái Hiếu is now in Phường Ngã Bảy)
    assert (
        routing.assign("ngap-nuoc", "nga-bay", "lai-hieu", site).agency
        == "civil-defence-phuong-nga-bay"
    )
    # …of the city when the place is unknown
    assert routing.assign("ngap-nuoc", None, None, site).agency == "civil-defence"
    # ward-committee: the People's Committee of the ward (a former ward id: of its unit);
    # unknown place → the IOC duty desk
    assert routing.assign("trat-tu", "vi-thanh", "phuong-5", site).agency == "ubnd-phuong-vi-tan"
    assert routing.assign("trat-tu", None, None, site).agency == "ioc"


@pytest.mark.parametrize(
    ("category", "ward", "text", "labels", "agency", "also"),
    [
        # missed garbage: the ward's committee, with the sanitation contractor
        ("rac-thai", "phuong-1", "Rác tồn đọng 3 ngày chưa thu gom", {}, "ubnd-phuong-vi-thanh",
         ("sanitation",)),
        # blocked drains: the drainage operator, not civil defence
        ("ngap-nuoc", "phuong-5", "Cống bị tắc, nước không thoát", {}, "urban-works", ()),
        ("ngap-nuoc", "phuong-5", "Ngập sâu 30 cm sau mưa", {}, "civil-defence-phuong-vi-tan", ()),
        # potholes and signals: the road authority; on QL1A the national-road unit
        ("giao-thong", "hiep-loi", "Ổ gà lớn trên Quốc lộ 1A gần vòng xoay", {}, "ql1a-unit", ()),
        ("giao-thong", "phuong-5", "Ổ gà giữa đường Trần Hưng Đạo", {}, "road-authority", ()),
        ("giao-thong", "phuong-5", "Đèn tín hiệu ngã tư không hoạt động", {}, "road-authority",
         ()),
        # accidents: the traffic police with the ward police
        ("giao-thong", "lai-hieu", "Tai nạn giữa xe máy và ô tô", {}, "traffic-police",
         ("police-phuong-nga-bay",)),
        ("giao-thong", "lai-hieu", "",
         {"alertname": "traffic-accident", "agency": "traffic-police"},
         "traffic-police", ("police-phuong-nga-bay",)),
        ("giao-thong", "phuong-5", "Kẹt xe giờ tan tầm", {}, "traffic-police", ()),
        # a cabinet that loses supply: the power company, as a supply fault
        ("chieu-sang", "phuong-nga-bay", "",
         {"alertname": "cabinet-power-loss", "agency": "power"}, "power", ()),
        # the feeder cut with supply present (cable theft): urban works and the ward police
        ("chieu-sang", "phuong-nga-bay", "",
         {"alertname": "cabinet-feeder-cut", "agency": "urban-works"}, "urban-works",
         ("police-phuong-nga-bay",)),
        # an alert's own agency label when no route matches; a former id resolves
        ("ngap-nuoc", "phuong-5", "", {"alertname": "flood-bd3", "agency": "pctt"},
         "civil-defence", ()),
        ("ngap-nuoc", "phuong-5", "", {"alertname": "flood-bd3", "agency": "ward-civil-defence"},
         "civil-defence-phuong-vi-tan", ()),
    ],
)  # fmt: skip
def test_routing_reaches_the_desk_that_does_the_work(
    site: Site,
    category: str,
    ward: str,
    text: str,
    labels: dict[str, str],
    agency: str,
    also: tuple[str, ...],
) -> None:
    routing = load_routing(ROUTING, site)
    city = site.ward(ward).city
    found = routing.assign(category, city, ward, site, text=text, labels=labels)
    assert (found.agency, found.also) == (agency, also)


def test_a_road_alert_on_ql1a_goes_to_the_national_road_unit(site: Site, tmp_path: Path) -> None:
    """Sensors name their road in the site file (`attributes.road`): a route with `roads` and
    `alerts` matches a signal fault on QL1A, not one on an urban road."""
    text = ROUTING.read_text(encoding="utf-8").replace(
        "routes:\n",
        "routes:\n  - {category: giao-thong, alerts: [signal-fault], roads: [Quốc lộ 1A],"
        " agency: ql1a-unit}\n  - {category: giao-thong, alerts: [signal-fault],"
        " agency: road-authority}\n",
        1,
    )
    path = tmp_path / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    routing = load_routing(path, site)
    on_ql1a = {"alertname": "signal-fault", "road": "Quốc lộ 1A"}
    urban = {"alertname": "signal-fault", "road": "Hùng Vương"}
    assert routing.assign("giao-thong", "nga-bay", "hiep-loi", site, labels=on_ql1a).agency == (
        "ql1a-unit"
    )
    assert routing.assign("giao-thong", "nga-bay", "hiep-loi", site, labels=urban).agency == (
        "road-authority"
    )


def test_which_alerts_open_incidents(site: Site) -> None:
    routing = load_routing(ROUTING, site)
    assert routing.category_for_alert({"severity": "critical", "domain": "flood"}) == "ngap-nuoc"
    assert (
        routing.category_for_alert(
            {"severity": "warning", "alertname": "lamp-failure", "domain": "lighting"}
        )
        == "chieu-sang"
    )
    assert routing.category_for_alert({"severity": "warning", "alertname": "flood-bd1"}) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("routes:\n  - {category: nope, agency: pctt}\n", "routes[0].category: unknown category"),
        ("routes:\n  - {category: khac, agency: nobody}\n", "routes[0].agency: unknown agency"),
        ("deadlines:\n  khac: {warning: {weeks: 2}}\n", "deadlines.khac.warning: unknown unit"),
        ("deadlines:\n  khac: {urgent: {hours: 2}}\n", "deadlines.khac.urgent: severity"),
        ("clock:\n  pause_in_status: [closed]\n", "clock.pause_in_status"),
    ],
)
def test_bad_routing_file_names_the_place(
    site: Site, tmp_path: Path, change: str, message: str
) -> None:
    text = ROUTING.read_text(encoding="utf-8")
    key = change.split(":", 1)[0]
    # replace the whole top-level section `key` with the broken one
    lines = text.splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key}:"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i][:1].isalpha()), len(lines))
    bad = tmp_path / "routing.yaml"
    bad.write_text("".join(lines[:start]) + change + "".join(lines[end:]), encoding="utf-8")
    with pytest.raises(RoutingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_routing(bad, site)


# --------------------------------------------------------------------------- lifecycle ---


def test_lifecycle_steps_and_permissions() -> None:
    assert check("dispatch", "new", Actor.SYSTEM, None).target == "dispatched"
    assert check("accept", "dispatched", Actor.AGENCY, None).target == "accepted"
    with pytest.raises(StepError, match="cannot resolve an incident that is new"):
        check("resolve", "new", Actor.AGENCY, "done")
    with pytest.raises(StepError, match="needs a note") as err:
        check("reject", "dispatched", Actor.AGENCY, " ")
    assert not err.value.forbidden
    with pytest.raises(StepError, match="agency may not dispatch") as err:
        check("dispatch", "new", Actor.AGENCY, None)
    assert err.value.forbidden
    with pytest.raises(StepError, match="operator may not reject"):
        check("reject", "dispatched", Actor.OPERATOR, "not ours")
    assert check("reopen", "closed", Actor.OPERATOR, "still dark").target == "dispatched"


# -------------------------------------------------------------- worker on the real DB ---


class Desk:
    """The incident worker on a test database with a driven clock, plus helpers to seed it."""

    def __init__(self, ctx: Context, worker: IncidentWorker, db: psycopg.AsyncConnection) -> None:
        self.ctx, self.worker, self.db = ctx, worker, db

    async def report(
        self, lat: float, lon: float, category: str = "chieu-sang", *, at: datetime
    ) -> int:
        ward = self.ctx.site.ward_of(lat, lon)
        row = await (
            await self.db.execute(
                """INSERT INTO reports (dedupe_key, token, source, service_code, city, ward, lat,
                       lon, description, reported_at, received_at) VALUES (%s, %s, 'app', %s, %s,
                       %s, %s, %s, 'Đèn đường không sáng', %s, %s) RETURNING id""",
                (
                    uuid.uuid4().hex,
                    uuid.uuid4().hex,
                    category,
                    ward.city if ward else None,
                    ward.id if ward else None,
                    lat,
                    lon,
                    at,
                    at,
                ),
            )
        ).fetchone()
        assert row is not None
        return int(row[0])

    async def alert(self, device_id: str, rule: str, labels: dict[str, str], at: datetime) -> int:
        labels = {"alertname": rule, **labels}
        row = await (
            await self.db.execute(
                """INSERT INTO alerts (fingerprint, rule, state, severity, labels, annotations,
                       device_id, active_at, started_at)
                   VALUES (%s, %s, 'firing', %s, %s, %s, %s, %s, %s) RETURNING id""",
                (
                    uuid.uuid4().hex,
                    rule,
                    labels.get("severity", "warning"),
                    Jsonb(labels),
                    Jsonb({"summary_vi": f"{rule} tại {device_id}"}),
                    device_id,
                    at,
                    at,
                ),
            )
        ).fetchone()
        assert row is not None
        return int(row[0])

    async def incident(self, incident_id: int) -> dict[str, Any]:
        async with self.db.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM incidents WHERE id = %s", (incident_id,))
            row = await cur.fetchone()
        assert row is not None
        return row

    async def scalar(self, sql: str, *params: Any) -> Any:
        row = await (await self.db.execute(sql, params)).fetchone()
        assert row is not None
        return row[0]


@pytest.fixture
async def desk(
    settings: Settings, database_url: str, db: psycopg.AsyncConnection, site: Site
) -> AsyncIterator[Desk]:
    await device_store.sync_site_devices(db, site.devices)
    pool = await open_pool(database_url, max_size=4)
    try:
        ctx = Context(load_routing(settings.routing_path(), site), site, settings)
        yield Desk(ctx, IncidentWorker(ctx, database_url, pool), db)
    finally:
        await pool.close()


# A lamp position in Vị Thanh's Phường V and a point ~90 m away, one ~1.5 km away.
NEAR_A = (9.7845, 105.4700)
NEAR_B = (9.7853, 105.4700)
FAR = (9.7980, 105.4700)


async def test_reports_open_join_and_dispatch(desk: Desk) -> None:
    now = local(2026, 11, 27, 16, 0)
    first = await desk.report(*NEAR_A, at=now)
    result = await desk.worker.run_once(now)
    assert result.incidents_opened == 1
    (incident_id,) = result.opened_ids
    inc = await desk.incident(incident_id)
    assert inc["status"] == "dispatched"
    assert inc["agency_id"] == "urban-works"
    assert inc["source"] == "report"  # opened by a citizen's report: the KPIs' headline
    assert inc["first_dispatched_at"] == inc["dispatched_at"] == now
    assert inc["deadline_at"] == local(2026, 12, 2, 16, 0)  # 3 working days, see above
    assert await desk.scalar("SELECT incident_id FROM reports WHERE id = %s", first) == incident_id
    # the dispatch went to the outbox in the same transaction, with the report in it
    payload = await desk.scalar(
        "SELECT payload FROM outbox WHERE incident_id = %s AND channel = 'mqtt'", incident_id
    )
    assert [r["id"] for r in payload["reports"]] == [first]

    # a second report 90 m away an hour later joins; one 1.5 km away opens its own
    second = await desk.report(*NEAR_B, at=now + timedelta(hours=1))
    third = await desk.report(*FAR, at=now + timedelta(hours=1))
    result = await desk.worker.run_once(now + timedelta(hours=1))
    assert (result.reports_joined, result.incidents_opened) == (1, 1)
    assert await desk.scalar("SELECT incident_id FROM reports WHERE id = %s", second) == incident_id
    assert await desk.scalar("SELECT incident_id FROM reports WHERE id = %s", third) != incident_id
    # ... and after the join window (routing.yaml join.window_h) one at the same spot opens anew
    after = timedelta(hours=desk.ctx.routing.join_window_h + 6)
    late = await desk.report(*NEAR_A, at=now + after)
    await desk.worker.run_once(now + after)
    assert await desk.scalar("SELECT incident_id FROM reports WHERE id = %s", late) != incident_id
    history = await store.history(desk.db, incident_id)
    assert [h["kind"] for h in history] == ["opened", "dispatch", "report_joined"]
    # the opening note is written for people: the channel by its name, no id
    assert history[0]["note"] == f"Mở từ phản ánh #{first} qua ứng dụng"


async def test_same_report_category_elsewhere_is_its_own_incident(desk: Desk) -> None:
    now = local(2026, 11, 27, 9, 0)
    await desk.report(*NEAR_A, category="chieu-sang", at=now)
    await desk.report(*NEAR_B, category="rac-thai", at=now)
    result = await desk.worker.run_once(now)
    assert result.incidents_opened == 2
    agencies = {(await desk.incident(i))["agency_id"] for i in result.opened_ids}
    # missed waste: the committee of the unit (NEAR_B lies in the former Phường V)
    assert agencies == {"urban-works", "ubnd-phuong-vi-tan"}


async def test_firing_alert_opens_one_incident_and_links_repeats(desk: Desk) -> None:
    now = local(2026, 10, 27, 16, 50)
    bd3 = await desk.alert(
        "vt-flood-01", "flood-bd3",
        {"severity": "critical", "domain": "flood", "agency": "pctt"}, now,
    )  # fmt: skip
    bd1 = await desk.alert("vt-flood-01", "flood-bd1", {"severity": "info", "domain": "flood"}, now)
    result = await desk.worker.run_once(now)
    assert result.incidents_opened == 1  # BĐ I opens none (routing.yaml alert_incidents)
    inc = await desk.incident(result.opened_ids[0])
    # the alert's label names the former disaster committee: the civil-defence command now
    assert (inc["category"], inc["severity"], inc["agency_id"]) == (
        "ngap-nuoc", "critical", "civil-defence"
    )  # fmt: skip
    assert inc["source_alert_id"] == bd3 and inc["source"] == "alert"
    assert inc["deadline_at"] == now + timedelta(hours=4)
    # running again changes nothing: the alert has its incident, BĐ I stays declined
    again = await desk.worker.run_once(now + timedelta(minutes=1))
    assert (again.incidents_opened, again.alerts_linked) == (0, 0)
    # another critical alert on the same gauge is the same problem: linked, not a new incident
    rising = await desk.alert(
        "vt-flood-01", "rain-and-rising-water", {"severity": "critical", "domain": "flood"}, now
    )
    linked = await desk.worker.run_once(now + timedelta(minutes=2))
    assert (linked.incidents_opened, linked.alerts_linked) == (0, 1)
    assert (
        await desk.scalar("SELECT incident_id FROM incident_alerts WHERE alert_id = %s", rising)
        == inc["id"]
    )
    assert await desk.scalar("SELECT count(*) FROM incidents") == 1
    del bd1


async def test_silenced_alert_opens_nothing(desk: Desk) -> None:
    now = local(2026, 10, 27, 16, 50)
    alert = await desk.alert("vt-flood-01", "flood-bd3", {"severity": "critical"}, now)
    await desk.db.execute(
        "UPDATE alerts SET suppressed_by = %s WHERE id = %s", (Jsonb({"silence": 1}), alert)
    )
    assert (await desk.worker.run_once(now)).incidents_opened == 0


async def test_overdue_raises_an_alert_that_resolution_clears(desk: Desk) -> None:
    now = local(2026, 10, 27, 16, 50)
    await desk.alert("vt-flood-01", "flood-bd3", {"severity": "critical", "domain": "flood"}, now)
    (incident_id,) = (await desk.worker.run_once(now)).opened_ids
    assert (await desk.worker.run_once(now + timedelta(hours=3, minutes=59))).overdue == 0
    late = now + timedelta(hours=4, minutes=1)
    assert (await desk.worker.run_once(late)).overdue == 1
    assert (await desk.worker.run_once(late + timedelta(minutes=1))).overdue == 0  # once
    fp = f"{store.OVERDUE_RULE}:{incident_id}"
    assert await desk.scalar("SELECT state FROM alerts WHERE fingerprint = %s", fp) == "firing"
    frames = await desk.scalar(
        "SELECT array_agg(type ORDER BY seq) FROM feed_events WHERE payload->>'id' = %s",
        str(incident_id),
    )
    assert "incident" in frames
    # flooding without an agency label: the ward's civil-defence command (Phường V → Vị Tân)
    assert (await desk.incident(incident_id))["agency_id"] == "civil-defence-phuong-vi-tan"
    agency = Who(Actor.AGENCY, "agency:civil-defence-phuong-vi-tan/x",
                 agency="civil-defence-phuong-vi-tan")  # fmt: skip
    async with desk.db.transaction():
        await store.take_step(
            desk.db, desk.ctx, incident_id, "resolve", agency, note="nước rút", at=datetime.now(UTC)
        )
    assert await desk.scalar("SELECT state FROM alerts WHERE fingerprint = %s", fp) == "resolved"


async def test_clock_pauses_only_where_the_rules_say(
    desk: Desk, tmp_path: Path, site: Site
) -> None:
    text = ROUTING.read_text(encoding="utf-8").replace(
        "  pause_in_status: []", "  pause_in_status: [rejected]"
    )
    path = tmp_path / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    ctx = Context(load_routing(path, site), site, desk.ctx.settings)
    t0 = local(2026, 10, 27, 10, 0)
    await desk.alert("vt-flood-01", "flood-bd3", {"severity": "critical", "domain": "flood"}, t0)
    worker = IncidentWorker(ctx, desk.worker._conninfo, desk.worker._pool)
    (incident_id,) = (await worker.run_once(t0)).opened_ids
    agency = Who(Actor.AGENCY, "agency:civil-defence-phuong-vi-tan/x",
                 agency="civil-defence-phuong-vi-tan")  # fmt: skip
    async with desk.db.transaction():
        await store.take_step(desk.db, ctx, incident_id, "reject", agency, note="không phải",
                              at=t0 + timedelta(hours=1))  # fmt: skip
    # paused: 10 hours later it is not overdue although its 4 h have passed
    assert (await worker.run_once(t0 + timedelta(hours=11))).overdue == 0
    async with desk.db.transaction():
        row = await store.take_step(desk.db, ctx, incident_id, "dispatch", SYSTEM, note=None,
                                    at=t0 + timedelta(hours=3))  # fmt: skip
    # 2 h spent rejected (calendar-hour deadline): due at 16:00 instead of 14:00
    assert row["deadline_at"] == t0 + timedelta(hours=6)
    assert row["paused_since"] is None


async def test_merge_and_split_move_reports(desk: Desk) -> None:
    now = local(2026, 11, 27, 9, 0)
    a = await desk.report(*NEAR_A, at=now)
    b = await desk.report(*FAR, at=now)
    first, second = (await desk.worker.run_once(now)).opened_ids
    async with desk.db.transaction():
        kept = await store.merge(
            desk.db, desk.ctx, second, first, SYSTEM, "cùng một tuyến đèn", at=datetime.now(UTC)
        )
    assert kept["id"] == first
    gone = await desk.incident(second)
    assert (gone["status"], gone["merged_into"]) == ("closed", first)
    assert await desk.scalar(
        "SELECT array_agg(id ORDER BY id) FROM reports WHERE incident_id = %s", first
    ) == [a, b]
    with pytest.raises(StepError, match="merged into"):
        async with desk.db.transaction():
            await store.take_step(
                desk.db, desk.ctx, second, "dispatch", SYSTEM, note=None, at=datetime.now(UTC)
            )
    async with desk.db.transaction():
        new = await store.split(
            desk.db, desk.ctx, first, [b], SYSTEM, "hai sự cố khác nhau", at=datetime.now(UTC)
        )
    assert new["id"] not in (first, second)
    assert await desk.scalar("SELECT incident_id FROM reports WHERE id = %s", b) == new["id"]
    assert new["status"] == "dispatched"


async def _kinds_sent(desk: Desk, incident_id: int) -> list[tuple[str, str]]:
    """(agency, kind) of the outbox rows of one incident, once per message (not per channel)."""
    rows = await (
        await desk.db.execute(
            """SELECT DISTINCT ON (kind, agency_id, payload->>'version') agency_id, kind
               FROM outbox WHERE incident_id = %s
               ORDER BY kind, agency_id, payload->>'version', id""",
            (incident_id,),
        )
    ).fetchall()
    return sorted((r[0], r[1]) for r in rows)


async def test_two_workers_routing_one_spot_open_one_incident(
    desk: Desk, database_url: str
) -> None:
    now = local(2026, 11, 27, 9, 0)
    for _ in range(12):
        await desk.report(*NEAR_A, at=now)
    pools = [await open_pool(database_url, max_size=4) for _ in range(2)]
    try:
        workers = [IncidentWorker(desk.ctx, database_url, p) for p in pools]
        results = await asyncio.gather(*(w.run_once(now) for w in workers))
    finally:
        for p in pools:
            await p.close()
    assert sum(r.incidents_opened for r in results) == 1
    assert sum(r.reports_joined for r in results) == 11
    assert await desk.scalar("SELECT count(DISTINCT incident_id) FROM reports") == 1


async def test_a_report_does_not_join_an_incident_closed_meanwhile(desk: Desk) -> None:
    now = local(2026, 11, 27, 9, 0)
    await desk.report(*NEAR_A, at=now)
    (first,) = (await desk.worker.run_once(now)).opened_ids
    late = await desk.report(*NEAR_B, at=now)
    async with desk.db.transaction():  # an operator resolves it after the worker found it
        await store.take_step(desk.db, desk.ctx, first, "resolve", Who(Actor.OPERATOR, "op"),
                              note="đã thay bóng", at=datetime.now(UTC))  # fmt: skip
        assert (
            await store.join_report(desk.db, first, late, SYSTEM, 90.0, at=datetime.now(UTC))
            is None
        )
    # a merged incident forwards to the one that stays
    a = await desk.report(*FAR, at=now)
    b = await desk.report(*NEAR_A, at=now)
    second, third = (await desk.worker.run_once(now)).opened_ids
    async with desk.db.transaction():
        await store.merge(
            desk.db, desk.ctx, third, second, SYSTEM, "cùng một việc", at=datetime.now(UTC)
        )
    c = await desk.report(*FAR, at=now)
    async with desk.db.transaction():
        assert (
            await store.join_report(desk.db, third, c, SYSTEM, 10.0, at=datetime.now(UTC)) == second
        )
    assert await desk.scalar("SELECT incident_id FROM reports WHERE id = %s", c) == second
    del a, b


async def test_reopen_clears_rating_and_overdue_so_it_can_fire_again(desk: Desk) -> None:
    now = local(2026, 10, 27, 16, 50)
    await desk.alert("vt-flood-01", "flood-bd3", {"severity": "critical", "domain": "flood"}, now)
    (incident_id,) = (await desk.worker.run_once(now)).opened_ids
    late = now + timedelta(hours=5)
    assert (await desk.worker.run_once(late)).overdue == 1
    op = Who(Actor.OPERATOR, "op")
    async with desk.db.transaction():
        await store.take_step(desk.db, desk.ctx, incident_id, "resolve", op, note="nước rút",
                              at=late)  # fmt: skip
        await store.rate_incident(desk.db, incident_id, rating=2, comment="chậm", actor="c",
                                  ctx=desk.ctx, at=datetime.now(UTC))  # fmt: skip
        row = await store.take_step(desk.db, desk.ctx, incident_id, "reopen", op,
                                    note="lại ngập", at=late)  # fmt: skip
    assert (row["overdue_at"], row["rating"], row["rating_comment"]) == (None, None, None)
    assert row["deadline_at"] == now + timedelta(hours=4)  # the deadline the KPI counts stays
    assert (await desk.worker.run_once(late + timedelta(minutes=1))).overdue == 1
    fp = f"{store.OVERDUE_RULE}:{incident_id}"
    assert await desk.scalar(
        "SELECT array_agg(state ORDER BY id) FROM alerts WHERE fingerprint = %s", fp
    ) == ["resolved", "firing"]
    # the agency heard of each turn: dispatched, resolved by the operator, closed, reopened
    assert [k for _, k in await _kinds_sent(desk, incident_id)] == sorted(
        ["incident.dispatched", "incident.resolved", "incident.closed", "incident.reopened"]
    )


async def test_merge_keeps_the_earlier_deadline_and_tells_the_agency(desk: Desk) -> None:
    t0 = local(2026, 11, 16, 9, 0)  # Monday (the next week holds 24/11, Vietnam Culture Day)
    a = await desk.report(*NEAR_A, at=t0)
    (older,) = (await desk.worker.run_once(t0)).opened_ids
    t1 = t0 + timedelta(days=2)
    b = await desk.report(*FAR, at=t1)
    (newer,) = (await desk.worker.run_once(t1)).opened_ids
    t2 = local(2026, 11, 19, 10, 0)  # Thursday, past the older one's 3 working days
    assert (await desk.worker.run_once(t2)).overdue == 1
    async with desk.db.transaction():
        kept = await store.merge(
            desk.db, desk.ctx, older, newer, SYSTEM, "cùng một tuyến đèn", at=datetime.now(UTC)
        )
    assert kept["deadline_at"] == (await desk.incident(older))["deadline_at"]
    # the source's overdue alert is resolved; the survivor goes overdue on the next pass
    fp = f"{store.OVERDUE_RULE}:{older}"
    assert await desk.scalar("SELECT state FROM alerts WHERE fingerprint = %s", fp) == "resolved"
    assert (await desk.worker.run_once(t2 + timedelta(minutes=1))).overdue == 1
    # both were with urban works: it is still told the merged one is withdrawn
    assert ("urban-works", "incident.withdrawn") in await _kinds_sent(desk, older)
    del a, b


async def test_split_dispatches_with_its_reports_and_refuses_closed_incidents(
    desk: Desk,
) -> None:
    now = local(2026, 11, 27, 9, 0)
    a = await desk.report(*NEAR_A, at=now)
    b = await desk.report(*NEAR_B, at=now)
    (first,) = (await desk.worker.run_once(now)).opened_ids
    async with desk.db.transaction():
        new = await store.split(
            desk.db, desk.ctx, first, [b], SYSTEM, "hai cột khác nhau", at=datetime.now(UTC)
        )
    payload = await desk.scalar(
        "SELECT payload FROM outbox WHERE incident_id = %s AND kind = 'incident.dispatched'"
        " AND channel = 'mqtt'",
        new["id"],
    )
    assert [r["id"] for r in payload["reports"]] == [b]
    async with desk.db.transaction():
        await store.take_step(desk.db, desk.ctx, new["id"], "resolve",
                              Who(Actor.OPERATOR, "op"), note="xong",
                              at=datetime.now(UTC))  # fmt: skip
    with pytest.raises(StepError, match="only open ones split"):
        async with desk.db.transaction():
            await store.split(
                desk.db, desk.ctx, new["id"], [b], SYSTEM, "thử", at=datetime.now(UTC)
            )
    del a


async def test_rejected_closes_with_a_note_and_reassign_needs_another_agency(desk: Desk) -> None:
    now = local(2026, 11, 27, 9, 0)
    await desk.report(*NEAR_A, at=now)
    (incident_id,) = (await desk.worker.run_once(now)).opened_ids
    op = Who(Actor.OPERATOR, "op")
    with pytest.raises(StepError, match="already with urban-works"):
        async with desk.db.transaction():
            await store.reassign(
                desk.db, desk.ctx, incident_id, "urban-works", op, "", at=datetime.now(UTC)
            )
    works = Who(Actor.AGENCY, "agency:urban-works/x", agency="urban-works")
    async with desk.db.transaction():
        await store.take_step(desk.db, desk.ctx, incident_id, "reject", works,
                              note="đèn của khu công nghiệp", at=datetime.now(UTC))  # fmt: skip
    with pytest.raises(StepError, match="needs a note"):
        async with desk.db.transaction():
            await store.take_step(
                desk.db, desk.ctx, incident_id, "close", op, note=None, at=datetime.now(UTC)
            )
    async with desk.db.transaction():
        row = await store.take_step(desk.db, desk.ctx, incident_id, "close", op,
                                    note="đã chuyển khu công nghiệp tự xử lý",
                                    at=datetime.now(UTC))  # fmt: skip
    assert row["status"] == "closed"


async def test_one_formal_extension_per_case(desk: Desk) -> None:
    now = local(2026, 11, 27, 16, 0)  # Friday; 3 working days → Wednesday 2/12 16:00
    await desk.report(*NEAR_A, at=now)
    (iid,) = (await desk.worker.run_once(now)).opened_ids
    late = local(2026, 12, 2, 17, 0)
    assert (await desk.worker.run_once(late)).overdue == 1
    op = Who(Actor.OPERATOR, "op")
    async with desk.db.transaction():
        row = await store.extend_deadline(
            desk.db, desk.ctx, iid, op, reason="chờ vật tư thay cột", working_days=2, at=late
        )
    # two more working days after the old deadline; no longer overdue, its alert resolved
    assert row["deadline_at"] == local(2026, 12, 4, 16, 0)
    assert row["deadline_before_extension"] == local(2026, 12, 2, 16, 0)
    assert (row["extended_at"], row["extension_reason"]) == (late, "chờ vật tư thay cột")
    assert row["overdue_at"] is None
    fp = f"{store.OVERDUE_RULE}:{iid}"
    assert await desk.scalar("SELECT state FROM alerts WHERE fingerprint = %s", fp) == "resolved"
    events = await store.history(desk.db, iid)
    assert [e["kind"] for e in events][-1] == "extended"
    assert events[-1]["note"] == "chờ vật tư thay cột"
    assert events[-1]["data"] == {"from": "2026-12-02T16:00:00+07:00",
                                  "to": "2026-12-04T16:00:00+07:00"}  # fmt: skip
    # the agency is told its new deadline
    sent = await desk.scalar(
        "SELECT payload FROM outbox WHERE incident_id = %s AND kind = %s AND channel = 'mqtt'",
        iid, "incident.deadline_extended",
    )  # fmt: skip
    assert sent["deadline_at"] == "2026-12-04T16:00:00+07:00"
    # a second extension is refused, naming the first; so after a reopening too
    with pytest.raises(StepError, match="already extended once") as refused:
        async with desk.db.transaction():
            await store.extend_deadline(
                desk.db, desk.ctx, iid, op, reason="lại chờ", hours=8, at=datetime.now(UTC)
            )
    assert "chờ vật tư thay cột" in str(refused.value)
    agency = Who(Actor.AGENCY, "agency:urban-works/x", agency="urban-works")
    with pytest.raises(StepError, match="agency may not extend") as forbidden:
        async with desk.db.transaction():
            await store.extend_deadline(
                desk.db, desk.ctx, iid, agency, reason="x", hours=8, at=datetime.now(UTC)
            )
    assert forbidden.value.forbidden


async def test_stored_deadlines_cross_tet_2027_and_count_a_make_up_saturday(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    """The deadline the worker stores (3 working days for a dark lamp) and the one formal
    extension, counted in the shipped calendar: Tết Đinh Mùi 2027 (4–10/2, from the holidays
    package; no 2027 swap decision yet, so it warns) and the make-up Saturday 10/1/2026 of the
    decision that bridged 2/1/2026."""
    # Tuesday 6/1/2026 16:00 + 3 working days → Friday 9/1 16:00; the one extension of one
    # working day lands on Saturday 10/1/2026, worked in exchange for Friday 2/1
    tuesday = local(2026, 1, 6, 16, 0)
    await desk.report(*FAR, at=tuesday)
    (iid,) = (await desk.worker.run_once(tuesday)).opened_ids
    assert (await desk.incident(iid))["deadline_at"] == local(2026, 1, 9, 16, 0)
    async with desk.db.transaction():
        row = await store.extend_deadline(
            desk.db, desk.ctx, iid, Who(Actor.OPERATOR, "op"), reason="chờ điện lực cắt điện",
            working_days=1, at=local(2026, 1, 9, 10, 0),
        )  # fmt: skip
    assert row["deadline_at"] == local(2026, 1, 10, 16, 0)  # the make-up Saturday
    # a report opened that Friday afternoon runs on through the Saturday: 1.5 + 8 + 8 + 6.5 h
    friday = local(2026, 1, 9, 16, 0)
    await desk.report(9.8200, 105.8180, at=friday)  # Ngã Bảy, its own incident
    (nb,) = (await desk.worker.run_once(friday)).opened_ids
    assert (await desk.incident(nb))["deadline_at"] == local(2026, 1, 13, 16, 0)

    # Wednesday 3/2/2027 16:00: 1.5 h that day, Tết 4–10/2 off, then 8 h Thursday 11/2, 8 h
    # Friday 12/2 and 6.5 h Monday 15/2 → 16:00 (without Tết: Monday 8/2 16:00)
    tet_eve = local(2027, 2, 3, 16, 0)
    await desk.report(*NEAR_A, at=tet_eve)
    with caplog.at_level("WARNING", logger="ioc.core.calendar"):
        (before_tet,) = (await desk.worker.run_once(tet_eve)).opened_ids
    assert (await desk.incident(before_tet))["deadline_at"] == local(2027, 2, 15, 16, 0)
    assert any("no swap decision for 2027" in r.getMessage() for r in caplog.records)
    # after Tết, on the working day before its deadline, it is not overdue; a minute after, it is
    await desk.worker.run_once(local(2027, 2, 12, 17, 0))
    assert (await desk.incident(before_tet))["overdue_at"] is None
    await desk.worker.run_once(local(2027, 2, 15, 16, 1))
    assert (await desk.incident(before_tet))["overdue_at"] == local(2027, 2, 15, 16, 1)


def test_a_paused_incident_is_not_overdue_and_its_countdown_stands_still() -> None:
    deadline = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    row = {"status": "rejected", "merged_into": None, "deadline_at": deadline,
           "paused_since": deadline - timedelta(hours=1), "overdue_at": None}  # fmt: skip
    later = deadline + timedelta(hours=5)
    out = store.incident_json(row, now=later)
    assert (out["overdue"], out["seconds_left"]) == (False, 3600)
    running = {**row, "paused_since": None}
    assert store.incident_json(running, now=later)["overdue"] is True
    marked = {**row, "overdue_at": deadline}  # went overdue before it paused
    assert store.incident_json(marked, now=later)["overdue"] is True


# ------------------------------------------------------------------- HTTP end to end ---


async def test_operator_and_agency_api(settings: Settings, db: psycopg.AsyncConnection) -> None:
    async with running_service(settings) as (runtime, http):
        _, works = await tokens.create(db, name="urban-works-system", role="agency:urban-works")
        _, police = await tokens.create(db, name="police-system", role="agency:traffic-police")
        _, viewer = await tokens.create(db, name="wall", role="viewer")
        admin = {"Authorization": f"Bearer {TOKEN}"}

        r = await http.post(
            "/api/v1/incidents",
            json={"category": "chieu-sang", "title": "Đèn tắt cả tuyến", "lat": NEAR_A[0],
                  "lon": NEAR_A[1]},
            headers=admin,
        )  # fmt: skip
        assert r.status_code == 201, r.text
        inc = r.json()
        assert (inc["status"], inc["agency_id"], inc["ward"], inc["source"]) == (
            "dispatched", "urban-works", "phuong-vi-tan", "operator"  # Phường V is in Phường Vị Tân
        )  # fmt: skip
        iid = inc["id"]
        # filters accept the former ward id, and the current one
        for ward in ("phuong-5", "phuong-vi-tan"):
            r = await http.get("/api/v1/incidents", params={"ward": ward}, headers=admin)
            assert [i["id"] for i in r.json()] == [iid], ward
        r = await http.get("/api/v1/incidents", params={"ward": "phuong-1"}, headers=admin)
        assert r.json() == []

        # a viewer reads but cannot act; an unknown token is 401
        assert (await http.get(f"/api/v1/incidents/{iid}", headers=_h(viewer))).status_code == 200
        r = await http.post(f"/api/v1/incidents/{iid}/close", headers=_h(viewer))
        assert r.status_code == 403
        assert (await http.get("/api/v1/incidents", headers=_h("nope"))).status_code == 401

        # agency isolation: police see nothing of it and cannot act on it
        assert (await http.get("/api/v1/agency/incidents", headers=_h(police))).json() == []
        r = await http.post(f"/api/v1/agency/incidents/{iid}/accept", headers=_h(police))
        assert r.status_code == 404
        assert (await http.get("/api/v1/incidents", headers=_h(police))).status_code == 403

        # the responsible agency works it through
        mine = (await http.get("/api/v1/agency/incidents", headers=_h(works))).json()
        assert [i["id"] for i in mine] == [iid]
        r = await http.post(f"/api/v1/agency/incidents/{iid}/accept", headers=_h(works))
        assert r.json()["status"] == "accepted"
        r = await http.post(f"/api/v1/agency/incidents/{iid}/resolve", headers=_h(works),
                            json={"note": ""})  # fmt: skip
        assert r.status_code == 409 and "needs a note" in r.json()["message"]
        r = await http.post(
            f"/api/v1/agency/incidents/{iid}/resolve", headers=_h(works),
            json={"note": "Đã thay bóng", "photo_url": "https://example.org/p.jpg"},
        )  # fmt: skip
        assert r.json()["status"] == "resolved"
        r = await http.post(f"/api/v1/incidents/{iid}/rate", headers=admin, json={"rating": 5})
        body = r.json()
        assert (body["status"], body["rating"]) == ("closed", 5)
        kinds = [(h["kind"], h["actor"]) for h in body["history"]]
        assert kinds == [
            ("opened", "admin"), ("dispatch", "admin"),
            ("accept", "agency:urban-works/urban-works-system"),
            ("resolve", "agency:urban-works/urban-works-system"),
            ("rated", "admin (for the citizen)"),
        ]  # fmt: skip
        assert body["history"][3]["data"] == {"photo_url": "https://example.org/p.jpg"}

        # a step that does not apply names the status; a bad category names the field
        r = await http.post(f"/api/v1/incidents/{iid}/status", headers=admin,
                            json={"status": "accepted"})  # fmt: skip
        assert r.status_code == 409 and "closed" in r.json()["message"]
        r = await http.post("/api/v1/incidents", headers=admin,
                            json={"category": "x", "title": "t"})  # fmt: skip
        assert r.status_code == 422 and "unknown category 'x'" in r.json()["message"]

        # an alert opens one incident: asking again names the one it has
        alert_id = (await (await db.execute(
            """INSERT INTO alerts (fingerprint, rule, state, severity, labels, active_at)
               VALUES ('fp-x', 'flood-bd3', 'firing', 'critical', '{}', now()) RETURNING id"""
        )).fetchone())[0]  # type: ignore[index]  # fmt: skip
        body = {"category": "ngap-nuoc", "title": "Ngập", "alert_id": alert_id}
        first = await http.post("/api/v1/incidents", headers=admin, json=body)
        assert first.status_code == 201, first.text
        assert first.json()["source"] == "alert"
        again = await http.post("/api/v1/incidents", headers=admin, json=body)
        assert again.status_code == 409
        assert f"already has incident {first.json()['id']}" in again.json()["message"]

        # reassignment tells the old agency its work is withdrawn
        r = await http.post("/api/v1/incidents", headers=admin,
                            json={"category": "giao-thong", "title": "Kẹt xe",
                                  "source": "report"})  # fmt: skip
        assert r.json()["source"] == "report"  # a citizen's call, typed in by the duty desk
        other = r.json()["id"]
        r = await http.post(f"/api/v1/agency/incidents/{other}/accept", headers=_h(police))
        r = await http.post(
            f"/api/v1/agency/incidents/{other}/progress", headers=_h(police),
            json={"note": "Tổ tuần tra 3 đang tới, gọi người báo 0909 000 000"},
        )  # fmt: skip
        assert r.json()["status"] == "in_progress"
        r = await http.post(
            f"/api/v1/incidents/{other}/dispatch", headers=admin,
            json={"agency": "urban-works", "note": "đèn tín hiệu hỏng"},
        )  # fmt: skip
        assert r.json()["agency_id"] == "urban-works"
        # the old agency has lost it; the new one sees how it got there, not police's notes
        r = await http.get(f"/api/v1/agency/incidents/{other}", headers=_h(police))
        assert r.status_code == 404
        r = await http.post(f"/api/v1/agency/incidents/{other}/resolve", headers=_h(police),
                            json={"note": "xong"})  # fmt: skip
        assert r.status_code == 404
        seen = (await http.get(f"/api/v1/agency/incidents/{other}", headers=_h(works))).json()
        assert [h["kind"] for h in seen["history"]] == ["opened", "dispatch", "reassigned"]
        assert "0909" not in r.text + str(seen)
        full = (await http.get(f"/api/v1/incidents/{other}", headers=admin)).json()
        assert "progress" in [h["kind"] for h in full["history"]]  # operators see everything
        # ... and an agency never sees the citizen's rating of its closed work
        done = (await http.get(f"/api/v1/agency/incidents/{iid}", headers=_h(works))).json()
        assert "rating" not in done and "rated" not in [h["kind"] for h in done["history"]]
        sent = await (
            await db.execute(
                "SELECT array_agg(kind || '→' || agency_id ORDER BY id) FROM outbox"
                " WHERE incident_id = %s AND channel = 'mqtt'",
                (other,),
            )
        ).fetchone()
        assert sent is not None
        assert sent[0] == [
            "incident.dispatched→traffic-police", "incident.withdrawn→traffic-police",
            "incident.dispatched→urban-works",
        ]  # fmt: skip
        assert runtime.incidents is not None

        # the one formal extension: once, with a reason; the second answers 409 saying why
        ext = f"/api/v1/incidents/{other}/extend"
        r = await http.post(ext, headers=admin, json={"reason": "x", "hours": 2, "working_days": 1})
        assert r.status_code == 422 and "exactly one" in r.json()["message"]
        r = await http.post(ext, headers=admin, json={"hours": 2})
        assert r.status_code == 422 and "reason" in r.json()["message"]
        before = full["deadline_at"]
        r = await http.post(ext, headers=admin, json={"reason": "chờ thay tủ điều khiển",
                                                      "hours": 24})  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["deadline_before_extension"] == before
        assert body["extension_reason"] == "chờ thay tủ điều khiển"
        assert body["history"][-1]["kind"] == "extended"
        r = await http.post(ext, headers=admin, json={"reason": "lại nữa", "hours": 24})
        assert r.status_code == 409
        assert "already extended once" in r.json()["message"]
        assert "chờ thay tủ điều khiển" in r.json()["message"]
        r = await http.post(f"/api/v1/incidents/{iid}/extend", headers=admin,
                            json={"reason": "muộn", "hours": 1})  # fmt: skip
        assert r.status_code == 409 and "closed" in r.json()["message"]
        r = await http.post(ext, headers=_h(viewer), json={"reason": "x", "hours": 1})
        assert r.status_code == 403


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------ post-merger routing -------


async def test_cable_theft_goes_to_urban_works_and_the_ward_police_hears_of_it(
    desk: Desk,
) -> None:
    """The cabinet's feeder-cut alarm (supply present, feeder dead at night): urban works owns
    it, the police of the ward the cabinet is in is told (incident.notified); a supply loss on
    another cabinet goes to the power company alone."""
    now = local(2026, 11, 20, 23, 10)
    cab = desk.ctx.site.device("nb-cab-03")
    await desk.alert("nb-cab-03", "cabinet-feeder-cut",
                     {"severity": "critical", "domain": "lighting", "agency": "urban-works",
                      "cabinet": "nb-cab-03"}, now)  # fmt: skip
    await desk.alert("vt-cab-01", "cabinet-power-loss",
                     {"severity": "critical", "domain": "lighting", "agency": "power",
                      "cabinet": "vt-cab-01"}, now)  # fmt: skip
    opened = (await desk.worker.run_once(now)).opened_ids
    assert len(opened) == 2
    by_agency = {(await desk.incident(i))["agency_id"]: i for i in opened}
    assert set(by_agency) == {"urban-works", "power"}
    police = desk.ctx.site.ward_agency("police", cab.ward)
    assert police is not None and police.id == "police-phuong-nga-bay"
    assert await _kinds_sent(desk, by_agency["urban-works"]) == [
        ("police-phuong-nga-bay", "incident.notified"),
        ("urban-works", "incident.dispatched"),
    ]
    assert await _kinds_sent(desk, by_agency["power"]) == [("power", "incident.dispatched")]
    payload = await desk.scalar(
        "SELECT payload FROM outbox WHERE incident_id = %s AND kind = 'incident.notified'"
        " AND channel = 'mqtt'",
        by_agency["urban-works"],
    )
    assert payload["lead_agency"] == "urban-works"
    history = await store.history(desk.db, by_agency["urban-works"])
    assert history[0]["data"]["also"] == ["police-phuong-nga-bay"]


async def test_a_former_agency_id_still_works_its_incidents(desk: Desk) -> None:
    """Incidents stored for `pctt` before the merger, and `agency:pctt` tokens, are the city
    civil-defence command's."""
    now = local(2026, 10, 27, 16, 50)
    labels = {"severity": "critical", "domain": "flood", "agency": "pctt"}
    await desk.alert("vt-flood-01", "flood-bd3", labels, now)
    (incident_id,) = (await desk.worker.run_once(now)).opened_ids
    await desk.db.execute("UPDATE incidents SET agency_id = 'pctt' WHERE id = %s", (incident_id,))
    for token_agency in ("pctt", "civil-defence"):
        rows = await store.list_incidents(desk.db, agency=desk.ctx.site.agency_ids(token_agency))
        assert [r["id"] for r in rows] == [incident_id], token_agency
    old_token = Who(Actor.AGENCY, "agency:pctt/x", agency="pctt")
    async with desk.db.transaction():
        row = await store.take_step(
            desk.db, desk.ctx, incident_id, "accept", old_token, note=None, at=datetime.now(UTC)
        )
    assert row["status"] == "accepted"
    other = Who(Actor.AGENCY, "agency:power/x", agency="power")
    with pytest.raises(store.IncidentNotFound):
        async with desk.db.transaction():
            await store.take_step(
                desk.db, desk.ctx, incident_id, "resolve", other, note="x", at=datetime.now(UTC)
            )
