"""/api/v1/devices: register, list, get, readings."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from ioc.api import tides as tides_api
from ioc.api.auth import require_provisioning, require_viewer
from ioc.catalogue import KINDS, METRICS
from ioc.devices import Device, DeviceError
from ioc.storage import devices as store
from ioc.storage.readings import QueryError, ReadingQuery, parse_bucket, query_readings

# Viewers read devices and readings; registering one is for administrators and the installers'
# device-provisioning tokens.
router = APIRouter(prefix="/api/v1/devices", tags=["devices"])


class DeviceIn(BaseModel):
    id: str = Field(examples=["vt-flood-01"])
    kind: str = Field(examples=["flood"], description=f"one of {sorted(KINDS)}")
    city: str = Field(examples=["vi-thanh"])
    ward: str | None = Field(None, examples=["phuong-5"])
    lat: float = Field(ge=-90, le=90, examples=[9.784])
    lon: float = Field(ge=-180, le=180, examples=[105.470])
    name: str = Field(min_length=1, max_length=200)
    attributes: dict[str, Any] = Field(default_factory=dict)


class DeviceOut(DeviceIn):
    pass


class DeviceListItem(DeviceOut):
    """With ``with_state=true``: what a screen needs to draw the device at once."""

    online: bool | None = None
    last_seen_at: datetime | None = None
    latest: dict[str, dict[str, Any]] | None = None


class DeviceDetail(DeviceOut):
    online: bool | None
    status_changed_at: datetime | None
    last_seen_at: datetime | None
    latest: dict[str, dict[str, Any]]


class Point(BaseModel):
    time: datetime
    value: float
    min: float | None = None
    max: float | None = None
    count: int | None = None


class Readings(BaseModel):
    device_id: str
    metric: str
    bucket: str | None
    points: list[Point]


def _out(d: Device) -> DeviceOut:
    return DeviceOut(
        id=d.id,
        kind=d.kind,
        city=d.city,
        ward=d.ward,
        lat=d.lat,
        lon=d.lon,
        name=d.name,
        attributes=d.attributes,
    )


def _unprocessable(field: str, message: str) -> HTTPException:
    return HTTPException(422, f"{field}: {message}")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DeviceOut,
    dependencies=[Depends(require_provisioning)],
)
async def register_device(body: DeviceIn, request: Request) -> DeviceOut:
    runtime = request.app.state.runtime
    try:
        device = Device(**body.model_dump())
    except DeviceError as exc:
        raise _unprocessable(f"body.{exc.field}", exc.message) from None
    city = runtime.site.cities_by_id.get(device.city)
    if city is None:
        raise _unprocessable(
            "body.city", f"{device.city!r} is not one of {sorted(runtime.site.cities_by_id)}"
        )
    if device.ward is not None:
        unit = next((w for w in city.wards if device.ward in w.ids), None)
        if unit is None:
            raise _unprocessable("body.ward", f"{device.ward!r} is not a ward of {device.city}")
        # a former ward id (before July 2025) is stored as the unit that absorbed it
        device = dataclasses.replace(device, ward=unit.id)
    async with runtime.pool.connection() as conn:
        if not await store.insert_device(conn, device):
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"id: device {device.id!r} already exists"
            )
    return _out(device)


@router.get(
    "",
    response_model=list[DeviceListItem],
    response_model_exclude_unset=True,
    dependencies=[Depends(require_viewer)],
)
async def list_devices(
    request: Request,
    kind: str | None = None,
    city: str | None = None,
    ward: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    after: Annotated[str | None, Query(description="id to continue after (pagination)")] = None,
    with_state: Annotated[
        bool, Query(description="add online, last_seen_at and the latest value of each metric")
    ] = False,
) -> list[DeviceListItem]:
    async with request.app.state.runtime.pool.connection() as conn:
        found = await store.list_devices(
            conn, kind=kind, city=city, limit=limit, after=after,
            # a former ward id finds its unit's devices (and rows stored under the old id)
            ward=request.app.state.runtime.site.ward_ids(ward) if ward else None,
        )  # fmt: skip
        states = await store.live_states(conn, [d.id for d in found]) if with_state else {}
    return [DeviceListItem(**_out(d).model_dump(), **states.get(d.id, {})) for d in found]


@router.get("/{device_id}", response_model=DeviceDetail, dependencies=[Depends(require_viewer)])
async def get_device(device_id: str, request: Request) -> DeviceDetail:
    async with request.app.state.runtime.pool.connection() as conn:
        device = await store.get_device(conn, device_id)
        if device is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"device_id: no device {device_id!r}")
        state = await store.device_live_state(conn, device_id)
    return DeviceDetail(**_out(device).model_dump(), **state)


@router.get(
    "/{device_id}/readings", response_model=Readings, dependencies=[Depends(require_viewer)]
)
async def get_readings(
    device_id: str,
    request: Request,
    metric: Annotated[
        str,
        Query(description="a metric of the device's kind; flood devices also "
                          "water_level_residual_m (observed − predicted tide, computed)"),
    ],
    from_: Annotated[datetime, Query(alias="from", description="RFC 3339 with offset")],
    to: Annotated[datetime | None, Query(description="RFC 3339 with offset; default now")] = None,
    bucket: Annotated[str | None, Query(description="e.g. 30s, 5m, 1h, 1d; omit for raw")] = None,
) -> Readings:
    runtime = request.app.state.runtime
    async with runtime.pool.connection() as conn:
        device = await store.get_device(conn, device_id)
        if device is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"device_id: no device {device_id!r}")
        # The residual (observed − predicted tide) is computed, not stored: read the level.
        residual = device.kind == "flood" and metric == tides_api.RESIDUAL_METRIC
        if residual:
            tide = tides_api.device_tide(tides_api.predictor(request), device)
        elif metric not in METRICS[device.kind]:
            raise _unprocessable(
                "metric",
                f"{metric!r} is not a {device.kind} metric: {sorted(METRICS[device.kind])}",
            )
        try:
            q = ReadingQuery(
                device_id=device_id,
                metric="water_level_m" if residual else metric,
                start=from_,
                end=to or datetime.now().astimezone(),
                bucket=parse_bucket(bucket) if bucket else None,
            )
            rows = await query_readings(conn, runtime.flavour, q)
        except QueryError as exc:
            raise _unprocessable(exc.field, exc.message) from None
    if residual:
        rows = tides_api.residual_points(tide, rows, q.bucket)
    return Readings(
        device_id=device_id, metric=metric, bucket=bucket, points=[Point(**r) for r in rows]
    )
