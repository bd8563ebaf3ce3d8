"""Routing data: which agency handles which category where, by when, and what opens an incident.

Loaded from one YAML file (``ioc/site_data/routing.yaml``, or ``IOC_ROUTING``); every problem is
reported as ``file: where: message`` and a bad file is refused whole. Deadlines are counted
either in calendar hours (emergencies) or in the working calendar of state bodies
(:class:`ioc.core.calendar.WorkingCalendar`, its own data file named by ``calendar:``), in
Asia/Ho_Chi_Minh.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from ioc.core import yamlfile
from ioc.core.calendar import DEFAULT_CALENDAR, CalendarError, WorkingCalendar, load_calendar
from ioc.core.calendar import parse_calendar as _parse_calendar
from ioc.core.site import Site
from ioc.core.yamlfile import DataFileError
from ioc.rules.matchers import Matcher, MatcherError, all_match, parse_matcher

log = logging.getLogger(__name__)

WARD_COMMITTEE = "ward-committee"  # agency placeholder: the People's Committee of the ward
# Placeholders for "the body of the ward the problem is in", by the site file's agency `role`;
# the fallback is who takes it when the place is unknown (a human then routes it by hand).
WARD_PLACEHOLDERS = {
    WARD_COMMITTEE: ("committee", "ioc"),
    "ward-police": ("police", "ioc"),
    "ward-civil-defence": ("civil-defence", "civil-defence"),
}
SEVERITIES = ("info", "warning", "critical")


class RoutingError(DataFileError):
    """A routing file that cannot be used; ``where`` names the entry."""


@dataclass(frozen=True, slots=True)
class Category:
    """An Open311 service: what citizens can report, and who answers for it."""

    code: str
    name_vi: str
    name_en: str
    group: str
    description_vi: str
    description_en: str
    keywords: tuple[str, ...]
    agency: str
    alert_domains: tuple[str, ...]
    public: bool = True
    also: tuple[str, ...] = ()  # agencies notified with the lead agency (incident.notified)


@dataclass(frozen=True, slots=True)
class Assignment:
    """Who does the work (``agency``, which owns the incident and its deadline) and who works
    with it and is told at dispatch (``also``: ``incident.notified`` messages); resolved ids."""

    agency: str
    also: tuple[str, ...] = ()
    route: str | None = None  # the route's note, or None for the category's default


@dataclass(frozen=True, slots=True)
class Deadline:
    """``amount`` calendar hours (``unit == "hours"``) or working hours (``"working_hours"``)."""

    unit: str
    amount: float

    def __str__(self) -> str:
        return f"{self.amount:g} {self.unit.replace('_', ' ')}"


@dataclass(frozen=True, slots=True)
class Route:
    """An exception to a category's agency: for a city and/or ward, for reports whose text holds
    one of ``keywords``, for alerts of the rules in ``alerts``, on the roads in ``roads`` (an
    alert's ``road`` label, or a road name in the report's text). Every condition given must
    hold; keywords and road names compare case-insensitively."""

    category: str
    agency: str
    city: str | None = None
    ward: str | None = None
    keywords: tuple[str, ...] = ()
    alerts: tuple[str, ...] = ()
    roads: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    note: str | None = None

    def applies(
        self,
        category: str,
        city: str | None,
        ward: str | None,
        text: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> bool:
        labels = labels or {}
        folded = text.casefold()
        return (
            self.category == category
            and (self.city is None or self.city == city)
            and (self.ward is None or self.ward == ward)
            and (not self.keywords or any(k.casefold() in folded for k in self.keywords))
            and (not self.alerts or labels.get("alertname") in self.alerts)
            and (
                not self.roads
                or any(
                    r.casefold() == labels.get("road", "").casefold() or r.casefold() in folded
                    for r in self.roads
                )
            )
        )


@dataclass(frozen=True, slots=True)
class AlertIncidentRule:
    matchers: tuple[Matcher, ...]
    category: str | None = None


@dataclass(frozen=True, slots=True)
class Routing:
    categories: tuple[Category, ...]
    routes: tuple[Route, ...]
    deadlines: Mapping[str, Mapping[str, Deadline]]  # category → severity → deadline
    default_deadline: Deadline
    calendar: WorkingCalendar
    pause_in_status: frozenset[str]
    alert_incidents: tuple[AlertIncidentRule, ...]
    join_radius_m: float
    join_window_h: float
    by_code: Mapping[str, Category] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_code", {c.code: c for c in self.categories})

    def category(self, code: str) -> Category:
        try:
            return self.by_code[code]
        except KeyError:
            raise KeyError(f"unknown category {code!r}") from None

    def public_categories(self) -> tuple[Category, ...]:
        return tuple(c for c in self.categories if c.public)

    def assign(
        self,
        code: str,
        city: str | None,
        ward: str | None,
        site: Site,
        *,
        text: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Assignment:
        """Who answers for a problem: the first matching route, else an alert's own ``agency``
        label, else the category's agency. Former ward ids count as their current unit;
        ``ward-committee`` / ``ward-police`` / ``ward-civil-defence`` resolve to that body of the
        ward, former agency ids to the current agency (:meth:`resolve_agency`)."""
        ward = site.current_ward_id(ward)
        category = self.category(code)
        agency, also, note = category.agency, category.also, None
        for route in self.routes:
            if route.applies(code, city, ward, text, labels):
                agency, also, note = route.agency, route.also, route.note or "route"
                break
        else:
            label = (labels or {}).get("agency")
            if label and (label in WARD_PLACEHOLDERS or site.find_agency(label) is not None):
                agency, also = label, ()
        lead = self.resolve_agency(agency, ward, site)
        others = tuple(
            dict.fromkeys(x for a in also if (x := self.resolve_agency(a, ward, site)) != lead)
        )
        return Assignment(lead, others, note)

    @staticmethod
    def resolve_agency(agency: str, ward: str | None, site: Site) -> str:
        """A placeholder to the ward's own body (or its fallback when the ward is unknown or has
        none), a former agency id to the current one; anything else as it is."""
        if agency in WARD_PLACEHOLDERS:
            role, fallback = WARD_PLACEHOLDERS[agency]
            body = site.ward_agency(role, ward)
            return body.id if body is not None else fallback
        return site.current_agency_id(agency) or agency

    def deadline_rule(self, code: str, severity: str) -> Deadline:
        return self.deadlines.get(code, {}).get(severity) or self.deadlines.get(code, {}).get(
            "warning", self.default_deadline
        )

    def deadline(self, code: str, severity: str, start: datetime) -> datetime:
        rule = self.deadline_rule(code, severity)
        if rule.unit == "hours":
            return start + timedelta(hours=rule.amount)
        return self.calendar.add_working_time(start, working_hours(rule, self.calendar))

    def category_for_alert(self, labels: Mapping[str, str]) -> str | None:
        """The category of an incident a firing alert opens, or None if it opens none."""
        for rule in self.alert_incidents:
            if all_match(rule.matchers, labels):
                if rule.category:
                    return rule.category
                domain = labels.get("domain", "")
                return next((c.code for c in self.categories if domain in c.alert_domains), "khac")
        return None

    def category_for_domain(self, domain: str) -> str:
        return next((c.code for c in self.categories if domain in c.alert_domains), "khac")


def load_routing(path: Path | str, site: Site | None = None) -> Routing:
    """Parse and check a routing file; agencies are checked against ``site`` when given."""
    path = Path(path)
    return _Parser(path, site).routing(yamlfile.read(path, RoutingError))


class _Parser:
    def __init__(self, path: Path, site: Site | None) -> None:
        self.path = path
        self.site = site

    def fail(self, where: str, message: str) -> NoReturn:
        raise RoutingError(self.path, where, message)

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {type(value).__name__}")
        return value

    def text(self, d: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
        v = d.get(key, default)
        if not isinstance(v, str) or not v.strip():
            self.fail(f"{where}.{key}", "missing or not a non-empty string")
        return v

    def agency(self, value: str, where: str) -> str:
        if (
            value not in WARD_PLACEHOLDERS
            and self.site is not None
            and self.site.find_agency(value) is None
        ):
            self.fail(where, f"unknown agency {value!r} (not in the site file's agencies)")
        return value

    def agencies(self, d: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
        raw = d.get(key) or []
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            self.fail(f"{where}.{key}", "expected a list of agency ids")
        return tuple(self.agency(x, f"{where}.{key}[{i}]") for i, x in enumerate(raw))

    def words(self, d: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
        raw = d.get(key) or []
        if not isinstance(raw, list) or not all(isinstance(x, str) and x.strip() for x in raw):
            self.fail(f"{where}.{key}", "expected a list of non-empty strings")
        return tuple(x.strip() for x in raw)

    def routing(self, raw: Any) -> Routing:
        top = self.mapping(raw, "")
        if top.get("version") != 1:
            self.fail("version", "must be 1")
        categories = self.categories(top.get("categories"))
        codes = {c.code for c in categories}
        routes = []
        for i, item in enumerate(top.get("routes") or []):
            where = f"routes[{i}]"
            d = self.mapping(item, where)
            code = self.text(d, "category", where)
            if code not in codes:
                self.fail(f"{where}.category", f"unknown category {code!r}")
            known = {"category", "agency", "city", "ward", "keywords", "alerts", "roads", "also",
                     "note"}  # fmt: skip
            for key in d:
                if key not in known:
                    self.fail(f"{where}.{key}", f"unknown field (one of {sorted(known)})")
            ward = d.get("ward")
            if ward is not None and self.site is not None:
                if self.site.find_ward(ward) is None:
                    self.fail(f"{where}.ward", f"unknown ward {ward!r}")
                ward = self.site.current_ward_id(ward)
            routes.append(
                Route(
                    code,
                    self.agency(self.text(d, "agency", where), f"{where}.agency"),
                    d.get("city"),
                    ward,
                    keywords=self.words(d, "keywords", where),
                    alerts=self.words(d, "alerts", where),
                    roads=self.words(d, "roads", where),
                    also=self.agencies(d, "also", where),
                    note=None if d.get("note") is None else str(d["note"]),
                )
            )
        deadlines_raw = self.mapping(top.get("deadlines") or {}, "deadlines")
        default = self.deadline(
            deadlines_raw.get("default", {"working_days": 5}), "deadlines.default"
        )
        deadlines: dict[str, dict[str, Deadline]] = {}
        for code, per_sev in deadlines_raw.items():
            if code == "default":
                continue
            if code not in codes:
                self.fail(f"deadlines.{code}", f"unknown category {code!r}")
            sev_map = self.mapping(per_sev, f"deadlines.{code}")
            for sev, spec in sev_map.items():
                if sev not in SEVERITIES:
                    self.fail(f"deadlines.{code}.{sev}", f"severity must be one of {SEVERITIES}")
                deadlines.setdefault(code, {})[sev] = self.deadline(spec, f"deadlines.{code}.{sev}")
        calendar = self.calendar(top.get("calendar"))
        clock = self.mapping(top.get("clock") or {}, "clock")
        pause = clock.get("pause_in_status") or []
        allowed = {"new", "dispatched", "accepted", "in_progress", "rejected"}
        for s in pause:
            if s not in allowed:
                self.fail("clock.pause_in_status", f"{s!r} is not an open status {sorted(allowed)}")
        alert_rules = []
        for i, item in enumerate(top.get("alert_incidents") or []):
            where = f"alert_incidents[{i}]"
            d = self.mapping(item, where)
            try:
                matchers = tuple(parse_matcher(m) for m in d.get("matchers") or [])
            except MatcherError as exc:
                self.fail(f"{where}.matchers", str(exc))
            cat = d.get("category")
            if cat is not None and cat not in codes:
                self.fail(f"{where}.category", f"unknown category {cat!r}")
            alert_rules.append(AlertIncidentRule(matchers, cat))
        join = self.mapping(top.get("join") or {}, "join")
        radius = join.get("radius_m", 200)
        window = join.get("window_h", 24)
        for key, v in (("radius_m", radius), ("window_h", window)):
            if not isinstance(v, int | float) or v <= 0:
                self.fail(f"join.{key}", "must be a positive number")
        return Routing(
            categories=categories,
            routes=tuple(routes),
            deadlines=deadlines,
            default_deadline=default,
            calendar=calendar,
            pause_in_status=frozenset(pause),
            alert_incidents=tuple(alert_rules),
            join_radius_m=float(radius),
            join_window_h=float(window),
        )

    def categories(self, raw: Any) -> tuple[Category, ...]:
        if not isinstance(raw, list) or not raw:
            self.fail("categories", "must be a non-empty list")
        out: list[Category] = []
        for i, item in enumerate(raw):
            where = f"categories[{i}]"
            d = self.mapping(item, where)
            code = self.text(d, "code", where)
            if any(c.code == code for c in out):
                self.fail(f"{where}.code", f"duplicate category {code!r}")
            out.append(
                Category(
                    code=code,
                    name_vi=self.text(d, "name_vi", where),
                    name_en=self.text(d, "name_en", where),
                    group=self.text(d, "group", where),
                    description_vi=str(d.get("description_vi", "")),
                    description_en=str(d.get("description_en", "")),
                    keywords=tuple(str(k) for k in d.get("keywords") or ()),
                    agency=self.agency(self.text(d, "agency", where), f"{where}.agency"),
                    alert_domains=tuple(str(k) for k in d.get("alert_domains") or ()),
                    public=bool(d.get("public", True)),
                    also=self.agencies(d, "also", where),
                )
            )
        return tuple(out)

    def deadline(self, raw: Any, where: str) -> Deadline:
        d = self.mapping(raw, where)
        if len(d) != 1:
            self.fail(where, "give exactly one of hours, working_hours, working_days")
        ((unit, amount),) = d.items()
        if not isinstance(amount, int | float) or not math.isfinite(amount) or amount <= 0:
            self.fail(f"{where}.{unit}", "must be a positive number")
        if unit == "hours":
            return Deadline("hours", float(amount))
        if unit == "working_hours":
            return Deadline("working_hours", float(amount))
        if unit == "working_days":
            return Deadline("working_days", float(amount))
        self.fail(where, f"unknown unit {unit!r}: hours, working_hours or working_days")

    def calendar(self, raw: Any) -> WorkingCalendar:
        """``calendar: calendar.yaml`` (a file: beside this one, else the packaged one of that
        name — so a copy of the packaged routing file elsewhere keeps working), an inline mapping
        of the same format, or nothing: the packaged ioc/site_data/calendar.yaml."""
        try:
            if raw is None:
                return load_calendar(DEFAULT_CALENDAR)
            if isinstance(raw, str):
                beside = self.path.parent / raw
                packaged = DEFAULT_CALENDAR.parent / raw
                return load_calendar(
                    beside if beside.exists() or not packaged.exists() else packaged
                )
            return _parse_calendar(self.mapping(raw, "calendar"), self.path)
        except CalendarError as exc:
            self.fail("calendar", str(exc))


def working_hours(rule: Deadline, calendar: WorkingCalendar) -> float:
    """Working hours a working-time deadline stands for (days × the calendar's day length)."""
    return rule.amount * calendar.hours_per_day if rule.unit == "working_days" else rule.amount
