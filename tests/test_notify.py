"""Alerts that leave the IOC (ioc/alerting/notify.py, routes.py): the notify stage enqueues
Alertmanager-format messages in the dispatch outbox; the real dispatch worker delivers them to a
real local webhook receiver (signatures checked) and the real broker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from ioc.alerting import pipeline
from ioc.alerting.announce import announce
from ioc.alerting.mute import Mute
from ioc.alerting.notify import Notify
from ioc.alerting.persist import persist
from ioc.alerting.pipeline import OpenAlerts, Pass
from ioc.core.settings import Settings
from ioc.dispatch import DispatchWorker
from ioc.dispatch.notification_routes import DEFAULT_FILE, NotificationConfigError, load_routes
from ioc.rules.engine import Transition
from ioc.rules.matchers import parse_matcher
from ioc.rules.suppression import Silence
from tests.conftest import MqttPublisher, eventually, running_service
from tests.test_alerting import FLOOD_RULES, publish_levels, rules_dir
from tests.test_dispatch import SECRET, Receiver, dispatch_settings, receiver, subscribed

__all__ = ["receiver"]  # the fixture, imported for pytest

ENV = "IOC_NOTIFY_TEST_SECRET"


def transition(fp: str, to: str, at: float, labels: dict[str, str], started: float) -> Transition:
    return Transition(
        fingerprint=fp,
        rule="flood-bd3",
        to=to,
        at=at,
        labels=labels,
        annotations={"summary": "Mực nước vượt BĐ3"},
        severity="critical",
        device_id=None,
        value=2.1,
        reason={},
        active_at=started,
        started_at=started,
    )


def routes_yaml(tmp_path: Path, url: str, topic: str) -> Path:
    path = tmp_path / "notifications.yaml"
    path.write_text(
        f"""
receivers:
  - name: truc-ban
    webhook: {{url: "{url}", secret_env: {ENV}}}
  - name: pccc-topic
    mqtt: {{topic: "{topic}"}}
    send_resolved: false
routes:
  - receiver: truc-ban
    match: {{severity: critical, domain: [flood, salinity], city: vi-thanh}}
  - receiver: pccc-topic
    match: {{domain: flood}}
""",
        encoding="utf-8",
    )
    return path


async def test_firing_and_resolved_reach_webhook_and_mqtt_a_silenced_one_does_not(
    db: psycopg.AsyncConnection,
    settings: Settings,
    topic_prefix: str,
    receiver: Receiver,
    mqtt_url: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert receiver.secret == SECRET
    monkeypatch.setenv(ENV, SECRET)
    topic = f"{topic_prefix}/notifications/pccc"
    s = dispatch_settings(settings, topic_prefix, None).model_copy(
        update={"notification_routes_file": routes_yaml(tmp_path, receiver.url, topic)}
    )
    assert s.notification_routes_file is not None
    notify = Notify(load_routes(s.notification_routes_file))
    t0 = time.time() - 60
    loud = {"domain": "flood", "city": "vi-thanh", "ward": "phuong-vi-thanh"}
    quiet = {"domain": "flood", "city": "vi-thanh", "ward": "phuong-vi-tan"}
    other = {"domain": "lighting", "city": "nga-bay", "ward": "phuong-nga-bay"}
    silence = Silence(1, (parse_matcher('ward="phuong-vi-tan"'),), t0 - 10, t0 + 3600)
    book = OpenAlerts()
    stages = [persist, Mute(silences=[silence]), announce, notify]
    async with subscribed(mqtt_url, topic) as sub, DispatchWorker(s, database_url):
        fired = [
            transition("fp-loud", "firing", t0, loud, t0),
            transition("fp-quiet", "firing", t0, quiet, t0),
            transition("fp-other", "firing", t0, other, t0),
        ]
        await pipeline.run(db, Pass(t0, book, fired), stages)
        resolved = [transition(fp, "resolved", t0 + 30, lb, t0) for fp, lb in
                    [("fp-loud", loud), ("fp-quiet", quiet), ("fp-other", other)]]  # fmt: skip
        await pipeline.run(db, Pass(t0 + 30, book, resolved), stages)

        async def delivered() -> list[dict[str, Any]]:
            cur = await db.execute("SELECT state FROM outbox WHERE agency_id LIKE 'receiver:%'")
            states = [r[0] for r in await cur.fetchall()]
            return states if states and all(st == "delivered" for st in states) else []

        # truc-ban: firing + resolved of the loud alert; pccc-topic: firing only
        assert len(await eventually(delivered)) == 3
        assert await eventually(lambda: _ready(len(sub.messages) == 1))

    assert receiver.bad_signatures == 0
    docs = [receiver.documents[k] for k in receiver.processed]
    assert [d["status"] for d in docs] == ["firing", "resolved"]
    for d in docs:
        assert d["version"] == "4" and d["receiver"] == "truc-ban"
        assert d["groupKey"] and d["commonLabels"]["alertname"] == "flood-bd3"
        (alert,) = d["alerts"]
        assert alert["fingerprint"] == "fp-loud"  # the silenced and unrouted ones never left
        assert alert["labels"]["ward"] == "phuong-vi-thanh"
        assert alert["annotations"]["summary"] == "Mực nước vượt BĐ3"
        assert alert["startsAt"].endswith("Z")
    assert docs[0]["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert docs[1]["alerts"][0]["endsAt"] > docs[1]["alerts"][0]["startsAt"]
    (msg,) = sub.messages
    doc = orjson.loads(msg.payload)
    assert doc["status"] == "firing" and doc["receiver"] == "pccc-topic"
    assert doc["alerts"][0]["fingerprint"] == "fp-loud"


async def _ready(value: bool) -> bool:
    return value


def test_shipped_routes_file_sends_nothing() -> None:
    routes = load_routes(DEFAULT_FILE)
    assert routes.routes == () and not routes.receivers


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("receivers: [{name: a, webhook: {url: ftp://x}}]", "receivers[0].webhook.url"),
        ("receivers: [{name: a, webhook: {url: 'https://x'}}]", "receivers[0].webhook.secret_env"),
        (
            "receivers: [{name: a, webhook: {url: 'https://x', secret_env: NOPE_UNSET}}]",
            "receivers[0].webhook.secret_env",
        ),
        ("receivers: [{name: a, mqtt: {topic: 'a/#'}}]", "receivers[0].mqtt.topic"),
        ("receivers: [{name: a}]", "receivers[0]"),
        ("routes: [{receiver: nobody}]", "routes[0].receiver"),
        (
            "receivers: [{name: a, mqtt: {topic: t}}]\nroutes: [{receiver: a, match: {city: []}}]",
            "routes[0].match.city",
        ),
    ],
)
def test_a_bad_routes_file_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(NotificationConfigError) as err:
        load_routes(path, environ={})
    assert err.value.where == field
    assert str(path) in str(err.value) and field in str(err.value)


async def test_a_bad_routes_file_stops_the_dispatch_worker_from_starting(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("routes: [{receiver: nobody}]", encoding="utf-8")
    s = settings.model_copy(update={"notification_routes_file": path})
    with pytest.raises(NotificationConfigError, match=r"routes\[0\]\.receiver"):
        async with DispatchWorker(s, database_url):
            pass


async def test_the_rules_service_notifies_a_firing_alert_but_not_the_one_it_inhibits(
    settings: Settings,
    publisher: MqttPublisher,
    db: psycopg.AsyncConnection,
    tmp_path: Path,
    topic_prefix: str,
) -> None:
    """Through the service's own stages: a reading over BĐ III fires bd3 and bd2; bd3 inhibits
    bd2 (tests/test_alerting.py's rules), so only bd3 leaves, on the MQTT receiver's route."""
    path = tmp_path / "notifications.yaml"
    path.write_text(
        f"receivers: [{{name: t, mqtt: {{topic: '{topic_prefix}/n'}}}}]\n"
        "routes: [{receiver: t, match: {domain: flood}}]\n",
        encoding="utf-8",
    )
    s = settings.model_copy(
        update={
            "rules_dir": rules_dir(tmp_path, FLOOD_RULES.replace("FOR", "0s")),
            "rules_tick_s": 3600.0,
            "notification_routes_file": path,
        }
    )

    async def notified() -> list[tuple[str, str]]:
        cur = await db.execute(
            "SELECT kind, payload->'alerts'->0->'labels'->>'alertname' FROM outbox"
            " WHERE agency_id = 'receiver:t' ORDER BY id"
        )
        return [(r[0], r[1]) for r in await cur.fetchall()]

    async with running_service(s) as (runtime, _http):
        publish_levels(publisher, s, [(time.time() - 1, 0.80)])
        await eventually(notified)
        assert runtime.rules is not None
        await runtime.rules.tick(time.time())  # inhibition applied on the tick at the latest
        assert await notified() == [("alert.firing", "bd3")]
