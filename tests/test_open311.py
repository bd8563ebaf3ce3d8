"""Open311 GeoReport v2 conformance on a running service: every endpoint in JSON and XML, the
spec's error cases, JSON answers validated against the published GeoReport v2 schemas
(tests/data/open311, see its PROVENANCE.md), XML checked for the spec's element names; reports
from MQTT and Open311 alike, each stored once however often it is sent; the feedback extension.
"""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import psycopg
import pytest

from ioc.app.runtime import Runtime
from ioc.core.settings import Settings
from ioc.core.topics import report_topic
from ioc.storage import reports as report_store
from ioc.storage import tokens
from tests.conftest import TOKEN, MqttPublisher, eventually, running_service

SCHEMAS = Path(__file__).parent / "data" / "open311"
V2 = "/open311/v2"
PUBLIC = [
    "chieu-sang", "ngap-nuoc", "giao-thong", "rac-thai", "trat-tu", "ha-tang", "khac",
    "xam-nhap-man",
]  # fmt: skip
VT = {"lat": "9.784", "long": "105.47"}  # Phường V, Vị Thanh
# The spec's element names of a service request (GeoReport v2, GET requests, "Response").
REQUEST_FIELDS = [
    "service_request_id", "status", "status_notes", "service_name", "service_code",
    "description", "agency_responsible", "service_notice", "requested_datetime",
    "updated_datetime", "expected_datetime", "address", "address_id", "zipcode", "lat", "long",
    "media_url",
]  # fmt: skip
SERVICE_FIELDS = [
    "service_code", "service_name", "description", "metadata", "type", "keywords", "group",
]  # fmt: skip


# -- schemas ---------------------------------------------------------------------------------------


def _validator(ref: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT7

    registry = referencing.Registry()
    for path in SCHEMAS.glob("*.json"):
        registry = registry.with_resource(
            path.name, DRAFT7.create_resource(json.loads(path.read_text(encoding="utf-8")))
        )
    return jsonschema.Draft7Validator(
        {"$ref": ref}, registry=registry, format_checker=jsonschema.FormatChecker()
    )


def conforms(ref: str, body: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator(ref).iter_errors(body)]
    assert not errors, (ref, errors, body)


def w3c_local(text: str | None) -> datetime:
    """A time we answer: W3C/RFC 3339 with the +07:00 offset (never naive, never Z)."""
    assert text is not None and text.endswith("+07:00"), text
    return datetime.fromisoformat(text)


def xml_of(r: httpx.Response, root: str) -> ET.Element:
    assert r.headers["content-type"].startswith("text/xml"), r.headers["content-type"]
    assert r.content.startswith(b'<?xml version="1.0" encoding="utf-8"?>'), r.content[:60]
    doc = ET.fromstring(r.content)
    assert doc.tag == root, (doc.tag, r.text)
    return doc


def fields_of(element: ET.Element) -> dict[str, str | None]:
    return {child.tag: child.text for child in element}


def json_error(r: httpx.Response, status: int, names: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    conforms("errors.json", body)
    assert body[0]["code"] == status
    assert names in body[0]["description"], body


def xml_error(r: httpx.Response, status: int, names: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    doc = xml_of(r, "errors")
    [error] = doc.findall("error")
    assert [c.tag for c in error] == ["code", "description"]
    assert error.findtext("code") == str(status)
    assert names in (error.findtext("description") or ""), r.text


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with running_service(settings) as pair:
        yield pair


@pytest.fixture
async def api_key(db: psycopg.AsyncConnection) -> str:
    _, secret = await tokens.create(db, name="citizen-app", role="open311")
    return secret


async def post(
    http: httpx.AsyncClient, fmt: str = "json", *, as_json: bool = False, **fields: str
) -> httpx.Response:
    url = f"{V2}/requests.{fmt}"
    if as_json:
        return await http.post(url, json=fields)
    return await http.post(url, data=fields)


async def scalar(db: psycopg.AsyncConnection, query: str, *params: object) -> Any:
    cur = await db.execute(query.encode(), params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


# -- services and discovery ------------------------------------------------------------------------


async def test_services_definitions_and_discovery_in_both_formats(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, http = service
    r = await http.get(f"{V2}/services.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    services = r.json()
    conforms("services.json", services)
    assert [s["service_code"] for s in services] == PUBLIC  # thiet-bi is not offered
    lighting = services[0]
    assert list(lighting) == SERVICE_FIELDS
    assert lighting["service_name"] == "Chiếu sáng công cộng"
    assert lighting["metadata"] is False and lighting["type"] == "realtime"
    assert lighting["keywords"] == "đèn đường, chiếu sáng, street light"
    assert lighting["group"] == "Hạ tầng kỹ thuật"

    doc = xml_of(await http.get(f"{V2}/services.xml"), "services")
    items = doc.findall("service")
    assert [s.findtext("service_code") for s in items] == PUBLIC
    assert [c.tag for c in items[0]] == SERVICE_FIELDS
    assert fields_of(items[0]) == {k: str(v).lower() if isinstance(v, bool) else v
                                   for k, v in lighting.items()}  # fmt: skip

    r = await http.get(f"{V2}/services/ngap-nuoc.json")
    assert r.status_code == 200
    conforms("service-definition.json", r.json())
    assert r.json() == {"service_code": "ngap-nuoc", "attributes": []}
    doc = xml_of(await http.get(f"{V2}/services/ngap-nuoc.xml"), "service_definition")
    assert [c.tag for c in doc] == ["service_code", "attributes"]
    attributes = doc.find("attributes")
    assert doc.findtext("service_code") == "ngap-nuoc"
    assert attributes is not None and len(attributes) == 0

    json_error(await http.get(f"{V2}/services/ufo.json"), 404, "service_code")
    xml_error(await http.get(f"{V2}/services/ufo.xml"), 404, "service_code")
    json_error(await http.get(f"{V2}/services/thiet-bi.json"), 404, "thiet-bi")
    json_error(await http.get(f"{V2}/services.yaml"), 404, "yaml")
    json_error(await http.get(f"{V2}/nothing-here.json"), 404, "nothing-here")
    xml_error(await http.get(f"{V2}/nothing-here.xml"), 404, "nothing-here")

    r = await http.get(f"{V2}/discovery.json")
    assert r.status_code == 200
    discovery = r.json()
    [endpoint] = discovery["endpoints"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"].endswith("/open311/v2/")
    assert endpoint["formats"] == ["text/xml", "application/json"]
    w3c_local(discovery["changeset"])
    doc = xml_of(await http.get(f"{V2}/discovery.xml"), "discovery")
    formats = doc.findall("endpoints/endpoint/formats/format")
    assert [f.text for f in formats] == ["text/xml", "application/json"]


# -- POST and reading back -------------------------------------------------------------------------


async def test_post_then_read_back_by_id_token_and_list_in_both_formats(
    service: tuple[Runtime, httpx.AsyncClient], api_key: str
) -> None:
    runtime, http = service
    r = await post(
        http, api_key=api_key, service_code="chieu-sang", description="Đèn đường không sáng.",
        media_url="https://anh.example.vn/1.jpg", email="an@example.vn", first_name="An",
        device_id="phone-1", **VT,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    [created] = r.json()
    conforms("swagger-definitions.json#/definitions/RequestResponse", _spec_nulls(created))
    assert list(created) == ["service_request_id", "token", "service_notice", "account_id"]
    assert created["account_id"] is None
    assert "Công ty" in created["service_notice"] or "chuyển đến" in created["service_notice"]
    rid, token = created["service_request_id"], created["token"]

    r = await http.get(f"{V2}/requests/{rid}.json")
    assert r.status_code == 200
    conforms("requests.json", r.json())
    [req] = r.json()
    assert list(req) == REQUEST_FIELDS
    assert req["service_request_id"] == rid and req["status"] == "open"
    assert req["service_code"] == "chieu-sang" and req["service_name"] == "Chiếu sáng công cộng"
    assert req["description"] == "Đèn đường không sáng."
    assert (req["lat"], req["long"]) == (9.784, 105.47)
    # no address given: the current unit (Phường V is part of Phường Vị Tân since July 2025)
    # and Cần Thơ city, never ids
    assert req["address"] == "phường Vị Tân, thành phố Cần Thơ"
    assert req["media_url"] == "https://anh.example.vn/1.jpg"
    requested = w3c_local(req["requested_datetime"])
    assert abs((requested - datetime.now(UTC)).total_seconds()) < 120
    assert "an@example.vn" not in r.text  # the reporter's personal data is never published

    # The incident router (woken by NOTIFY ioc_reports) routes it: agency and deadline appear.
    async def routed() -> dict[str, Any] | None:
        [now] = (await http.get(f"{V2}/requests/{rid}.json")).json()
        return now if now["agency_responsible"] else None

    req = await eventually(routed)
    assert req["agency_responsible"] == runtime.site.agency("urban-works").name_vi
    assert w3c_local(req["expected_datetime"]) > requested
    assert req["status"] == "open"

    r = await http.get(f"{V2}/tokens/{token}.json")
    assert r.status_code == 200
    [tok] = r.json()
    conforms("swagger-definitions.json#/definitions/TokenResponse", tok)
    assert tok == {"service_request_id": rid, "token": token}

    r = await http.get(f"{V2}/requests.json")
    conforms("requests.json", r.json())
    assert [q["service_request_id"] for q in r.json()] == [rid]

    # XML: the same resources under the spec's element names.
    doc = xml_of(await http.get(f"{V2}/requests/{rid}.xml"), "service_requests")
    [item] = doc.findall("request")
    assert [c.tag for c in item] == REQUEST_FIELDS
    assert item.findtext("service_request_id") == rid and item.findtext("status") == "open"
    assert item.findtext("lat") == "9.784" and item.findtext("long") == "105.47"
    empty = item.find("address_id")  # a null is an empty element, as in the spec's examples
    assert empty is not None and empty.text is None and len(empty) == 0
    doc = xml_of(await http.get(f"{V2}/requests.xml"), "service_requests")
    assert [i.findtext("service_request_id") for i in doc.findall("request")] == [rid]
    doc = xml_of(await http.get(f"{V2}/tokens/{token}.xml"), "service_requests")
    assert [fields_of(i) for i in doc.findall("request")] == [
        {"service_request_id": rid, "token": token}
    ]
    json_error(await http.get(f"{V2}/tokens/nope.json"), 404, "token")
    xml_error(await http.get(f"{V2}/tokens/nope.xml"), 404, "token")
    json_error(await http.get(f"{V2}/requests/999999.json"), 404, "999999")
    xml_error(await http.get(f"{V2}/requests/abc.xml"), 404, "abc")

    # POST answering in XML, body as JSON (accepted besides the spec's form encoding), located
    # by address only.
    r = await post(
        http, "xml", as_json=True, api_key=api_key, service_code="rac-thai",
        address_string="12 đường 3 Tháng 2, Phường V", description="Rác tồn đọng.",
        account_id="acc-7",
    )  # fmt: skip
    assert r.status_code == 201, r.text
    doc = xml_of(r, "service_requests")
    [item] = doc.findall("request")
    assert [c.tag for c in item] == ["service_request_id", "token", "service_notice", "account_id"]
    assert item.findtext("account_id") == "acc-7"
    rid2 = item.findtext("service_request_id")
    [req2] = (await http.get(f"{V2}/requests/{rid2}.json")).json()
    assert (req2["lat"], req2["long"]) == (None, None)
    assert req2["address"] == "12 đường 3 Tháng 2, Phường V"


def _spec_nulls(item: dict[str, Any]) -> dict[str, Any]:
    """swagger.json's RequestResponse types account_id as a string, but the spec's own example
    answer carries ``"account_id": null`` (none given): we follow the spec's example."""
    return {k: v for k, v in item.items() if not (k == "account_id" and v is None)}


async def test_post_errors_in_the_specs_format(
    service: tuple[Runtime, httpx.AsyncClient], api_key: str, db: psycopg.AsyncConnection
) -> None:
    _, http = service
    good = {"api_key": api_key, "service_code": "khac", "description": "x", **VT}

    def without(name: str) -> dict[str, str]:
        return {k: v for k, v in good.items() if k != name}

    json_error(await post(http, **without("api_key")), 403, "api_key")
    xml_error(await post(http, "xml", **without("api_key")), 403, "api_key")
    json_error(await post(http, **{**good, "api_key": "wrong"}), 403, "api_key")
    _, viewer = await tokens.create(db, name="wall", role="viewer")
    json_error(await post(http, **{**good, "api_key": viewer}), 403, "viewer")
    json_error(await post(http, **without("service_code")), 400, "service_code")
    json_error(await post(http, **{**good, "service_code": "ufo"}), 404, "service_code")
    xml_error(await post(http, "xml", **{**good, "service_code": "ufo"}), 404, "service_code")
    json_error(await post(http, **without("lat") | {"long": ""}), 400, "location")
    json_error(await post(http, **without("long")), 400, "long")
    json_error(await post(http, **{**good, "lat": "north"}), 400, "lat")
    json_error(await post(http, **{**good, "lat": "10.5", "long": "106.0"}), 400, "outside")
    long_text = "đ" * 4001
    json_error(await post(http, **{**good, "description": long_text}), 400, "description")
    xml_error(await post(http, "xml", **{**good, "description": long_text}), 400, "description")
    json_error(await post(http, **{**good, "media_url": "javascript:alert(1)"}), 400, "media_url")
    r = await http.post(
        f"{V2}/requests.json", content=b"<x/>", headers={"content-type": "text/xml"}
    )
    json_error(r, 400, "content type")
    r = await http.post(
        f"{V2}/requests.json", content=b"[1]", headers={"content-type": "application/json"}
    )
    json_error(r, 400, "JSON object")
    # The admin token is a valid api_key too (an operator filing a phoned-in report).
    assert (await post(http, **{**good, "api_key": TOKEN})).status_code == 201
    assert await scalar(db, "SELECT count(*) FROM reports") == 1


async def test_same_request_twice_is_one_report(
    service: tuple[Runtime, httpx.AsyncClient], api_key: str, db: psycopg.AsyncConnection
) -> None:
    _, http = service
    fields = {"api_key": api_key, "service_code": "ha-tang", "description": " Nắp cống vỡ. "}
    first = await post(http, **fields, lat="9.7840", long="105.4700")
    assert first.status_code == 201
    # A retry, as JSON with numbers and without the padding: the same request.
    again = await http.post(
        f"{V2}/requests.json",
        json={**fields, "description": "Nắp cống vỡ.", "lat": 9.784, "long": 105.47},
    )
    assert again.status_code == 200, again.text
    assert again.json()[0]["service_request_id"] == first.json()[0]["service_request_id"]
    assert again.json()[0]["token"] == first.json()[0]["token"]
    assert "trước đó" in again.json()[0]["service_notice"]
    assert await scalar(db, "SELECT count(*) FROM reports") == 1
    # Another client application sending the same words is another report.
    _, other = await tokens.create(db, name="zalo-bridge", role="open311")
    r = await post(http, **{**fields, "api_key": other}, lat="9.784", long="105.47")
    assert r.status_code == 201
    assert await scalar(db, "SELECT count(*) FROM reports") == 2


# -- GET requests: filters and the status mapping --------------------------------------------------


async def _seed(
    db: psycopg.AsyncConnection,
    *,
    code: str,
    at: datetime,
    incident: dict[str, Any] | None = None,
    notes: tuple[str, ...] = (),
) -> int:
    """A routed report (so the running incident router leaves it alone), with its incident."""
    async with db.transaction():
        report_id, _, _ = await report_store.insert(
            db,
            report_store.NewReport(
                dedupe_key=f"test:{uuid.uuid4().hex}", source="hotline", service_code=code,
                description=f"{code} at {at.isoformat()}", reported_at=at, city="vi-thanh",
                ward="phuong-5", lat=9.784, lon=105.47,
            ),
        )  # fmt: skip
        incident_id = None
        if incident is not None:
            incident_id = await scalar(
                db,
                """INSERT INTO incidents (category, severity, status, title, opened_at, agency_id,
                       deadline_at, resolved_at, updated_at)
                   VALUES (%s, 'warning', %s, 't', %s, %s, %s, %s, %s) RETURNING id""",
                code, incident["status"], at, incident.get("agency"), incident.get("deadline"),
                incident.get("resolved_at"), incident.get("updated_at", at),
            )  # fmt: skip
            for i, note in enumerate(notes):
                await db.execute(
                    "INSERT INTO incident_events (incident_id, time, kind, actor, note)"
                    " VALUES (%s, %s, 'progress', 'agency:urban-works', %s)",
                    (incident_id, at + timedelta(minutes=i + 1), note),
                )
        await db.execute(
            "UPDATE reports SET incident_id = %s, routed_at = now() WHERE id = %s",
            (incident_id, report_id),
        )
    return report_id


async def test_get_requests_filters_and_status_mapping(
    service: tuple[Runtime, httpx.AsyncClient], db: psycopg.AsyncConnection
) -> None:
    runtime, http = service
    now = datetime.now(UTC).replace(microsecond=0)
    deadline = now + timedelta(days=2)
    ids: dict[str, int] = {}
    ids["unrouted"] = await _seed(db, code="khac", at=now - timedelta(hours=1))
    for i, status in enumerate(["new", "dispatched", "accepted", "in_progress", "rejected"]):
        ids[status] = await _seed(
            db, code="chieu-sang", at=now - timedelta(hours=2 + i),
            incident={"status": status, "agency": "urban-works", "deadline": deadline},
            notes=("đã tiếp nhận", f"ghi chú {status}"),
        )  # fmt: skip
    resolved_at = now - timedelta(hours=3)
    ids["resolved"] = await _seed(
        db, code="ngap-nuoc", at=now - timedelta(days=1),
        incident={"status": "resolved", "agency": "pctt", "deadline": deadline,
                  "resolved_at": resolved_at, "updated_at": now},
        notes=("đã bơm thoát nước",),
    )  # fmt: skip
    ids["closed"] = await _seed(
        db, code="ngap-nuoc", at=now - timedelta(days=2),
        incident={"status": "closed", "agency": "nowhere-agency"},
    )  # fmt: skip
    ids["old"] = await _seed(db, code="khac", at=now - timedelta(days=120))

    async def listed(query: str = "", fmt: str = "json") -> list[str]:
        r = await http.get(f"{V2}/requests.{fmt}{query}")
        assert r.status_code == 200, r.text
        if fmt == "xml":
            return [i.findtext("service_request_id") or "" for i in
                    xml_of(r, "service_requests").findall("request")]  # fmt: skip
        conforms("requests.json", r.json())
        return [q["service_request_id"] for q in r.json()]

    def s(*names: str) -> list[str]:
        return [str(ids[n]) for n in names]

    newest_first = ["unrouted", "new", "dispatched", "accepted", "in_progress", "rejected",
                    "resolved", "closed"]  # fmt: skip
    assert await listed() == s(*newest_first)  # "old" is beyond the default 90 days
    assert await listed(fmt="xml") == s(*newest_first)
    assert await listed("?status=closed") == s("resolved", "closed")
    assert await listed("?status=open") == s(*newest_first[:6])
    assert await listed("?status=open,closed&service_code=ngap-nuoc,khac") == s(
        "unrouted", "resolved", "closed"
    )
    # service_request_id overrides every other filter (even the 90 days).
    assert await listed(f"?service_request_id={ids['old']},{ids['new']}&status=closed") == s(
        "new", "old"
    )
    start = (now - timedelta(days=130)).isoformat()
    end = (now - timedelta(days=100)).isoformat()
    assert await listed(f"?{httpx.QueryParams(start_date=start, end_date=end)}") == s("old")
    # An unencoded '+' of the offset (a space once decoded) is understood.
    local = (now - timedelta(hours=2, minutes=30)).astimezone(ZoneInfo("Asia/Ho_Chi_Minh"))
    assert await listed(f"?start_date={local.isoformat()}") == s("unrouted", "new")

    json_error(await http.get(f"{V2}/requests.json?status=pending"), 400, "status")
    json_error(await http.get(f"{V2}/requests.json?start_date=yesterday"), 400, "start_date")
    json_error(
        await http.get(f"{V2}/requests.json?start_date=2026-11-01T00:00:00"), 400, "time zone"
    )
    q = httpx.QueryParams(start_date=start, end_date=now.isoformat())
    json_error(await http.get(f"{V2}/requests.json?{q}"), 400, "90 days")
    xml_error(await http.get(f"{V2}/requests.xml?{q}"), 400, "90 days")
    q = httpx.QueryParams(start_date=now.isoformat(), end_date=start)
    json_error(await http.get(f"{V2}/requests.json?{q}"), 400, "end_date")
    json_error(await http.get(f"{V2}/requests.json?service_request_id=1,x"), 400, "x")

    async def one(name: str) -> dict[str, Any]:
        [req] = (await http.get(f"{V2}/requests/{ids[name]}.json")).json()
        return req  # type: ignore[no-any-return]

    unrouted = await one("unrouted")
    assert unrouted["status"] == "open" and unrouted["agency_responsible"] is None
    assert unrouted["status_notes"] is None and unrouted["expected_datetime"] is None
    for status in ["new", "dispatched", "accepted", "in_progress", "rejected"]:
        req = await one(status)
        assert req["status"] == "open", status
        assert req["status_notes"] == f"ghi chú {status}"  # the latest note
        assert req["agency_responsible"] == runtime.site.agency("urban-works").name_vi
        assert w3c_local(req["expected_datetime"]) == deadline
    # internal notes (a rejection's reason, a reassignment) and other citizens' rating comments
    # never become a public status note
    incident_id = await scalar(db, "SELECT incident_id FROM reports WHERE id = %s", ids["rejected"])
    for i, kind in enumerate(("reject", "reassigned", "rated")):
        await db.execute(
            "INSERT INTO incident_events (incident_id, time, kind, actor, note)"
            " VALUES (%s, %s, %s, 'x', 'nội bộ: số ĐT người báo 0909')",
            (incident_id, now + timedelta(minutes=i + 1), kind),
        )
    assert (await one("rejected"))["status_notes"] == "ghi chú rejected"
    resolved = await one("resolved")
    assert resolved["status"] == "closed" and resolved["status_notes"] == "đã bơm thoát nước"
    assert w3c_local(resolved["updated_datetime"]) == resolved_at  # when the work was done
    assert resolved["agency_responsible"] == runtime.site.agency("pctt").name_vi
    closed = await one("closed")
    assert closed["status"] == "closed" and closed["agency_responsible"] == "nowhere-agency"
    assert w3c_local(closed["requested_datetime"]) == now - timedelta(days=2)


# -- feedback extension ----------------------------------------------------------------------------


async def test_feedback_only_after_resolution(
    service: tuple[Runtime, httpx.AsyncClient], api_key: str, db: psycopg.AsyncConnection
) -> None:
    _, http = service
    now = datetime.now(UTC)
    rid = await _seed(
        db, code="chieu-sang", at=now - timedelta(hours=5),
        incident={"status": "in_progress", "agency": "urban-works"},
    )  # fmt: skip
    incident_id = await scalar(db, "SELECT incident_id FROM reports WHERE id = %s", rid)
    url = f"{V2}/requests/{rid}/feedback"
    good = {"api_key": api_key, "rating": "5", "comment": "Sửa nhanh, cảm ơn."}

    json_error(await http.post(f"{url}.json", data=good), 400, "still open")
    json_error(await http.post(f"{url}.json", data={**good, "api_key": ""}), 403, "api_key")
    json_error(await http.post(f"{V2}/requests/999999/feedback.json", data=good), 404, "999999")
    await db.execute(
        "UPDATE incidents SET status = 'resolved', resolved_at = now() WHERE id = %s",
        (incident_id,),
    )
    json_error(await http.post(f"{url}.json", data={**good, "rating": "7"}), 400, "rating")
    json_error(await http.post(f"{url}.json", data={**good, "rating": "good"}), 400, "rating")
    xml_error(await http.post(f"{url}.xml", data={**good, "rating": ""}), 400, "rating")

    r = await http.post(f"{url}.json", data=good)
    assert r.status_code == 200, r.text
    [fb] = r.json()
    assert (fb["service_request_id"], fb["rating"], fb["comment"]) == (str(rid), 5, good["comment"])
    w3c_local(fb["rated_at"])
    row = await (
        await db.execute(
            "SELECT r.rating, r.rating_comment, r.rated_at IS NOT NULL, i.status, i.rating"
            " FROM reports r JOIN incidents i ON i.id = r.incident_id WHERE r.id = %s",
            (rid,),
        )
    ).fetchone()
    assert row == (5, good["comment"], True, "closed", 5)
    actor = await scalar(
        db, "SELECT actor FROM incident_events WHERE incident_id = %s AND kind = 'rated'",
        incident_id,
    )  # fmt: skip
    assert actor == f"citizen/report-{rid}"
    [req] = (await http.get(f"{V2}/requests/{rid}.json")).json()
    assert req["status"] == "closed"

    # A retry answers the same; another rating is refused; XML answers under the spec's names.
    doc = xml_of(await http.post(f"{url}.xml", json=good), "service_requests")
    assert [c.tag for c in doc.findall("request")[0]] == [
        "service_request_id", "rating", "comment", "rated_at",
    ]  # fmt: skip
    json_error(await http.post(f"{url}.json", data={**good, "rating": "1"}), 400, "already")


# -- the MQTT intake, seen through Open311 ---------------------------------------------------------


async def test_mqtt_report_is_stored_once_acknowledged_and_listed(
    service: tuple[Runtime, httpx.AsyncClient],
    publisher: MqttPublisher,
    db: psycopg.AsyncConnection,
) -> None:
    runtime, http = service
    topic = report_topic(runtime.settings.mqtt_topic_prefix, "vi-thanh", "zalo")
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    payload = orjson.dumps(
        {
            "id": "zalo-000042", "ts": int(ts.timestamp() * 1000), "category": "ngap-nuoc",
            "lat": 9.784, "lon": 105.47, "description": "Đường ngập sâu sau mưa.",
            "media_url": None,
        }
    )  # fmt: skip
    committed = runtime.ingest.committed
    publisher.publish(topic, payload)
    publisher.publish(topic, payload)  # the relay sends it again

    async def both_acknowledged() -> bool:
        return bool(runtime.ingest.committed >= committed + 2)

    await eventually(both_acknowledged)
    assert await scalar(db, "SELECT count(*) FROM reports") == 1
    row = await (
        await db.execute("SELECT id, source, external_id, dedupe_key, city, ward FROM reports")
    ).fetchone()
    assert row is not None
    assert row[1:] == ("zalo", "zalo-000042", "mqtt:vi-thanh:zalo:zalo-000042", "vi-thanh",
                       "phuong-vi-tan")  # fmt: skip
    r = await http.get(f"{V2}/requests.json?service_code=ngap-nuoc")
    conforms("requests.json", r.json())
    [req] = r.json()
    assert req["service_request_id"] == str(row[0])
    assert w3c_local(req["requested_datetime"]) == ts
    assert req["description"] == "Đường ngập sâu sau mưa."


# -- reports naming a place abolished in the 2025 merger ------------------------------------------


async def test_a_report_by_a_former_ward_name_lands_in_its_current_unit(
    service: tuple[Runtime, httpx.AsyncClient], api_key: str, db: psycopg.AsyncConnection
) -> None:
    """Citizens still write the old names: "Phường V" is part of Phường Vị Tân, "xã Tân Thành"
    of Phường Đại Thành. The report is accepted there, and the notice names the body that
    answers for it now (the unit's People's Committee for missed waste)."""
    _, http = service
    r = await post(
        http, api_key=api_key, service_code="rac-thai", description="Rác chưa thu gom 3 ngày.",
        address_string="Hẻm 12 đường 3 Tháng 2, Phường V, Vị Thanh",
    )  # fmt: skip
    assert r.status_code == 201, r.text
    [created] = r.json()
    assert "Ủy ban nhân dân Phường Vị Tân" in created["service_notice"]
    r = await post(
        http, api_key=api_key, service_code="trat-tu", description="Lấn chiếm vỉa hè.",
        address_string="Ấp 3, xã Tân Thành, Ngã Bảy",
    )  # fmt: skip
    assert r.status_code == 201, r.text
    rows = await (
        await db.execute("SELECT service_code, city, ward FROM reports ORDER BY id")
    ).fetchall()
    assert rows == [("rac-thai", "vi-thanh", "phuong-vi-tan"),
                    ("trat-tu", "nga-bay", "phuong-dai-thanh")]  # fmt: skip


async def test_an_mqtt_report_naming_a_former_ward_is_accepted_in_its_unit(
    service: tuple[Runtime, httpx.AsyncClient],
    publisher: MqttPublisher,
    db: psycopg.AsyncConnection,
) -> None:
    """A relay without a position may name the place: a former ward id or name resolves to the
    current unit; a place in the other pilot area than the topic's is refused."""
    runtime, _ = service
    prefix = runtime.settings.mqtt_topic_prefix
    ts = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp() * 1000)

    def report(ident: str, place: str) -> bytes:
        return orjson.dumps({"id": ident, "ts": ts, "category": "ngap-nuoc", "place": place,
                             "description": "Nước ngập qua mặt đường."})  # fmt: skip

    committed = runtime.ingest.committed
    publisher.publish(report_topic(prefix, "vi-thanh", "zalo"), report("z-1", "phuong-5"))
    publisher.publish(report_topic(prefix, "nga-bay", "zalo"), report("z-2", "Phường Hiệp Lợi"))
    publisher.publish(report_topic(prefix, "nga-bay", "zalo"), report("z-3", "Phường V"))

    async def all_taken() -> bool:
        return bool(runtime.ingest.committed >= committed + 3)

    await eventually(all_taken)
    rows = await (
        await db.execute("SELECT external_id, city, ward, lat FROM reports ORDER BY external_id")
    ).fetchall()
    assert rows == [("z-1", "vi-thanh", "phuong-vi-tan", None),
                    ("z-2", "nga-bay", "phuong-dai-thanh", None)]  # fmt: skip
    detail = await scalar(
        db,
        "SELECT detail FROM dead_letters WHERE position(%s in convert_from(payload, 'UTF8')) > 0",
        '"z-3"',
    )
    assert "topic says nga-bay" in detail
