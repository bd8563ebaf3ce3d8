"""The working calendar of state bodies: which days and hours count towards a working-time deadline.

A day is a working day when it is one of the calendar's weekdays (Monday–Friday) and not a
public holiday — or when it is a weekend day the government made a working day (a make-up
Saturday, *ngày làm bù*). The days off come from two places:

- the statutory holidays (Labour Code 2019 art. 112 with the compensatory days of art. 111.3),
  computed by the maintained `holidays` package (``holidays.Vietnam``), which knows the lunar
  Tết and Hùng Kings' days for any year;
- each year's swap decision (the Prime Minister's / Government Office's approval of the Ministry
  of Home Affairs' proposal): working days moved onto weekends to bridge holidays, as data with
  its source in ``ioc/site_data/calendar.yaml``.

A year counts as *known* when its decision is in the data. Counting a deadline in an unknown year
falls back to the statutory days, logs a warning once per calendar and year, and sets the gauge
``ioc_calendar_decision_missing{year}`` to 1 (docs/agencies.md, "Working calendar").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final, NoReturn
from zoneinfo import ZoneInfo

import holidays
from prometheus_client import Gauge

from ioc.core import yamlfile
from ioc.core.packaged import SITE_DATA
from ioc.core.yamlfile import DataFileError

log = logging.getLogger(__name__)

DEFAULT_CALENDAR: Final = SITE_DATA / "calendar.yaml"
DECISION_MISSING = Gauge(
    "ioc_calendar_decision_missing",
    "1 for a year a working-time deadline was counted in without that year's swap decision in "
    "the calendar data (statutory holidays only)",
    ["year"],
)
_MAX_CACHED_YEARS: Final = 64  # statutory holiday sets kept per calendar; deadlines span 1–2
_MAX_SEARCH_DAYS: Final = 3660  # ten years: only a broken calendar has no working time that long


class CalendarError(DataFileError):
    """A calendar file that cannot be used; ``where`` names the offending key."""


@dataclass(frozen=True, slots=True)
class DayChange:
    """One day of a swap decision: a day off (``off``) or a weekend day worked (``work``)."""

    day: date
    note: str


@dataclass(frozen=True, slots=True)
class SwapDecision:
    """One government decision on a year's days off, with where it was published."""

    year: int
    title: str
    source: str
    days_off: tuple[DayChange, ...] = ()
    working_days: tuple[DayChange, ...] = ()


@dataclass(frozen=True, slots=True)
class _Year:
    statutory: Mapping[date, str]
    off: Mapping[date, str]  # statutory ∪ the decisions' days off ∪ extra days
    work: Mapping[date, str]  # weekend days worked


@dataclass(frozen=True, slots=True)
class WorkingCalendar:
    """Working time of state bodies: weekdays × daily periods, minus holidays, local time."""

    tz: ZoneInfo
    weekdays: frozenset[int]  # ISO, 1 = Monday
    periods: tuple[tuple[time, time], ...]
    decisions: Mapping[int, tuple[SwapDecision, ...]] = field(default_factory=dict)
    country: str = "VN"
    # Extra fixed days off beyond the statutory ones and the decisions (a site's own, e.g. a
    # local festival); kept for files of the former format that listed holidays by hand.
    extra_holidays: frozenset[date] = frozenset()
    _years: dict[int, _Year] = field(default_factory=dict, init=False, repr=False, compare=False)
    _warned: set[int] = field(default_factory=set, init=False, repr=False, compare=False)

    # -- days ----------------------------------------------------------------------------------

    @property
    def hours_per_day(self) -> float:
        return sum(_seconds(b) - _seconds(a) for a, b in self.periods) / 3600.0

    def statutory_holidays(self, year: int) -> Mapping[date, str]:
        """The year's public holidays from the `holidays` package (names in Vietnamese),
        compensatory days and the package's own record of swapped days included."""
        return self._year(year).statutory

    def days_off(self, year: int) -> Mapping[date, str]:
        """Every day off of ``year`` that is not a plain weekend, with its name."""
        return self._year(year).off

    def make_up_days(self, year: int) -> Mapping[date, str]:
        """Weekend days worked in ``year`` (make-up Saturdays of swap decisions)."""
        return self._year(year).work

    def year_known(self, year: int) -> bool:
        """Whether the year's swap decision is in the data (not merely some day of it)."""
        return bool(self.decisions.get(year))

    def is_working_day(self, d: date) -> bool:
        year = self._year(d.year)
        if d in year.work:
            return True
        return d.isoweekday() in self.weekdays and d not in year.off

    def _year(self, year: int) -> _Year:
        cached = self._years.get(year)
        if cached is not None:
            return cached
        if len(self._years) >= _MAX_CACHED_YEARS:
            self._years.clear()
        named = holidays.country_holidays(self.country, years=year, language="vi")
        statutory = {d: str(n) for d, n in named.items() if d.year == year}
        off = dict(statutory)
        # the package records the weekend days some past decisions made working days
        work = {
            d: "ngày làm bù"
            for d in getattr(named, "weekend_workdays", ())
            if isinstance(d, date) and d.year == year
        }
        for decision in self.decisions.get(year, ()):
            for change in decision.days_off:
                off.setdefault(change.day, change.note)
            for change in decision.working_days:
                work[change.day] = change.note
        for d in self.extra_holidays:
            if d.year == year:
                off.setdefault(d, "ngày nghỉ")
        cached = _Year(statutory, off, work)
        self._years[year] = cached
        return cached

    def warn_if_year_unknown(self, year: int) -> None:
        """Tết and Hùng Kings' day move with the lunar calendar (the package computes them), but
        which working days the government swaps to bridge them is decided year by year. Without
        the decision a deadline counts the statutory days only and may end on a bridged day off
        or skip a make-up Saturday: say so once per year (log and gauge)."""
        if year in self._warned or self.year_known(year):
            return
        self._warned.add(year)
        DECISION_MISSING.labels(str(year)).set(1)
        log.warning(
            "working calendar: no swap decision for %d in the calendar data; working-time "
            "deadlines that year count the statutory holidays only (holidays package) — add the "
            "year's decision with its source to calendar.yaml",
            year,
        )

    # -- time ----------------------------------------------------------------------------------

    def add_working_time(self, start: datetime, hours: float) -> datetime:
        """The instant ``hours`` of working time after ``start`` (which may lie outside it)."""
        remaining = timedelta(hours=hours)
        local = start.astimezone(self.tz)
        day = local.date()
        self.warn_if_year_unknown(day.year)
        for _ in range(_MAX_SEARCH_DAYS):
            if self.is_working_day(day):
                self.warn_if_year_unknown(day.year)
                for a, b in self.periods:
                    begin = max(datetime.combine(day, a, self.tz), local)
                    end = datetime.combine(day, b, self.tz)
                    if begin >= end:
                        continue
                    if begin + remaining <= end:
                        return begin + remaining
                    remaining -= end - begin
            day += timedelta(days=1)
            local = datetime.combine(day, time(0), self.tz)
        raise ValueError("the working calendar has no working time in ten years")

    def working_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Working time in ``[a, b)`` (zero when b <= a)."""
        total = timedelta(0)
        if b <= a:
            return total
        day = a.astimezone(self.tz).date()
        last = b.astimezone(self.tz).date()
        while day <= last:
            if self.is_working_day(day):
                for p, q in self.periods:
                    lo = max(datetime.combine(day, p, self.tz), a)
                    hi = min(datetime.combine(day, q, self.tz), b)
                    if hi > lo:
                        total += hi - lo
            day += timedelta(days=1)
        return total


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


# -- loading -------------------------------------------------------------------------------------


def load_calendar(path: Path | str = DEFAULT_CALENDAR) -> WorkingCalendar:
    """Parse and check a calendar file (format: docs/agencies.md); a bad file is refused whole."""
    path = Path(path)
    return parse_calendar(yamlfile.read(path, CalendarError), path)


def parse_calendar(raw: Any, path: Path | str = "<calendar>") -> WorkingCalendar:
    return _Parser(Path(path)).calendar(raw)


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> NoReturn:
        raise CalendarError(self.path, where, message)

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {type(value).__name__}")
        return value

    def day(self, value: Any, where: str) -> date:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            self.fail(where, f"{value!r} is not a date YYYY-MM-DD")

    def text(self, d: Mapping[str, Any], key: str, where: str) -> str:
        v = d.get(key)
        if not isinstance(v, str) or not v.strip():
            self.fail(f"{where}.{key}", "missing or not a non-empty string")
        return v.strip()

    def calendar(self, raw: Any) -> WorkingCalendar:
        d = self.mapping(raw, "")
        if d.get("version", 1) != 1:
            self.fail("version", "must be 1")
        try:
            tz = ZoneInfo(str(d.get("timezone", "Asia/Ho_Chi_Minh")))
        except Exception:
            self.fail("timezone", f"unknown time zone {d.get('timezone')!r}")
        country = str(d.get("country", "VN"))
        try:
            holidays.country_holidays(country, years=2026)
        except NotImplementedError:
            self.fail("country", f"the holidays package does not know country {country!r}")
        weekdays = d.get("weekdays", [1, 2, 3, 4, 5])
        if (
            not isinstance(weekdays, list)
            or not weekdays
            or any(not isinstance(w, int) or not 1 <= w <= 7 for w in weekdays)
        ):
            self.fail("weekdays", "ISO weekdays 1 (Monday) … 7, at least one")
        periods = self.periods(d.get("hours", [["07:30", "11:30"], ["13:30", "17:30"]]))
        decisions = self.decisions(d.get("decisions") or {})
        extra = frozenset(
            self.day(h, f"holidays[{i}]") for i, h in enumerate(d.get("holidays") or [])
        )
        return WorkingCalendar(
            tz, frozenset(weekdays), periods, decisions, country=country, extra_holidays=extra
        )

    def periods(self, raw: Any) -> tuple[tuple[time, time], ...]:
        if not isinstance(raw, list) or not raw:
            self.fail("hours", "at least one working period")
        periods: list[tuple[time, time]] = []
        for i, pair in enumerate(raw):
            where = f"hours[{i}]"
            try:
                a, b = (time.fromisoformat(str(x)) for x in pair)
            except (TypeError, ValueError):
                self.fail(where, 'expected ["HH:MM", "HH:MM"]')
            if b <= a or (periods and a < periods[-1][1]):
                self.fail(where, "periods must be increasing and not overlap")
            periods.append((a, b))
        return tuple(periods)

    def decisions(self, raw: Any) -> dict[int, tuple[SwapDecision, ...]]:
        by_year = self.mapping(raw, "decisions")
        out: dict[int, tuple[SwapDecision, ...]] = {}
        for year_key, items in by_year.items():
            where = f"decisions.{year_key}"
            try:
                year = int(year_key)
            except (TypeError, ValueError):
                self.fail(where, "the key must be a year")
            if not isinstance(items, list) or not items:
                self.fail(where, "a list of the year's decisions, at least one (with its source)")
            found = []
            for i, item in enumerate(items):
                found.append(
                    self.decision(year, self.mapping(item, f"{where}[{i}]"), f"{where}[{i}]")
                )
            out[year] = tuple(found)
        return out

    def decision(self, year: int, d: dict[str, Any], where: str) -> SwapDecision:
        def changes(key: str, weekend: bool) -> tuple[DayChange, ...]:
            out = []
            for j, item in enumerate(d.get(key) or []):
                w = f"{where}.{key}[{j}]"
                entry = self.mapping(item, w)
                day = self.day(entry.get("date"), f"{w}.date")
                if day.year != year:
                    self.fail(f"{w}.date", f"{day} is not in {year}")
                if weekend and day.isoweekday() < 6:
                    self.fail(f"{w}.date", f"{day} is a weekday: a make-up day is a weekend day")
                out.append(DayChange(day, self.text(entry, "note", w)))
            return tuple(out)

        return SwapDecision(
            year=year,
            title=self.text(d, "title", where),
            source=self.text(d, "source", where),
            days_off=changes("days_off", weekend=False),
            working_days=changes("working_days", weekend=True),
        )
