"""Public warnings in OASIS CAP 1.2: issue from an alert, an Atom index, each message's XML.

- ``POST /api/v1/alerts/{id}/cap`` — an operator issues an Alert, an Update or a Cancel about an
  alert (``require_operator``). Update and Cancel cite every earlier message of the same alert
  in ``references``; the caller is recorded as ``created_by``.
- ``GET /api/v1/cap/feed`` — an Atom feed of the issued messages, newest first, each entry
  linking to its XML: the index national alert hubs and aggregators poll.
- ``GET /api/v1/cap/messages/{identifier}.xml`` — one message, ``application/cap+xml``.

The feed and the messages are **public warnings: they need no token**, so that alert hubs,
broadcasters and citizens' apps can read them; issuing needs an operator's.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from ioc.alerting import store as alert_store
from ioc.api.auth import Caller, require_operator
from ioc.api.context import runtime_of
from ioc.cap import message as cap
from ioc.core.site import CapSender, Site
from ioc.core.wording import localise_numbers
from ioc.storage import cap_messages

router = APIRouter(prefix="/api/v1", tags=["cap"])

ATOM_NS = "http://www.w3.org/2005/Atom"
ATOM_MEDIA_TYPE = "application/atom+xml"
DEFAULT_RADIUS_KM = 2.0


class IssueIn(BaseModel):
    msg_type: Literal["Alert", "Update", "Cancel"]
    instruction: str | None = Field(
        None, min_length=1, max_length=2000, description="Vietnamese instruction to the public"
    )
    instruction_en: str | None = Field(None, min_length=1, max_length=2000)
    area: Literal["ward", "circle"] = Field(
        "ward", description="the ward's outline as a polygon, or a circle around the device"
    )
    radius_km: float | None = Field(
        None, gt=0, le=100, description=f"circle radius (default {DEFAULT_RADIUS_KM} km)"
    )


class IssuedOut(BaseModel):
    identifier: str
    msg_type: str
    sent: str = Field(description="CAP time, +07:00")
    alert_id: int
    incident_id: int | None
    references: list[str] = Field(description="identifiers of the earlier messages cited")
    created_by: str
    url: str
    xml: str


def _message_url(request: Request, identifier: str) -> str:
    return str(request.url_for("cap_message", identifier=identifier))


@router.post("/alerts/{alert_id}/cap", status_code=201, response_model=IssuedOut, tags=["alerts"])
async def issue(
    alert_id: int,
    body: IssueIn,
    request: Request,
    response: Response,
    caller: Annotated[Caller, Depends(require_operator)],
) -> IssuedOut:
    """Issue a CAP message about an alert (operators). Alert first; then Update or Cancel."""
    runtime = runtime_of(request)
    async with (
        runtime.pool.connection() as conn,
        conn.transaction(),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        # The row lock serialises issuers of the same alert: message numbers and reference
        # chains stay gap-free and in order.
        alert = await alert_store.lock_for_cap(conn, alert_id)
        if alert is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"alert {alert_id} does not exist")
        labels: dict[str, str] = alert["labels"] or {}
        domain = labels.get("domain")
        if not cap.is_public_domain(domain):
            raise HTTPException(
                422,
                f"alert_id: {domain!r} alerts are not public warnings "
                f"(CAP is issued for {sorted(cap.CATEGORIES)})",
            )
        chain = await cap_messages.of_alert(conn, alert_id)
        _check_sequence(body.msg_type, chain, alert["state"], alert_id)

        device = None
        water_level = None
        if alert["device_id"]:
            await cur.execute(
                "SELECT id, city, ward, name, lat, lon, attributes FROM devices WHERE id = %s",
                (alert["device_id"],),
            )
            device = await cur.fetchone()
            await cur.execute(
                "SELECT value FROM latest_readings WHERE device_id = %s"
                " AND metric = 'water_level_m'",
                (alert["device_id"],),
            )
            latest = await cur.fetchone()
            water_level = latest["value"] if latest else None
        await cur.execute(
            """SELECT id FROM incidents WHERE source_alert_id = %(a)s
               UNION SELECT incident_id FROM incident_alerts WHERE alert_id = %(a)s
               ORDER BY id DESC LIMIT 1""",
            {"a": alert_id},
        )
        incident = await cur.fetchone()

        facts = _facts(alert, device, water_level, incident["id"] if incident else None)
        area = _area(runtime.site, body, labels, device)
        n = len(chain) + 1
        identifier = cap.identifier_for(alert_id, n)
        try:
            message = cap.build_message(
                facts,
                msg_type=body.msg_type,
                identifier=identifier,
                sent=datetime.now(UTC),
                area=area,
                sender=_sender(runtime.site),
                references=[
                    cap.Reference(cap.sender_of(m.xml), m.identifier, m.sent_at) for m in chain
                ],
                instruction_vi=body.instruction,
                instruction_en=body.instruction_en,
                web=_message_url(request, identifier),
            )
        except cap.CapError as exc:
            raise HTTPException(422, str(exc)) from None
        stored = await cap_messages.insert(
            conn,
            identifier=message.identifier,
            msg_type=message.msg_type,
            sent_at=message.sent,
            alert_id=alert_id,
            incident_id=facts.incident_id,
            references_id=chain[-1].id if chain else None,
            created_by=caller.actor,
            xml=message.xml,
        )
    url = _message_url(request, stored.identifier)
    response.headers["Location"] = url
    return IssuedOut(
        identifier=stored.identifier,
        msg_type=stored.msg_type,
        sent=cap.cap_time(stored.sent_at),
        alert_id=alert_id,
        incident_id=stored.incident_id,
        references=[m.identifier for m in chain],
        created_by=stored.created_by,
        url=url,
        xml=stored.xml,
    )


def _check_sequence(
    msg_type: str, chain: list[cap_messages.StoredMessage], state: str, alert_id: int
) -> None:
    """Alert opens a chain; Update and Cancel continue it; nothing follows a Cancel."""
    if chain and chain[-1].msg_type == "Cancel":
        raise HTTPException(
            409,
            f"msg_type: the warning for alert {alert_id} was cancelled ({chain[-1].identifier})",
        )
    if msg_type == "Alert" and chain:
        raise HTTPException(
            409,
            f"msg_type: alert {alert_id} already has a warning ({chain[0].identifier}); "
            "send an Update or a Cancel",
        )
    if msg_type != "Alert" and not chain:
        raise HTTPException(
            409, f"msg_type: nothing to {msg_type.lower()} — no warning was issued for alert "
            f"{alert_id}; send an Alert first",
        )  # fmt: skip
    if msg_type == "Alert" and state == "resolved":
        raise HTTPException(409, f"msg_type: alert {alert_id} is resolved; nothing to warn of")


def _facts(
    alert: dict[str, Any],
    device: dict[str, Any] | None,
    water_level: float | None,
    incident_id: int | None,
) -> cap.AlertFacts:
    ann: dict[str, str] = alert["annotations"] or {}
    labels: dict[str, str] = alert["labels"] or {}
    attrs: dict[str, Any] = (device or {}).get("attributes") or {}
    levels = None
    if all(isinstance(attrs.get(k), int | float) for k in ("bd1", "bd2", "bd3")):
        levels = (float(attrs["bd1"]), float(attrs["bd2"]), float(attrs["bd3"]))
    flood_gauge = labels.get("kind") == "flood" or (device is not None and levels is not None)
    summary_en = ann.get("summary_en") or alert["rule"]
    return cap.AlertFacts(
        alert_id=alert["id"],
        rule=alert["rule"],
        domain=labels.get("domain", ""),
        severity=alert["severity"],
        state=alert["state"],
        summary_vi=ann.get("summary_vi") or summary_en,
        summary_en=summary_en,
        description_vi=ann.get("description_vi"),
        description_en=ann.get("description_en"),
        onset=alert["started_at"] or alert["active_at"],
        device_name=device["name"] if device else None,
        value=alert["value"],
        water_level_m=water_level if flood_gauge else None,
        alarm_levels=levels,
        station=device["name"] if device and levels else None,
        incident_id=incident_id,
        risk_level=alert.get("risk_level"),
        advice_vi=ann.get("advice_vi"),
        advice_en=ann.get("advice_en"),
    )


def _area(
    site: Any, body: IssueIn, labels: dict[str, str], device: dict[str, Any] | None
) -> cap.Area:
    """The ward outline (polygon) or a circle around the device, named in both languages."""
    ward_id = labels.get("ward") or (device or {}).get("ward")
    ward = site.find_ward(ward_id)  # a former ward id: the unit that absorbed it
    city_id = ward.city if ward else labels.get("city") or (device or {}).get("city")
    # "phường Vị Tân, thành phố Cần Thơ": the current unit and Cần Thơ city (since July 2025),
    # never the abolished "thành phố Vị Thanh" and never an id
    place_vi = site.place_name(ward_id, city_id, "vi")
    place_en = site.place_name(ward_id, city_id, "en")
    if body.area == "ward":
        if ward is None:
            raise HTTPException(
                422, f"area: the alert's ward {ward_id!r} has no outline in the site data; "
                "use area=circle",
            )  # fmt: skip
        return cap.Area.from_outline(ward.outline, place_vi, place_en)
    if device is None:
        raise HTTPException(422, "area: a circle needs the alert's device position; use area=ward")
    radius = body.radius_km or DEFAULT_RADIUS_KM
    desc_vi = f"Bán kính {localise_numbers(f'{radius:g}', 'vi')} km quanh {device['name']}"
    desc_en = f"Within {radius:g} km of {device['name']}"
    if place_vi:
        desc_vi, desc_en = f"{desc_vi} ({place_vi})", f"{desc_en} ({place_en})"
    return cap.Area(desc_vi, desc_en, circle=(device["lat"], device["lon"], radius))


# -- public: the Atom index and the messages ----------------------------------------------------


@router.get(
    "/cap/feed",
    name="cap_feed",
    response_class=Response,
    responses={200: {"content": {ATOM_MEDIA_TYPE: {}}, "description": "Atom 1.0 feed"}},
)
async def feed(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    """Atom feed of issued CAP messages, newest first (public: no token needed)."""
    async with runtime_of(request).pool.connection() as conn:
        messages = await cap_messages.newest(conn, limit)
    body = atom_feed(
        messages,
        sender=_sender(runtime_of(request).site),
        self_url=str(request.url_for("cap_feed")),
        message_url=lambda identifier: _message_url(request, identifier),
    )
    return Response(body, media_type=ATOM_MEDIA_TYPE + "; charset=utf-8")


@router.get(
    "/cap/messages/{identifier}.xml",
    name="cap_message",
    response_class=Response,
    responses={200: {"content": {cap.CAP_MEDIA_TYPE: {}}, "description": "a CAP 1.2 message"}},
)
async def message(identifier: str, request: Request) -> Response:
    """One CAP 1.2 message as issued (public: no token needed)."""
    async with runtime_of(request).pool.connection() as conn:
        stored = await cap_messages.get(conn, identifier)
    if stored is None:
        raise HTTPException(404, f"no CAP message {identifier!r}")
    return Response(stored.xml, media_type=cap.CAP_MEDIA_TYPE + "; charset=utf-8")


def _sender(site: Site) -> CapSender:
    """Who signs: the site file's ``cap_sender`` (the loader requires it; a site built in code
    may lack it)."""
    if site.cap_sender is None:
        raise HTTPException(
            503, 'site data: no cap_sender (who signs CAP warnings): see docs/cap.md, "Sender"'
        )
    return site.cap_sender


def atom_feed(
    messages: list[cap_messages.StoredMessage],
    *,
    sender: CapSender,
    self_url: str,
    message_url: Any,
) -> str:
    """An Atom 1.0 document (RFC 4287) with one entry per message, its headline and area from
    the Vietnamese ``<info>``, and an ``alternate`` link of type ``application/cap+xml``."""
    # Plain tag names with an xmlns attribute: ElementTree's default_namespace cannot serialise
    # the unqualified attributes Atom uses (rel, href, term).
    root = ET.Element("feed", {"xmlns": ATOM_NS})
    _atom(root, "id", f"tag:haugiang.gov.vn,2025:{cap.IDENTIFIER_PREFIX}:cap-feed")
    _atom(root, "title", f"Cảnh báo công cộng – {sender.name_vi} (Public warnings, CAP 1.2)")
    newest = messages[0].sent_at if messages else datetime.now(UTC)
    _atom(root, "updated", cap.cap_time(newest))
    author = _atom(root, "author")
    _atom(author, "name", sender.name_vi)
    _atom(author, "email", sender.address)
    if sender.web:
        _atom(author, "uri", sender.web)
    _atom(root, "link", rel="self", href=self_url, type=ATOM_MEDIA_TYPE)
    for m in messages:
        info = _info_vi(m.xml)
        entry = _atom(root, "entry")
        _atom(entry, "id", f"tag:haugiang.gov.vn,2025:{m.identifier}")
        _atom(entry, "title", info.get("headline") or m.identifier)
        _atom(entry, "updated", cap.cap_time(m.sent_at))
        _atom(entry, "published", cap.cap_time(m.sent_at))
        _atom(entry, "category", term=m.msg_type, label=m.msg_type)
        _atom(
            entry, "link", rel="alternate", type=cap.CAP_MEDIA_TYPE, href=message_url(m.identifier)
        )
        summary = " — ".join(
            v for v in (info.get("event"), info.get("severity"), info.get("areaDesc")) if v
        )
        _atom(entry, "summary", summary or m.msg_type)
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body


def _atom(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _info_vi(xml: str) -> dict[str, str]:
    """headline, event, severity and areaDesc of the message's vi-VN info (else the first)."""
    ns = {"c": cap.CAP_NS}
    root = ET.fromstring(xml.encode())
    infos = root.findall("c:info", ns)
    info = next(
        (i for i in infos if i.findtext("c:language", namespaces=ns) == "vi-VN"),
        infos[0] if infos else None,
    )
    if info is None:
        return {}
    out = {k: info.findtext(f"c:{k}", namespaces=ns) for k in ("headline", "event", "severity")}
    out["areaDesc"] = info.findtext("c:area/c:areaDesc", namespaces=ns)
    return {k: v for k, v in out.items() if v}
