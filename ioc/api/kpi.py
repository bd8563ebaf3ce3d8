"""/api/v1/kpis: the programme's KPIs (definitions in docs/kpis.md) and the monthly report.

- ``GET /api/v1/kpis?from=&to=&group_by=source|agency|category|ward|period&period=day|week|month
  &source=report|alert|operator`` — figures for ``[from, to)`` (default: this local month so
  far): the headline (citizens' reports, what the targets are about), one row per source beside
  it, the total, and one row per group; ``group_by`` takes several names separated by commas
  (``agency,period``); ``source`` keeps the grouped rows to one origin.
- ``GET /api/v1/kpis/report?month=2026-11&format=csv|html`` — the monthly report.

Both need a viewer token (or better).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from ioc.api.auth import require_viewer
from ioc.api.context import ApiRuntime, runtime_of
from ioc.core.localtime import iso_local
from ioc.kpi import figures as kpi
from ioc.kpi import report as kpi_report

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["kpis"], dependencies=[Depends(require_viewer)])


def _aware(name: str, t: datetime | None) -> datetime | None:
    if t is not None and t.tzinfo is None:
        raise HTTPException(422, f"{name}: needs an offset, e.g. 2026-11-01T00:00:00+07:00")
    return t


@router.get("/kpis")
async def get_kpis(
    request: Request,
    from_: Annotated[
        datetime | None, Query(alias="from", description="RFC 3339; default: start of the month")
    ] = None,
    to: Annotated[datetime | None, Query(description="RFC 3339, exclusive; default: now")] = None,
    group_by: Annotated[
        str | None, Query(description="source, agency, category, ward, period (comma-separated)")
    ] = None,
    period: Annotated[Literal["day", "week", "month"], Query()] = "month",
    source: Annotated[
        Literal["report", "alert", "operator"] | None,
        Query(description="only incidents of this origin in `rows`"),
    ] = None,
) -> dict[str, Any]:
    """On-time rate and satisfaction (headline: citizens' reports), the IOC's forwarding and the
    agencies' processing times, open and overdue counts."""
    now = datetime.now(UTC)
    end = _aware("to", to) or now
    start = _aware("from", from_) or kpi.current_month(end - timedelta(microseconds=1))[0]
    try:
        groups = kpi.parse_group_by(group_by)
        aliases = kpi.Aliases.of_site(runtime_of(request).site)
        async with runtime_of(request).pool.connection() as conn:
            (total,) = await kpi.compute(conn, start=start, end=end, now=now, period=period)
            (headline,) = await kpi.compute(
                conn, start=start, end=end, now=now, source=kpi.HEADLINE_SOURCE
            )
            by_source = await kpi.compute(conn, start=start, end=end, now=now, group_by=["source"])
            rows = (
                await kpi.compute(
                    conn, start=start, end=end, now=now, group_by=groups, period=period,
                    source=source, aliases=aliases,
                )
                if groups
                else []
            )  # fmt: skip
    except kpi.KpiError as exc:
        raise HTTPException(422, str(exc)) from None
    return {
        "from": iso_local(start),
        "to": iso_local(end),
        "as_of": total.as_of.isoformat(),
        "group_by": list(groups),
        "period": period,
        "source": source,
        "targets": {"on_time": kpi.ON_TIME_TARGET, "satisfaction": kpi.SATISFACTION_TARGET},
        "targets_source": kpi.TARGETS_SOURCE,
        "headline_source": kpi.HEADLINE_SOURCE,
        "headline": headline.as_json(),
        "by_source": [r.as_json() for r in by_source],
        "total": total.as_json(),
        "rows": [r.as_json() for r in rows],
    }


@router.get(
    "/kpis/report",
    response_class=Response,
    responses={200: {"content": {"text/html": {}, "text/csv": {}}}},
)
async def get_report(
    request: Request,
    month: Annotated[
        str | None, Query(pattern=r"^\d{4}-\d{2}$", description="local month; default: this one")
    ] = None,
    format: Annotated[Literal["csv", "html"], Query()] = "html",
) -> Response:
    """The monthly report: CSV rows, or an HTML summary with inline SVG charts."""
    runtime = runtime_of(request)
    now = datetime.now(UTC)
    if month is None:
        start, _ = kpi.current_month(now)
        month = start.strftime("%Y-%m")
    try:
        async with runtime.pool.connection() as conn:
            report = await kpi_report.monthly_report(
                conn, month, now, kpi.Aliases.of_site(runtime.site)
            )
    except kpi.KpiError as exc:
        raise HTTPException(422, str(exc)) from None
    names = _names(runtime)
    if format == "csv":
        return Response(
            kpi_report.to_csv(report, names),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="ioc-kpi-{month}.csv"'},
        )
    return Response(kpi_report.to_html(report, names), media_type="text/html; charset=utf-8")


def _names(runtime: ApiRuntime) -> kpi_report.Names:
    """Agency and ward names from the site; category names from the routing file."""
    site = runtime.site
    categories: dict[str, tuple[str, str]] = {}
    routing = getattr(runtime, "routing", None)
    if routing is None:
        try:
            from ioc.routing.table import load_routing

            routing = load_routing(runtime.settings.routing_path(), site)
        except Exception:
            # Names are cosmetic: a routing file that does not load leaves the codes showing.
            log.warning("KPI report: category names unavailable", exc_info=True)
    if routing is not None:
        categories = {c.code: (c.name_vi, c.name_en) for c in routing.categories}
    # Rows stored before July 2025 carry former ward and agency ids: they are named as the unit
    # or agency that took them over, never shown as raw ids.
    wards = {f.id: f"{w.name} ({c.name}; trước đây {f.name})"
             for c in site.cities for w in c.wards for f in w.former}  # fmt: skip
    wards |= {w.id: f"{w.name} ({c.name})" for c in site.cities for w in c.wards}
    return kpi_report.Names(
        agencies={i: (a.name_vi, a.name_en) for a in site.agencies for i in a.ids},
        categories=categories,
        wards=wards,
    )
