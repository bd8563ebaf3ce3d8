"""KPIs on a seeded history in the real database: exact on-time rate (open overdue cases late at
the period's end, each case counted once), satisfaction, the IOC's forwarding and the agencies'
processing clocks, the source dimension (citizens' reports vs alerts, the headline over reports),
grouping, period boundaries at local midnight (+07:00), the one formal extension, the monthly CSV
and HTML report, the live-feed frame and the REST routes."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ioc.core.settings import Settings
from ioc.core.site import load_site
from ioc.kpi import figures as kpi
from ioc.kpi import report as kpi_report
from ioc.storage import feed, tokens
from tests.conftest import TOKEN, running_service

ICT = timezone(timedelta(hours=7))


def T(month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """A local (+07:00) time in 2025 — a past year, so 'now' never cuts the month short."""
    return datetime(2025, month, day, hour, minute, second, tzinfo=ICT)


NOV = (T(11, 1), T(12, 1))
NOW = T(12, 5, 9)  # well after November: November's as-of instant is its end

# (ref, agency, category, city, ward, status, opened, dispatched, accepted, resolved, closed,
#  deadline, rating). Times to accept in November (min): 30, 60, 20, 10, 60, 30, 120.
INCIDENTS: list[tuple[Any, ...]] = [
    # urban-works, lighting, Phường V
    (1, "urban-works", "chieu-sang", "vi-thanh", "phuong-5", "closed", T(11, 2, 8),
     T(11, 2, 8, 10), T(11, 2, 8, 40), T(11, 2, 20), T(11, 3, 9), T(11, 3, 8), 5),
    (2, "urban-works", "chieu-sang", "vi-thanh", "phuong-5", "closed", T(11, 5, 10),
     T(11, 5, 10), T(11, 5, 11), T(11, 7, 10), T(11, 7, 12), T(11, 6, 10), 2),
    (3, "urban-works", "chieu-sang", "vi-thanh", "phuong-5", "resolved", T(11, 10),
     T(11, 10), T(11, 10, 0, 20), T(11, 10, 6), None, T(11, 11), None),
    # pctt, flooding, Phường I
    (4, "pctt", "ngap-nuoc", "vi-thanh", "phuong-1", "closed", T(11, 20, 12),
     T(11, 20, 12, 5), T(11, 20, 12, 15), T(11, 20, 16), T(11, 21), T(11, 20, 18), 4),
    (5, "pctt", "ngap-nuoc", "vi-thanh", "phuong-1", "in_progress", T(11, 25, 8),
     T(11, 25, 8), T(11, 25, 9), None, None, T(11, 26, 8), None),
    (6, "pctt", "ngap-nuoc", "vi-thanh", "phuong-1", "new", T(11, 28, 10),
     None, None, None, None, T(12, 30), None),
    # traffic-police, Phường V: 7 resolved one second before local midnight (November), 8 at
    # local midnight exactly (December) — both are 30 November in UTC
    (7, "traffic-police", "giao-thong", "vi-thanh", "phuong-5", "closed", T(11, 30, 20),
     T(11, 30, 20), T(11, 30, 20, 30), T(11, 30, 23, 59, 59), T(12, 1, 1), T(12, 1), 4),
    (8, "traffic-police", "giao-thong", "vi-thanh", "phuong-5", "resolved", T(11, 30, 20),
     T(11, 30, 20), T(11, 30, 22), T(12, 1), None, T(11, 30, 22), None),
    # October, not November
    (10, "urban-works", "chieu-sang", "vi-thanh", "phuong-5", "closed", T(10, 31, 20),
     T(10, 31, 20), T(10, 31, 20, 30), T(10, 31, 23), T(11, 1, 1), T(11, 1), 1),
]  # fmt: skip
# Opened by a gauge's alert, not by a citizen: beside the headline, never in it. Resolved 6 h
# after its 4-hour deadline (late).
ALERT_BORN: list[tuple[Any, ...]] = [
    (20, "pctt", "ngap-nuoc", "vi-thanh", "phuong-1", "resolved", T(11, 15, 10),
     T(11, 15, 10), None, T(11, 15, 20), None, T(11, 15, 14), None),
]  # fmt: skip


async def _seed(db: psycopg.AsyncConnection) -> dict[int, int]:
    ids: dict[int, int] = {}
    for source, (
        ref,
        agency,
        category,
        city,
        ward,
        status,
        opened,
        disp,
        acc,
        res,
        clo,
        dl,
        rating,
    ) in [("report", i) for i in INCIDENTS] + [("alert", i) for i in ALERT_BORN]:
        cur = await db.execute(
            """INSERT INTO incidents (category, severity, status, title, city, ward, agency_id,
                   opened_at, dispatched_at, first_dispatched_at, accepted_at, resolved_at,
                   closed_at, deadline_at, rating, source)
               VALUES (%s, 'warning', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               RETURNING id""",
            (category, status, f"incident {ref}", city, ward, agency, opened, disp, disp, acc,
             res, clo, dl, rating, source),
        )  # fmt: skip
        row = await cur.fetchone()
        assert row is not None
        ids[ref] = int(row[0])
    # 4's deadline was formally extended once (from 20 Nov 16:00 to 18:00): on time by it
    await db.execute(
        """UPDATE incidents SET extended_at = %s, extension_reason = 'chờ nước rút',
               deadline_before_extension = %s WHERE id = %s""",
        (T(11, 20, 15), T(11, 20, 16), ids[4]),
    )
    # A duplicate merged into incident 1, resolved late and rated 1: it must count nowhere.
    await db.execute(
        """INSERT INTO incidents (category, severity, status, title, agency_id, opened_at,
               dispatched_at, accepted_at, resolved_at, closed_at, deadline_at, rating,
               merged_into, source)
           VALUES ('chieu-sang', 'warning', 'closed', 'duplicate', 'urban-works', %s, %s, %s,
                   %s, %s, %s, 1, %s, 'report')""",
        (T(11, 2, 9), T(11, 2, 9), T(11, 2, 9, 1), T(11, 9), T(11, 9), T(11, 3), ids[1]),
    )
    return ids


async def test_month_totals_are_exact(db: psycopg.AsyncConnection) -> None:
    await _seed(db)
    (row,) = await kpi.compute(db, start=NOV[0], end=NOV[1], now=NOW, source="report")
    assert row.period_start == NOV[0] and row.period_end == NOV[1] and row.as_of == NOV[1]
    assert row.source == "report"
    assert row.opened == 8
    assert row.finished == 5  # 1, 2, 3, 4, 7
    # due in November: on time 1, 3, 4, 7 (finished by their deadlines); late 2 (a day late),
    # 8 (deadline 30 Nov 22:00, resolved at midnight) and 5 (deadline 26 Nov, still open at
    # the month's end: late at the period's end). 6 is due in December; 10 counted in October.
    assert (row.due, row.on_time, row.late, row.late_open) == (7, 4, 3, 1)
    assert row.extended == 1  # 4, on time by its extended deadline
    assert row.on_time_rate == pytest.approx(4 / 7)
    assert row.on_time_met is False
    # ratings of finished ones: 5, 2, 4, 4
    assert (row.rated, row.satisfied) == (4, 3)
    assert row.satisfaction == pytest.approx(0.75) and row.satisfaction_met is False
    # accept (min): 30, 60, 20, 10, 60, 30, 120 → median 30; p90 at rank 5.4: 60 + 0.4 × 60 = 84
    assert row.accepted == 7
    assert row.accept_median_s == pytest.approx(30 * 60)
    assert row.accept_p90_s == pytest.approx(84 * 60)
    # resolve (s): 14399, 14400, 21600, 43200, 172800 → median 21600;
    # p90 at rank 3.6: 43200 + 0.6 × (172800 − 43200) = 120960
    assert row.resolved == 5
    assert row.resolve_median_s == pytest.approx(21600)
    assert row.resolve_p90_s == pytest.approx(120960)
    # the IOC's clock, received → first dispatch (s): 600, 0, 0, 300, 0, 0, 0 → median 0;
    # p90 at rank 5.4: 300 + 0.4 × 300 = 420
    assert row.forwarded == 7
    assert row.forward_median_s == 0 and row.forward_p90_s == pytest.approx(420)
    # the agency's clock, dispatched → resolved (s): 42600, 172800, 21600, 14100, 14399 →
    # median 21600; p90 at rank 3.6: 42600 + 0.6 × (172800 − 42600) = 120720
    assert row.processed == 5
    assert row.process_median_s == pytest.approx(21600)
    assert row.process_p90_s == pytest.approx(120720)
    # open at 1 Dec 00:00: 5 (overdue since 26 Nov) and 6 (deadline 30 Dec); 8 finished at
    # that very instant
    assert (row.open, row.overdue) == (2, 1)


async def test_source_separates_citizens_reports_from_alerts(db: psycopg.AsyncConnection) -> None:
    await _seed(db)
    rows = {
        r.source: r
        for r in await kpi.compute(db, start=NOV[0], end=NOV[1], now=NOW, group_by="source")
    }
    assert set(rows) == {"report", "alert"}
    report, alert = rows["report"], rows["alert"]
    assert (report.opened, report.due, report.on_time) == (8, 7, 4)
    assert report.on_time_met is False  # the targets are assessed on citizens' reports
    assert (alert.opened, alert.finished, alert.due, alert.on_time, alert.late) == (1, 1, 1, 0, 1)
    assert alert.on_time_rate == 0.0 and alert.on_time_met is None  # beside, not assessed
    assert alert.forwarded == 1 and alert.process_median_s == pytest.approx(10 * 3600)
    # everything together: counts add up, no target assessed on the mixture
    (total,) = await kpi.compute(db, start=NOV[0], end=NOV[1], now=NOW)
    assert total.source is None
    assert (total.opened, total.due, total.on_time) == (9, 8, 4)
    assert total.on_time_met is None and total.satisfaction_met is None
    only_alerts = await kpi.compute(
        db, start=NOV[0], end=NOV[1], now=NOW, group_by="agency", source="alert"
    )
    assert [(r.agency, r.source, r.late) for r in only_alerts] == [("pctt", "alert", 1)]
    with pytest.raises(kpi.KpiError, match="source"):
        await kpi.compute(db, start=NOV[0], end=NOV[1], now=NOW, source="sensor")


async def test_grouped_by_agency_category_and_ward(db: psycopg.AsyncConnection) -> None:
    await _seed(db)
    by_agency = {
        r.agency: r
        for r in await kpi.compute(
            db, start=NOV[0], end=NOV[1], now=NOW, group_by=["agency"], source="report"
        )
    }
    assert set(by_agency) == {"urban-works", "pctt", "traffic-police"}
    works, pctt, police = by_agency["urban-works"], by_agency["pctt"], by_agency["traffic-police"]
    assert (works.finished, works.on_time, works.rated, works.satisfied) == (3, 2, 2, 1)
    assert works.on_time_rate == pytest.approx(2 / 3) and works.satisfaction == 0.5
    assert works.accept_median_s == pytest.approx(30 * 60)  # 30, 60, 20
    # 4 on time; 5 open past its deadline at the month's end counts late
    assert (pctt.finished, pctt.due, pctt.on_time_rate, pctt.satisfaction) == (1, 2, 0.5, 1.0)
    assert pctt.on_time_met is False and pctt.satisfaction_met is True
    assert (pctt.opened, pctt.open, pctt.overdue) == (3, 2, 1)
    assert (police.opened, police.finished, police.due, police.on_time) == (2, 1, 2, 1)

    by_category = {
        r.category: r
        for r in await kpi.compute(db, start=NOV[0], end=NOV[1], now=NOW, group_by="category")
    }
    assert {k: r.opened for k, r in by_category.items()} == {
        "chieu-sang": 3,
        "ngap-nuoc": 4,  # 4, 5, 6 and the alert-born 20
        "giao-thong": 2,
    }
    by_ward = {
        (r.city, r.ward): r
        for r in await kpi.compute(db, start=NOV[0], end=NOV[1], now=NOW, group_by="ward")
    }
    ward5 = by_ward[("vi-thanh", "phuong-5")]
    assert (ward5.finished, ward5.due, ward5.on_time) == (4, 5, 3)  # 1, 2, 3, 7 and 8 late
    assert by_ward[("vi-thanh", "phuong-1")].open == 2

    two = await kpi.compute(db, start=NOV[0], end=NOV[1], now=NOW, group_by="agency,category")
    assert {(r.agency, r.category) for r in two} == {
        ("urban-works", "chieu-sang"),
        ("pctt", "ngap-nuoc"),
        ("traffic-police", "giao-thong"),
    }


async def test_former_wards_and_agencies_count_with_the_current_ones(
    db: psycopg.AsyncConnection,
) -> None:
    # The seed is stored as before July 2025: Phường I and V, the old disaster committee. With
    # the site's aliases, Phường I (→ phường Vị Thanh) and Phường V (→ phường Vị Tân) are
    # reported under the current units and pctt under the civil-defence command it became.
    await _seed(db)
    site = load_site(Settings().site_path())
    aliases = kpi.Aliases.of_site(site)
    assert aliases.ward["phuong-5"] == "phuong-vi-tan" and aliases.ward["phuong-1"] == (
        "phuong-vi-thanh"
    )
    by_ward = {
        (r.city, r.ward): r
        for r in await kpi.compute(
            db, start=NOV[0], end=NOV[1], now=NOW, group_by="ward", aliases=aliases
        )
    }
    assert set(by_ward) == {("vi-thanh", "phuong-vi-tan"), ("vi-thanh", "phuong-vi-thanh")}
    vi_tan = by_ward[("vi-thanh", "phuong-vi-tan")]
    assert (vi_tan.finished, vi_tan.due, vi_tan.on_time) == (4, 5, 3)  # former Phường V's
    by_agency = {
        r.agency
        for r in await kpi.compute(
            db, start=NOV[0], end=NOV[1], now=NOW, group_by="agency", aliases=aliases
        )
    }
    assert "pctt" not in by_agency and aliases.agency["pctt"] in by_agency
    report = await kpi_report.monthly_report(db, "2025-11", NOW, aliases)
    assert {r.ward for r in report.by_ward} == {"phuong-vi-tan", "phuong-vi-thanh"}


async def test_periods_cut_at_local_midnight(db: psycopg.AsyncConnection) -> None:
    await _seed(db)
    days = await kpi.compute(
        db, start=T(11, 30), end=T(12, 2), now=NOW, group_by=["period"], period="day"
    )
    assert [(r.period_start, r.period_end) for r in days] == [
        (T(11, 30), T(12, 1)),
        (T(12, 1), T(12, 2)),
    ]
    nov30, dec1 = days
    # 7 resolved at 23:59:59 on the 30th, 8 at 00:00:00 on the 1st (both 30 Nov in UTC). 8 is
    # late on the 30th, where its deadline (22:00) passed with the case open; finishing on the
    # 1st does not count it a second time.
    assert (nov30.finished, nov30.on_time, nov30.late, nov30.resolved) == (1, 1, 1, 1)
    assert (dec1.finished, dec1.due, dec1.resolved) == (1, 0, 1)
    assert dec1.on_time_rate is None
    assert nov30.opened == 2 and dec1.opened == 0

    months = await kpi.compute(
        db, start=T(10, 15), end=T(12, 2), now=NOW, group_by="period", period="month"
    )
    assert [(r.period_start, r.period_end) for r in months] == [
        (T(10, 15), T(11, 1)),  # clipped to from
        (T(11, 1), T(12, 1)),
        (T(12, 1), T(12, 2)),  # clipped to to
    ]
    assert [r.finished for r in months] == [1, 6, 1]
    # November, every source: 4 on time of 8 due (7 citizens' reports, 1 alert-born)
    assert (months[1].due, months[1].on_time_rate) == (8, pytest.approx(0.5))
    assert [r.due for r in months] == [1, 8, 0]  # 10 in October

    weeks = await kpi.compute(
        db, start=T(11, 24), end=T(12, 8), now=NOW, group_by="period", period="week"
    )
    # ISO weeks start on Monday, local time: 24 Nov and 1 Dec 2025 are Mondays
    assert [r.period_start for r in weeks] == [T(11, 24), T(12, 1)]
    assert [r.opened for r in weeks] == [4, 0]  # 5, 6, 7, 8


async def test_as_of_is_now_while_the_period_runs(db: psycopg.AsyncConnection) -> None:
    await _seed(db)
    # on 25 Nov at 12:00, incident 5 is open but its deadline (26 Nov) is not yet past
    (row,) = await kpi.compute(db, start=NOV[0], end=NOV[1], now=T(11, 25, 12))
    assert row.as_of == T(11, 25, 12)
    assert (row.open, row.overdue) == (1, 0)
    # on time 1, 3, 4, 7; late 2 and the alert-born 20; 5's deadline has not passed yet
    assert (row.due, row.late, row.late_open) == (6, 2, 0)
    (row,) = await kpi.compute(db, start=NOV[0], end=NOV[1], now=T(11, 27))
    assert (row.open, row.overdue) == (1, 1)
    assert (row.due, row.late_open) == (7, 1)  # 5's deadline passed while open: late now


async def test_empty_range_has_a_total_row_and_bad_requests_name_the_field(
    db: psycopg.AsyncConnection,
) -> None:
    (row,) = await kpi.compute(db, start=NOV[0], end=NOV[1], now=NOW)
    assert row.finished == 0 and row.on_time_rate is None and row.on_time_met is None
    assert row.accept_median_s is None and row.forward_median_s is None
    with pytest.raises(kpi.KpiError, match="group_by"):
        await kpi.compute(db, start=NOV[0], end=NOV[1], now=NOW, group_by="district")
    with pytest.raises(kpi.KpiError, match="to"):
        await kpi.compute(db, start=NOV[1], end=NOV[0], now=NOW)
    with pytest.raises(kpi.KpiError, match="period"):
        await kpi.compute(
            db, start=T(1, 1), end=T(1, 1) + timedelta(days=5000), now=NOW, group_by="period",
            period="day",
        )  # fmt: skip
    assert kpi.month_range("2025-12") == (T(12, 1), datetime(2026, 1, 1, tzinfo=ICT))
    with pytest.raises(kpi.KpiError, match="month"):
        kpi.month_range("2025-13")


NAMES = kpi_report.Names(
    agencies={
        "urban-works": ("Công ty Công trình đô thị", "Urban works"),
        "pctt": ("Ban Chỉ huy PCTT", "Disaster prevention"),
        "traffic-police": ("Cảnh sát giao thông", "Traffic police"),
    },
    categories={"chieu-sang": ("Chiếu sáng công cộng", "Street lighting")},
    wards={"phuong-5": "Phường V"},
)


async def test_monthly_csv(db: psycopg.AsyncConnection) -> None:
    await _seed(db)
    report = await kpi_report.monthly_report(db, "2025-11", NOW)
    rows = list(csv.DictReader(io.StringIO(kpi_report.to_csv(report, NAMES))))
    assert list(rows[0]) == list(kpi_report.CSV_COLUMNS)
    head = rows[0]
    assert (head["group"], head["source"]) == ("headline", "report")
    assert head["period_from"] == "2025-11-01T00:00:00+07:00"
    assert head["period_to"] == "2025-12-01T00:00:00+07:00"
    assert (head["finished"], head["due"], head["on_time"], head["late"], head["late_open"]) == (
        "5",
        "7",
        "4",
        "3",
        "1",
    )
    assert (head["on_time_rate_pct"], head["on_time_target_met"]) == ("57.1", "no")
    assert head["extended"] == "1"
    assert (head["rated"], head["satisfied"]) == ("4", "3")
    assert (head["satisfaction_pct"], head["satisfaction_target_met"]) == ("75.0", "no")
    assert (head["forward_median_h"], head["forward_p90_h"]) == ("0.00", "0.12")
    assert (head["process_median_h"], head["process_p90_h"]) == ("6.00", "33.53")
    assert (head["accept_median_h"], head["accept_p90_h"]) == ("0.50", "1.40")
    assert (head["resolve_median_h"], head["resolve_p90_h"]) == ("6.00", "33.60")
    assert (head["open"], head["overdue"]) == ("2", "1")
    total = rows[1]
    assert (total["group"], total["source"], total["due"], total["on_time"]) == (
        "total",
        "",
        "8",
        "4",
    )
    assert total["on_time_target_met"] == ""  # the mixture is not assessed
    sources = {r["key"]: r for r in rows if r["group"] == "source"}
    assert set(sources) == {"report", "alert"}
    assert (sources["alert"]["due"], sources["alert"]["on_time_rate_pct"]) == ("1", "0.0")
    pctt = next(r for r in rows if r["group"] == "agency" and r["key"] == "pctt")
    assert pctt["name"] == "Ban Chỉ huy PCTT" and pctt["source"] == "report"
    assert (pctt["on_time"], pctt["due"], pctt["on_time_rate_pct"]) == ("1", "2", "50.0")
    assert pctt["on_time_target_met"] == "no"
    assert {r["key"] for r in rows if r["group"] == "category"} == {
        "chieu-sang",
        "ngap-nuoc",
        "giao-thong",
    }
    assert {r["key"] for r in rows if r["group"] == "ward"} == {"phuong-1", "phuong-5"}


async def test_monthly_html_has_svg_charts_and_figures(db: psycopg.AsyncConnection) -> None:
    await _seed(db)
    report = await kpi_report.monthly_report(db, "2025-11", NOW)
    html = kpi_report.to_html(report, NAMES)
    assert html.startswith("<!DOCTYPE html>") and '<html lang="vi">' in html
    assert "tháng 11/2025" in html and "November 2025" in html
    assert html.count("<svg") == 3
    assert "<script" not in html and "http" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert "57,1 % (4/7)" in html and "75,0 % (3/4)" in html  # the headline, with its counts
    assert "0,0 % (0/1)" in html  # the alert-born incidents, beside
    assert "Phản ánh của người dân" in html and "Sự cố từ cảnh báo" in html
    assert "IOC chuyển xử lý" in html and "Đơn vị xử lý" in html  # the two clocks
    assert "Không đạt" in html and "not met" in html
    assert "mục tiêu / target 95 %" in html and "mục tiêu / target 80 %" in html
    assert 'class="target"' in html
    assert "Công ty Công trình đô thị" in html and "Chiếu sáng công cộng" in html
    assert "66,7 %" in html  # urban works' on-time rate
    assert "01/11/2025 00:00 (+07:00)" in html


async def test_publish_kpis_appends_a_kpi_frame_when_figures_change(
    db: psycopg.AsyncConnection, database_url: str
) -> None:
    await _seed(db)
    now = T(11, 29, 12)
    seq, digest = await kpi.publish_kpis(db, now)
    assert seq is not None
    (row,) = await feed.events_after(db, seq - 1, 10)
    assert row.type == "kpi"
    payload = orjson.loads(row.payload)
    assert payload["from"] == "2025-11-01T00:00:00+07:00"
    assert payload["total"]["on_time"] == 4
    assert payload["headline"]["source"] == "report" and payload["headline"]["due"] == 6
    assert {r["source"] for r in payload["by_source"]} == {"report", "alert"}
    assert payload["as_of"] == "2025-11-29T12:00:00+07:00"
    assert {a["agency"] for a in payload["by_agency"]} == {"urban-works", "pctt", "traffic-police"}
    # the same figures a minute later: nothing appended
    again, same = await kpi.publish_kpis(db, now + timedelta(minutes=1), unless_digest=digest)
    assert again is None and same == digest

    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
        publisher = kpi.KpiPublisher(None, pool, interval_s=3600, clock=lambda: T(12, 3))
        first = await publisher.publish_once()
        assert first is not None and first > seq
        assert await publisher.publish_once() is None  # unchanged
        async with publisher:
            pass  # starts and stops its task cleanly


async def test_kpi_routes(settings: Settings, db: psycopg.AsyncConnection) -> None:
    async with running_service(settings) as (_, http):
        await _seed(db)
        _, viewer = await tokens.create(db, name="wall", role="viewer")
        _, agency = await tokens.create(db, name="works", role="agency:urban-works")
        params = {"from": NOV[0].isoformat(), "to": NOV[1].isoformat(), "group_by": "agency"}
        assert (await http.get("/api/v1/kpis", params=params)).status_code == 401
        r = await http.get(
            "/api/v1/kpis", params=params, headers={"Authorization": f"Bearer {agency}"}
        )
        assert r.status_code == 403
        r = await http.get(
            "/api/v1/kpis", params=params, headers={"Authorization": f"Bearer {viewer}"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["targets"] == {"on_time": 0.95, "satisfaction": 0.8}
        assert body["headline_source"] == "report"
        head = body["headline"]
        assert (head["on_time"], head["due"], head["late_open"]) == (4, 7, 1)
        assert head["on_time_rate"] == pytest.approx(4 / 7) and head["on_time_met"] is False
        assert (head["satisfied"], head["rated"], head["satisfaction_met"]) == (3, 4, False)
        assert {r["source"]: r["due"] for r in body["by_source"]} == {"report": 7, "alert": 1}
        assert body["total"]["on_time_rate"] == pytest.approx(0.5)
        assert body["total"]["on_time_met"] is None
        assert body["total"]["as_of"] == "2025-12-01T00:00:00+07:00"
        agencies = {r["agency"]: r for r in body["rows"]}
        # the former disaster committee's cases count with the agency it became
        assert "pctt" not in agencies
        current = load_site(Settings().site_path()).agency("pctt").id
        assert agencies[current]["satisfaction"] == 1.0
        assert agencies["urban-works"]["accept_median_s"] == pytest.approx(1800)

        r = await http.get(
            "/api/v1/kpis",
            params={**params, "group_by": "period", "period": "week"},
            headers={"Authorization": f"Bearer {viewer}"},
        )
        assert r.status_code == 200
        assert r.json()["rows"][0]["period_start"] == "2025-11-01T00:00:00+07:00"
        r = await http.get(
            "/api/v1/kpis",
            params={**params, "group_by": "district"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 422 and "group_by" in r.json()["message"]
        r = await http.get(
            "/api/v1/kpis",
            params={**params, "group_by": "source"},
            headers={"Authorization": f"Bearer {viewer}"},
        )
        assert {(x["source"], x["opened"]) for x in r.json()["rows"]} == {
            ("report", 8),
            ("alert", 1),
        }

        auth = {"Authorization": f"Bearer {viewer}"}
        r = await http.get("/api/v1/kpis/report", params={"month": "2025-11", "format": "csv"},
                           headers=auth)  # fmt: skip
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        assert "ioc-kpi-2025-11.csv" in r.headers["content-disposition"]
        first = next(csv.DictReader(io.StringIO(r.text)))
        assert (first["group"], first["on_time_rate_pct"]) == ("headline", "57.1")
        r = await http.get("/api/v1/kpis/report", params={"month": "2025-11"}, headers=auth)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "<svg" in r.text and "57,1 %" in r.text
        # names come from the site file and the routing file
        assert "Công ty Công trình đô thị" in r.text and "Chiếu sáng công cộng" in r.text
        r = await http.get("/api/v1/kpis/report", params={"month": "2025-13"}, headers=auth)
        assert r.status_code == 422


def test_targets_are_data_with_their_source(tmp_path: Any) -> None:
    # the shipped file: the programme's two targets, about citizens' reports, with a source
    assert (kpi.ON_TIME_TARGET, kpi.SATISFACTION_TARGET) == (0.95, 0.80)
    assert kpi.HEADLINE_SOURCE == "report" and kpi.SATISFIED_FROM == 4
    assert "2021–2025" in kpi.TARGETS_SOURCE
    bad = tmp_path / "kpis.yaml"
    bad.write_text(
        "targets: {on_time: {value: 95}, satisfaction: {value: 0.8}}\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match=r"targets.on_time.value must be a fraction"):
        kpi._load_targets(bad)
