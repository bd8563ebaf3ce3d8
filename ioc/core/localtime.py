"""The site's time: its zone, and how a time is written for people and for other systems.

Operators read Asia/Ho_Chi_Minh (``IOC_…``-independent: the site's zone is a fact of the place).
Vietnam keeps +07:00 all year (no daylight saving since 1975), so the hot loops of the rule
engine and the simulators may use the fixed offset (:data:`FIXED_OFFSET`, :data:`OFFSET_S`) —
exact here and cheaper than a zoneinfo lookup per reading; everything else uses
:data:`SITE_ZONE`. Times in JSON are ISO 8601 with the +07:00 offset (:func:`iso_local`); the
Alertmanager webhook format wants UTC with ``Z`` (:func:`iso_utc`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final
from zoneinfo import ZoneInfo

from ioc.core.settings import DISPLAY_TIMEZONE

SITE_ZONE: Final = ZoneInfo(DISPLAY_TIMEZONE)
OFFSET_S: Final = 7 * 3600
FIXED_OFFSET: Final = timezone(timedelta(seconds=OFFSET_S), "ICT")


def local(t: datetime) -> datetime:
    """``t`` (aware) in the site's zone."""
    return t.astimezone(SITE_ZONE)


def iso_local(t: datetime, timespec: str = "auto") -> str:
    """``2026-10-27T17:40:00+07:00``: ISO 8601 in the site's zone."""
    return t.astimezone(SITE_ZONE).isoformat(timespec=timespec)


def iso_value(value: Any) -> Any:
    """A database row's value for JSON: datetimes as :func:`iso_local`, the rest unchanged."""
    return iso_local(value) if isinstance(value, datetime) else value


def iso_utc(t: datetime) -> str:
    """``2026-10-27T10:40:00Z``: ISO 8601 in UTC with ``Z``."""
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def as_local(t: datetime) -> datetime:
    """A naive time read as the site's local time; an aware one unchanged."""
    return t if t.tzinfo else t.replace(tzinfo=SITE_ZONE)
