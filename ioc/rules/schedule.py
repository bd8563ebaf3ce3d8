"""When a rule is in force: local time windows, weekdays, months (the rainy season), night at the
device (between sunset and sunrise, computed for the device's position). Local means the site's
time zone, Asia/Ho_Chi_Minh (UTC+7, no daylight saving). Outside its schedule a rule's condition
counts as false, so its alerts resolve and nothing new fires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from astral import Observer
from astral.sun import sunrise, sunset

from ioc.core.localtime import FIXED_OFFSET, OFFSET_S

_HM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Schedule:
    windows: tuple[tuple[int, int], ...] = ()  # minutes of the local day [start, end), may wrap
    weekdays: frozenset[int] = frozenset()  # ISO 1 = Monday
    months: frozenset[int] = frozenset()
    sun: str | None = None  # "night" or "day" at the device

    def active(self, t: float, lat: float, lon: float) -> bool:
        # hot path (every reading of a scheduled rule): integer arithmetic where it suffices
        if self.months or self.weekdays:
            local = datetime.fromtimestamp(t, FIXED_OFFSET)
            if self.months and local.month not in self.months:
                return False
            if self.weekdays and local.isoweekday() not in self.weekdays:
                return False
        if self.windows:
            minute = int((t + OFFSET_S) // 60) % 1440
            if not any(_in_window(minute, a, b) for a, b in self.windows):
                return False
        if self.sun is not None:
            night = is_night(t, lat, lon)
            if night != (self.sun == "night"):
                return False
        return True


def _in_window(minute: int, start: int, end: int) -> bool:
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end  # wraps midnight, e.g. 18:00-06:00




@lru_cache(maxsize=4096)
def _sun_times(local_day: int, lat: float, lon: float) -> tuple[float, float]:
    day = date.fromordinal(date(1970, 1, 1).toordinal() + local_day)
    obs = Observer(latitude=lat, longitude=lon)
    return (
        sunrise(obs, day, tzinfo=FIXED_OFFSET).timestamp(),
        sunset(obs, day, tzinfo=FIXED_OFFSET).timestamp(),
    )


def is_night(t: float, lat: float, lon: float) -> bool:
    # Positions are rounded to ~1 km so the cache serves a whole street of lamps.
    rise, set_ = _sun_times(int((t + OFFSET_S) // 86400), round(lat, 2), round(lon, 2))
    return t < rise or t >= set_


def parse_schedule(raw: Any) -> Schedule:
    if not isinstance(raw, dict):
        raise ScheduleError("a schedule is a mapping (between, weekdays, months, sun)")
    unknown = set(raw) - {"between", "weekdays", "months", "sun"}
    if unknown:
        raise ScheduleError(f"unknown keys {sorted(unknown)} (between, weekdays, months, sun)")
    windows: list[tuple[int, int]] = []
    between = raw.get("between", [])
    for w in between if isinstance(between, list) else [between]:
        if not isinstance(w, str) or "-" not in w:
            raise ScheduleError(f"between {w!r} must look like '18:00-06:00'")
        a, b = (p.strip() for p in w.split("-", 1))
        ma, mb = _HM.match(a), _HM.match(b)
        if not ma or not mb:
            raise ScheduleError(f"between {w!r} must look like '18:00-06:00'")
        windows.append((int(ma[1]) * 60 + int(ma[2]), int(mb[1]) * 60 + int(mb[2])))
    weekdays = raw.get("weekdays", [])
    if not isinstance(weekdays, list) or not all(
        isinstance(d, int) and 1 <= d <= 7 for d in weekdays
    ):
        raise ScheduleError("weekdays is a list of 1 (Monday) … 7 (Sunday)")
    months = raw.get("months", [])
    if not isinstance(months, list) or not all(isinstance(m, int) and 1 <= m <= 12 for m in months):
        raise ScheduleError("months is a list of 1 … 12 (the rainy season is 5 … 11)")
    sun = raw.get("sun")
    if sun not in (None, "night", "day"):
        raise ScheduleError(f"sun {sun!r} must be night or day")
    return Schedule(tuple(windows), frozenset(weekdays), frozenset(months), sun)
