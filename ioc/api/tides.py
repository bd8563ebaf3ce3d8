"""Predicted tide at a flood device (``GET /api/v1/flood/stations/{device_id}/tide``) and the
residual (observed − predicted) that the readings API serves as ``water_level_residual_m``.

The prediction is ioc.core.tides's (harmonic constituents of the site's tide data file, UTide); a
device is served when it is a station with constituents, a gauge of the tide data, or a flood
device whose ``station`` attribute names a station with constituents.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel

from ioc.api.auth import require_viewer
from ioc.api.context import runtime_of
from ioc.core.devices import Device
from ioc.core.localtime import SITE_ZONE
from ioc.core.tides import MAX_RANGE_DAYS, GaugeTide, TideError, TidePredictor, UnknownStation
from ioc.storage import devices as store

router = APIRouter(prefix="/api/v1/flood", tags=["flood"])
STEP = timedelta(minutes=10)  # the points' spacing
DEFAULT_SPAN = timedelta(days=2)
RESIDUAL_METRIC = "water_level_residual_m"


class TidePoint(BaseModel):
    time: datetime
    level_m: float


class TideExtreme(BaseModel):
    time: datetime
    level_m: float
    kind: Literal["high", "low"]


class Tide(BaseModel):
    station: str
    points: list[TidePoint]
    extremes: list[TideExtreme]


def predictor(request: Request) -> TidePredictor:
    """The app's tide predictor (the site's tide data), built on first use."""
    state = request.app.state
    pred = getattr(state, "tides", None)
    if pred is None:
        pred = TidePredictor.from_site(state.runtime.site)
        state.tides = pred
    return pred


def device_tide(pred: TidePredictor, device: Device) -> GaugeTide:
    """The device's predicted tide; 404 naming ``device_id`` when it has none."""
    if device.kind != "flood":
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"device_id: {device.id!r} is a {device.kind} device"
        )
    try:
        return pred.for_device(device)
    except UnknownStation:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"device_id: no tide data for {device.id!r}"
        ) from None


def _unprocessable(field: str, message: str) -> HTTPException:
    return HTTPException(422, f"{field}: {message}")


def _local(t: datetime) -> datetime:
    return t.astimezone(SITE_ZONE)


@router.get(
    "/stations/{device_id}/tide", response_model=Tide, dependencies=[Depends(require_viewer)]
)
async def get_tide(
    device_id: str,
    request: Request,
    from_: Annotated[
        datetime | None, Query(alias="from", description="RFC 3339 with offset; default now")
    ] = None,
    to: Annotated[
        datetime | None,
        Query(
            description=f"RFC 3339 with offset; default from + 2 days; at most "
            f"{MAX_RANGE_DAYS:g} days after from"
        ),
    ] = None,
) -> Tide:
    """Predicted astronomical tide: points every 10 minutes and the high and low waters."""
    start = from_ or datetime.now(SITE_ZONE).replace(second=0, microsecond=0)
    if start.tzinfo is None:
        raise _unprocessable("from", "must carry a UTC offset")
    end = to or start + DEFAULT_SPAN
    if end.tzinfo is None:
        raise _unprocessable("to", "must carry a UTC offset")
    if end <= start:
        raise _unprocessable("to", "must be later than 'from'")
    if end - start > timedelta(days=MAX_RANGE_DAYS):
        raise _unprocessable("to", f"the range is limited to {MAX_RANGE_DAYS:g} days")
    if not (1970 <= start.year and end.year <= 2200):
        raise _unprocessable("from", "outside 1970..2200")
    runtime = runtime_of(request)
    async with runtime.pool.connection() as conn:
        device = await store.get_device(conn, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"device_id: no device {device_id!r}")
    tide = device_tide(predictor(request), device)
    n = int((end - start) / STEP) + 1
    times = [start + i * STEP for i in range(n) if start + i * STEP <= end]
    try:
        levels = tide.level_m(np.array([t.timestamp() for t in times]))
        extremes = tide.extremes(start, end)
    except TideError as exc:
        raise _unprocessable(exc.where, exc.message) from None
    return Tide(
        station=device.id,
        points=[
            TidePoint(time=_local(t), level_m=round(float(v), 3))
            for t, v in zip(times, levels, strict=True)
        ],
        extremes=[
            TideExtreme(time=_local(e.time), level_m=round(e.level_m, 3), kind=e.kind)
            for e in extremes
        ],
    )


def residual_points(
    tide: GaugeTide, rows: list[dict[str, Any]], bucket: timedelta | None
) -> list[dict[str, Any]]:
    """``water_level_m`` rows (raw or bucketed) turned into residuals: observed − predicted.

    Raw: each reading minus the prediction at its time. Bucketed: the prediction averaged over
    the bucket (every minute, at most 60 samples) is subtracted from the bucket's mean, min and
    max alike — exact for the mean of evenly spaced readings, an approximation for min and max
    (ask for raw readings for exact extremes).
    """
    if not rows:
        return []
    if bucket is None:
        pred = tide.level_m(np.array([r["time"].timestamp() for r in rows]))
        return [
            {**r, "value": round(float(r["value"] - p), 4)} for r, p in zip(rows, pred, strict=True)
        ]
    width = bucket.total_seconds()
    k = int(min(60, max(1, width // 60)))
    offsets = (np.arange(k) + 0.5) * (width / k)
    starts = np.array([r["time"].timestamp() for r in rows])
    pred = tide.level_m((starts[:, None] + offsets[None, :]).ravel()).reshape(len(rows), k)
    mean = pred.mean(axis=1)
    out = []
    for r, p in zip(rows, mean, strict=True):
        item = {**r, "value": round(float(r["value"] - p), 4)}
        for key in ("min", "max"):
            if item.get(key) is not None:
                item[key] = round(float(item[key] - p), 4)
        out.append(item)
    return out
