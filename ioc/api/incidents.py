"""/api/v1/incidents (operators), /api/v1/agency/incidents (each agency, its own only),
/api/v1/agencies.

Each action is one lifecycle step (ioc/incidents/lifecycle.py) recorded with who, when and the
note — or the case's one formal deadline extension (``POST /incidents/{id}/extend``). A step that
does not apply answers 409 naming the current status, a step the caller's role may not take
answers 403. An agency token asking for another agency's incident gets 404: it must not learn
that the incident exists.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl

from ioc.alerting import store as alert_store
from ioc.api.auth import Caller, require_agency, require_operator, require_viewer
from ioc.api.context import runtime_of
from ioc.incidents import store
from ioc.incidents.lifecycle import Actor, StepError
from ioc.incidents.store import CategoryError, Context, IncidentNotFound, Who

router = APIRouter(prefix="/api/v1", tags=["incidents"])

Severity = Literal["info", "warning", "critical"]


class IncidentOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    category: str
    severity: str
    status: str
    title: str
    agency_id: str | None
    opened_at: str
    deadline_at: str | None
    overdue: bool


class OpenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str | None = Field(
        None,
        description="a category code (GET /open311/v2/services.json); with `alert_id` it may be "
        "omitted: the routing table's category for the alert's domain (routing.yaml)",
    )
    severity: Severity = "warning"
    title: str = Field(min_length=1, max_length=300)
    description: str = Field("", max_length=4000)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    city: str | None = None
    ward: str | None = None
    agency: str | None = Field(None, description="override the routing table's agency")
    alert_id: int | None = Field(None, description="the alert this incident is about")
    note: str | None = None
    dispatch: bool = Field(True, description="dispatch to the agency at once")
    source: Literal["report", "operator"] | None = Field(
        None,
        description="what brought it: `report` for a citizen's report taken by phone or at the "
        "counter (it counts in the KPIs' headline), `operator` (default) for the IOC's own "
        "finding; with `alert_id` it is `alert`",
    )


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=4000)
    version: int | None = Field(None, description="the version you saw; 409 if it changed")


class RequiredNoteIn(NoteIn):
    note: str = Field(min_length=1, max_length=4000)


class DispatchIn(NoteIn):
    agency: str | None = Field(None, description="another agency than the routing table's")


class StatusIn(NoteIn):
    status: Literal["accepted", "in_progress", "resolved", "closed"]


class ExtendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=4000, description="why the case needs longer")
    deadline: AwareDatetime | None = Field(None, description="the new deadline (RFC 3339)")
    working_days: float | None = Field(
        None, gt=0, le=60, description="or: this many working days after the current deadline"
    )
    hours: float | None = Field(
        None, gt=0, le=24 * 60, description="or: this many hours after the current deadline"
    )
    version: int | None = Field(None, description="the version you saw; 409 if it changed")


class RateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(None, max_length=4000)


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    into: int = Field(description="the incident that stays")
    note: str = Field(min_length=1, max_length=4000)


class SplitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    report_ids: list[int] = Field(min_length=1)
    note: str = Field(min_length=1, max_length=4000)


class AgencyWorkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=4000)
    photo_url: HttpUrl | None = None


_STATUS_STEP = {
    "accepted": "accept",
    "in_progress": "progress",
    "resolved": "resolve",
    "closed": "close",
}


def _ctx(request: Request) -> Context:
    rt = runtime_of(request)
    return Context(rt.routing, rt.site, rt.settings)


def _operator(caller: Caller) -> Who:
    return Who(Actor.OPERATOR, caller.actor)


@asynccontextmanager
async def _change(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    """A transaction for one change, with the store's errors turned into HTTP answers."""
    try:
        async with runtime_of(request).pool.connection() as conn, conn.transaction():
            yield conn
    except IncidentNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except CategoryError as exc:
        raise HTTPException(422, str(exc)) from None
    except psycopg.errors.UniqueViolation as exc:  # a race the checks above could not see
        detail = exc.diag.message_detail or str(exc)
        raise HTTPException(status.HTTP_409_CONFLICT, f"already exists: {detail}") from None
    except StepError as exc:
        code = status.HTTP_403_FORBIDDEN if exc.forbidden else status.HTTP_409_CONFLICT
        raise HTTPException(code, str(exc)) from None


async def _detail(
    conn: psycopg.AsyncConnection, row: dict[str, Any], *, agency: str | None = None
) -> dict[str, Any]:
    """The incident with its history and reports; for an agency (``agency`` set) only what
    that agency should see — see :func:`_for_agency`."""
    out = store.incident_json(row, datetime.now(UTC))
    out["history"] = await store.history(conn, row["id"])
    out["reports"] = await store.reports_of(conn, row["id"])
    return out if agency is None else _for_agency(out, agency)


def _for_agency(doc: dict[str, Any], agency: str) -> dict[str, Any]:
    """Another agency's steps (its notes and photos), citizens' feedback and the operators'
    notes on reassignments are internal to the IOC; the rest of the history stays, so the
    agency sees how the case reached it."""
    own = f"agency:{agency}/"
    history = []
    for event in doc["history"]:
        actor = str(event["actor"] or "")
        if actor.startswith("agency:") and not actor.startswith(own):
            continue
        if event["kind"] == "rated":
            continue
        if event["kind"] == "reassigned":
            event = {**event, "note": None}
        history.append(event)
    reports = [
        {k: v for k, v in r.items() if k not in store.AGENCY_HIDDEN_FIELDS} for r in doc["reports"]
    ]
    out = {k: v for k, v in doc.items() if k not in store.AGENCY_HIDDEN_FIELDS}
    return {**out, "history": history, "reports": reports}


# --------------------------------------------------------------------------- operators ---


@router.get("/incidents", response_model=list[IncidentOut])
async def list_incidents(
    request: Request,
    _: Annotated[Caller, Depends(require_viewer)],
    status_: Annotated[str | None, Query(alias="status", description="comma list")] = None,
    agency: str | None = None,
    category: str | None = None,
    city: str | None = None,
    ward: str | None = None,
    overdue: bool | None = None,
    open: bool = Query(False, description="only open incidents"),
    limit: int = Query(200, ge=1, le=1000),
    before_id: int | None = Query(None, description="page: incidents with a smaller id"),
) -> list[dict[str, Any]]:
    statuses = [s for s in (status_ or "").split(",") if s]
    site = runtime_of(request).site
    async with runtime_of(request).pool.connection() as conn:
        rows = await store.list_incidents(
            conn, status=statuses, category=category, city=city,
            # former ids (a ward before July 2025, an agency's old id) find the same rows
            agency=site.agency_ids(agency) if agency else None,
            ward=site.ward_ids(ward) if ward else None,
            overdue=overdue, open_only=open, limit=limit, before_id=before_id,
        )  # fmt: skip
    now = datetime.now(UTC)
    return [store.incident_json(r, now) for r in rows]


@router.get("/incidents/{incident_id}", response_model=IncidentOut)
async def get_incident(
    incident_id: int, request: Request, _: Annotated[Caller, Depends(require_viewer)]
) -> dict[str, Any]:
    async with runtime_of(request).pool.connection() as conn:
        row = await store.get(conn, incident_id)
        if row is None:
            raise HTTPException(404, f"no incident {incident_id}")
        return await _detail(conn, row)


@router.post("/incidents", response_model=IncidentOut, status_code=201)
async def open_incident(
    body: OpenIn, request: Request, caller: Annotated[Caller, Depends(require_operator)]
) -> dict[str, Any]:
    ctx = _ctx(request)
    if body.agency is not None and ctx.site.find_agency(body.agency) is None:
        raise HTTPException(422, f"agency: unknown agency {body.agency!r}")
    if body.ward is not None and ctx.site.find_ward(body.ward) is None:
        raise HTTPException(422, f"ward: unknown ward {body.ward!r}")
    async with _change(request) as conn:
        category = body.category
        if body.alert_id is not None:
            labels = await alert_store.labels(conn, body.alert_id)
            if labels is None:
                raise HTTPException(422, f"alert_id: no alert {body.alert_id}")
            # Routing stays on the server: a client names the alert, not its category.
            category = category or ctx.routing.category_for_domain(labels.get("domain", ""))
            taken = await conn.execute(
                """SELECT id FROM incidents WHERE source_alert_id = %s
                   UNION ALL SELECT incident_id FROM incident_alerts WHERE alert_id = %s""",
                (body.alert_id, body.alert_id),
            )
            has = await taken.fetchone()
            if has is not None:
                raise HTTPException(409, f"alert {body.alert_id} already has incident {has[0]}")
        if category is None:
            raise HTTPException(422, "category: required unless alert_id names the alert")
        row = await store.open_incident(
            conn, ctx, category=category, severity=body.severity, title=body.title,
            description=body.description, city=body.city, ward=body.ward, lat=body.lat,
            lon=body.lon, agency_id=body.agency, source_alert_id=body.alert_id,
            source="alert" if body.alert_id is not None else body.source,
            who=_operator(caller), note=body.note, dispatch=body.dispatch, at=datetime.now(UTC),
        )  # fmt: skip
        return await _detail(conn, row)


@router.post("/incidents/{incident_id}/dispatch", response_model=IncidentOut)
async def dispatch(
    incident_id: int,
    request: Request,
    caller: Annotated[Caller, Depends(require_operator)],
    body: DispatchIn | None = None,
) -> dict[str, Any]:
    """Dispatch a new or rejected incident; with ``agency``, to that agency instead (an incident
    already with an agency is reassigned: the old one is told it is withdrawn)."""
    body = body or DispatchIn()
    ctx = _ctx(request)
    async with _change(request) as conn:
        row = await store.get(conn, incident_id)
        if row is None:
            raise IncidentNotFound(f"no incident {incident_id}")
        who = _operator(caller)
        if body.agency is not None and row["status"] in ("dispatched", "accepted", "in_progress"):
            row = await store.reassign(
                conn, ctx, incident_id, body.agency, who, body.note or "",
                expected_version=body.version, at=datetime.now(UTC),
            )  # fmt: skip
        else:
            if body.agency is not None and ctx.site.find_agency(body.agency) is None:
                raise StepError(f"unknown agency {body.agency!r}")
            row = await store.take_step(
                conn, ctx, incident_id, "dispatch", who, note=body.note,
                agency_id=ctx.site.current_agency_id(body.agency),
                expected_version=body.version, at=datetime.now(UTC),
            )  # fmt: skip
        return await _detail(conn, row)


@router.post("/incidents/{incident_id}/status", response_model=IncidentOut)
async def update_status(
    incident_id: int,
    body: StatusIn,
    request: Request,
    caller: Annotated[Caller, Depends(require_operator)],
) -> dict[str, Any]:
    async with _change(request) as conn:
        row = await store.take_step(
            conn, _ctx(request), incident_id, _STATUS_STEP[body.status], _operator(caller),
            note=body.note, expected_version=body.version, at=datetime.now(UTC),
        )  # fmt: skip
        return await _detail(conn, row)


@router.post("/incidents/{incident_id}/close", response_model=IncidentOut)
async def close(
    incident_id: int,
    request: Request,
    caller: Annotated[Caller, Depends(require_operator)],
    body: NoteIn | None = None,
) -> dict[str, Any]:
    body = body or NoteIn()
    async with _change(request) as conn:
        row = await store.take_step(
            conn, _ctx(request), incident_id, "close", _operator(caller), note=body.note,
            expected_version=body.version, at=datetime.now(UTC),
        )  # fmt: skip
        return await _detail(conn, row)


@router.post("/incidents/{incident_id}/reopen", response_model=IncidentOut)
async def reopen(
    incident_id: int,
    body: RequiredNoteIn,
    request: Request,
    caller: Annotated[Caller, Depends(require_operator)],
) -> dict[str, Any]:
    async with _change(request) as conn:
        row = await store.take_step(
            conn, _ctx(request), incident_id, "reopen", _operator(caller), note=body.note,
            expected_version=body.version, at=datetime.now(UTC),
        )  # fmt: skip
        return await _detail(conn, row)


@router.post("/incidents/{incident_id}/extend", response_model=IncidentOut)
async def extend(
    incident_id: int,
    body: ExtendIn,
    request: Request,
    caller: Annotated[Caller, Depends(require_operator)],
) -> dict[str, Any]:
    """The case's one formal extension of its deadline, with the reason (recorded in its
    history, told to the agency). Give ``deadline``, ``working_days`` or ``hours``; a second
    extension answers 409 naming the first one's date and reason."""
    if sum(x is not None for x in (body.deadline, body.working_days, body.hours)) != 1:
        raise HTTPException(422, "deadline, working_days, hours: give exactly one")
    async with _change(request) as conn:
        row = await store.extend_deadline(
            conn, _ctx(request), incident_id, _operator(caller), reason=body.reason,
            until=body.deadline, working_days=body.working_days, hours=body.hours,
            expected_version=body.version, at=datetime.now(UTC),
        )  # fmt: skip
        return await _detail(conn, row)


@router.post("/incidents/{incident_id}/rate", response_model=IncidentOut)
async def rate(
    incident_id: int,
    body: RateIn,
    request: Request,
    caller: Annotated[Caller, Depends(require_operator)],
) -> dict[str, Any]:
    """Record the citizen's rating taken by phone or at the counter (citizens using the app rate
    through Open311's feedback extension)."""
    async with _change(request) as conn:
        row = await store.rate_incident(
            conn, incident_id, rating=body.rating, comment=body.comment,
            actor=f"{caller.actor} (for the citizen)", ctx=_ctx(request), at=datetime.now(UTC),
        )  # fmt: skip
        return await _detail(conn, row)


@router.post("/incidents/{incident_id}/merge", response_model=IncidentOut)
async def merge(
    incident_id: int,
    body: MergeIn,
    request: Request,
    caller: Annotated[Caller, Depends(require_operator)],
) -> dict[str, Any]:
    """Merge this incident into ``into`` (the same problem); returns the one that stays."""
    async with _change(request) as conn:
        row = await store.merge(
            conn,
            _ctx(request),
            incident_id,
            body.into,
            _operator(caller),
            body.note,
            at=datetime.now(UTC),
        )
        return await _detail(conn, row)


@router.post("/incidents/{incident_id}/split", response_model=IncidentOut, status_code=201)
async def split(
    incident_id: int,
    body: SplitIn,
    request: Request,
    caller: Annotated[Caller, Depends(require_operator)],
) -> dict[str, Any]:
    """Move the named reports into a new incident; returns the new one."""
    async with _change(request) as conn:
        row = await store.split(
            conn,
            _ctx(request),
            incident_id,
            body.report_ids,
            _operator(caller),
            body.note,
            at=datetime.now(UTC),
        )
        return await _detail(conn, row)


# ---------------------------------------------------------------------------- agencies ---


def _agency(caller: Caller) -> Who:
    return Who(Actor.AGENCY, caller.actor, agency=caller.agency)


@router.get("/agency/incidents", response_model=list[IncidentOut], tags=["agency"])
async def agency_incidents(
    request: Request,
    caller: Annotated[Caller, Depends(require_agency)],
    status_: Annotated[str | None, Query(alias="status", description="comma list")] = None,
    open: bool = Query(True, description="only open incidents (default)"),
    limit: int = Query(200, ge=1, le=1000),
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    statuses = [s for s in (status_ or "").split(",") if s]
    async with runtime_of(request).pool.connection() as conn:
        rows = await store.list_incidents(
            conn, status=statuses, open_only=open, limit=limit, before_id=before_id,
            agency=runtime_of(request).site.agency_ids(caller.agency or ""),
        )  # fmt: skip
    now = datetime.now(UTC)
    return [
        {
            k: v
            for k, v in store.incident_json(r, now).items()
            if k not in store.AGENCY_HIDDEN_FIELDS
        }
        for r in rows
    ]


@router.get("/agency/incidents/{incident_id}", response_model=IncidentOut, tags=["agency"])
async def agency_incident(
    incident_id: int, request: Request, caller: Annotated[Caller, Depends(require_agency)]
) -> dict[str, Any]:
    async with runtime_of(request).pool.connection() as conn:
        row = await store.get(conn, incident_id)
        site = runtime_of(request).site
        if row is None or row["agency_id"] not in site.agency_ids(caller.agency or ""):
            raise HTTPException(404, f"no incident {incident_id}")
        return await _detail(conn, row, agency=caller.agency)


async def _agency_step(
    request: Request, caller: Caller, incident_id: int, step: str, body: AgencyWorkIn
) -> dict[str, Any]:
    data = {"photo_url": str(body.photo_url)} if body.photo_url else None
    async with _change(request) as conn:
        row = await store.take_step(
            conn,
            _ctx(request),
            incident_id,
            step,
            _agency(caller),
            note=body.note,
            data=data,
            at=datetime.now(UTC),
        )
        return await _detail(conn, row, agency=caller.agency)


@router.post("/agency/incidents/{incident_id}/accept", response_model=IncidentOut, tags=["agency"])
async def agency_accept(
    incident_id: int,
    request: Request,
    caller: Annotated[Caller, Depends(require_agency)],
    body: AgencyWorkIn | None = None,
) -> dict[str, Any]:
    return await _agency_step(request, caller, incident_id, "accept", body or AgencyWorkIn())


@router.post("/agency/incidents/{incident_id}/reject", response_model=IncidentOut, tags=["agency"])
async def agency_reject(
    incident_id: int,
    body: AgencyWorkIn,
    request: Request,
    caller: Annotated[Caller, Depends(require_agency)],
) -> dict[str, Any]:
    """Send the incident back to the IOC (not ours, wrong place) — ``note`` says why."""
    return await _agency_step(request, caller, incident_id, "reject", body)


@router.post(
    "/agency/incidents/{incident_id}/progress", response_model=IncidentOut, tags=["agency"]
)
async def agency_progress(
    incident_id: int,
    body: AgencyWorkIn,
    request: Request,
    caller: Annotated[Caller, Depends(require_agency)],
) -> dict[str, Any]:
    return await _agency_step(request, caller, incident_id, "progress", body)


@router.post("/agency/incidents/{incident_id}/resolve", response_model=IncidentOut, tags=["agency"])
async def agency_resolve(
    incident_id: int,
    body: AgencyWorkIn,
    request: Request,
    caller: Annotated[Caller, Depends(require_agency)],
) -> dict[str, Any]:
    return await _agency_step(request, caller, incident_id, "resolve", body)


@router.get("/agencies", tags=["agency"])
async def agencies(
    request: Request, _: Annotated[Caller, Depends(require_viewer)]
) -> list[dict[str, Any]]:
    """The agencies of the site file and the categories the routing table gives each."""
    rt = runtime_of(request)
    out = []
    for a in rt.site.agencies:
        out.append(
            {
                "id": a.id, "name_vi": a.name_vi, "name_en": a.name_en,
                "domains": list(a.domains), "city": a.city, "ward": a.ward,
                "categories": [c.code for c in rt.routing.categories if c.agency == a.id],
                "webhook": a.id in rt.settings.agency_webhooks,
            }
        )  # fmt: skip
    return out
