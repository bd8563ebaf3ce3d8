"""Device lifecycle: bulk import, edit, decommission, the site file reconciled with the registry
(ioc/provision/lifecycle.py, /api/v1/devices, `ioc devices ...`), on the real database and
broker."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from ioc.app.cli import main
from ioc.app.runtime import Runtime
from ioc.core.devices import DeviceError
from ioc.core.settings import Settings
from ioc.core.site import Site, load_site
from ioc.core.topics import device_topic
from ioc.provision import lifecycle
from ioc.provision.accounts import read_credentials
from ioc.storage import devices as device_store
from tests.conftest import TOKEN, MqttPublisher, eventually, running_service

AUTH = {"Authorization": f"Bearer {TOKEN}"}
PACKAGED_SITE = Path(__file__).parents[1] / "ioc" / "site_data" / "hau-giang.yaml"


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(PACKAGED_SITE)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with running_service(settings) as pair:
        yield pair


def rain(i: int, **changes: Any) -> dict[str, Any]:
    """A valid rain gauge in Vị Thanh, filed under a former ward id (phuong-5)."""
    return {
        "id": f"imp-rain-{i:04d}",
        "kind": "rain",
        "city": "vi-thanh",
        "ward": "phuong-5",
        "name": f"Trạm mưa {i}",
        "lat": 9.78 + i * 1e-5,
        "lon": 105.46,
        "attributes": {},
    } | changes


# ------------------------------------------------------------------- one validation path


def test_one_check_for_site_file_api_and_import(site: Site) -> None:
    device = site.check_device(rain(1))
    assert device.ward == "phuong-vi-tan"  # a former ward id is stored as the current unit
    gauge = site.check_device(
        rain(2, kind="flood", attributes={"station": "vi-thanh"}, ward="phuong-vi-thanh")
    )
    assert gauge.attributes["bd1"] == site.alarm_levels["vi-thanh"].bd1  # copied, as in the file
    for raw, field, says in [
        (rain(3, kind="volcano"), "kind", "volcano"),
        (rain(3, ward="lai-hieu"), "ward", "not a ward of vi-thanh"),  # a Ngã Bảy former ward
        (rain(3, city="ha-noi"), "city", "ha-noi"),
        (rain(3, lat="9,78"), "lat", "expected a number"),
        (rain(3, name=" "), "name", "non-empty"),
        (rain(3, kind="flood"), "attributes", "station"),
        (rain(3, kind="flood", attributes={"bd1": 1, "bd2": 0.5, "bd3": 2}), "attributes.bd2", ""),
        (rain(3, kind="lighting"), "attributes.cabinet", "cabinet"),
        (rain(3, colour="red"), "colour", "unknown field"),
        ({k: v for k, v in rain(3).items() if k != "lon"}, "lon", "required"),
    ]:
        with pytest.raises(DeviceError) as caught:
            site.check_device(raw)
        assert caught.value.field == field, (raw, caught.value)
        assert says in caught.value.message, (raw, caught.value)


def test_csv_rows_take_types_and_attribute_columns() -> None:
    text = (
        "id,kind,city,ward,name,lat,lon,attributes.station,attributes.lanes,attributes\n"
        "a-1,flood,vi-thanh,,Cống A,9.78,105.46,vi-thanh,,\n"
        "\n"
        'a-2,traffic,vi-thanh,phuong-1,Ngã tư B,9.781,105.47,,4,"{""role"": ""detector""}"\n'
        "a-3,rain,vi-thanh,,Mưa C,9.78,105.46,,,{not json}\n"
        "a-4,rain,vi-thanh\n"
    )
    rows = lifecycle.parse_rows(text.encode(), "csv")
    assert [n for n, _ in rows] == [1, 2, 3, 4]  # the blank line is not a record
    assert rows[0][1] == {
        "id": "a-1", "kind": "flood", "city": "vi-thanh", "ward": None, "name": "Cống A",
        "lat": 9.78, "lon": 105.46, "attributes": {"station": "vi-thanh"},
    }  # fmt: skip
    assert rows[1][1]["attributes"] == {"lanes": 4, "role": "detector"}  # type: ignore[index]
    bad_json, short = rows[2][1], rows[3][1]
    assert isinstance(bad_json, DeviceError) and bad_json.field == "attributes"
    assert isinstance(short, DeviceError) and "3 cells for 10 columns" in short.message
    with pytest.raises(lifecycle.ImportFileError, match="unknown column"):
        lifecycle.parse_rows("id,kind,colour\n", "csv")
    with pytest.raises(lifecycle.ImportFileError, match="not valid JSON"):
        lifecycle.parse_rows("[{", "json")
    with pytest.raises(lifecycle.ImportFileError, match="at most"):
        lifecycle.parse_rows(orjson.dumps([{}] * (lifecycle.MAX_IMPORT_ROWS + 1)), "json")
    assert lifecycle.parse_rows('{"devices": [{"id": "x"}, 3]}', "json")[1][1].field == "row"  # type: ignore[union-attr]
    assert lifecycle.format_of("text/csv; charset=utf-8") == "csv"
    assert lifecycle.format_of("devices.JSON") == "json"


# ------------------------------------------------------------------------------- import


async def test_importing_1000_devices_is_one_request_under_a_tight_rate_limit(
    settings: Settings,
) -> None:
    """The rate limit counts requests, and an import is one: with a burst of 3 requests, 1,000
    devices are registered in one call (the per-device POSTs would be answered 429)."""
    tight = settings.model_copy(update={"http_rate_per_s": 0.01, "http_rate_burst": 3})
    async with running_service(tight) as (_, http):
        body = orjson.dumps([rain(i) for i in range(1000)])
        json_type = {**AUTH, "Content-Type": "application/json"}
        started = time.perf_counter()
        r = await http.post("/api/v1/devices/import", content=body, headers=json_type)
        took = time.perf_counter() - started
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["created"], got["refused"], len(got["rows"])) == (1000, 0, 1000)
        print(f"\nimport of 1,000 devices over HTTP: {took:.2f} s")  # the measurement (-s)
        listed = await http.get("/api/v1/devices", params={"limit": 5000}, headers=AUTH)
        assert sum(d["id"].startswith("imp-rain-") for d in listed.json()) == 1000
        assert {d["ward"] for d in listed.json() if d["id"].startswith("imp-")} == {"phuong-vi-tan"}
        # the same file again: 1,000 unchanged, still one request; one more is over the burst
        r = await http.post("/api/v1/devices/import", content=body, headers=json_type)
        assert r.json()["unchanged"] == 1000
        r = await http.post("/api/v1/devices", json=rain(5000), headers=AUTH)
        assert r.status_code == 429  # what 1,000 single registrations would have met


async def test_a_bad_row_refuses_only_itself_and_says_why(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, http = service
    async with runtime.pool.connection() as conn:
        await lifecycle.import_devices(conn, runtime.site, [(1, rain(1)), (2, rain(2))])
        await lifecycle.decommission(conn, "imp-rain-0002", "bị sét đánh")
    cabinet = next(d for d in runtime.site.devices if d.kind == "cabinet")
    lamp = rain(
        20, kind="lighting", ward=None, lat=cabinet.lat, lon=cabinet.lon,
        attributes={"cabinet": cabinet.id, "nominal_w": 100},
    )  # fmt: skip
    rows = [
        rain(1, name="Trạm mưa 1 (đổi tên)"),  # 1 updated
        rain(3),  # 2 created
        rain(4, ward="phuong-99"),  # 3 refused: ward
        rain(3, name="again"),  # 4 refused: duplicate of row 2
        rain(2),  # 5 refused: decommissioned
        rain(1, kind="salinity"),  # 6 refused... as a duplicate of row 1
        rain(5, kind="flood", attributes={}),  # 7 refused: no levels
        lamp,  # 8 created: its cabinet is in the registry (the site's)
        rain(21, kind="lighting", ward=None, attributes={"cabinet": "no-such-cab"}),  # 9
        rain(30, kind="cabinet", ward=None),  # 10 created, and lamp 11 may use it
        rain(31, kind="lighting", ward=None, attributes={"cabinet": "imp-rain-0030"}),  # 11
        "not an object",  # 12
    ]
    r = await http.post("/api/v1/devices/import", json=rows, headers=AUTH)
    assert r.status_code == 200, r.text
    got = r.json()
    results = {row["row"]: row for row in got["rows"]}
    assert [results[n]["result"] for n in range(1, 13)] == [
        "updated", "created", "refused", "refused", "refused", "refused",
        "refused", "created", "refused", "created", "created", "refused",
    ]  # fmt: skip
    assert (results[3]["field"], results[3]["id"]) == ("ward", "imp-rain-0004")
    assert "phuong-99" in results[3]["reason"]
    assert results[4]["field"] == "id" and "row 2" in results[4]["reason"]
    assert results[5]["field"] == "id" and "decommissioned" in results[5]["reason"]
    assert results[6]["field"] == "id" and "row 1" in results[6]["reason"]
    assert results[7]["field"] == "attributes" and "station" in results[7]["reason"]
    assert results[9]["field"] == "attributes.cabinet" and "no-such-cab" in results[9]["reason"]
    assert results[12]["field"] == "row"
    assert (got["created"], got["updated"], got["refused"]) == (4, 1, 7)
    async with runtime.pool.connection() as conn:
        kept = await lifecycle.registry(conn, [f"imp-rain-{i:04d}" for i in (1, 2, 3, 4, 20)])
    assert kept["imp-rain-0001"].device.name == "Trạm mưa 1 (đổi tên)"
    assert kept["imp-rain-0002"].decommissioned_at is not None  # stays decommissioned
    assert kept["imp-rain-0002"].device.kind == "rain"
    assert "imp-rain-0004" not in kept and kept["imp-rain-0003"].source == "import"
    # a device's kind never changes through an import
    r = await http.post("/api/v1/devices/import", json=[rain(3, kind="salinity")], headers=AUTH)
    assert r.json()["rows"][0]["field"] == "kind"


async def test_dry_run_reports_and_writes_nothing_and_csv_goes_over_http(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, http = service
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "kind", "city", "ward", "name", "lat", "lon"])
    writer.writerow(["csv-1", "rain", "nga-bay", "lai-hieu", "Mưa Lái Hiếu", 9.81, 105.82])
    writer.writerow(["csv-2", "rain", "nga-bay", "", "Mưa", "chín", 105.82])
    headers = {**AUTH, "Content-Type": "text/csv"}
    r = await http.post(
        "/api/v1/devices/import", content=out.getvalue(), headers=headers,
        params={"dry_run": "true"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["dry_run"] is True and (got["created"], got["refused"]) == (1, 1)
    assert got["rows"][1]["field"] == "lat" and "chín" in got["rows"][1]["reason"]
    async with runtime.pool.connection() as conn:
        assert await lifecycle.registry(conn, ["csv-1"]) == {}
    r = await http.post("/api/v1/devices/import", content=out.getvalue(), headers=headers)
    assert r.json()["created"] == 1
    device = (await http.get("/api/v1/devices/csv-1", headers=AUTH)).json()
    assert device["ward"] == "phuong-nga-bay" and device["decommissioned_at"] is None
    # a body that is no file at all is refused whole, naming what is wrong
    r = await http.post("/api/v1/devices/import", content=b"[{", headers=AUTH)
    assert r.status_code == 422 and "JSON" in r.json()["message"]
    r = await http.post(
        "/api/v1/devices/import", content=b"x", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert r.status_code == 422 and "csv" in r.json()["message"]
    # documented in OpenAPI: both media types, the per-row result, PATCH and decommission
    spec = (await http.get("/openapi.json")).json()
    body = spec["paths"]["/api/v1/devices/import"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "text/csv"}
    assert "rows" in spec["components"]["schemas"]["ImportResult"]["properties"]
    assert "patch" in spec["paths"]["/api/v1/devices/{device_id}"]
    assert "post" in spec["paths"]["/api/v1/devices/{device_id}/decommission"]


async def test_the_accepted_rows_are_written_in_one_transaction(
    db: psycopg.AsyncConnection, site: Site
) -> None:
    """A database error on one accepted row (a trigger refusing it, standing for a constraint or
    a lost connection) writes none of the others."""
    await db.execute(
        "CREATE FUNCTION refuse_two() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.id = 'imp-rain-0002' THEN RAISE EXCEPTION 'refused by the test'; END IF;"
        " RETURN NEW; END $$"
    )
    await db.execute(
        "CREATE TRIGGER refuse_two BEFORE INSERT ON devices"
        " FOR EACH ROW EXECUTE FUNCTION refuse_two()"
    )
    rows = [(n, rain(n)) for n in (1, 2, 3)]
    with pytest.raises(psycopg.errors.RaiseException, match="refused by the test"):
        await lifecycle.import_devices(db, site, rows)
    assert await lifecycle.registry(db, ["imp-rain-0001", "imp-rain-0003"]) == {}
    report = await lifecycle.import_devices(db, site, rows[::2])  # without the refused one
    assert report.summary() == "2 created, 0 updated, 0 unchanged, 0 refused"


# ------------------------------------------------------------------ edit and decommission


async def test_patch_edits_and_validates_like_registration(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, http = service
    gauge = rain(1, kind="flood", attributes={"station": "vi-thanh", "note": "cũ"})
    assert (await http.post("/api/v1/devices", json=gauge, headers=AUTH)).status_code == 201
    url = "/api/v1/devices/imp-rain-0001"
    r = await http.patch(
        url,
        json={"name": "Cống Cái Nhúc", "ward": "phuong-1", "attributes": {"note": None, "x": 1}},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["name"], got["ward"]) == ("Cống Cái Nhúc", "phuong-vi-thanh")  # alias → unit
    assert "note" not in got["attributes"] and got["attributes"]["x"] == 1
    assert got["attributes"]["bd1"] == runtime.site.alarm_levels["vi-thanh"].bd1
    # another station: its levels replace the copied ones
    r = await http.patch(url, json={"attributes": {"station": "phung-hiep"}}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["attributes"]["bd3"] == runtime.site.alarm_levels["phung-hiep"].bd3
    for body, says in [
        ({"ward": "lai-hieu"}, "body.ward"),
        ({"lat": 91}, "lat"),
        ({"kind": "rain"}, "body.kind: cannot change"),
        ({"id": "other"}, "body.id: cannot change"),
        ({"attributes": {"bd1": 99}}, "body.attributes.bd1"),
        ({"city": "nga-bay"}, "body.ward"),  # its ward is not in Ngã Bảy
    ]:
        r = await http.patch(url, json=body, headers=AUTH)
        assert r.status_code == 422 and says in r.json()["message"], (body, r.text)
    r = await http.patch("/api/v1/devices/nope", json={"name": "x"}, headers=AUTH)
    assert r.status_code == 404
    still = (await http.get(url, headers=AUTH)).json()
    assert still["name"] == "Cống Cái Nhúc" and still["ward"] == "phuong-vi-thanh"


async def test_decommission_keeps_readings_dead_letters_new_messages_and_revokes_mqtt(
    service: tuple[Runtime, httpx.AsyncClient],
    publisher: MqttPublisher,
    settings: Settings,
    db: psycopg.AsyncConnection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime, http = service
    assert (await http.post("/api/v1/devices", json=rain(7), headers=AUTH)).status_code == 201
    topic = device_topic(
        settings.mqtt_topic_prefix, "vi-thanh", "rain", "imp-rain-0007", "telemetry"
    )

    def message(seq: int) -> bytes:
        return orjson.dumps({"ts": int(time.time() * 1000), "seq": seq, "metrics": {"rain_mm": 2}})

    async def readings() -> int:
        cur = await db.execute("SELECT count(*) FROM readings WHERE device_id = 'imp-rain-0007'")
        return (await cur.fetchone())[0]  # type: ignore[index]

    publisher.publish(topic, message(1))
    await eventually(lambda: _at_least(readings, 1))
    assert runtime.rules is not None and runtime.rules.engine is not None
    await runtime.rules.reload_devices()
    assert "imp-rain-0007" in runtime.rules.engine.devices
    monkeypatch.setenv("IOC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IOC_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("IOC_MQTT_TOPIC_PREFIX", settings.mqtt_topic_prefix)
    monkeypatch.delenv("IOC_SITE", raising=False)
    assert await asyncio.to_thread(main, ["devices", "provision"]) == 0
    creds = tmp_path / "mosquitto" / "credentials.csv"
    assert "imp-rain-0007" in read_credentials(creds)

    r = await http.post(
        "/api/v1/devices/imp-rain-0007/decommission", json={"reason": "hỏng"}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    at = r.json()["decommissioned_at"]
    assert at and r.json()["decommission_reason"] == "hỏng"
    again = await http.post("/api/v1/devices/imp-rain-0007/decommission", headers=AUTH)
    assert again.json()["decommissioned_at"] == at  # idempotent
    assert (await http.post("/api/v1/devices/nope/decommission", headers=AUTH)).status_code == 404
    # ingest reloads its device index on the registry's NOTIFY
    assert runtime.ingest is not None
    decoder = runtime.ingest._decoder  # what the pump checks topics against
    await eventually(lambda: _true("imp-rain-0007" in decoder.decommissioned))

    publisher.publish(topic, message(2))

    async def dead_lettered() -> list[tuple[str, str]]:
        cur = await db.execute("SELECT reason, detail FROM dead_letters WHERE topic = %s", (topic,))
        return [tuple(r) for r in await cur.fetchall()]  # type: ignore[misc]

    got = await eventually(dead_lettered)
    assert got == [("decommissioned", "device 'imp-rain-0007' was decommissioned")]
    assert await readings() == 1  # the earlier reading is kept, the new one refused
    r = await http.get(
        "/api/v1/devices/imp-rain-0007/readings",
        params={"metric": "rain_mm", "from": "2020-01-01T00:00:00+07:00"},
        headers=AUTH,
    )
    assert len(r.json()["points"]) == 1
    detail = (await http.get("/api/v1/devices/imp-rain-0007", headers=AUTH)).json()
    assert detail["decommissioned_at"] == at
    # the rules no longer watch it (no "device silent" alert for a device taken away)
    await runtime.rules.reload_devices()  # what its periodic refresh does
    assert "imp-rain-0007" not in runtime.rules.engine.devices
    assert runtime.site.devices[0].id in runtime.rules.engine.devices  # the others still are
    r = await http.patch("/api/v1/devices/imp-rain-0007", json={"name": "x"}, headers=AUTH)
    assert r.status_code == 409 and "decommissioned" in r.json()["message"]
    r = await http.post("/api/v1/devices", json=rain(7), headers=AUTH)
    assert r.status_code == 409 and "decommissioned" in r.json()["message"]

    # the next provisioning run revokes its MQTT account (password, ACL and credentials lines)
    assert await asyncio.to_thread(main, ["devices", "provision"]) == 0
    assert "imp-rain-0007" not in read_credentials(creds)
    assert "imp-rain-0007" not in (tmp_path / "mosquitto" / "passwd").read_text()
    assert "imp-rain-0007" not in (tmp_path / "mosquitto" / "acl").read_text()


async def _true(value: bool) -> bool:
    return value


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


# ---------------------------------------------------------------------------- reconcile


async def test_at_start_the_site_file_wins_api_devices_stay_decommissioned_stay(
    settings: Settings, site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    edited, retired = site.devices[0], site.devices[1]
    assert settings.database_url is not None
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        await device_store.sync_site_devices(conn, site.devices)
        await conn.commit()
        await lifecycle.update(conn, site, edited.id, {"name": "sửa qua API"})
        await lifecycle.decommission(conn, retired.id)
        await lifecycle.register(conn, site, rain(1))
        differences = lifecycle.diff(site.devices, await lifecycle.registry(conn))
    assert [str(d) for d in differences] == [
        f"{edited.id}: differs (name)",
        f"{retired.id}: decommissioned",
        "imp-rain-0001: registry-only",
    ]
    smaller = replace(site, devices=site.devices[:-1])
    assert lifecycle.diff(smaller.devices, {})[0].what == "site-only"

    caplog.set_level(logging.INFO, logger="ioc.provision.lifecycle")
    async with running_service(settings) as (runtime, _):
        async with runtime.pool.connection() as conn:
            after = await lifecycle.registry(conn, [edited.id, retired.id, "imp-rain-0001"])
    assert after[edited.id].device == edited  # the site file wins for the devices it lists
    assert after[retired.id].decommissioned_at is not None
    assert after["imp-rain-0001"].decommissioned_at is None
    line = next(
        r.getMessage() for r in caplog.records if "site file vs device registry" in r.message
    )
    assert "1 differs, 1 decommissioned, 1 registry-only" in line and edited.id in line


# ---------------------------------------------------------------------------------- CLI


def test_cli_import_dry_run_then_import_and_diff(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("IOC_DATABASE_URL", database_url)
    monkeypatch.delenv("IOC_SITE", raising=False)
    file = tmp_path / "new.json"
    file.write_text(orjson.dumps([rain(1), rain(2, kind="volcano")]).decode())
    assert main(["devices", "import", str(file), "--dry-run"]) == 1  # a row was refused
    out = capsys.readouterr().out
    assert "imp-rain-0002" in out and "kind: 'volcano'" in out
    assert "dry run, nothing written: 1 created, 0 updated, 0 unchanged, 1 refused" in out
    file.write_text(orjson.dumps([rain(1)]).decode())
    assert main(["devices", "import", str(file)]) == 0
    assert "1 created" in capsys.readouterr().out
    assert main(["devices", "diff"]) == 0
    out = capsys.readouterr().out
    assert "imp-rain-0001: registry-only" in out  # the site's devices are not synced yet here
    assert main(["devices", "decommission", "imp-rain-0001", "--reason", "thử"]) == 0
    assert "decommissioned at" in capsys.readouterr().out
    assert main(["devices", "import", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
