"""The HTTP API on a running service (real database, broker and HTTP server)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import numpy as np
import orjson
import pytest

from ioc.app.runtime import Runtime
from ioc.core.settings import Settings
from ioc.core.topics import device_topic
from tests.conftest import TOKEN, MqttPublisher, eventually, running_service

AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW_DEVICE = {
    "id": "vt-flood-99",
    "kind": "flood",
    "city": "vi-thanh",
    "ward": None,
    "lat": 9.784,
    "lon": 105.47,
    "name": "Trạm thử",
    "attributes": {"bd1": 0.55, "bd2": 0.65, "bd3": 0.75},
}


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with running_service(settings) as pair:
        yield pair


async def test_auth_is_required_except_health(service: tuple[Runtime, httpx.AsyncClient]) -> None:
    _, http = service
    assert (await http.get("/healthz")).status_code == 200
    r = await http.get("/api/v1/devices")
    assert r.status_code == 401 and "bearer" in r.json()["message"].lower()
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await http.get("/api/v1/devices", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["message"] == "invalid bearer token"
    assert (await http.get("/api/v1/dead-letters", headers=AUTH)).status_code == 200


async def test_register_list_get_and_errors_name_the_field(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, http = service
    r = await http.post("/api/v1/devices", json=NEW_DEVICE, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "vt-flood-99"
    assert (await http.post("/api/v1/devices", json=NEW_DEVICE, headers=AUTH)).status_code == 409
    for field, bad, says in [
        ("kind", "volcano", "kind"),
        ("lat", 123.0, "lat"),
        ("city", "ha-noi", "city"),
        ("ward", "phuong-99", "ward"),
        ("id", "bad/id", "id"),
    ]:
        r = await http.post(
            "/api/v1/devices", json={**NEW_DEVICE, "id": "x-1", field: bad}, headers=AUTH
        )
        assert r.status_code == 422, (field, r.text)
        assert says in r.json()["message"], (field, r.json())
    r = await http.post(
        "/api/v1/devices", json={k: v for k, v in NEW_DEVICE.items() if k != "lon"}, headers=AUTH
    )
    assert r.status_code == 422 and "lon" in r.json()["message"]
    listed = (await http.get("/api/v1/devices", params={"kind": "flood"}, headers=AUTH)).json()
    assert "vt-flood-99" in {d["id"] for d in listed}
    assert len(listed) == sum(1 for d in runtime.site.devices if d.kind == "flood") + 1
    got = (await http.get("/api/v1/devices/vt-flood-99", headers=AUTH)).json()
    assert got["attributes"]["bd3"] == 0.75 and got["latest"] == {}
    r = await http.get("/api/v1/devices/nope", headers=AUTH)
    assert r.status_code == 404 and "nope" in r.json()["message"]


async def test_published_values_come_back_over_rest_with_buckets(
    service: tuple[Runtime, httpx.AsyncClient], publisher: MqttPublisher, settings: Settings
) -> None:
    runtime, http = service
    assert (await http.post("/api/v1/devices", json=NEW_DEVICE, headers=AUTH)).status_code == 201
    topic = device_topic(
        settings.mqtt_topic_prefix, "vi-thanh", "flood", "vt-flood-99", "telemetry"
    )
    # Whole minutes in the past so buckets are easy to reason about: 12 readings, 10 s apart.
    t0 = (int(time.time()) // 3600 - 2) * 3600
    values = [0.40 + i * 0.01 for i in range(12)]
    publisher.publish_many(
        [
            (
                topic,
                orjson.dumps(
                    {"ts": (t0 + 10 * i) * 1000, "seq": i, "metrics": {"water_level_m": v}}
                ),
            )
            for i, v in enumerate(values)
        ]
    )
    await eventually(lambda: _committed(runtime, 12))
    start = datetime.fromtimestamp(t0, UTC).isoformat()
    end = datetime.fromtimestamp(t0 + 3600, UTC).isoformat()
    q = {"metric": "water_level_m", "from": start, "to": end}
    raw = (await http.get("/api/v1/devices/vt-flood-99/readings", params=q, headers=AUTH)).json()
    assert [p["value"] for p in raw["points"]] == pytest.approx(values)
    assert raw["points"][0]["time"].endswith("+07:00")  # shown in Asia/Ho_Chi_Minh
    b = (
        await http.get(
            "/api/v1/devices/vt-flood-99/readings", params={**q, "bucket": "1m"}, headers=AUTH
        )
    ).json()
    assert b["bucket"] == "1m"
    assert [p["count"] for p in b["points"]] == [6, 6]
    assert b["points"][0]["value"] == pytest.approx(sum(values[:6]) / 6)
    assert (b["points"][1]["min"], b["points"][1]["max"]) == (
        pytest.approx(values[6]),
        pytest.approx(values[11]),
    )
    h = (
        await http.get(
            "/api/v1/devices/vt-flood-99/readings", params={**q, "bucket": "1h"}, headers=AUTH
        )
    ).json()
    assert len(h["points"]) == 1 and h["points"][0]["count"] == 12
    detail = (await http.get("/api/v1/devices/vt-flood-99", headers=AUTH)).json()
    assert detail["latest"]["water_level_m"]["value"] == pytest.approx(values[-1])
    # the list carries the same state on request (the wall screen draws every device at once)
    q_list = {"kind": "flood", "with_state": "true", "limit": 5000}
    listed = (await http.get("/api/v1/devices", params=q_list, headers=AUTH)).json()
    mine = next(d for d in listed if d["id"] == "vt-flood-99")
    assert mine["latest"]["water_level_m"]["value"] == pytest.approx(values[-1])
    assert mine["last_seen_at"] is not None and "online" in mine
    plain = (await http.get("/api/v1/devices", params={"kind": "flood"}, headers=AUTH)).json()
    assert "latest" not in plain[0] and "ward" in plain[0]
    for params, field in [
        ({**q, "metric": "power_w"}, "metric"),
        ({**q, "bucket": "5 minutes"}, "bucket"),
        ({k: v for k, v in q.items() if k != "from"}, "from"),
        ({**q, "from": "yesterday"}, "from"),
    ]:
        r = await http.get("/api/v1/devices/vt-flood-99/readings", params=params, headers=AUTH)
        assert r.status_code == 422 and field in r.json()["message"], (params, r.text)


async def _committed(runtime: Runtime, n: int) -> bool:
    assert runtime.ingest is not None
    return runtime.ingest.committed >= n


async def test_predicted_tide_of_a_flood_station(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, http = service
    from ioc.core.tides import TidePredictor

    url = "/api/v1/flood/stations/vt-flood-01/tide"
    q = {"from": "2026-11-26T12:00:00+07:00", "to": "2026-11-27T00:00:00+07:00"}
    r = await http.get(url, params=q, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["station"] == "vt-flood-01"
    assert len(body["points"]) == 73  # every 10 minutes, both ends
    assert all(p["time"].endswith("+07:00") for p in body["points"] + body["extremes"])
    expected = TidePredictor.from_site(runtime.site).view("vt-flood-01")
    first = body["points"][0]
    assert first["level_m"] == pytest.approx(
        float(expected.level_m(datetime.fromisoformat(first["time"]))[0]), abs=0.001
    )
    highs = [e for e in body["extremes"] if e["kind"] == "high"]
    assert [e["kind"] for e in body["extremes"]].count("low") >= 1
    evening = max(highs, key=lambda e: e["level_m"])
    # the routine spring tide of the vi-thanh-spring-tide scenario: over BĐ III at ~18:30
    assert 0.78 <= evening["level_m"] <= 0.88
    assert evening["time"].startswith("2026-11-26T18:")
    # a gauge's own view: later and damped
    g = (await http.get("/api/v1/flood/stations/vt-flood-03/tide", params=q, headers=AUTH)).json()
    g_high = max((e for e in g["extremes"] if e["kind"] == "high"), key=lambda e: e["level_m"])
    assert g_high["time"] > evening["time"] and g_high["level_m"] < evening["level_m"]
    # bad ranges name the field; unknown and non-flood devices are 404
    for params, field in [
        ({**q, "to": "2026-11-26T11:00:00+07:00"}, "to"),
        ({**q, "to": "2027-01-26T11:00:00+07:00"}, "to"),
        ({**q, "from": "2026-11-26T12:00:00"}, "from"),
        ({**q, "from": "yesterday"}, "from"),
    ]:
        r = await http.get(url, params=params, headers=AUTH)
        assert r.status_code == 422, (params, r.text)
        assert field in r.json()["message"], (params, r.json())
    for device in ("nope", "vt-rain-01"):
        r = await http.get(f"/api/v1/flood/stations/{device}/tide", params=q, headers=AUTH)
        assert r.status_code == 404 and device in r.json()["message"]
    # a flood device with its own levels and no station has no tide
    assert (await http.post("/api/v1/devices", json=NEW_DEVICE, headers=AUTH)).status_code == 201
    r = await http.get("/api/v1/flood/stations/vt-flood-99/tide", params=q, headers=AUTH)
    assert r.status_code == 404 and "no tide data" in r.json()["message"]


async def test_residual_readings_are_observed_minus_predicted(
    service: tuple[Runtime, httpx.AsyncClient], publisher: MqttPublisher, settings: Settings
) -> None:
    runtime, http = service
    from ioc.core.tides import TidePredictor

    tide = TidePredictor.from_site(runtime.site).view("vt-flood-02")
    topic = device_topic(
        settings.mqtt_topic_prefix, "vi-thanh", "flood", "vt-flood-02", "telemetry"
    )
    # A whole past hour, one reading every 5 minutes: the predicted tide plus a 0.25 m surge.
    t0 = (int(time.time()) // 3600 - 3) * 3600
    times = [t0 + 300 * i for i in range(12)]
    predicted = tide.level_m(np.array(times, dtype=float))
    observed = [round(float(p) + 0.25, 3) for p in predicted]
    publisher.publish_many(
        [
            (topic, orjson.dumps({"ts": t * 1000, "seq": i, "metrics": {"water_level_m": v}}))
            for i, (t, v) in enumerate(zip(times, observed, strict=True))
        ]
    )
    await eventually(lambda: _committed(runtime, 12))
    q = {
        "metric": "water_level_residual_m",
        "from": datetime.fromtimestamp(t0, UTC).isoformat(),
        "to": datetime.fromtimestamp(t0 + 3600, UTC).isoformat(),
    }
    url = "/api/v1/devices/vt-flood-02/readings"
    raw = (await http.get(url, params=q, headers=AUTH)).json()
    assert raw["metric"] == "water_level_residual_m"
    assert [p["value"] for p in raw["points"]] == pytest.approx([0.25] * 12, abs=0.001)
    hourly = (await http.get(url, params={**q, "bucket": "1h"}, headers=AUTH)).json()
    (point,) = hourly["points"]
    assert point["count"] == 12 and point["value"] == pytest.approx(0.25, abs=0.005)
    assert point["min"] <= point["value"] <= point["max"]
    # other kinds have no residual; a flood device without tide data is 404
    r = await http.get("/api/v1/devices/vt-rain-01/readings", params={**q}, headers=AUTH)
    assert r.status_code == 422 and "metric" in r.json()["message"]


async def test_dead_letters_ready_and_metrics(
    service: tuple[Runtime, httpx.AsyncClient], publisher: MqttPublisher, settings: Settings
) -> None:
    runtime, http = service
    device = runtime.site.devices[0]
    topic = device_topic(
        settings.mqtt_topic_prefix, device.city, device.kind, device.id, "telemetry"
    )
    publisher.publish(topic, b"\x00\x01 not json")
    letters = await eventually(lambda: _letters(http))
    assert letters[0]["topic"] == topic and letters[0]["reason"] == "malformed_json"
    assert letters[0]["payload"] == "\x00\x01 not json" and letters[0]["received_at"].endswith(
        "+07:00"
    )
    assert (await http.get("/readyz")).status_code == 401
    assert (await http.get("/metrics")).status_code == 401
    r = await http.get("/readyz", headers=AUTH)
    assert r.status_code == 200 and r.json()["checks"]["broker"]["ok"] is True
    text = (await http.get("/metrics", headers=AUTH)).text
    assert 'ioc_ingest_dead_letters_total{reason="malformed_json"}' in text
    assert "ioc_ingest_commit_seconds_bucket" in text
    assert "ioc_ingest_lag_seconds" in text
    spec = (await http.get("/openapi.json")).json()
    assert "/api/v1/devices/{device_id}/readings" in spec["paths"]


async def _letters(http: httpx.AsyncClient) -> list[dict[str, object]]:
    return (await http.get("/api/v1/dead-letters", headers=AUTH)).json()


# -- roles: every route of the OpenAPI document, with no token and with each role -----------

# Open by design: the public CAP feed and messages (warnings are for everyone) and Open311,
# whose own api_key check is tested in tests/test_open311.py.
_PUBLIC = ("/api/v1/cap/", "/open311/")


ROLE_TOKENS = (
    ("operator", "operator"),
    ("viewer", "viewer"),
    ("agency", "agency:urban-works"),
    ("provisioning", "device-provisioning"),
)


def _routes(spec: dict[str, object]) -> list[tuple[str, str]]:
    paths = spec["paths"]
    assert isinstance(paths, dict)
    out = []
    for path, methods in paths.items():
        for method in methods:
            concrete = path
            for name in ("id", "alert_id", "incident_id", "device_id", "silence_id",
                         "window_id", "delivery_id", "identifier"):  # fmt: skip
                concrete = concrete.replace(f"{{{name}}}", "1")
            out.append((method.upper(), concrete))
    return out


def _needs(method: str, path: str) -> set[str]:
    """The roles that may call ``method path`` (the design in README "Tokens and roles")."""
    if path.startswith("/api/v1/agency/"):
        return {"agency"}
    if path == "/api/v1/whoami":  # any valid token may ask who it is (the wall screen's sign-in)
        return {"admin", "operator", "viewer", "agency", "provisioning"}
    if method == "POST" and path == "/api/v1/devices":  # installers register field devices
        return {"admin", "provisioning"}
    if method == "PATCH" and path.startswith("/api/v1/devices/"):  # ... and correct them
        return {"admin", "provisioning"}
    if path in ("/api/v1/devices/import", "/api/v1/devices/1/decommission"):
        return {"admin"}
    admin_only = path.startswith(("/api/v1/dead-letters", "/api/v1/audit"))
    if admin_only or path in ("/readyz", "/metrics"):
        return {"admin"}
    if method == "GET":
        return {"admin", "operator", "viewer"}
    return {"admin", "operator"}


async def test_every_route_checks_the_token_and_the_role(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, http = service
    from ioc.storage import tokens

    async with runtime.pool.connection() as conn:
        issued = {
            role: (await tokens.create(conn, name=f"t-{role}", role=full))[1]
            for role, full in ROLE_TOKENS
        }
    issued["admin"] = TOKEN
    spec = (await http.get("/openapi.json")).json()
    routes = [
        (m, p) for m, p in _routes(spec)
        if (p.startswith("/api/v1/") or p in ("/readyz", "/metrics")) and not p.startswith(_PUBLIC)
    ]  # fmt: skip
    assert len(routes) > 40  # the whole API, not a handful
    assert ("GET", "/api/v1/flood/stations/1/tide") in routes  # the predicted tide: viewers
    wrong = []
    for method, path in routes:
        r = await http.request(method, path)
        if r.status_code != 401:
            wrong.append((method, path, "no token", r.status_code))
        for role, token in issued.items():
            r = await http.request(method, path, headers={"Authorization": f"Bearer {token}"})
            allowed = role in _needs(method, path)
            if allowed == (r.status_code in (401, 403)):
                wrong.append((method, path, role, r.status_code))
    assert wrong == []


async def test_changes_and_token_changes_are_audited(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, http = service
    from ioc.storage import tokens

    async with runtime.pool.connection() as conn:
        created, secret = await tokens.create(conn, name="Lan", role="operator")
    lan = {"Authorization": f"Bearer {secret}", "X-Request-ID": "req-42"}
    silence = {
        "matchers": [{"name": "ward", "op": "=", "value": "phuong-5"}],
        "ends_at": "2030-01-01T00:00:00+07:00",
        "comment": "bảo trì tủ điện",
    }
    r = await http.post("/api/v1/silences", json=silence, headers=lan)
    assert r.status_code == 201, r.text
    silence_id = r.json()["id"]
    assert (await http.delete(f"/api/v1/silences/{silence_id}", headers=lan)).status_code == 200
    # a change that did not happen (no such alert) and a read are not audited
    assert (await http.post("/api/v1/alerts/999999/ack", headers=lan)).status_code == 404
    assert (await http.get("/api/v1/alerts", headers=lan)).status_code == 200
    async with runtime.pool.connection() as conn:
        assert await tokens.revoke(conn, created.id)

    assert (await http.get("/api/v1/audit", headers=lan)).status_code == 401  # revoked
    got = (await http.get("/api/v1/audit", headers=AUTH)).json()
    assert [(e["actor"], e["action"], e["target"]) for e in reversed(got)] == [
        ("command line", "token.created", f"token={created.id} role=operator name=Lan"),
        ("operator/Lan", "POST /api/v1/silences", None),
        ("operator/Lan", "DELETE /api/v1/silences/{silence_id}", f"silence_id={silence_id}"),
        ("command line", "token.revoked", f"token={created.id}"),
    ]
    assert got[1]["request_id"] == "req-42" and got[1]["time"].endswith("+07:00")
    mine = (await http.get("/api/v1/audit", params={"actor": "operator/Lan"}, headers=AUTH)).json()
    assert len(mine) == 2


async def test_a_device_registered_under_a_former_ward_is_stored_under_its_unit(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    """Installers may still name the ward the device was planned in (before 1 July 2025):
    it is stored under the unit that absorbed it, and either id finds it."""
    _, http = service
    device = {**NEW_DEVICE, "id": "vt-flood-old-ward", "ward": "phuong-5"}
    r = await http.post("/api/v1/devices", json=device, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["ward"] == "phuong-vi-tan"
    for ward in ("phuong-5", "phuong-vi-tan"):
        listed = (await http.get("/api/v1/devices", params={"ward": ward}, headers=AUTH)).json()
        assert "vt-flood-old-ward" in {d["id"] for d in listed}, ward
    listed = (await http.get("/api/v1/devices", params={"ward": "phuong-1"}, headers=AUTH)).json()
    assert "vt-flood-old-ward" not in {d["id"] for d in listed}
    bad = {**device, "id": "vt-flood-x", "ward": "lai-hieu"}  # a former ward of Ngã Bảy
    assert (await http.post("/api/v1/devices", json=bad, headers=AUTH)).status_code == 422
