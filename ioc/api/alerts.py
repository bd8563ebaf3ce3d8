"""/api/v1/alerts, /api/v1/silences, /api/v1/maintenance-windows: the operators' alert actions.

Semantics are Alertmanager's (docs/rules.md): an alert is keyed by its labels; silences and
maintenance windows mute matching alerts without changing their state; acknowledgement and
resolve-by-hand are this IOC's additions, recorded with who, when and why in the alert's history.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ioc.alerting import store
from ioc.alerting.announce import announce_rows
from ioc.api.auth import Caller, require_operator, require_viewer
from ioc.api.context import runtime_of
from ioc.rules.matchers import MatcherError, parse_matcher

# Viewers read alerts, silences and windows; operators (and admins) act on them.
router = APIRouter(prefix="/api/v1", tags=["alerts"], dependencies=[Depends(require_viewer)])

STATES = ("pending", "firing", "resolved")


class AlertOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    fingerprint: str
    rule: str
    state: str = Field(description="pending, firing or resolved")
    severity: str = Field(description="info, warning or critical")
    labels: dict[str, str]
    annotations: dict[str, str] = Field(description="summary_vi, summary_en, ...")
    device_id: str | None
    city: str | None
    ward: str | None
    value: float | None
    active_at: str = Field(description="when the condition became true (pending)")
    started_at: str | None = Field(description="when it started firing")
    resolved_at: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    suppressed_by: dict[str, Any] | None = Field(
        description="why it is muted: silence, maintenance window or inhibiting alert"
    )
    escalation_level: int
    risk_level: int | None = Field(
        None,
        description="disaster risk level 1-5 of QĐ 18/2021/QĐ-TTg (flood, rain, salinity rules); "
        "null when the rule carries none",
    )
    risk: dict[str, Any] | None = Field(
        None, description="the level's colour (hex) and names: level, colour, colour_vi, "
        "colour_en, name_vi, name_en",
    )  # fmt: skip


class AlertDetail(AlertOut):
    history: list[dict[str, Any]]


class AckIn(BaseModel):
    comment: str = Field("", max_length=2000)
    by: str | None = Field(
        None,
        max_length=200,
        description="operator name, honoured for the shared admin token only (a personal "
        "token is its own name)",
    )


class ResolveIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="why it is closed by hand")
    by: str | None = Field(None, max_length=200)


def _not_found(alert_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"alert {alert_id} does not exist")


def _actor(caller: Caller, named: str | None) -> str:
    """Who the history records: a personal token is its own name; the shared admin token (a
    wall console) may name the operator on shift."""
    return named if named and caller.role == "admin" and caller.name == "admin" else caller.actor


@router.get("/alerts", response_model=list[AlertOut])
async def list_alerts(
    request: Request,
    state: Annotated[list[str] | None, Query(description="pending, firing, resolved")] = None,
    severity: str | None = None,
    domain: str | None = None,
    city: str | None = None,
    ward: str | None = None,
    rule: str | None = None,
    device_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    states = [s for part in state or [] for s in part.split(",") if s]
    for s in states:
        if s not in STATES:
            raise HTTPException(422, f"state: {s!r} is not one of {list(STATES)}")
    labels = {
        k: v
        for k, v in (("domain", domain), ("city", city), ("ward", ward), ("device_id", device_id))
        if v
    }
    async with runtime_of(request).pool.connection() as conn:
        rows = await store.list_alerts(
            conn, states=states, severity=severity, labels=labels, rule=rule, limit=limit
        )
    return [store.alert_json(r) for r in rows]


@router.get("/alerts/{alert_id}", response_model=AlertDetail)
async def get_alert(alert_id: int, request: Request) -> dict[str, Any]:
    async with runtime_of(request).pool.connection() as conn:
        row = await store.get_alert(conn, alert_id)
        if row is None:
            raise _not_found(alert_id)
        out = store.alert_json(row)
        out["history"] = await store.history(conn, alert_id)
    return out


@router.post("/alerts/{alert_id}/ack", response_model=AlertOut)
async def acknowledge(
    alert_id: int,
    request: Request,
    caller: Annotated[Caller, Depends(require_operator)],
    body: AckIn | None = None,
) -> dict[str, Any]:
    body = body or AckIn()
    actor = _actor(caller, body.by)
    async with runtime_of(request).pool.connection() as conn:
        async with conn.transaction():
            row = await store.acknowledge(conn, alert_id, actor, body.comment, datetime.now(UTC))
            if row is not None:
                await announce_rows(conn, [row])
        if row is None:
            row = await store.get_alert(conn, alert_id)
            if row is None:
                raise _not_found(alert_id)
            if row["state"] == "resolved":
                raise HTTPException(409, f"alert {alert_id} is resolved; nothing to acknowledge")
            # already acknowledged: idempotent, the first acknowledgement stands
    return store.alert_json(row)


@router.post("/alerts/{alert_id}/resolve", response_model=AlertOut)
async def resolve(
    alert_id: int,
    body: ResolveIn,
    request: Request,
    caller: Annotated[Caller, Depends(require_operator)],
) -> dict[str, Any]:
    async with runtime_of(request).pool.connection() as conn:
        async with conn.transaction():
            row = await store.resolve_by_hand(
                conn, alert_id, _actor(caller, body.by), body.reason, datetime.now(UTC)
            )
            if row is not None:
                await announce_rows(conn, [row])
        if row is None:
            row = await store.get_alert(conn, alert_id)
            if row is None:
                raise _not_found(alert_id)
            raise HTTPException(409, f"alert {alert_id} is already resolved")
    return store.alert_json(row)


# -- silences ---------------------------------------------------------------------------------


class MatcherIn(BaseModel):
    name: str
    op: str = Field("=", description="=, !=, =~ or !~ (regular expressions match fully)")
    value: str


def _check_matchers(v: list[MatcherIn]) -> list[MatcherIn]:
    if not v:
        raise ValueError("at least one matcher is needed (a silence of everything is refused)")
    for i, m in enumerate(v):
        try:
            parse_matcher({"name": m.name, "op": m.op, "value": m.value})
        except MatcherError as exc:
            raise ValueError(f"matchers[{i}]: {exc}") from None
    return v


class SilenceIn(BaseModel):
    matchers: list[MatcherIn]
    starts_at: datetime | None = Field(None, description="default: now")
    ends_at: datetime
    comment: str = Field(min_length=1, max_length=2000)
    created_by: str | None = Field(None, max_length=200)

    _matchers = field_validator("matchers")(_check_matchers)


class SilenceOut(BaseModel):
    id: int
    matchers: list[MatcherIn]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str
    created_at: datetime
    expired_at: datetime | None
    state: str = Field(description="pending, active or expired")


def _silence(row: dict[str, Any], now: datetime) -> SilenceOut:
    end = row["expired_at"] or row["ends_at"]
    state = "pending" if now < row["starts_at"] else "active" if now < end else "expired"
    return SilenceOut(**row, state=state)


@router.post("/silences", status_code=201, response_model=SilenceOut, tags=["silences"])
async def create_silence(
    body: SilenceIn, request: Request, caller: Annotated[Caller, Depends(require_operator)]
) -> SilenceOut:
    now = datetime.now(UTC)
    starts = body.starts_at or now
    if body.ends_at <= starts:
        raise HTTPException(422, "ends_at: must be after starts_at")
    async with runtime_of(request).pool.connection() as conn:
        row = await store.create_silence(
            conn,
            [m.model_dump() for m in body.matchers],
            starts,
            body.ends_at,
            _actor(caller, body.created_by),
            body.comment,
        )
    return _silence(row, now)


@router.get("/silences", response_model=list[SilenceOut], tags=["silences"])
async def list_silences(request: Request, include_expired: bool = False) -> list[SilenceOut]:
    now = datetime.now(UTC)
    async with runtime_of(request).pool.connection() as conn:
        rows = await store.list_silences(conn, include_expired=include_expired)
    return [_silence(r, now) for r in rows]


@router.get("/silences/{silence_id}", response_model=SilenceOut, tags=["silences"])
async def get_silence(silence_id: int, request: Request) -> SilenceOut:
    async with runtime_of(request).pool.connection() as conn:
        row = await store.get_silence(conn, silence_id)
    if row is None:
        raise HTTPException(404, f"silence {silence_id} does not exist")
    return _silence(row, datetime.now(UTC))


@router.delete(
    "/silences/{silence_id}",
    response_model=SilenceOut,
    tags=["silences"],
    dependencies=[Depends(require_operator)],
)
async def expire_silence(silence_id: int, request: Request) -> SilenceOut:
    """Expire a silence now (kept for the record, as in Alertmanager)."""
    async with runtime_of(request).pool.connection() as conn:
        row = await store.expire_silence(conn, silence_id)
    if row is None:
        raise HTTPException(404, f"silence {silence_id} does not exist")
    return _silence(row, datetime.now(UTC))


# -- maintenance windows ------------------------------------------------------------------------


class WindowIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    matchers: list[MatcherIn]
    weekdays: list[int] = Field(description="ISO weekdays, 1 = Monday … 7 = Sunday")
    start_time: time = Field(description="local time of day, Asia/Ho_Chi_Minh")
    duration_minutes: int = Field(gt=0, le=7 * 24 * 60)
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    comment: str = Field("", max_length=2000)
    created_by: str | None = Field(None, max_length=200)

    _matchers = field_validator("matchers")(_check_matchers)

    @field_validator("weekdays")
    @classmethod
    def _days(cls, v: list[int]) -> list[int]:
        if not v or any(d < 1 or d > 7 for d in v):
            raise ValueError("weekdays: one or more of 1 (Monday) … 7 (Sunday)")
        return sorted(set(v))


class WindowOut(BaseModel):
    id: int
    name: str
    matchers: list[MatcherIn]
    weekdays: list[int]
    start_time: time
    duration_minutes: int
    valid_from: datetime | None
    valid_to: datetime | None
    comment: str
    created_by: str


@router.post("/maintenance-windows", status_code=201, response_model=WindowOut, tags=["silences"])
async def create_window(
    body: WindowIn, request: Request, caller: Annotated[Caller, Depends(require_operator)]
) -> dict[str, Any]:
    async with runtime_of(request).pool.connection() as conn:
        return await store.create_window(
            conn, name=body.name, matchers=[m.model_dump() for m in body.matchers],
            weekdays=body.weekdays, start_time=body.start_time,
            duration=timedelta(minutes=body.duration_minutes), valid_from=body.valid_from,
            valid_to=body.valid_to, created_by=_actor(caller, body.created_by),
            comment=body.comment,
        )  # fmt: skip


@router.get("/maintenance-windows", response_model=list[WindowOut], tags=["silences"])
async def list_windows(request: Request) -> list[dict[str, Any]]:
    async with runtime_of(request).pool.connection() as conn:
        return await store.list_windows(conn)


@router.delete(
    "/maintenance-windows/{window_id}",
    status_code=204,
    tags=["silences"],
    dependencies=[Depends(require_operator)],
)
async def delete_window(window_id: int, request: Request) -> None:
    async with runtime_of(request).pool.connection() as conn:
        if not await store.delete_window(conn, window_id):
            raise HTTPException(404, f"maintenance window {window_id} does not exist")
