"""Rules on the running service: real broker, real database, alerts over REST, restart, backtest.

Time-driven steps are made deterministic by a long tick interval: the test calls
``runtime.rules.tick(now)`` itself where it wants time to pass.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from ioc.alerting.backtest import run_backtest
from ioc.app.runtime import Runtime, run_service
from ioc.core.settings import Settings
from ioc.core.topics import device_topic
from ioc.rules.language import load_rules
from tests.conftest import TOKEN, MqttPublisher, eventually, running_service

AUTH = {"Authorization": f"Bearer {TOKEN}"}
GAUGE = "vt-flood-01"  # Vị Thanh station in the site file: BĐ I/II/III 0.55 / 0.65 / 0.75 m
MIN = 60.0

FLOOD_RULES = """
rules:
  - id: bd2
    type: threshold
    select: {kind: flood, metric: water_level_m, devices: [vt-flood-01]}
    when: {op: ">=", threshold: device.bd2, clear: device.bd2 - 0.05}
    for: FOR
    labels: {severity: warning, domain: flood}
    annotations: {summary_vi: "BĐ II {value:.2f}", summary_en: "level II {value:.2f}"}
  - id: bd3
    type: threshold
    select: {kind: flood, metric: water_level_m, devices: [vt-flood-01]}
    when: {op: ">=", threshold: device.bd3, clear: device.bd3 - 0.05}
    for: FOR
    labels: {severity: critical, domain: flood}
    risk: {source: "QĐ 18/2021/QĐ-TTg Điều 45 (test)", level: 2}
    annotations: {summary_vi: "BĐ III {value:.2f}", summary_en: "level III {value:.2f}"}
inhibit_rules:
  - source_matchers: ['alertname="bd3"']
    target_matchers: ['alertname="bd2"']
    equal: [device_id]
"""

RATE_RULE = """
  - id: rising
    type: rate
    select: {kind: flood, metric: water_level_m, devices: [vt-flood-01]}
    window: 20m
    when: {op: ">", threshold: 0.5, clear: 0.3}
    for: 5m
    labels: {severity: warning, domain: flood}
    annotations: {summary_vi: "lên nhanh", summary_en: "rising fast"}
"""


def rules_dir(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / "flood.yaml").write_text(text, encoding="utf-8")
    return d


@pytest.fixture
def flood_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "rules_dir": rules_dir(tmp_path, FLOOD_RULES.replace("FOR", "0s")),
            "rules_tick_s": 3600.0,  # the tests drive time-based steps themselves
        }
    )


@pytest.fixture
async def service(flood_settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with running_service(flood_settings) as pair:
        yield pair


def publish_levels(
    publisher: MqttPublisher, settings: Settings, points: list[tuple[float, float]]
) -> None:
    topic = device_topic(settings.mqtt_topic_prefix, "vi-thanh", "flood", GAUGE, "telemetry")
    publisher.publish_many(
        [
            (topic, orjson.dumps({"ts": int(t * 1000), "metrics": {"water_level_m": v}}))
            for t, v in points
        ]
    )


async def alerts(http: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    r = await http.get("/api/v1/alerts", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()
    return result


async def test_reading_over_bd3_fires_and_operators_act_on_it(
    service: tuple[Runtime, httpx.AsyncClient], publisher: MqttPublisher, settings: Settings
) -> None:
    runtime, http = service
    now = time.time()
    publish_levels(publisher, settings, [(now - 1, 0.80)])
    firing = await eventually(lambda: alerts(http, state="firing"))
    by_rule = {a["rule"]: a for a in firing}
    assert set(by_rule) == {"bd2", "bd3"}
    bd3 = by_rule["bd3"]
    assert bd3["severity"] == "critical" and bd3["device_id"] == GAUGE
    # the gauge was filed under Phường V: since July 2025 part of Phường Vị Tân
    assert bd3["labels"]["alertname"] == "bd3" and bd3["ward"] == "phuong-vi-tan"
    assert bd3["annotations"]["summary_en"] == "level III 0.80"
    assert bd3["started_at"].endswith("+07:00")
    # BĐ III inhibits BĐ II of the same gauge (applied once the rules service ticks)
    await runtime.rules.tick(time.time())  # type: ignore[union-attr]
    bd2 = (await http.get(f"/api/v1/alerts/{by_rule['bd2']['id']}", headers=AUTH)).json()
    assert bd2["suppressed_by"]["inhibited_by"] == bd3["fingerprint"]
    assert [h["kind"] for h in bd2["history"]] == ["pending", "firing", "suppressed"]
    # acknowledge
    r = await http.post(
        f"/api/v1/alerts/{bd3['id']}/ack", json={"comment": "đã báo PCTT", "by": "trực ban A"},
        headers=AUTH,
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "trực ban A"
    detail = (await http.get(f"/api/v1/alerts/{bd3['id']}", headers=AUTH)).json()
    assert detail["history"][-1]["kind"] == "acknowledged"
    assert detail["history"][0]["reason"]["threshold"] == 0.75
    assert detail["history"][0]["reason"]["value"] == 0.8
    assert (await http.post("/api/v1/alerts/999999/ack", headers=AUTH)).status_code == 404
    # filters
    assert [a["rule"] for a in await alerts(http, state="firing", severity="critical")] == ["bd3"]
    assert await alerts(http, state="firing", ward="phuong-1") == []
    r = await http.get("/api/v1/alerts", params={"state": "burning"}, headers=AUTH)
    assert r.status_code == 422 and "state" in r.json()["message"]
    # the water goes down: both resolve, with the reason
    publish_levels(publisher, settings, [(now, 0.50)])
    await eventually(lambda: _no_open(http))
    resolved = await alerts(http, state="resolved")
    assert {a["rule"] for a in resolved} == {"bd2", "bd3"}


async def _no_open(http: httpx.AsyncClient) -> bool:
    return await alerts(http, state="pending,firing") == []


async def test_resolve_by_hand_then_a_condition_still_true_raises_a_new_alert(
    service: tuple[Runtime, httpx.AsyncClient], publisher: MqttPublisher, settings: Settings
) -> None:
    runtime, http = service
    now = time.time()
    publish_levels(publisher, settings, [(now - 10, 0.70)])  # BĐ II only
    (bd2,) = await eventually(lambda: alerts(http, state="firing"))
    r = await http.post(f"/api/v1/alerts/{bd2['id']}/resolve", json={}, headers=AUTH)
    assert r.status_code == 422 and "reason" in r.json()["message"]
    r = await http.post(
        f"/api/v1/alerts/{bd2['id']}/resolve", json={"reason": "gauge cleaned"}, headers=AUTH
    )
    assert r.status_code == 200 and r.json()["resolved_by"] == "admin"
    assert (
        await http.post(
            f"/api/v1/alerts/{bd2['id']}/resolve", json={"reason": "again"}, headers=AUTH
        )
    ).status_code == 409
    await runtime.rules.tick(time.time())  # type: ignore[union-attr]  # the engine learns of it
    publish_levels(publisher, settings, [(now - 5, 0.71)])
    (again,) = await eventually(lambda: alerts(http, state="firing"))
    assert again["id"] != bd2["id"] and again["fingerprint"] == bd2["fingerprint"]


async def test_silence_mutes_matching_alerts_until_expired(
    service: tuple[Runtime, httpx.AsyncClient], publisher: MqttPublisher, settings: Settings
) -> None:
    runtime, http = service
    bad = {"matchers": [], "ends_at": "2030-01-01T00:00:00+07:00", "comment": "x"}
    r = await http.post("/api/v1/silences", json=bad, headers=AUTH)
    assert r.status_code == 422 and "matchers" in r.json()["message"]
    bad["matchers"] = [{"name": "alertname", "op": "=~", "value": "bd[2"}]
    r = await http.post("/api/v1/silences", json=bad, headers=AUTH)
    assert r.status_code == 422 and "regular expression" in r.json()["message"]
    body = {
        "matchers": [{"name": "device_id", "op": "=", "value": GAUGE}],
        "ends_at": datetime.fromtimestamp(time.time() + 3600, UTC).isoformat(),
        "comment": "bảo trì trạm",
    }
    r = await http.post("/api/v1/silences", json=body, headers=AUTH)
    assert r.status_code == 201 and r.json()["state"] == "active"
    silence_id = r.json()["id"]
    publish_levels(publisher, settings, [(time.time() - 1, 0.70)])
    (bd2,) = await eventually(lambda: alerts(http, state="firing"))
    await runtime.rules.tick(time.time())  # type: ignore[union-attr]
    (bd2,) = await alerts(http, state="firing")
    assert bd2["suppressed_by"] == {"silence": silence_id} and bd2["silenced"]
    r = await http.delete(f"/api/v1/silences/{silence_id}", headers=AUTH)
    assert r.json()["state"] == "expired"
    await runtime.rules.tick(time.time())  # type: ignore[union-attr]
    (bd2,) = await alerts(http, state="firing")
    assert bd2["suppressed_by"] is None
    kinds = [
        h["kind"]
        for h in (await http.get(f"/api/v1/alerts/{bd2['id']}", headers=AUTH)).json()["history"]
    ]
    assert kinds == ["pending", "firing", "suppressed", "unsuppressed"]


async def test_unacknowledged_critical_alert_escalates(
    flood_settings: Settings, publisher: MqttPublisher, settings: Settings
) -> None:
    s = flood_settings.model_copy(update={"alert_escalate_after_s": 60.0})
    async with running_service(s) as (runtime, http):
        assert runtime.rules is not None
        publish_levels(publisher, settings, [(time.time() - 1, 0.9)])
        await eventually(lambda: alerts(http, state="firing", severity="critical"))
        await runtime.rules.tick(time.time() + 30)
        (a,) = await alerts(http, state="firing", severity="critical")
        assert a["escalation_level"] == 0
        await runtime.rules.tick(time.time() + 61)
        (a,) = await alerts(http, state="firing", severity="critical")
        assert a["escalation_level"] == 1
        # an acknowledged alert does not escalate further
        await http.post(f"/api/v1/alerts/{a['id']}/ack", headers=AUTH)
        await runtime.rules.tick(time.time() + 200)
        (a,) = await alerts(http, state="firing", severity="critical")
        assert a["escalation_level"] == 1


async def test_restart_in_the_middle_of_a_pending_period(
    settings: Settings, tmp_path: Path, publisher: MqttPublisher
) -> None:
    s = settings.model_copy(
        update={
            "rules_dir": rules_dir(tmp_path, FLOOD_RULES.replace("FOR", "10m")),
            "rules_tick_s": 3600.0,
        }
    )
    now = time.time()
    async with running_service(s) as (runtime, http):
        publish_levels(publisher, settings, [(now - 4 * MIN, 0.80)])
        pending = await eventually(lambda: _two(http, "pending"))
    # the process stops 4 minutes into the 10-minute pending period and starts again
    async with running_service(s) as (runtime, http):
        assert runtime.rules is not None
        assert await _two(http, "pending") == pending  # restored, not raised again
        await runtime.rules.tick(now + 5 * MIN)
        assert await _two(http, "pending") == pending
        await runtime.rules.tick(now + 6.5 * MIN)  # the original deadline has passed
        firing = await _two(http, "firing")
        assert [a["id"] for a in firing] == [a["id"] for a in pending]
        for a in firing:  # fired at active_at + for, not at the restart
            assert datetime.fromisoformat(a["started_at"]).timestamp() == pytest.approx(
                now - 4 * MIN + 10 * MIN, abs=0.01
            )
    # ... and a firing alert is not fired again by the next restart
    async with running_service(s) as (runtime, http):
        assert runtime.rules is not None
        await runtime.rules.tick(now + 7 * MIN)
        assert [a["id"] for a in await _two(http, "firing")] == [a["id"] for a in pending]
        everything = await alerts(http)
        assert len(everything) == 2


async def _two(http: httpx.AsyncClient, state: str) -> list[dict[str, Any]] | None:
    got = sorted(await alerts(http, state=state), key=lambda a: a["rule"])
    for a in got:
        a.pop("updated_at", None)
        a.pop("value", None)
    return got if len(got) == 2 else None


@pytest.mark.parametrize("extra", ["", RATE_RULE], ids=["threshold-fast-path", "full-replay"])
async def test_backtest_returns_the_alerts_the_live_run_raised(
    settings: Settings, tmp_path: Path, publisher: MqttPublisher, extra: str
) -> None:
    text = FLOOD_RULES.replace("FOR", "10m").replace("inhibit_rules:", extra + "inhibit_rules:")
    s = settings.model_copy(update={"rules_dir": rules_dir(tmp_path, text), "rules_tick_s": 3600.0})
    # three hours of a tide with a spring-tide peak, one reading a minute, in the recent past
    import math

    start = (int(time.time()) // 60) * 60 - 4 * 3600
    points = [
        (start + i * MIN, 0.45 + 0.38 * math.sin(i / 40.0) + 0.02 * math.sin(i * 1.7))
        for i in range(180)
    ]
    async with run_service(s) as runtime:
        assert runtime.ingest is not None and runtime.rules is not None
        await runtime.ingest.wait_connected(20)
        publish_levels(publisher, settings, points)
        await eventually(lambda: _committed(runtime, len(points)))
        await runtime.rules.tick(start + 200 * MIN)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}") as http:
            live = [a for a in await alerts(http) if a["started_at"] is not None]
            r = await http.post(
                "/api/v1/rules/backtest",
                json={
                    "from": datetime.fromtimestamp(start, UTC).isoformat(),
                    "to": datetime.fromtimestamp(start + 200 * MIN, UTC).isoformat(),
                },
                headers=AUTH,
            )
            assert r.status_code == 200, r.text
            api_result = r.json()
    assert len(live) >= 2  # the tide crossed BĐ II and III
    ruleset = load_rules(s.rules_dir)  # type: ignore[arg-type]
    result = await run_backtest(settings.database_url, ruleset, start, start + 200 * MIN)  # type: ignore[arg-type]
    if not extra:
        assert result.evaluated < result.readings  # the fast path reduced the stream

    def key(fp: str, rule: str, a: float, s_: float | None, r: float | None) -> tuple[Any, ...]:
        return (fp, rule, round(a, 3), round(s_ or 0, 3), round(r or 0, 3))

    live_keys = sorted(
        key(
            a["fingerprint"], a["rule"], _ts(a["active_at"]), _ts(a["started_at"]),
            _ts(a["resolved_at"]) if a["resolved_at"] else None,
        )
        for a in live
    )  # fmt: skip
    bt_keys = sorted(
        key(a.fingerprint, a.rule, a.active_at, a.started_at, a.resolved_at) for a in result.alerts
    )
    assert bt_keys == live_keys
    assert api_result["fired"] == len(live)
    assert sum(sum(days.values()) for days in api_result["per_day"].values()) == len(live)


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def _committed(runtime: Runtime, n: int) -> bool:
    assert runtime.ingest is not None
    return runtime.ingest.committed >= n


async def test_validate_endpoint_and_rule_list(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, http = service
    r = await http.post(
        "/api/v1/rules/validate",
        content="rules:\n  - id: x\n    type: threshold\n    select: {kind: lava}\n",
        headers={**AUTH, "Content-Type": "application/yaml"},
    )
    assert r.status_code == 200
    body = r.json()
    assert not body["valid"]
    lava = [p for p in body["problems"] if "lava" in p["message"]]
    assert [p["line"] for p in lava] == [4] and lava[0]["file"] == "rules.yaml"
    good = FLOOD_RULES.replace("FOR", "1m")
    r = await http.post(
        "/api/v1/rules/validate", content=good, headers={**AUTH, "Content-Type": "application/yaml"}
    )
    assert r.json() == {"valid": True, "rules": ["bd2", "bd3"], "problems": []}
    listing = (await http.get("/api/v1/rules", headers=AUTH)).json()
    assert [x["id"] for x in listing["rules"]] == ["bd2", "bd3"]
    assert listing["rules"][0]["state"] == "inactive"


async def test_bad_rule_file_never_replaces_a_good_rule_set(
    service: tuple[Runtime, httpx.AsyncClient], flood_settings: Settings
) -> None:
    runtime, http = service
    assert runtime.rules is not None and flood_settings.rules_dir is not None
    path = flood_settings.rules_dir / "flood.yaml"
    path.write_text(FLOOD_RULES.replace("FOR", "0s").replace("severity: warning", "severity: x"))
    assert not await runtime.rules.reload_rules_if_changed()
    listing = (await http.get("/api/v1/rules", headers=AUTH)).json()
    assert [x["id"] for x in listing["rules"]] == ["bd2", "bd3"]  # still in force
    (problem,) = listing["refused_reload_problems"]
    assert problem["file"].endswith("flood.yaml") and "severity" in problem["message"]
    path.write_text(FLOOD_RULES.replace("FOR", "0s").replace("id: bd2", "id: level-two"))
    assert await runtime.rules.reload_rules_if_changed()
    listing = (await http.get("/api/v1/rules", headers=AUTH)).json()
    assert [x["id"] for x in listing["rules"]] == ["level-two", "bd3"]
    assert listing["refused_reload_problems"] == []
    # rule changes are made to files: each reload is in the audit log, with the files' digest
    audit = (await http.get("/api/v1/audit", params={"action": "rules."}, headers=AUTH)).json()
    assert [(e["action"], e["actor"]) for e in audit][:2] == [
        ("rules.loaded", "rules directory"), ("rules.refused", "rules directory")
    ]  # fmt: skip
    assert audit[0]["target"].startswith("2 rules; ") and "sha256:" in audit[0]["target"]
    assert audit[0]["target"] != audit[-1]["target"]  # another content, another digest


async def test_reading_over_bd3_reaches_a_websocket_client_as_a_firing_alert(
    service: tuple[Runtime, httpx.AsyncClient], publisher: MqttPublisher, settings: Settings
) -> None:
    runtime, _ = service
    from tests.test_live import Client

    client = await Client.open(runtime, types="alert,readings", city="vi-thanh", kind="flood")
    try:
        await eventually(lambda: _has(client, "hello"))
        now = time.time()
        publish_levels(publisher, settings, [(now - 1, 0.81)])

        async def firing() -> list[dict[str, Any]]:
            return [
                f for f in client.of("alert")
                if f["data"]["rule"] == "bd3" and f["data"]["state"] == "firing"
            ]  # fmt: skip

        (frame,) = await eventually(firing)
        assert frame["data"]["device_id"] == GAUGE and frame["data"]["value"] == 0.81
        assert frame["data"]["annotations"]["summary_vi"] == "BĐ III 0,81"
        # the batch's readings came too, as a readings frame (committed by ingest with them)
        (reading,) = [f for f in client.of("readings") if GAUGE in f["data"]["devices"]]
        assert reading["seq"] > 0
        metric = reading["data"]["devices"][GAUGE]["metrics"]["water_level_m"]
        assert metric["value"] == 0.81
        seqs = [f["seq"] for f in client.data()]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        await client.close()


async def _has(client: Any, kind: str) -> bool:
    return bool(client.of(kind))


async def test_an_alert_that_fires_and_resolves_within_one_batch_is_reported_both_ways(
    db: Any,
) -> None:
    from ioc.alerting import store
    from ioc.rules.engine import Transition

    labels = {"alertname": "flash", "device_id": "x"}
    t0 = time.time()

    def tr(to: str, at: float, started: float | None) -> Transition:
        return Transition(
            "fp-flash", "flash", to, at, labels, {"summary_en": "flash"}, "critical", None, 9.0,
            {"value": 9.0}, t0, started,
        )  # fmt: skip

    async with db.transaction():
        rows = await store.apply_transitions(
            db, [tr("pending", t0, None), tr("firing", t0, t0), tr("resolved", t0 + 1, t0)]
        )
    assert [r["state"] for r in rows] == ["firing", "resolved"]  # pending folded into firing
    assert rows[0]["id"] == rows[1]["id"]
    history = await store.history(db, rows[0]["id"])
    assert [h["kind"] for h in history] == ["pending", "firing", "resolved"]  # all recorded


async def test_an_alert_storm_is_stored_whole_and_a_restored_alert_is_merged(db: Any) -> None:
    """A thousand gauges falling silent at once: every transition stored with its history (one
    pipeline), in order; a `pending` for an alert already open (restored, or redelivered input)
    merges into that row instead of opening a second one."""
    from ioc.alerting import store
    from ioc.rules.engine import Transition

    t0 = time.time()

    def tr(fp: str, to: str, at: float, started: float | None, value: float) -> Transition:
        return Transition(
            fp, "silent", to, at, {"alertname": "silent", "device_id": fp}, {"summary_en": fp},
            "warning", None, value, {"value": value}, t0, started,
        )  # fmt: skip

    storm = [tr(f"fp-{i:04d}", "pending", t0, None, 1.0) for i in range(1000)]
    storm += [tr(f"fp-{i:04d}", "firing", t0 + 60, t0 + 60, 2.0) for i in range(1000)]
    async with db.transaction():
        rows = await store.apply_transitions(db, storm)
    assert len(rows) == 2000 and [r["state"] for r in rows[1000:]] == ["firing"] * 1000
    assert [r["fingerprint"] for r in rows[:1000]] == [f"fp-{i:04d}" for i in range(1000)]
    cur = await db.execute("SELECT count(*) FROM alert_events")
    assert await cur.fetchone() == (2000,)
    # the same alert opened again (a rule service restarted without its state): one row, still
    # firing, its value the new one, one more history row
    async with db.transaction():
        again = await store.apply_transitions(db, [tr("fp-0007", "pending", t0 + 90, None, 3.0)])
    assert [(r["id"], r["state"], r["value"]) for r in again] == [(rows[1007]["id"], "firing", 3.0)]
    cur = await db.execute("SELECT count(*) FROM alerts WHERE fingerprint = 'fp-0007'")
    assert await cur.fetchone() == (1,)
    history = await store.history(db, rows[1007]["id"])
    assert [h["kind"] for h in history] == ["pending", "firing", "pending"]


async def test_rules_as_their_own_worker_beside_an_ingest_that_only_stores(
    flood_settings: Settings, publisher: MqttPublisher, settings: Settings, db: Any
) -> None:
    from ioc.app.runtime import run_rules_worker

    split = flood_settings.model_copy(update={"rules_in_ingest": False})
    async with running_service(split) as (runtime, http), run_rules_worker(split) as rules:
        assert runtime.rules is None  # this ingest only stores
        publish_levels(publisher, settings, [(time.time() - 1, 0.80)])
        firing = await eventually(lambda: alerts(http, state="firing"))
        assert {a["rule"] for a in firing} == {"bd2", "bd3"}

        async def stored() -> bool:
            cur = await db.execute("SELECT count(*) FROM readings WHERE device_id = %s", (GAUGE,))
            return await cur.fetchone() == (1,)  # stored once, by ingest

        await eventually(stored)
        listing = (await http.get("/api/v1/rules", headers=AUTH)).json()
        assert [r["firing"] for r in listing["rules"]] == [1, 1]
        assert rules.engine is not None and len(rules.engine.open_series()) == 2


async def test_compacted_backlog_leaves_every_alert_in_its_true_state(db: Any) -> None:
    """Past its bound the database-outage backlog is compacted; stored alerts must still end in
    the state the full sequence would have left them in."""
    from ioc.alerting import store
    from ioc.alerting.persist import compact_backlog
    from ioc.rules.engine import Transition

    def tr(fp: str, to: str, at: float, active: float, started: float | None) -> Transition:
        return Transition(fp, f"rule-{fp}", to, at, {"alertname": fp}, {}, "warning", None,
                          1.0, {}, active, started)  # fmt: skip

    seq = [
        tr("a", "pending", 1, 1, None), tr("a", "firing", 2, 1, 2),
        tr("b", "pending", 2, 2, None), tr("a", "resolved", 3, 1, 2),
        tr("c", "firing", 3, 3, 3), tr("b", "cancelled", 4, 2, None),
        tr("a", "pending", 5, 5, None), tr("c", "keep_firing", 5, 3, 3),
        tr("a", "firing", 6, 5, 6), tr("c", "resolved", 7, 3, 3),
        tr("d", "pending", 7, 7, None),
    ]  # fmt: skip
    compact = compact_backlog(seq)
    assert len(compact) < len(seq)

    async def final(transitions: list[Transition]) -> set[tuple[str, str]]:
        await db.execute("TRUNCATE alerts CASCADE")
        async with db.transaction():
            await store.apply_transitions(db, transitions)
        rows = await (await db.execute("SELECT fingerprint, state FROM alerts")).fetchall()
        open_ = {(fp, st) for fp, st in rows if st != "resolved"}
        return open_ | {(fp, "resolved") for fp, st in rows if st == "resolved"} - {
            (fp, "resolved") for fp, _ in open_
        }

    assert await final(compact) == await final(seq) == {
        ("a", "firing"), ("b", "resolved"), ("c", "resolved"), ("d", "pending"),
    }  # fmt: skip


RISK_RULES = """
rules:
  - id: bd2-risk
    type: threshold
    select: {kind: flood, metric: water_level_m, devices: [vt-flood-01]}
    when: {op: ">=", threshold: device.bd2}
    labels: {severity: critical, domain: flood}
    risk:
      source: "QĐ 18/2021/QĐ-TTg Điều 45 (test)"
      levels: [{level: 1, from: device.bd1}, {level: 2, from: device.bd3}]
    annotations: {summary_vi: "BĐ II {value:.2f}", summary_en: "level II {value:.2f}"}
"""


async def test_risk_level_and_colour_reach_the_api_and_the_websocket(
    settings: Settings, tmp_path: Path, publisher: MqttPublisher
) -> None:
    """QĐ 18/2021/QĐ-TTg risk level from the rule's risk steps: 0.80 m ≥ BĐ III is level 2,
    light yellow, on GET /api/v1/alerts and on the /ws alert frame."""
    from tests.test_live import Client

    risky = settings.model_copy(
        update={"rules_dir": rules_dir(tmp_path, RISK_RULES), "rules_tick_s": 3600.0}
    )
    async with running_service(risky) as (runtime, http):
        client = await Client.open(runtime, types="alert", city="vi-thanh", kind="flood")
        try:
            await eventually(lambda: _has(client, "hello"))
            publish_levels(publisher, settings, [(time.time() - 1, 0.80)])
            (alert,) = await eventually(lambda: alerts(http, state="firing"))
            assert alert["risk_level"] == 2
            assert alert["risk"]["colour_vi"] == "vàng nhạt" and alert["risk"]["colour"]

            async def firing() -> list[dict[str, Any]]:
                return [f for f in client.of("alert") if f["data"]["state"] == "firing"]

            (frame,) = await eventually(firing)
            assert frame["data"]["risk_level"] == 2
            assert frame["data"]["risk"]["name_en"] == "medium risk"
        finally:
            await client.close()


async def test_a_forecast_alert_keeps_its_risk_rising_and_its_peak_time_readable(db: Any) -> None:
    """Store level: an open alert's risk level only rises (a later transition with a lower or
    no level leaves it), and a forecast's peak time is RFC 3339 in +07:00 in the history."""
    from ioc.alerting import store
    from ioc.rules.engine import Transition

    t0 = 1_795_000_000.0

    def tr(to: str, at: float, risk: int | None) -> Transition:
        return Transition(
            "fp-fc", "flood-forecast-bd3", to, at, {"alertname": "flood-forecast-bd3"}, {},
            "warning", None, 0.8, {"peak_time": t0 + 3 * 3600, "value": 0.8}, t0,
            t0 if to != "pending" else None, risk_level=risk,
        )  # fmt: skip

    async with db.transaction():
        rows = await store.apply_transitions(db, [tr("pending", t0, 1)])
    assert rows[-1]["risk_level"] == 1
    async with db.transaction():
        rows = await store.apply_transitions(db, [tr("firing", t0 + 600, 2)])
    assert rows[-1]["risk_level"] == 2 and store.alert_json(rows[-1])["risk"]["level"] == 2
    async with db.transaction():
        rows = await store.apply_transitions(db, [tr("keep_firing", t0 + 900, None)])
    assert rows[-1]["risk_level"] == 2
    history = await store.history(db, rows[-1]["id"])
    peak = history[0]["reason"]["peak_time"]
    assert isinstance(peak, str) and peak.endswith("+07:00")


async def test_a_risk_raised_transition_lifts_an_open_alerts_level_without_moving_its_state(
    db: Any,
) -> None:
    """The engine's ``risk_raised`` (a flood still rising past the next step of QĐ 18/2021):
    stored as the alert's new value, annotations and level, a history entry, the state kept."""
    from ioc.alerting import store
    from ioc.rules.engine import Transition

    t0 = 1_795_000_000.0

    def tr(to: str, at: float, value: float, risk: int) -> Transition:
        return Transition(
            "fp-rr", "flood-bd3", to, at, {"alertname": "flood-bd3"},
            {"summary_en": f"level {value:.2f} m"}, "critical", None, value, {"value": value},
            t0, t0, risk_level=risk,
        )  # fmt: skip

    async with db.transaction():
        rows = await store.apply_transitions(db, [tr("firing", t0, 0.80, 2)])
    assert (rows[-1]["state"], rows[-1]["risk_level"]) == ("firing", 2)
    async with db.transaction():
        rows = await store.apply_transitions(db, [tr("risk_raised", t0 + 3600, 1.80, 3)])
    row = rows[-1]
    assert (row["state"], row["risk_level"], row["value"]) == ("firing", 3, 1.80)
    assert row["annotations"]["summary_en"] == "level 1.80 m"
    assert store.alert_json(row)["risk"]["colour_en"] == "orange"
    history = await store.history(db, row["id"])
    assert [h["kind"] for h in history][-1] == "risk_raised"


async def test_the_stages_store_mute_and_announce_in_one_transaction_and_wake_incidents(
    db: Any, database_url: str
) -> None:
    """persist → mute → announce: the alert row, why it is muted, its frame on the live feed and
    the ``ioc_alerts`` signal the incident worker listens for — and nothing on that channel when
    only the feed gets a row (a readings batch no longer wakes the incident worker)."""
    from ioc.alerting import pipeline
    from ioc.alerting.announce import ALERTS_CHANNEL, announce
    from ioc.alerting.mute import Mute
    from ioc.alerting.persist import persist
    from ioc.rules.engine import Transition
    from ioc.rules.matchers import parse_matcher
    from ioc.rules.suppression import Silence
    from ioc.storage.feed import FeedEvent, append

    t0 = time.time()
    labels = {"alertname": "stage", "device_id": "x", "ward": "phuong-vi-tan"}
    fire = Transition(
        "fp-stage", "stage", "firing", t0, labels, {"summary_en": "s"}, "critical", None, 1.0,
        {"value": 1.0}, t0, t0,
    )  # fmt: skip
    silence = Silence(7, (parse_matcher('ward="phuong-vi-tan"'),), t0 - 60, t0 + 3600)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {ALERTS_CHANNEL}")
        async with db.transaction():  # a readings-like feed row: no alert signal
            await append(db, [FeedEvent("readings", {"devices": {}})])
        assert [n async for n in listener.notifies(timeout=0.5)] == []

        book = pipeline.OpenAlerts()
        p = pipeline.Pass(t0, book, [fire])
        await pipeline.run(db, p, [persist, Mute(silences=[silence]), announce])
        got = [n.channel async for n in listener.notifies(timeout=5, stop_after=1)]
    assert got == [ALERTS_CHANNEL]
    assert [(r["state"], r["suppressed_by"]) for r in p.changed] == [
        ("firing", None), ("firing", {"silence": 7}),
    ]  # fmt: skip
    assert book.by_fingerprint["fp-stage"].suppressed_by == {"silence": 7}
    cur = await db.execute(
        "SELECT payload->>'state', payload->>'silenced' FROM feed_events WHERE type = 'alert'"
        " ORDER BY seq"
    )
    assert await cur.fetchall() == [("firing", "false"), ("firing", "true")]


async def test_citizen_reports_over_mqtt_reach_the_shipped_cluster_rule(
    settings: Settings, tmp_path: Path, publisher: MqttPublisher
) -> None:
    """The default pack's `reports-cluster` (3 reports of one category in one ward within 6 h,
    tuned to ~20 reports a month a city: docs/simulators.md) counts the citizen reports ingest
    commits: three flooding reports relayed from Zalo in the former Phường V fire it for
    Phường Vị Tân, named, not by id; two in another ward do not."""
    import yaml

    from ioc.core.topics import report_topic
    from ioc.rules.language import DEFAULT_PACK

    pack = yaml.safe_load((DEFAULT_PACK / "default.yaml").read_text(encoding="utf-8"))
    (cluster,) = [r for r in pack["rules"] if r["id"] == "reports-cluster"]
    rules = rules_dir(tmp_path, yaml.safe_dump({"rules": [cluster]}, allow_unicode=True))
    live = settings.model_copy(update={"rules_dir": rules, "rules_tick_s": 3600.0})
    async with running_service(live) as (runtime, http):
        now = time.time()
        prefix = live.mqtt_topic_prefix
        # (minutes ago, lat, lon): Phường V (now Phường Vị Tân) three times, Phường VII twice
        places = [(300, 9.7845, 105.4700), (120, 9.7853, 105.4700), (5, 9.7900, 105.4750),
                  (60, 9.7850, 105.4420), (30, 9.7855, 105.4425)]  # fmt: skip
        committed = runtime.ingest.committed
        for n, (ago, lat, lon) in enumerate(places):
            payload = {"id": f"z-{n}", "ts": int((now - ago * MIN) * 1000),
                       "category": "ngap-nuoc", "lat": lat, "lon": lon,
                       "description": "Nước ngập qua mặt đường, xe máy chết máy."}  # fmt: skip
            publisher.publish(report_topic(prefix, "vi-thanh", "zalo"), orjson.dumps(payload))

        async def all_taken() -> bool:
            return bool(runtime.ingest.committed >= committed + len(places))

        await eventually(all_taken)
        await runtime.rules.tick(time.time())  # type: ignore[union-attr]
        (alert,) = await eventually(lambda: alerts(http, state="firing"))
        assert alert["rule"] == "reports-cluster"
        assert (alert["labels"]["ward"], alert["labels"]["category"]) == (
            "phuong-vi-tan", "ngap-nuoc"
        )  # fmt: skip
        assert alert["annotations"]["summary_vi"] == (
            "3 phản ánh về ngập nước tại phường Vị Tân trong 6 giờ"
        )
