"""Open311 resources from our records: routing categories → services, stored reports → service
requests (with the status mapping), and the discovery document.

**Status.** Open311 knows ``open`` and ``closed``; the incident a report belongs to knows more.
A report not yet routed, or whose incident is new, dispatched, accepted, in progress or
rejected (back at the IOC to re-dispatch), is ``open``; resolved or closed is ``closed`` (the
SQL twin is :data:`ioc.storage.reports.OPEN311_STATUS_SQL`). ``updated_datetime`` of a closed
request is when the work was done (resolved, else closed), so an on-time rate computed by an
Open311 client (``updated_datetime ≤ expected_datetime``) matches the IOC's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ioc.core.localtime import iso_local
from ioc.core.site import Site
from ioc.routing.table import Category, Routing

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"


def w3c(t: datetime | None) -> str | None:
    """W3C date-time with the offset of Asia/Ho_Chi_Minh (``2026-11-28T19:20:00+07:00``)."""
    return iso_local(t, "seconds") if t is not None else None


def service(c: Category) -> dict[str, Any]:
    """A category as an Open311 service: Vietnamese name and description; no extra attributes
    (``metadata`` false); ids returned at once (``realtime``); keywords comma-separated."""
    return {
        "service_code": c.code,
        "service_name": c.name_vi,
        "description": c.description_vi,
        "metadata": False,
        "type": "realtime",
        "keywords": ", ".join(c.keywords),
        "group": c.group,
    }


def service_definition(c: Category) -> dict[str, Any]:
    return {"service_code": c.code, "attributes": []}


def service_request(row: Mapping[str, Any], routing: Routing, site: Site) -> dict[str, Any]:
    """A stored report (``ioc.storage.reports`` view row) as an Open311 service request."""
    category = routing.by_code.get(row["service_code"])
    closed = row["status"] == "closed"
    if closed:
        updated = row["resolved_at"] or row["closed_at"] or row["incident_updated_at"]
    else:
        updated = max(
            (t for t in (row["received_at"], row["incident_updated_at"]) if t is not None),
            default=None,
        )
    return {
        "service_request_id": str(row["id"]),
        "status": row["status"],
        "status_notes": row["status_notes"],
        "service_name": category.name_vi if category else None,
        "service_code": row["service_code"],
        "description": row["description"] or None,
        "agency_responsible": _agency_name(row["agency_id"], site),
        "service_notice": None,
        "requested_datetime": w3c(row["reported_at"]),
        "updated_datetime": w3c(updated),
        "expected_datetime": w3c(row["deadline_at"]),
        "address": row["address"] or _place(row["city"], row["ward"], site),
        "address_id": None,
        "zipcode": None,
        "lat": row["lat"],
        "long": row["lon"],
        "media_url": row["media_url"],
    }


def _agency_name(agency_id: str | None, site: Site) -> str | None:
    if agency_id is None:
        return None
    agency = site.find_agency(agency_id)  # stored under a former id: the agency now
    return agency.name_vi if agency else agency_id


def _place(city_id: str | None, ward_id: str | None, site: Site) -> str | None:
    """A report without an address (MQTT reports carry a position only) is described by its
    ward and city, most specific first, as the spec asks of addresses: "phường Vị Tân, thành phố
    Cần Thơ" (a former ward id names the unit that absorbed it)."""
    return site.place_name(ward_id, city_id) or None


def discovery(endpoint_url: str, changeset: datetime, contact: str) -> dict[str, Any]:
    """The Service Discovery document: one production endpoint, both formats."""
    return {
        "changeset": w3c(changeset),
        "contact": contact,
        "key_service": "API keys (role open311) are issued by the IOC administrators.",
        "endpoints": [
            {
                "specification": SPECIFICATION,
                "url": endpoint_url,
                "changeset": w3c(changeset),
                "type": "production",
                "formats": ["text/xml", "application/json"],
            }
        ],
    }
