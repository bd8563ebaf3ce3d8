"""Street-lighting energy for the wall screen: each cabinet's energy tonight against the same
hours a week ago (``GET /api/v1/lighting/energy``).

"Tonight" is the lighting night that began most recently at 18:00 in Asia/Ho_Chi_Minh, up to now
(at most the twelve hours to 06:00); a week ago is the same clock window seven days earlier, so
the two figures cover equal hours. A cabinet's energy in a window is the rise of its
``energy_kwh`` counter (last minus first reading in the window), read from raw readings — a
dozen cabinets reporting once a minute make a few thousand rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from ioc.api.auth import Caller, require_viewer
from ioc.api.context import runtime_of
from ioc.core.localtime import SITE_ZONE

router = APIRouter(prefix="/api/v1/lighting", tags=["lighting"])
NIGHT_STARTS = time(18, 0)
NIGHT_LENGTH = timedelta(hours=12)


def night_window(now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the lighting night that began most recently at 18:00 local, up to now."""
    local = now.astimezone(SITE_ZONE)
    start = datetime.combine(local.date(), NIGHT_STARTS, SITE_ZONE)
    if start > local:
        start -= timedelta(days=1)
    return start, min(local, start + NIGHT_LENGTH)


_ENERGY_SQL = """
    SELECT r.device_id,
           max(r.value) FILTER (WHERE r.time >= %(a)s AND r.time < %(b)s)
         - min(r.value) FILTER (WHERE r.time >= %(a)s AND r.time < %(b)s) AS tonight,
           max(r.value) FILTER (WHERE r.time >= %(wa)s AND r.time < %(wb)s)
         - min(r.value) FILTER (WHERE r.time >= %(wa)s AND r.time < %(wb)s) AS last_week
    FROM readings r JOIN devices d ON d.id = r.device_id
    WHERE d.kind = 'cabinet' AND r.metric = 'energy_kwh'
      AND ((r.time >= %(a)s AND r.time < %(b)s) OR (r.time >= %(wa)s AND r.time < %(wb)s))
    GROUP BY r.device_id ORDER BY r.device_id"""


@router.get("/energy")
async def energy(request: Request, _: Annotated[Caller, Depends(require_viewer)]) -> dict[str, Any]:
    """kWh per cabinet tonight and in the same hours a week ago (null: no readings then)."""
    a, b = night_window(datetime.now(UTC))
    week = timedelta(days=7)
    params = {"a": a, "b": b, "wa": a - week, "wb": b - week}
    async with runtime_of(request).pool.connection() as conn:
        rows = await (await conn.execute(_ENERGY_SQL, params)).fetchall()
    cabinets = [
        {"cabinet": device_id, "tonight_kwh": tonight, "last_week_kwh": last_week}
        for device_id, tonight, last_week in rows
    ]

    def total(key: str) -> float | None:
        values = [c[key] for c in cabinets if c[key] is not None]
        return sum(values) if values else None

    return {
        "from": a.isoformat(), "to": b.isoformat(),
        "last_week_from": (a - week).isoformat(), "last_week_to": (b - week).isoformat(),
        "tonight_kwh": total("tonight_kwh"), "last_week_kwh": total("last_week_kwh"),
        "cabinets": cabinets,
    }  # fmt: skip
