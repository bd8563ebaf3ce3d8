"""/api/v1/devices: register, import, edit, decommission, list, get, readings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from ioc.api import tides as tides_api
from ioc.api.auth import require_admin, require_provisioning, require_viewer
from ioc.api.context import runtime_of
from ioc.core.catalogue import KINDS, METRICS
from ioc.core.devices import Device, DeviceError
from ioc.provision import lifecycle
from ioc.storage import devices as store
from ioc.storage.readings import QueryError, ReadingQuery, parse_bucket, query_readings

# Viewers read devices and readings; registering or editing one is for administrators and the
# installers' device-provisioning tokens; a bulk import and a decommission, administrators only.
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
    decommissioned_at: datetime | None = Field(
        None, description="when the device was taken out of service; null while in service"
    )
    decommission_reason: str | None = None


class DevicePatch(BaseModel):
    """The fields given replace the device's; ``attributes`` is merged (RFC 7396: a key set to
    null is removed). ``id`` and ``kind`` cannot change. The result is checked as a
    registration is (a former ward id is stored as its current unit)."""

    name: str | None = Field(None, min_length=1, max_length=200)
    city: str | None = None
    ward: str | None = Field(None, examples=["phuong-vi-tan"])
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    attributes: dict[str, Any] | None = None
    id: str | None = Field(None, description="refused: an id cannot change")
    kind: str | None = Field(None, description="refused: a kind cannot change")


class Decommission(BaseModel):
    reason: str | None = Field(None, max_length=500, examples=["thay thế bằng vt-flood-12"])


class ImportRow(BaseModel):
    row: int = Field(description="1-based record number (CSV: n-th line after the header)")
    id: str | None
    result: Literal["created", "updated", "unchanged", "refused"]
    field: str | None = Field(None, description="refused: the offending field")
    reason: str | None = Field(None, description="refused: what is wrong")


class ImportResult(BaseModel):
    dry_run: bool
    created: int
    updated: int
    unchanged: int
    refused: int
    rows: list[ImportRow]


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


def _out(d: Device, state: lifecycle.Registered | None = None) -> DeviceOut:
    return DeviceOut(
        id=d.id,
        kind=d.kind,
        city=d.city,
        ward=d.ward,
        lat=d.lat,
        lon=d.lon,
        name=d.name,
        attributes=d.attributes,
        decommissioned_at=state.decommissioned_at if state else None,
        decommission_reason=state.decommission_reason if state else None,
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
    runtime = runtime_of(request)
    async with runtime.pool.connection() as conn:
        try:
            device = await lifecycle.register(conn, runtime.site, body.model_dump())
        except lifecycle.Decommissioned as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, f"id: {exc}") from None
        except lifecycle.AlreadyRegistered as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        except DeviceError as exc:
            raise _unprocessable(f"body.{exc.field}", exc.message) from None
    return _out(device)


_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "description": "A JSON array of devices (the registration's fields), or CSV with a "
        "header line: id,kind,city,ward,name,lat,lon and attributes as one JSON object in "
        "`attributes` and/or one column each as `attributes.<key>` (docs/devices.md).",
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/DeviceIn"}}
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": "id,kind,city,ward,name,lat,lon,attributes.station\n"
                "vt-flood-20,flood,vi-thanh,phuong-vi-tan,Cống Cái Nhúc,9.78,105.46,vi-thanh\n",
            },
        },
    }
}


@router.post(
    "/import",
    response_model=ImportResult,
    dependencies=[Depends(require_admin)],
    openapi_extra=_IMPORT_BODY,
    summary="Bulk import (CSV or JSON): a result per row, one transaction",
)
async def import_devices(
    request: Request,
    dry_run: Annotated[
        bool, Query(description="check every row and report, write nothing")
    ] = False,
) -> ImportResult:
    """Rows are created, updated (a device already registered), unchanged, or refused with the
    row number, field and reason; one bad row refuses only itself. The accepted rows are
    written in one transaction. At most 10,000 rows per request; one request counts once
    against the rate limit."""
    runtime = runtime_of(request)
    media = request.headers.get("content-type", "application/json")
    try:
        rows = lifecycle.parse_rows(await request.body(), lifecycle.format_of(media))
    except UnicodeDecodeError as exc:
        raise _unprocessable("body", f"not UTF-8 text: {exc.reason}") from None
    except lifecycle.ImportFileError as exc:
        raise _unprocessable("body", str(exc)) from None
    async with runtime.pool.connection() as conn:
        report = await lifecycle.import_devices(conn, runtime.site, rows, dry_run=dry_run)
    return ImportResult(
        dry_run=dry_run,
        created=report.count("created"),
        updated=report.count("updated"),
        unchanged=report.count("unchanged"),
        refused=report.count("refused"),
        rows=[ImportRow(**r.as_dict()) for r in report.rows],
    )


@router.patch(
    "/{device_id}", response_model=DeviceOut, dependencies=[Depends(require_provisioning)]
)
async def edit_device(device_id: str, body: DevicePatch, request: Request) -> DeviceOut:
    runtime = runtime_of(request)
    async with runtime.pool.connection() as conn:
        try:
            device = await lifecycle.update(
                conn, runtime.site, device_id, body.model_dump(exclude_unset=True)
            )
        except lifecycle.DeviceNotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"device_id: {exc}") from None
        except lifecycle.Decommissioned as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, f"device_id: {exc}") from None
        except DeviceError as exc:
            raise _unprocessable(f"body.{exc.field}", exc.message) from None
    return _out(device)


@router.post(
    "/{device_id}/decommission",
    response_model=DeviceOut,
    dependencies=[Depends(require_admin)],
    summary="Take a device out of service (readings kept, new messages dead-lettered)",
)
async def decommission_device(
    device_id: str, request: Request, body: Decommission | None = None
) -> DeviceOut:
    """Idempotent: a second call answers with the first time. Ingest dead-letters the device's
    new messages (reason `decommissioned`); the next `ioc devices provision` removes its MQTT
    account; its readings and events stay queryable."""
    runtime = runtime_of(request)
    async with runtime.pool.connection() as conn:
        try:
            state = await lifecycle.decommission(conn, device_id, body.reason if body else None)
        except lifecycle.DeviceNotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"device_id: {exc}") from None
    return _out(state.device, state)


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
    async with runtime_of(request).pool.connection() as conn:
        found = await store.list_devices(
            conn, kind=kind, city=city, limit=limit, after=after,
            # a former ward id finds its unit's devices (and rows stored under the old id)
            ward=runtime_of(request).site.ward_ids(ward) if ward else None,
        )  # fmt: skip
        states = await store.live_states(conn, [d.id for d in found]) if with_state else {}
        kept = await lifecycle.registry(conn, [d.id for d in found])
    return [
        DeviceListItem(**_out(d, kept.get(d.id)).model_dump(), **states.get(d.id, {}))
        for d in found
    ]


@router.get("/{device_id}", response_model=DeviceDetail, dependencies=[Depends(require_viewer)])
async def get_device(device_id: str, request: Request) -> DeviceDetail:
    async with runtime_of(request).pool.connection() as conn:
        device = await store.get_device(conn, device_id)
        if device is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"device_id: no device {device_id!r}")
        state = await store.device_live_state(conn, device_id)
        kept = await lifecycle.registry(conn, [device_id])
    return DeviceDetail(**_out(device, kept.get(device_id)).model_dump(), **state)


@router.get(
    "/{device_id}/readings", response_model=Readings, dependencies=[Depends(require_viewer)]
)
async def get_readings(
    device_id: str,
    request: Request,
    metric: Annotated[
        str,
        Query(
            description="a metric of the device's kind; flood devices also "
            "water_level_residual_m (observed − predicted tide, computed)"
        ),
    ],
    from_: Annotated[datetime, Query(alias="from", description="RFC 3339 with offset")],
    to: Annotated[datetime | None, Query(description="RFC 3339 with offset; default now")] = None,
    bucket: Annotated[str | None, Query(description="e.g. 30s, 5m, 1h, 1d; omit for raw")] = None,
) -> Readings:
    runtime = runtime_of(request)
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
