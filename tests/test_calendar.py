"""The working calendar (ioc/core/calendar.py): 8-hour days, statutory holidays from the `holidays`
package, the yearly swap decisions (days off bridged, make-up Saturdays) from calendar.yaml, and
the warning for a year whose decision is missing. Pure arithmetic: no database."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from prometheus_client import REGISTRY

from ioc.core.calendar import DEFAULT_CALENDAR, CalendarError, load_calendar, parse_calendar
from ioc.core.site import load_site
from ioc.routing.table import RoutingError, load_routing

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
SITE_DATA = Path(__file__).parents[1] / "ioc" / "site_data"


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=HCM)


def shipped() -> dict[str, Any]:
    raw = yaml.safe_load(DEFAULT_CALENDAR.read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return raw


def test_a_working_day_is_eight_hours_in_two_periods() -> None:
    cal = load_calendar()
    assert cal.hours_per_day == 8.0
    # Wednesday 25/11/2026 (the day before, 24/11, is Vietnam Culture Day since 2026):
    # 07:30 + 8 h of work = 17:30 the same day, lunch skipped
    assert cal.add_working_time(local(2026, 11, 25, 7, 30), 8) == local(2026, 11, 25, 17, 30)
    assert cal.working_time_between(local(2026, 11, 25), local(2026, 11, 26)) == timedelta(hours=8)
    # through the routing file: 3 working days = 24 h; Friday 16:00 → Wednesday 16:00
    routing = load_routing(SITE_DATA / "routing.yaml", load_site(SITE_DATA / "hau-giang.yaml"))
    assert routing.calendar.hours_per_day == 8.0
    assert routing.deadline("chieu-sang", "warning", local(2026, 11, 27, 16, 0)) == local(
        2026, 12, 2, 16, 0
    )


def test_2_january_2026_is_bridged_and_10_january_worked() -> None:
    cal = load_calendar()
    # Reported on New Year's Day (a holiday) at 10:00, 2 working hours: Friday 2/1 is off by the
    # swap decision (12729/VPCP-KGVX), 3–4/1 a weekend → Monday 5/1 09:30.
    assert cal.add_working_time(local(2026, 1, 1, 10, 0), 2) == local(2026, 1, 5, 9, 30)
    # Without the decision (statutory days only) 2/1 would have been a working day.
    statutory_only = parse_calendar({**shipped(), "decisions": {}})
    assert statutory_only.add_working_time(local(2026, 1, 1, 10, 0), 2) == local(2026, 1, 2, 9, 30)
    assert not cal.is_working_day(date(2026, 1, 2)) and statutory_only.is_working_day(
        date(2026, 1, 2)
    )


def test_a_make_up_saturday_counts_as_working() -> None:
    cal = load_calendar()
    # Friday 9/1/2026 16:00 + 4 h: 1.5 h on Friday, then Saturday 10/1 is the make-up day
    # for 2/1 → 07:30 + 2.5 h = 10:00 that Saturday.
    assert cal.is_working_day(date(2026, 1, 10)) and not cal.is_working_day(date(2026, 1, 17))
    assert cal.add_working_time(local(2026, 1, 9, 16, 0), 4) == local(2026, 1, 10, 10, 0)
    # and the inverse: Friday 16:00 → Monday 08:30 holds 1.5 + 8 + 1 working hours
    assert cal.working_time_between(local(2026, 1, 9, 16, 0), local(2026, 1, 12, 8, 30)) == (
        timedelta(hours=10.5)
    )
    # National Day 2026: Monday 31/8 off, Saturday 22/8 worked; the holidays package records
    # the same swap, so the two sources agree
    assert cal.is_working_day(date(2026, 8, 22)) and not cal.is_working_day(date(2026, 8, 31))
    assert cal.add_working_time(local(2026, 8, 28, 17, 0), 1) == local(2026, 9, 3, 8, 0)


def test_tet_2027_comes_from_the_holidays_package_and_the_missing_decision_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cal = load_calendar()
    assert not cal.year_known(2027)  # no 2027 decision in the shipped data
    off = cal.days_off(2027)
    # Tết Đinh Mùi (1 Tết = Saturday 6/2/2027): 29 Tết … mùng 5, with the weekend days moved
    # to the Thursday before and the Wednesday after (Labour Code 2019 art. 111.3, 112)
    assert sorted(d for d in off if date(2027, 2, 1) <= d <= date(2027, 2, 28)) == [
        date(2027, 2, d) for d in range(4, 11)
    ]
    with caplog.at_level("WARNING", logger="ioc.core.calendar"):
        cal.add_working_time(local(2026, 11, 26, 9, 0), 1)  # 2026 is known: quiet
        assert caplog.records == []
        # Wednesday 3/2/2027 16:00 + 4 working hours: 1.5 h, then 4–10/2 off → Thursday 11/2
        # 07:30 + 2.5 h = 10:00
        assert cal.add_working_time(local(2027, 2, 3, 16, 0), 4) == local(2027, 2, 11, 10, 0)
        cal.add_working_time(local(2027, 3, 3, 9, 0), 1)
    assert [r.getMessage()[:57] for r in caplog.records] == [
        "working calendar: no swap decision for 2027 in the calend"
    ]
    assert REGISTRY.get_sample_value("ioc_calendar_decision_missing", {"year": "2027"}) == 1


def test_a_lone_day_of_a_year_does_not_make_the_year_known(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the former format's "holidays: [2027-01-01]" silenced the warning for Tết 2027; a day off
    # listed by hand is still honoured but the year stays unknown until its decision is listed
    cal = parse_calendar({**shipped(), "holidays": ["2027-01-01", "2031-05-19"]})
    assert not cal.year_known(2027) and not cal.year_known(2031)
    assert not cal.is_working_day(date(2031, 5, 19))  # a Monday, listed by hand
    with caplog.at_level("WARNING", logger="ioc.core.calendar"):
        cal.add_working_time(local(2031, 5, 16, 17, 0), 1)
    assert [r.getMessage()[:48] for r in caplog.records] == [
        "working calendar: no swap decision for 2031 in t"
    ]


@pytest.mark.parametrize(
    ("decisions", "message"),
    [
        ({2027: [{"title": "Tết 2027", "days_off": [{"date": "2027-02-11", "note": "x"}]}]},
         "decisions.2027[0].source: missing"),
        ({2027: []}, "decisions.2027: a list of the year's decisions"),
        ({2027: [{"title": "t", "source": "s", "working_days": [
            {"date": "2027-02-11", "note": "a Thursday"}]}]}, "is a weekday"),
        ({2027: [{"title": "t", "source": "s", "days_off": [
            {"date": "2026-02-11", "note": "wrong year"}]}]}, "2026-02-11 is not in 2027"),
    ],
)  # fmt: skip
def test_bad_decisions_are_refused_naming_the_key(decisions: Any, message: str) -> None:
    with pytest.raises(CalendarError) as exc:
        parse_calendar({**shipped(), "decisions": decisions}, "calendar.yaml")
    assert message in str(exc.value)


def test_routing_names_its_calendar_file_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    site = load_site(SITE_DATA / "hau-giang.yaml")
    text = (SITE_DATA / "routing.yaml").read_text(encoding="utf-8")
    assert "\ncalendar: calendar.yaml\n" in text
    # a copy of the routing file elsewhere (IOC_ROUTING) still finds the packaged calendar
    copy = tmp_path / "routing.yaml"
    copy.write_text(text, encoding="utf-8")
    assert load_routing(copy, site).calendar.year_known(2026)
    # a calendar beside it wins
    (tmp_path / "calendar.yaml").write_text(
        yaml.safe_dump({**shipped(), "hours": [["08:00", "12:00"]]}), encoding="utf-8"
    )
    assert load_routing(copy, site).calendar.hours_per_day == 4.0
    (tmp_path / "calendar.yaml").write_text('hours: [["12:00", "08:00"]]\n', encoding="utf-8")
    with pytest.raises(RoutingError, match=r"calendar: .*hours\[0\]: periods must be increasing"):
        load_routing(copy, site)
