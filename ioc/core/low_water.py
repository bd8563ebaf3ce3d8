"""Low water: when the tide is next low at a salinity station — the advisory's intake window.

In the dry season the salt wedge rides the flood tide: salinity at an intake peaks near high
water and is lowest after low water, so the advice is "lấy nước khi triều xuống" — take water
on the ebb. A station names its tide reference (``tide_station``, a station of the tide data
file) and how much later the intake feels it (``tide_lag_min``); the next low water there is
the first predicted low water of that station (``ioc.core.tides``, harmonic prediction) after now,
shifted by the lag. The salinity simulator rides the same prediction, so in simulation the
advice and the salinity agree. Pure: times in, times out; no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from ioc.core.devices import Device
from ioc.core.tides import TidePredictor, UnknownStation

# Longer than a day plus a semi-diurnal cycle: a low water always falls inside, even with the
# diurnal inequality of the West Sea tide at Vị Thanh.
HORIZON = timedelta(hours=27)
LOW_WATER = "low-water"  # the `advisory` label value of rules that want the intake window


def next_low_water(
    tides: TidePredictor, station: str, after: datetime, lag: timedelta = timedelta(0)
) -> datetime | None:
    """The first predicted low water at ``station`` felt after ``after`` by an intake ``lag``
    behind it; None when the station has no prediction or none falls within the horizon."""
    start = after - lag
    try:
        extremes = tides.view(station).extremes(start, start + HORIZON)
    except UnknownStation:
        return None
    low = next((e.time for e in extremes if e.kind == "low" and e.time > start), None)
    return None if low is None else low + lag


def low_water_annotations(
    tides: TidePredictor, attributes: Mapping[str, Any], at: datetime, tz: tzinfo
) -> dict[str, str]:
    """The advisory's annotations for a salinity station (its ``tide_station`` and
    ``tide_lag_min`` attributes) at ``at``: the next low water in local time (+07:00)."""
    station = str(attributes.get("tide_station") or "")
    if not station:
        return {}
    lag = timedelta(minutes=float(attributes.get("tide_lag_min") or 0))
    low = next_low_water(tides, station, at, lag)
    if low is None:
        return {}
    local = low.astimezone(tz)
    when = local.strftime("%H:%M %d/%m")
    return {
        "next_low_water": local.isoformat(timespec="minutes"),
        "advice_vi": f"Lấy nước khi triều xuống: nước ròng kế tiếp khoảng {when}",
        "advice_en": f"Take water on the ebb: next low water about {when}",
    }


@dataclass(frozen=True, slots=True)
class LowWaterAdvisor:
    """The rules engine's advisor (``ioc.rules.engine.Advisor``) for ``advisory: low-water``."""

    tides: TidePredictor
    timezone: str = "Asia/Ho_Chi_Minh"  # the site's (site file, site.timezone)

    def __call__(self, advisory: str, device: Device, t: float) -> Mapping[str, str]:
        if advisory != LOW_WATER:
            return {}
        at = datetime.fromtimestamp(t, UTC)
        return low_water_annotations(self.tides, device.attributes, at, ZoneInfo(self.timezone))
