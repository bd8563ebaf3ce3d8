"""CAP 1.2 public warnings: every message validated against the OASIS CAP 1.2 XML Schema
(tests/data/cap/CAP-v1.2.xsd, see tests/data/cap/README.md), reference chains, +07:00 times,
areas, and the issue / feed / message routes over HTTP against the real service."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
import xmlschema
from psycopg.types.json import Jsonb

from ioc.api.cap import atom_feed
from ioc.cap import message as cap
from ioc.core.packaged import SITE_DATA
from ioc.core.settings import Settings
from ioc.core.site import CapSender, SiteError, load_site
from ioc.storage import cap_messages, tokens
from tests.conftest import TOKEN, running_service

XSD = Path(__file__).parent / "data" / "cap" / "CAP-v1.2.xsd"
NS = {"c": cap.CAP_NS}
ATOM = {"a": "http://www.w3.org/2005/Atom"}
CAP_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+07:00$")
ICT = timezone(timedelta(hours=7))
SENT = datetime(2026, 11, 28, 19, 30, 12, 345678, tzinfo=ICT)
_SENDER = load_site(SITE_DATA / "hau-giang.yaml").cap_sender
assert _SENDER is not None
SENDER = _SENDER  # the shipped site file's `cap_sender`


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(XSD)


def _flood(level_m: float | None = 0.82, severity: str = "critical") -> cap.AlertFacts:
    return cap.AlertFacts(
        alert_id=42,
        rule="flood-bd3",
        domain="flood",
        severity=severity,
        state="firing",
        summary_vi="Trạm Vị Thanh: mực nước 0.82 m vượt báo động III (0.75 m)",
        summary_en="Vị Thanh station: water level 0.82 m above alarm level III (0.75 m)",
        onset=datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
        value=0.82,
        water_level_m=level_m,
        alarm_levels=(0.55, 0.65, 0.75),
        station="Trạm thủy văn Vị Thanh",
        incident_id=7,
    )


def _ward_area() -> cap.Area:
    site = load_site(SITE_DATA / "hau-giang.yaml")
    ward = site.ward("phuong-vi-tan")
    return cap.Area.from_outline(
        ward.outline, site.place_name(ward.id, lang="vi"), site.place_name(ward.id, lang="en")
    )


def _chain() -> list[cap.CapMessage]:
    """Alert → Update → Cancel about one alert, each citing all earlier ones."""
    facts, area = _flood(), _ward_area()
    out: list[cap.CapMessage] = []
    for n, msg_type in enumerate(("Alert", "Update", "Cancel"), start=1):
        refs = [cap.Reference(SENDER.address, m.identifier, m.sent) for m in out]
        out.append(
            cap.build_message(
                facts,
                msg_type=msg_type,  # type: ignore[arg-type]
                identifier=cap.identifier_for(42, n),
                sent=SENT + timedelta(minutes=30 * (n - 1)),
                area=area,
                sender=SENDER,
                references=refs,
                web="https://ioc.example/api/v1/cap/messages/x.xml",
            )
        )
    return out


def _root(xml: str) -> ET.Element:
    return ET.fromstring(xml.encode())


def test_alert_update_and_cancel_are_valid_cap_1_2(schema: xmlschema.XMLSchema) -> None:
    for m in _chain():
        schema.validate(m.xml)  # raises with the offending element and rule
        root = _root(m.xml)
        assert root.tag == f"{{{cap.CAP_NS}}}alert"
        assert root.findtext("c:msgType", namespaces=NS) == m.msg_type
        assert root.findtext("c:status", namespaces=NS) == "Actual"
        assert root.findtext("c:scope", namespaces=NS) == "Public"
        assert root.findtext("c:sender", namespaces=NS) == SENDER.address
        assert m.xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')


def test_schema_rejects_what_cap_forbids(schema: xmlschema.XMLSchema) -> None:
    """The vendored schema is the real one: a Z time and an unknown severity fail."""
    good = _chain()[0].xml
    assert not schema.is_valid(good.replace("+07:00</sent>", "Z</sent>"))
    assert not schema.is_valid(good.replace("<severity>Severe<", "<severity>Awful<", 1))


def test_update_and_cancel_reference_every_earlier_message() -> None:
    alert, update, cancel = _chain()
    assert _root(alert.xml).find("c:references", NS) is None
    assert _root(update.xml).findtext("c:references", namespaces=NS) == (
        "ioc@haugiang.gov.vn,vn.haugiang.ioc-42-1,2026-11-28T19:30:12+07:00"
    )
    triples = _root(cancel.xml).findtext("c:references", namespaces=NS)
    assert triples is not None
    assert triples.split(" ") == [
        f"{SENDER.address},{alert.identifier},2026-11-28T19:30:12+07:00",
        f"{SENDER.address},{update.identifier},2026-11-28T20:00:12+07:00",
    ]
    # the cited `sent` is exactly the earlier message's own <sent>
    assert _root(alert.xml).findtext("c:sent", namespaces=NS) == "2026-11-28T19:30:12+07:00"


def test_cancel_is_an_all_clear() -> None:
    info = _root(_chain()[2].xml).find("c:info", NS)
    assert info is not None
    assert info.findtext("c:responseType", namespaces=NS) == "AllClear"
    assert info.findtext("c:urgency", namespaces=NS) == "Past"
    assert (info.findtext("c:headline", namespaces=NS) or "").startswith("HỦY CẢNH BÁO")


def test_times_carry_plus_0700_and_never_z() -> None:
    for m in _chain():
        root = _root(m.xml)
        times = [root.findtext("c:sent", namespaces=NS)]
        for info in root.findall("c:info", NS):
            times += [info.findtext(f"c:{k}", namespaces=NS) for k in ("onset", "expires")]
        assert times and all(t and CAP_TIME.match(t) for t in times), times
        assert "Z<" not in m.xml
    # a UTC instant is written in local time: 12:00Z → 19:00+07:00
    assert cap.cap_time(datetime(2026, 11, 28, 12, 0, 0, 999, tzinfo=UTC)) == (
        "2026-11-28T19:00:00+07:00"
    )


def test_vietnamese_info_first_then_english() -> None:
    root = _root(_chain()[0].xml)
    infos = root.findall("c:info", NS)
    assert [i.findtext("c:language", namespaces=NS) for i in infos] == ["vi-VN", "en-US"]
    vi = infos[0]
    assert vi.findtext("c:event", namespaces=NS) == "Mực nước vượt báo động III"
    assert "Kê cao tài sản" in (vi.findtext("c:instruction", namespaces=NS) or "")
    params = {
        p.findtext("c:valueName", namespaces=NS): p.findtext("c:value", namespaces=NS)
        for p in vi.findall("c:parameter", NS)
    }
    assert params["waterLevel_m"] == "0.82"
    assert params["floodAlarmLevel"] == "BĐ III"
    assert params["floodAlarmLevel3_m"] == "0.75"
    assert params["iocAlertId"] == "42"
    assert root.findtext("c:incidents", namespaces=NS) == "vn.haugiang.ioc-incident-7"


def test_ward_polygon_is_closed_lat_lon_pairs() -> None:
    root = _root(_chain()[0].xml)
    polygon = root.findtext("c:info/c:area/c:polygon", namespaces=NS)
    assert polygon is not None
    pairs = [tuple(float(x) for x in p.split(",")) for p in polygon.split(" ")]
    assert len(pairs) >= 4 and pairs[0] == pairs[-1]
    # lat first: Vị Thanh is near 9.8 N, 105.5 E
    assert all(9 < lat < 10.5 and 105 < lon < 106.5 for lat, lon in pairs)


def test_an_open_ring_is_closed_and_a_circle_is_lat_lon_radius(
    schema: xmlschema.XMLSchema,
) -> None:
    area = cap.Area("a", "a", polygon=((9.0, 105.0), (9.1, 105.0), (9.1, 105.1)))
    assert area.polygon is not None and area.polygon[0] == area.polygon[-1]
    assert len(area.polygon) == 4
    m = cap.build_message(
        _flood(),
        msg_type="Alert",
        identifier="vn.haugiang.ioc-1-1",
        sent=SENT,
        area=cap.Area("quanh trạm", "around", circle=(9.784, 105.47, 2.5)),
        sender=SENDER,
    )
    schema.validate(m.xml)
    assert _root(m.xml).findtext("c:info/c:area/c:circle", namespaces=NS) == "9.784,105.47 2.5"


@pytest.mark.parametrize(
    ("level_m", "severity", "urgency", "certainty"),
    [
        (0.82, "Severe", "Immediate", "Observed"),  # ≥ BĐ III 0.75
        (0.70, "Moderate", "Expected", "Observed"),  # ≥ BĐ II 0.65
        (0.60, "Minor", "Expected", "Observed"),  # ≥ BĐ I 0.55
        (0.40, "Severe", "Immediate", "Likely"),  # below BĐ I: the alert's severity, forecast
    ],
)
def test_flood_level_decides_severity_urgency_certainty(
    level_m: float, severity: str, urgency: str, certainty: str
) -> None:
    c = cap.classify(_flood(level_m), "Alert")
    assert (c.severity, c.urgency, c.certainty) == (severity, urgency, certainty)
    assert c.categories == ("Met",)


@pytest.mark.parametrize(
    ("domain", "category", "response"),
    [
        ("traffic", "Transport", "Avoid"),
        ("lighting", "Infra", "Monitor"),
        ("rain", "Met", "Prepare"),
        ("salinity", "Env", "Prepare"),
    ],
)
def test_domains_map_to_cap_categories(domain: str, category: str, response: str) -> None:
    facts = cap.AlertFacts(1, "r", domain, "warning", "firing", "tóm tắt", "summary")
    c = cap.classify(facts, "Alert")
    assert c.categories == (category,) and response in c.response_types
    assert (c.severity, c.urgency) == ("Moderate", "Expected")


def test_builder_refuses_what_cap_forbids() -> None:
    facts, area = _flood(), _ward_area()
    with pytest.raises(cap.CapError, match="references"):
        cap.build_message(
            facts, msg_type="Update", identifier="x-1", sent=SENT, area=area, sender=SENDER
        )
    with pytest.raises(cap.CapError, match="identifier"):
        cap.build_message(
            facts, msg_type="Alert", identifier="a b", sent=SENT, area=area, sender=SENDER
        )
    with pytest.raises(cap.CapError, match="domain"):
        cap.classify(
            cap.AlertFacts(1, "device-silent", "devices", "warning", "firing", "", ""), "Alert"
        )
    with pytest.raises(cap.CapError, match="area"):
        cap.Area("x", "x")


def test_the_sender_is_the_site_files_and_names_can_tho_not_the_abolished_province(
    schema: xmlschema.XMLSchema,
) -> None:
    """Since 1 July 2025 Vị Thanh and Ngã Bảy are in thành phố Cần Thơ (Resolution
    202/2025/QH15): the shipped site file's `cap_sender` signs, in both languages."""
    assert SENDER.to_verify and SENDER.source  # descriptive names, the operator sets the official
    root = _root(_chain()[0].xml)
    names = [n.text or "" for n in root.findall("c:info/c:senderName", NS)]
    assert names == [SENDER.name_vi, SENDER.name_en]
    for name in names:
        assert "Cần Thơ" in name and "Hậu Giang" not in name and "Hau Giang" not in name
    # web and contact come from the site data too (the shipped file knows neither yet)
    desk = dataclasses.replace(
        SENDER, web="https://ioc.example.invalid/", contact="Trực ban IOC: 0292 000 000"
    )
    m = cap.build_message(
        _flood(), msg_type="Alert", identifier="x-1-1", sent=SENT, area=_ward_area(), sender=desk
    )
    schema.validate(m.xml)
    info = _root(m.xml).find("c:info", NS)
    assert info is not None
    assert info.findtext("c:web", namespaces=NS) == "https://ioc.example.invalid/"
    assert info.findtext("c:contact", namespaces=NS) == "Trực ban IOC: 0292 000 000"
    bad = dataclasses.replace(SENDER, address="ioc at can tho")
    with pytest.raises(cap.CapError, match="sender"):
        cap.build_message(
            _flood(), msg_type="Alert", identifier="x-1-1", sent=SENT, area=_ward_area(), sender=bad
        )


def test_a_site_file_without_a_cap_sender_is_refused_naming_the_block(tmp_path: Path) -> None:
    import yaml

    shipped = yaml.safe_load((SITE_DATA / "hau-giang.yaml").read_text(encoding="utf-8"))
    for change, message in (
        (lambda d: d.pop("cap_sender"), "cap_sender: is required: who signs"),
        (lambda d: d["cap_sender"].pop("name_vi"), "cap_sender.name_vi: is required"),
        (lambda d: d["cap_sender"].update(address="ioc, IOC"), "cap_sender.address: 'ioc, IOC'"),
        (lambda d: d["cap_sender"].update(to_verify="yes"), "cap_sender.to_verify: expected"),
    ):
        data = yaml.safe_load(yaml.safe_dump(shipped, allow_unicode=True))
        change(data)
        path = tmp_path / "site.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        with pytest.raises(SiteError, match=re.escape(message)):
            load_site(path)
    assert isinstance(SENDER, CapSender)


def test_atom_feed_lists_messages_newest_first() -> None:
    stored = [
        cap_messages.StoredMessage(
            n, m.identifier, m.msg_type, m.sent, 42, 7, None, "operator/an", m.xml
        )
        for n, m in enumerate(_chain(), start=1)
    ][::-1]
    doc = ET.fromstring(
        atom_feed(
            stored,
            sender=SENDER,
            self_url="http://h/feed",
            message_url=lambda i: f"http://h/{i}.xml",
        )
    )
    entries = doc.findall("a:entry", ATOM)
    assert [e.find("a:category", ATOM).get("term") for e in entries] == [  # type: ignore[union-attr]
        "Cancel",
        "Update",
        "Alert",
    ]
    link = entries[0].find("a:link", ATOM)
    assert link is not None and link.get("type") == "application/cap+xml"
    assert link.get("href") == "http://h/vn.haugiang.ioc-42-3.xml"
    assert doc.findtext("a:updated", namespaces=ATOM) == "2026-11-28T20:30:12+07:00"


# -- over HTTP, against the real service ---------------------------------------------------------


async def _firing_alert(
    db: psycopg.AsyncConnection,
    *,
    domain: str = "flood",
    rule: str = "flood-bd3",
    risk_level: int | None = None,
) -> int:
    labels = {
        "alertname": rule, "severity": "critical", "domain": domain, "agency": "pctt",
        "device_id": "vt-flood-01", "kind": "flood", "city": "vi-thanh", "ward": "phuong-5",
    }  # fmt: skip
    annotations = {
        "summary_vi": "Trạm thủy văn Vị Thanh: mực nước 0,82 m vượt báo động III (0,75 m)",
        "summary_en": "Vị Thanh station: water level 0.82 m above alarm level III (0.75 m)",
    }
    cur = await db.execute(
        """INSERT INTO alerts (fingerprint, rule, state, severity, labels, annotations,
               device_id, value, active_at, started_at, risk_level)
           VALUES (%s, %s, 'firing', 'critical', %s, %s, 'vt-flood-01', 0.82,
                   now() - interval '20 minutes', now() - interval '10 minutes', %s)
           RETURNING id""",
        (f"fp-{rule}-{domain}", rule, Jsonb(labels), Jsonb(annotations), risk_level),
    )
    row = await cur.fetchone()
    assert row is not None
    await db.execute(
        """INSERT INTO latest_readings (device_id, metric, time, value)
           VALUES ('vt-flood-01', 'water_level_m', now(), 0.82)
           ON CONFLICT (device_id, metric) DO UPDATE SET value = excluded.value""",
    )
    return int(row[0])


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_issue_update_cancel_feed_and_xml_over_http(
    settings: Settings, db: psycopg.AsyncConnection, schema: xmlschema.XMLSchema
) -> None:
    async with running_service(settings) as (runtime, http):
        alert_id = await _firing_alert(db)
        _, operator = await tokens.create(db, name="Nguyễn Văn An", role="operator")
        _, viewer = await tokens.create(db, name="wall", role="viewer")
        url = f"/api/v1/alerts/{alert_id}/cap"

        r = await http.post(url, json={"msg_type": "Alert"})
        assert r.status_code == 401
        r = await http.post(url, json={"msg_type": "Alert"}, headers=_auth(viewer))
        assert r.status_code == 403
        r = await http.post(url, json={"msg_type": "Update"}, headers=_auth(operator))
        assert r.status_code == 409, r.text  # nothing to update yet

        r = await http.post(
            url,
            json={"msg_type": "Alert", "instruction": "Người dân ven kênh Xà No kê cao tài sản."},
            headers=_auth(operator),
        )
        assert r.status_code == 201, r.text
        first = r.json()
        assert first["identifier"] == f"vn.haugiang.ioc-{alert_id}-1"
        assert first["created_by"] == "operator/Nguyễn Văn An"
        assert r.headers["location"].endswith(f"/api/v1/cap/messages/{first['identifier']}.xml")
        schema.validate(first["xml"])
        vi = _root(first["xml"]).find("c:info", NS)
        assert vi is not None
        assert vi.findtext("c:instruction", namespaces=NS) == (
            "Người dân ven kênh Xà No kê cao tài sản."
        )
        assert vi.findtext("c:severity", namespaces=NS) == "Severe"
        # the alert's device was filed under Phường V (abolished 1 July 2025): the warning names
        # the unit that absorbed it, in Cần Thơ city, and draws that unit's outline
        assert vi.findtext("c:area/c:areaDesc", namespaces=NS) == (
            "phường Vị Tân, thành phố Cần Thơ"
        )
        en = _root(first["xml"]).findall("c:info", NS)[-1]
        assert en.findtext("c:language", namespaces=NS) == "en-US"
        assert en.findtext("c:area/c:areaDesc", namespaces=NS) == "Vị Tân Ward, Cần Thơ City"
        polygon = vi.findtext("c:area/c:polygon", namespaces=NS)
        unit = runtime.site.ward("phuong-vi-tan")
        assert polygon is not None and len(polygon.split()) == len(unit.outline)
        # never the abolished "thành phố Vị Thanh", never a raw ward id
        for wrong in ("thành phố Vị Thanh", "Thành phố Vị Thanh", "phuong-5", "phuong-vi-tan"):
            assert wrong not in first["xml"], wrong

        r = await http.post(url, json={"msg_type": "Alert"}, headers=_auth(operator))
        assert r.status_code == 409  # one Alert per alert; then Updates

        r = await http.post(
            url,
            json={"msg_type": "Update", "area": "circle", "radius_km": 3},
            headers=_auth(TOKEN),
        )
        assert r.status_code == 201, r.text
        second = r.json()
        assert second["references"] == [first["identifier"]]
        schema.validate(second["xml"])
        assert _root(second["xml"]).findtext("c:references", namespaces=NS) == (
            f"{SENDER.address},{first['identifier']},{first['sent']}"
        )
        assert _root(second["xml"]).findtext("c:info/c:area/c:circle", namespaces=NS) == (
            "9.784,105.47 3"
        )

        r = await http.post(url, json={"msg_type": "Cancel"}, headers=_auth(operator))
        assert r.status_code == 201, r.text
        third = r.json()
        assert third["references"] == [first["identifier"], second["identifier"]]
        schema.validate(third["xml"])
        r = await http.post(url, json={"msg_type": "Update"}, headers=_auth(operator))
        assert r.status_code == 409  # nothing follows a Cancel

        # the feed and the messages are public: no token
        r = await http.get("/api/v1/cap/feed")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/atom+xml")
        feed = ET.fromstring(r.content)
        entries = feed.findall("a:entry", ATOM)
        assert [e.find("a:category", ATOM).get("term") for e in entries] == [  # type: ignore[union-attr]
            "Cancel",
            "Update",
            "Alert",
        ]
        for entry, issued in zip(entries, (third, second, first), strict=True):
            link = entry.find("a:link", ATOM)
            assert link is not None
            href = link.get("href", "")
            assert href == issued["url"]
            r = await http.get(href.removeprefix(str(http.base_url).rstrip("/")))
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/cap+xml")
            assert r.text == issued["xml"]
            schema.validate(r.text)

        r = await http.get("/api/v1/cap/messages/vn.haugiang.ioc-999-1.xml")
        assert r.status_code == 404

        cur = await db.execute(
            "SELECT msg_type, references_id, created_by, alert_id, sent_at FROM cap_messages"
            " ORDER BY id"
        )
        rows: list[Any] = await cur.fetchall()
        assert [r[0] for r in rows] == ["Alert", "Update", "Cancel"]
        assert rows[0][1] is None and rows[1][1] is not None and rows[2][1] is not None
        assert [r[2] for r in rows] == ["operator/Nguyễn Văn An", "admin", "operator/Nguyễn Văn An"]
        assert all(r[4].microsecond == 0 for r in rows)


async def test_issue_refuses_non_public_alerts_and_unknown_ones(
    settings: Settings, db: psycopg.AsyncConnection
) -> None:
    async with running_service(settings) as (_, http):
        alert_id = await _firing_alert(db, domain="devices", rule="flood-gauge-silent")
        r = await http.post(
            f"/api/v1/alerts/{alert_id}/cap", json={"msg_type": "Alert"}, headers=_auth(TOKEN)
        )
        assert r.status_code == 422 and "not public warnings" in r.json()["message"]
        r = await http.post(
            "/api/v1/alerts/999999/cap", json={"msg_type": "Alert"}, headers=_auth(TOKEN)
        )
        assert r.status_code == 404
        r = await http.post(
            f"/api/v1/alerts/{alert_id}/cap", json={"msg_type": "Ack"}, headers=_auth(TOKEN)
        )
        assert r.status_code == 422 and "msg_type" in r.json()["message"]


@pytest.mark.parametrize(
    ("risk", "severity"),
    [(1, "Minor"), (2, "Moderate"), (3, "Severe"), (4, "Extreme"), (5, "Extreme")],
)
def test_risk_level_decides_severity(risk: int, severity: str, schema: xmlschema.XMLSchema) -> None:
    """QĐ 18/2021/QĐ-TTg: 100-200 mm of rain in 24 h is risk level 1 — Minor, though the rule
    calls the alert critical (ioc/site_data/risk_levels.yaml holds the mapping)."""
    rain = cap.AlertFacts(
        9, "rain-very-heavy", "rain", "critical", "firing", "mưa rất to 150 mm", "150 mm",
        value=150.0, risk_level=risk,
    )  # fmt: skip
    c = cap.classify(rain, "Alert")
    assert c.severity == severity
    msg = cap.build_message(
        rain, msg_type="Alert", identifier="x-9", sent=SENT, area=_ward_area(), sender=SENDER
    )
    schema.validate(msg.xml)
    assert f"<valueName>disasterRiskLevel</valueName><value>{risk}</value>" in msg.xml.replace(
        "\n", ""
    ).replace(" ", "")
    # a flood alert at BĐ III with risk level 2 is Moderate: the level, not the BĐ, decides
    flood = dataclasses.replace(_flood(0.82), risk_level=2)
    assert cap.classify(flood, "Alert").severity == "Moderate"


async def test_issued_over_http_the_stored_risk_level_decides_severity(
    settings: Settings, db: psycopg.AsyncConnection, schema: xmlschema.XMLSchema
) -> None:
    """The alert's stored QĐ 18/2021 risk level reaches the message issued from it: a critical
    rain alert of 150 mm/24 h is risk level 1 — Minor, with the level as a parameter — and a BĐ
    III alert at level 2 is Moderate, where without a level it would be Severe."""
    async with running_service(settings) as (_, http):
        rain = await _firing_alert(db, domain="rain", rule="rain-very-heavy", risk_level=1)
        flood = await _firing_alert(db, risk_level=2)
        for alert_id, severity, level in ((rain, "Minor", "1"), (flood, "Moderate", "2")):
            r = await http.post(
                f"/api/v1/alerts/{alert_id}/cap", json={"msg_type": "Alert"}, headers=_auth(TOKEN)
            )
            assert r.status_code == 201, r.text
            xml = r.json()["xml"]
            schema.validate(xml)
            for info in _root(xml).findall("c:info", NS):
                assert info.findtext("c:severity", namespaces=NS) == severity
                params = {
                    p.findtext("c:valueName", namespaces=NS): p.findtext("c:value", namespaces=NS)
                    for p in info.findall("c:parameter", NS)
                }
                assert params["disasterRiskLevel"] == level
