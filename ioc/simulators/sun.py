"""Sunrise and sunset at a device's coordinates (astral), cached per place and local day.

Lamps switch on at sunset and off at sunrise computed for where they stand. Positions are
rounded to 0.01° (≈ 1.1 km, a few seconds of sunset time at this latitude) so a street of lamps
shares one computation.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache

from astral import Observer
from astral.sun import sunrise, sunset

from ioc.simulators.model import LOCAL_TZ


@lru_cache(maxsize=65_536)
def _sun_times(lat: float, lon: float, day: date) -> tuple[datetime, datetime]:
    observer = Observer(latitude=lat, longitude=lon)
    return sunrise(observer, day, tzinfo=LOCAL_TZ), sunset(observer, day, tzinfo=LOCAL_TZ)


def sun_times(lat: float, lon: float, day: date) -> tuple[datetime, datetime]:
    """(sunrise, sunset) of the local (+07:00) calendar day ``day`` at the point, aware datetimes.

    Standard definitions (upper limb on the horizon, 0.833° refraction), as astral computes them.
    """
    return _sun_times(round(lat, 2), round(lon, 2), day)


def is_night(lat: float, lon: float, t: datetime) -> bool:
    """Whether the sun is down at ``t`` (before today's sunrise or after today's sunset)."""
    local = t.astimezone(LOCAL_TZ)
    rise, set_ = sun_times(lat, lon, local.date())
    return local < rise or local >= set_
