"""Open311 GeoReport v2 at /open311/v2/: services, service requests, tokens, and our feedback
extension. Every route answers in ``.json`` or ``.xml`` (its path's extension), errors included:
the spec's ``[{"code", "description"}]`` list instead of the API's ``{"error", "message"}``.

Reads are public (as the spec has them); POSTs need an ``api_key`` of role ``open311`` (a
citizen-facing application) or admin. The guide: docs/open311.md.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ioc.api.auth import Caller, identify
from ioc.api.context import ApiRuntime, runtime_of
from ioc.core.site import Site
from ioc.incidents.lifecycle import StepError
from ioc.incidents.store import Context, rate_incident
from ioc.open311 import Open311Error, error_response, parse_format, respond
from ioc.open311.query import LIMIT, parse_query
from ioc.open311.resources import discovery, service, service_definition, service_request, w3c
from ioc.open311.submission import fields_of, parse_feedback, parse_submission
from ioc.routing.table import Category, Routing
from ioc.storage import reports as store

PREFIX = "/open311/v2"
_POSTERS = frozenset({"open311", "admin"})


class Open311Route(APIRoute):
    """Errors raised anywhere in an Open311 route — ours, FastAPI's validation, HTTP ones —
    leave in the spec's format and the requested one (the app-wide handlers would answer
    ``{"error", "message"}``, which Open311 clients cannot read)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            fmt = request.path_params.get("fmt", "json")
            try:
                return await handler(request)
            except Open311Error as exc:
                return error_response(fmt, exc.status, exc.description)
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
                )
                return error_response(fmt, 400, problems)
            except HTTPException as exc:
                return error_response(fmt, exc.status_code, str(exc.detail))
            except PoolTimeout:
                response = error_response(fmt, 503, "database unavailable, retry later")
                response.headers["Retry-After"] = "5"
                return response

        return route


router = APIRouter(prefix=PREFIX, tags=["open311"], route_class=Open311Route)


def _runtime(request: Request) -> ApiRuntime:
    return runtime_of(request)


def _routing(request: Request) -> Routing:
    routing: Routing = _runtime(request).routing
    return routing


def _site(request: Request) -> Site:
    site: Site = _runtime(request).site
    return site


def _public_category(request: Request, code: str) -> Category:
    category = _routing(request).by_code.get(code)
    if category is None or not category.public:
        raise Open311Error(404, f"service_code: {code[:64]!r} is not a service here")
    return category


# -- discovery and services --------------------------------------------------------------------


@router.get("/discovery.{fmt}", summary="Service discovery")
async def get_discovery(request: Request, fmt: str) -> Response:
    fmt = parse_format(fmt)
    path = _runtime(request).settings.routing_path()
    changeset = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    endpoint = str(request.base_url).rstrip("/") + PREFIX + "/"
    body = discovery(endpoint, changeset, _site(request).name)
    return respond(fmt, body, root="discovery")


@router.get("/services.{fmt}", summary="Service list (report categories)")
async def get_services(request: Request, fmt: str) -> Response:
    fmt = parse_format(fmt)
    body = [service(c) for c in _routing(request).public_categories()]
    return respond(fmt, body, root="services", item="service")


@router.get("/services/{service_code}.{fmt}", summary="Service definition")
async def get_service_definition(request: Request, service_code: str, fmt: str) -> Response:
    fmt = parse_format(fmt)
    category = _public_category(request, service_code)
    return respond(fmt, service_definition(category), root="service_definition")


# -- service requests --------------------------------------------------------------------------


@router.get("/requests.{fmt}", summary="Service requests (newest first, at most 1000)")
async def get_requests(request: Request, fmt: str) -> Response:
    fmt = parse_format(fmt)
    q = parse_query(request.query_params, datetime.now(UTC))
    async with _runtime(request).pool.connection() as conn:
        rows = await store.search(
            conn, ids=q.ids, service_codes=q.service_codes, start=q.start, end=q.end,
            statuses=q.statuses, limit=LIMIT,
        )  # fmt: skip
    routing, site = _routing(request), _site(request)
    body = [service_request(r, routing, site) for r in rows]
    return respond(fmt, body, root="service_requests", item="request")


@router.get("/requests/{service_request_id}.{fmt}", summary="One service request")
async def get_request(request: Request, service_request_id: str, fmt: str) -> Response:
    fmt = parse_format(fmt)
    row = await _report(request, service_request_id)
    body = [service_request(row, _routing(request), _site(request))]
    return respond(fmt, body, root="service_requests", item="request")


@router.get("/tokens/{token}.{fmt}", summary="Service request id from a token")
async def get_token(request: Request, token: str, fmt: str) -> Response:
    fmt = parse_format(fmt)
    async with _runtime(request).pool.connection() as conn:
        row = await store.by_token(conn, token)
    if row is None:
        raise Open311Error(404, f"token: no service request has token {token[:64]!r}")
    body = [{"service_request_id": str(row["id"]), "token": row["token"]}]
    return respond(fmt, body, root="service_requests", item="request")


def _form(properties: dict[str, str], required: list[str]) -> dict[str, Any]:
    """OpenAPI request body of a POST that is read by hand (form-encoded or JSON)."""
    schema = {
        "type": "object",
        "required": required,
        "properties": {k: {"type": "string", "description": v} for k, v in properties.items()},
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": schema},
                "application/json": {"schema": schema},
            },
        }
    }


_REQUEST_FIELDS = {
    "api_key": "key of role open311 (or admin)",
    "service_code": "a service_code of services.json",
    "lat": "WGS 84 latitude (with long)",
    "long": "WGS 84 longitude (with lat)",
    "address_string": "instead of lat/long",
    "address_id": "instead of lat/long",
    "description": "at most 4000 characters",
    "media_url": "http(s) URL of a photo",
    "email": "reporter (not published)",
    "first_name": "reporter (not published)",
    "last_name": "reporter (not published)",
    "phone": "reporter (not published)",
    "device_id": "reporter's device (not published)",
    "account_id": "reporter's account (not published)",
}


@router.post(
    "/requests.{fmt}",
    summary="Post a service request (api_key required)",
    openapi_extra=_form(_REQUEST_FIELDS, ["api_key", "service_code"]),
)
async def post_request(request: Request, fmt: str) -> Response:
    """Form-encoded as the spec says, or a JSON object. The request id is known at once; the
    token is returned too. The same request posted again by the same client returns the first
    one (200 instead of 201): see docs/open311.md, "Duplicates"."""
    fmt = parse_format(fmt)
    fields = await _fields(request)
    caller = await _poster(request, fields)
    settings = _runtime(request).settings
    sub = parse_submission(fields, max_description=settings.open311_max_description)
    category = _public_category(request, sub.service_code)
    site = _site(request)
    city = ward = None
    if sub.lat is not None and sub.long is not None:
        found = site.ward_of(sub.lat, sub.long)
        if found is None:
            cities = ", ".join(c.name for c in site.cities)
            raise Open311Error(
                400, f"lat/long: ({sub.lat}, {sub.long}) is outside the area served ({cities})"
            )
        city, ward = found.city, found.id
    elif sub.address_string:
        # No position: a place named in the address (a current unit, or a ward abolished in
        # July 2025 such as "Phường 5, Vị Thanh") puts the report in that unit.
        named = site.ward_named(sub.address_string)
        if named is not None:
            city, ward = named.city, named.id
    report = store.NewReport(
        dedupe_key=store.open311_dedupe_key(
            client=caller.name, service_code=category.code, lat=sub.lat, long=sub.long,
            address_string=sub.address_string, address_id=sub.address_id,
            description=sub.description, media_url=sub.media_url, device_id=sub.device_id,
            account_id=sub.account_id,
        ),
        source="open311",
        service_code=category.code,
        description=sub.description,
        reported_at=datetime.now(UTC),
        city=city,
        ward=ward,
        lat=sub.lat,
        lon=sub.long,
        # We keep no master address file: an address_id is kept as the address text.
        address=sub.address_string or sub.address_id,
        media_url=sub.media_url,
        reporter=sub.reporter,
        client=caller.name,
    )  # fmt: skip
    route_text = f"{sub.description or ''}\n{sub.address_string or ''}"
    async with _runtime(request).pool.connection() as conn, conn.transaction():
        report_id, token, created = await store.insert(conn, report)
    body = [
        {
            "service_request_id": str(report_id),
            "token": token,
            "service_notice": _notice(
                request, category, city, ward, report_id, created, route_text
            ),
            "account_id": sub.account_id,
        }
    ]
    return respond(
        fmt, body, root="service_requests", item="request", status=201 if created else 200
    )


@router.post(
    "/requests/{service_request_id}/feedback.{fmt}",
    summary="Citizen's rating of a resolved request (extension; api_key required)",
    openapi_extra=_form(
        {
            "api_key": "key of role open311 (or admin)",
            "rating": "1 to 5",
            "comment": "at most 1000 characters",
        },
        ["api_key", "rating"],
    ),
)
async def post_feedback(request: Request, service_request_id: str, fmt: str) -> Response:
    """``rating`` 1–5 and an optional ``comment``, once the request is closed in Open311 terms
    (its incident resolved or closed); a resolved incident closes with it. Rated once: the same
    rating again answers as the first time, a different one is refused."""
    fmt = parse_format(fmt)
    fields = await _fields(request)
    await _poster(request, fields)
    feedback = parse_feedback(fields)
    report_id = _report_id(service_request_id)
    async with _runtime(request).pool.connection() as conn, conn.transaction():
        row = await store.lock_for_rating(conn, report_id)
        if row is None:
            raise Open311Error(404, f"service_request_id: no service request {report_id}")
        if row["rated_at"] is not None:
            if (row["rating"], row["rating_comment"]) != (feedback.rating, feedback.comment):
                raise Open311Error(
                    400, f"rating: service request {report_id} was already rated"
                    f" ({row['rating']}) at {w3c(row['rated_at'])}",
                )  # fmt: skip
            rated_at = row["rated_at"]
        else:
            status = row["incident_status"]
            if status not in ("resolved", "closed"):
                raise Open311Error(
                    400, f"rating: service request {report_id} is still open"
                    f" ({status or 'not yet routed'}); rate it once it is resolved",
                )  # fmt: skip
            rated_at = datetime.now(UTC)
            await store.record_rating(
                conn, report_id, rating=feedback.rating, comment=feedback.comment, at=rated_at
            )
            try:
                await rate_incident(
                    conn, row["incident_id"], rating=feedback.rating, comment=feedback.comment,
                    actor=f"citizen/report-{report_id}", at=rated_at,
                    ctx=Context(_routing(request), _site(request), _runtime(request).settings),
                )  # fmt: skip
            except StepError as exc:
                raise Open311Error(400, f"rating: {exc}") from None
    body = [
        {
            "service_request_id": str(report_id),
            "rating": feedback.rating,
            "comment": feedback.comment,
            "rated_at": w3c(rated_at),
        }
    ]
    return respond(fmt, body, root="service_requests", item="request")


# Anything else under /open311/v2/ gets an Open311 404, not the API's error shape.
@router.api_route("/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
async def not_found(request: Request, rest: str) -> Response:
    fmt = "xml" if rest.endswith(".xml") else "json"
    return error_response(fmt, 404, f"no Open311 resource {rest[:80]!r}")


# -- helpers -----------------------------------------------------------------------------------


async def _fields(request: Request) -> dict[str, str]:
    body = await request.body()
    return fields_of(body, request.headers.get("content-type", ""), request.query_params)


async def _poster(request: Request, fields: dict[str, str]) -> Caller:
    key = fields.get("api_key", "").strip()
    if not key:
        raise Open311Error(403, "api_key: required to post")
    caller = await identify(request, key)
    if caller is None:
        raise Open311Error(403, "api_key: not a valid key")
    if caller.role not in _POSTERS:
        raise Open311Error(403, f"api_key: role {caller.role!r} may not post (needs open311)")
    return caller


def _report_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise Open311Error(404, f"service_request_id: no service request {raw[:40]!r}")
    return int(raw)


async def _report(request: Request, raw: str) -> dict[str, Any]:
    report_id = _report_id(raw)
    async with _runtime(request).pool.connection() as conn:
        row = await store.get(conn, report_id)
    if row is None:
        raise Open311Error(404, f"service_request_id: no service request {report_id}")
    return row


def _notice(
    request: Request, category: Category, city: str | None, ward: str | None, report_id: int,
    created: bool, text: str = "",
) -> str:  # fmt: skip
    """What the citizen is told at once (Vietnamese, like the service names)."""
    if not created:
        return f"Phản ánh này đã được tiếp nhận trước đó (mã {report_id})."
    routing, site = _routing(request), _site(request)
    agency_id = routing.assign(category.code, city, ward, site, text=text).agency
    agency = site.agencies_by_id.get(agency_id)
    to = f" và chuyển đến {agency.name_vi}" if agency else ""
    return f"Phản ánh đã được tiếp nhận (mã {report_id}){to}."
