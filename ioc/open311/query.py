"""The filters of ``GET requests``, checked as the spec describes them.

``service_request_id`` (comma list) overrides every other filter. Otherwise ``service_code`` and
``status`` are comma lists, and ``start_date``/``end_date`` select by ``requested_datetime`` over
at most 90 days: with neither, the last 90 days; with one, 90 days from (or up to) it. At most
:data:`LIMIT` requests, newest first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from ioc.open311.errors import Open311Error

LIMIT = 1000
SPAN = timedelta(days=90)
STATUSES = ("open", "closed")


@dataclass(frozen=True, slots=True)
class RequestQuery:
    ids: tuple[int, ...] | None = None
    service_codes: tuple[str, ...] | None = None
    start: datetime | None = None
    end: datetime | None = None
    statuses: tuple[str, ...] | None = None


def parse_query(params: Mapping[str, str], now: datetime) -> RequestQuery:
    ids_raw = _list(params, "service_request_id")
    if ids_raw:
        ids = []
        for raw in ids_raw:
            if not raw.isdigit():
                raise Open311Error(400, f"service_request_id: {raw[:40]!r} is not a request id")
            ids.append(int(raw))
        return RequestQuery(ids=tuple(ids[:LIMIT]))
    statuses = _list(params, "status")
    for s in statuses:
        if s not in STATUSES:
            raise Open311Error(400, f"status: {s[:20]!r} is not open or closed")
    start = _date(params, "start_date")
    end = _date(params, "end_date")
    if start is None and end is None:
        start = now - SPAN
    elif start is None:
        assert end is not None
        start = end - SPAN
    elif end is None:
        end = start + SPAN
    elif end < start:
        raise Open311Error(400, "end_date: before start_date")
    elif end - start > SPAN:
        raise Open311Error(400, "end_date: the range from start_date may span at most 90 days")
    return RequestQuery(
        service_codes=tuple(_list(params, "service_code")) or None,
        start=start,
        end=end,
        statuses=tuple(statuses) or None,
    )


def _list(params: Mapping[str, str], name: str) -> list[str]:
    return [v.strip() for v in params.get(name, "").split(",") if v.strip()]


def _date(params: Mapping[str, str], name: str) -> datetime | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    if len(raw) > 6 and raw[-6] == " " and raw[-3] == ":":
        # an unencoded "+07:00" in a query string arrives as " 07:00"
        raw = raw[:-6] + "+" + raw[-5:]
    try:
        t = datetime.fromisoformat(raw)
    except ValueError:
        raise Open311Error(
            400, f"{name}: {raw[:40]!r} is not a W3C date-time (2026-11-28T19:00:00+07:00)"
        ) from None
    if t.tzinfo is None:
        raise Open311Error(400, f"{name}: {raw[:40]!r} has no time zone (Z or ±hh:mm)")
    return t
