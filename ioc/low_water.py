"""Low water: when the tide is next low at a station — the salinity advisory's intake window.

In the dry season the salt wedge rides the flood tide: salinity at an intake peaks an hour or so
after high water and is lowest after low water, so the advice is "lấy nước khi triều xuống" —
take water on the ebb. An advisory needs the next low water at the station's tide reference.

``TidePredictor`` is the small interface the advisory needs (a predicted level per station).
``SemidiurnalTide`` is the stand-in until the harmonic predictor (``ioc/tides.py``, issue 13
part 1) lands: the M2 + S2 curve of the flood simulator — spring high waters near 06:00 and
18:00 local two days after the new moon of 2026-01-18 — which is also the tide the salinity
simulator's wedge follows, so the advice and the simulated salinity agree. Pure: times in,
times out; no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from ioc.devices import Device

M2_PERIOD_S = 12.4206012 * 3600.0
S2_PERIOD_S = 12.0 * 3600.0
# Spring tide: new moon 2026-01-18 19:52 UTC + ~2 days, at an S2 high water (23:00 UTC = 06:00
# local): both constituents peak here, and again every 14.77 days (simulators/flood.py).
SPRING_ANCHOR = datetime(2026, 1, 20, 23, 0, tzinfo=UTC)
S2_OVER_M2 = 0.35  # the flood simulator's amplitude ratio
_STEP_S = 300.0  # search grid; the extremum is then refined to the minute
_HORIZON_S = 27 * 3600.0  # more than two semi-diurnal cycles: a low water is always inside


class TidePredictor(Protocol):
    def level(self, station: str, at: datetime) -> float:
        """Predicted astronomical tide at ``station`` (m about the mean) at ``at``."""
        ...


@dataclass(frozen=True, slots=True)
class SemidiurnalTide:
    """M2 + S2 at unit M2 amplitude, the same phase at every station (lags are per intake)."""

    s2_over_m2: float = S2_OVER_M2

    def level(self, station: str, at: datetime) -> float:
        ts = (at - SPRING_ANCHOR).total_seconds()
        return math.cos(2 * math.pi * ts / M2_PERIOD_S) + self.s2_over_m2 * math.cos(
            2 * math.pi * ts / S2_PERIOD_S
        )

    def normalised(self, at: datetime) -> float:
        """The level scaled to −1 (neap-less lowest) … +1 (spring high water)."""
        return self.level("", at) / (1.0 + self.s2_over_m2)


def next_low_water(
    tide: TidePredictor, station: str, after: datetime, lag: timedelta = timedelta(0)
) -> datetime:
    """The first low water at ``station`` after ``after``, shifted by ``lag`` (an intake up a
    canal sees the tide later). Found on a 5-minute grid, then refined to the minute."""
    start = after - lag
    prev = tide.level(station, start)
    falling = tide.level(station, start + timedelta(seconds=_STEP_S)) < prev
    t = start
    steps = int(_HORIZON_S // _STEP_S)
    for _ in range(steps):
        nxt = t + timedelta(seconds=_STEP_S)
        level = tide.level(station, nxt)
        if falling and level > prev:
            best = min(
                (t + timedelta(minutes=m) for m in range(-5, 6)),
                key=lambda x: tide.level(station, x),
            )
            return max(best, start) + lag
        falling = level < prev
        prev, t = level, nxt
    raise ValueError(f"no low water at {station!r} within 27 h of {after.isoformat()}")


def low_water_annotations(
    tide: TidePredictor, attributes: Mapping[str, Any], at: datetime, tz: tzinfo
) -> dict[str, str]:
    """The advisory's annotations for a salinity station (its ``tide_station`` and
    ``tide_lag_min`` attributes) at ``at``: the next low water in local time (+07:00)."""
    station = str(attributes.get("tide_station") or "")
    if not station:
        return {}
    lag = timedelta(minutes=float(attributes.get("tide_lag_min") or 0))
    low = next_low_water(tide, station, at, lag).astimezone(tz)
    when = low.strftime("%H:%M %d/%m")
    return {
        "next_low_water": low.isoformat(timespec="minutes"),
        "advice_vi": f"Lấy nước khi triều xuống: nước ròng kế tiếp khoảng {when}",
        "advice_en": f"Take water on the ebb: next low water about {when}",
    }


LOW_WATER = "low-water"  # the `advisory` label value of rules that want the intake window


@dataclass(frozen=True, slots=True)
class LowWaterAdvisor:
    """The rules engine's advisor (``rules.engine.Advisor``) for ``advisory: low-water``."""

    timezone: str = "Asia/Ho_Chi_Minh"  # the site's (site file, site.timezone)
    tide: TidePredictor = field(default_factory=SemidiurnalTide)

    def __call__(self, advisory: str, device: Device, t: float) -> Mapping[str, str]:
        if advisory != LOW_WATER:
            return {}
        at = datetime.fromtimestamp(t, UTC)
        return low_water_annotations(self.tide, device.attributes, at, ZoneInfo(self.timezone))
