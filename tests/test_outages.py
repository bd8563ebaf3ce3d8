"""Planned outages: the power company's list (file, MQTT) mutes cabinet power-loss alarms during
announced cuts. Pure parts on a driven timeline; then the running rules service against the real
broker and database."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from ioc.alerting.outages import OutageBook, parse_file_text, parse_message, planned_outages_topic
from ioc.core.localtime import FIXED_OFFSET as LOCAL
from ioc.core.packaged import SITE_DATA
from ioc.core.settings import Settings
from ioc.core.site import Site, load_site
from ioc.core.topics import device_topic
from ioc.rules.language import DEFAULT_PACK, load_rules
from ioc.rules.suppression import AlertView, suppressions
from tests.conftest import TOKEN, MqttPublisher, eventually, running_service

PACKAGED = SITE_DATA / "hau-giang.yaml"
PACK = load_rules(DEFAULT_PACK / "default.yaml")


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(PACKAGED)


def at(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=LOCAL).timestamp()


def power_loss(cabinet: str, site: Site) -> AlertView:
    dev = site.device(cabinet)
    labels = {"alertname": "cabinet-power-loss", "cabinet": cabinet, "kind": "cabinet",
              "city": dev.city, "ward": dev.ward or "", "agency": "power"}  # fmt: skip
    return AlertView(f"pl-{cabinet}", labels, True)


def lamp_dark(cabinet: str) -> AlertView:
    labels = {"alertname": "lamp-failure", "kind": "lighting", "cabinet": cabinet}
    return AlertView(f"lamp-{cabinet}", labels, True)


CSV = """reference,cabinet,area,start,end,note
EVN-CT-2026-0412,nb-cab-03,,2026-11-21T07:00:00+07:00,2026-11-21T11:30:00+07:00,Bảo trì 22 kV
EVN-CT-2026-0413,,phuong-5,2026-11-22 08:00,2026-11-22 12:00,
EVN-CT-2026-0414,nb-cab-99,,2026-11-22T08:00:00+07:00,2026-11-22T12:00:00+07:00,
EVN-CT-2026-0415,nb-cab-01,,2026-11-22T12:00:00+07:00,2026-11-22T08:00:00+07:00,
"""


def test_the_list_loads_from_csv_and_bad_rows_are_refused_alone(site: Site) -> None:
    parsed = parse_file_text(CSV, "cat-dien.csv", site)
    assert [o.reference for o in parsed.outages] == ["EVN-CT-2026-0412", "EVN-CT-2026-0413"]
    assert len(parsed.problems) == 2
    assert "entry 3" in parsed.problems[0] and "nb-cab-99" in parsed.problems[0]
    assert "entry 4" in parsed.problems[1] and "not after start" in parsed.problems[1]
    cut = parsed.outages[0]
    assert cut.starts_at == at(21, 7) and cut.ends_at == at(21, 11, 30)
    # a time without an offset is local time (the notices are in Vietnam time)
    assert parsed.outages[1].starts_at == at(22, 8)
    assert "Bảo trì 22 kV" in cut.where


def test_a_planned_cut_mutes_the_cabinet_power_loss_only_while_it_runs(site: Site) -> None:
    """On a timeline: before, during and after the 07:00–11:30 cut of nb-cab-03."""
    (cut, _) = parse_file_text(CSV, "cat-dien.csv", site).outages
    views = [power_loss("nb-cab-03", site), lamp_dark("nb-cab-03"), power_loss("nb-cab-01", site)]
    rules = PACK.inhibit_rules

    def why(now: float) -> dict[str, object]:
        return dict(suppressions(views, now, inhibit_rules=rules, outages=[cut]))

    before = why(at(21, 6, 59))
    assert before["pl-nb-cab-03"] is None  # not yet announced as running: a fault
    during = why(at(21, 9))
    reason = during["pl-nb-cab-03"]
    assert isinstance(reason, dict) and reason["planned_outage"] == "EVN-CT-2026-0412"
    assert "nb-cab-03" in str(reason["where"])
    # its lamps stay inhibited by the (muted) power loss, as without a planned cut
    assert during["lamp-nb-cab-03"] == {
        "inhibited_by": "pl-nb-cab-03",
        "rule": "cabinet-power-loss",
    }
    assert during["pl-nb-cab-01"] is None  # another cabinet losing supply is a fault
    assert why(at(21, 11, 30))["pl-nb-cab-03"] is None  # the end is exclusive: overrun = fault


def test_an_area_cut_covers_every_cabinet_of_the_unit_by_former_or_current_id(
    site: Site,
) -> None:
    (_, area) = parse_file_text(CSV, "cat-dien.csv", site).outages
    inside = [d.id for d in site.devices_of(kind="cabinet", ward="phuong-vi-tan")]
    outside = [d.id for d in site.devices_of(kind="cabinet") if d.id not in inside]
    assert inside and outside
    views = [power_loss(c, site) for c in inside + outside]
    # a cabinet alert stored under the former ward id is covered too
    old = AlertView("pl-old", {**views[0].labels, "ward": "phuong-4"}, True)
    why = suppressions([*views, old], at(22, 9), outages=[area])
    assert all(why[f"pl-{c}"] for c in inside) and why["pl-old"]
    assert not any(why[f"pl-{c}"] for c in outside)
    assert "phường Vị Tân" in area.where


def test_the_feed_and_the_file_make_one_list_and_the_file_is_reread_when_changed(
    site: Site, tmp_path: Path
) -> None:
    path = tmp_path / "cat-dien.yaml"
    path.write_text(
        "outages:\n  - {reference: A-1, cabinet: vt-cab-01, start: 2026-11-21T07:00:00+07:00,"
        " end: 2026-11-21T09:00:00+07:00}\n",
        encoding="utf-8",
    )
    book = OutageBook(site, path)
    assert book.refresh() and [o.reference for o in book.current()] == ["A-1"]
    assert not book.refresh()  # unchanged: not read again
    path.write_text(
        "- {reference: A-2, area: nga-bay, start: 2026-11-23T07:00:00+07:00,"
        " end: 2026-11-23T09:00:00+07:00}\n",
        encoding="utf-8",
    )
    os.utime(path, (1, 1))  # a new modification time, whatever the clock's resolution
    assert book.refresh() and [o.reference for o in book.current()] == ["A-2"]
    message = {"outages": [{"reference": "M-1", "area": "Phường Đại Thành",
                            "start": "2026-11-24T07:00:00+07:00",
                            "end": "2026-11-24T09:00:00+07:00"}]}  # fmt: skip
    book.take_message(orjson.dumps(message), "hg/power/planned-outages")
    assert [o.reference for o in book.current()] == ["A-2", "M-1"]
    book.take_message(b"not json", "hg/power/planned-outages")  # a broken message keeps the list
    assert [o.reference for o in book.current()] == ["A-2", "M-1"] and book.problems
    book.take_message(orjson.dumps({"outages": []}), "hg/power/planned-outages")  # cleared
    assert [o.reference for o in book.current()] == ["A-2"]
    path.unlink()
    assert not book.refresh() and [o.reference for o in book.current()] == ["A-2"]


def test_message_shape_errors_are_described(site: Site) -> None:
    assert parse_message(b'{"outage": []}', site, "t").problems
    bad = parse_message(
        b'{"outages": [{"reference": "x", "start": "2026-11-24T07:00"}]}', site, "t"
    )
    assert bad.outages == () and "cabinet or area" in bad.problems[0]


# -- the running service -------------------------------------------------------------------------


async def test_the_rules_service_mutes_a_power_loss_during_a_cut_announced_over_mqtt(
    settings: Settings, publisher: MqttPublisher
) -> None:
    """A cabinet loses supply; the power company's retained list (MQTT) says the cut is
    planned: the alert is stored muted with the notice as the reason."""
    now = time.time()
    # the default rule pack (cabinet-power-loss); time-driven steps driven by the test
    s = settings.model_copy(update={"rules_tick_s": 3600.0})
    listing = {"outages": [{
        "reference": "EVN-CT-2026-0500", "cabinet": "nb-cab-03",
        "start": datetime.fromtimestamp(now - 600, UTC).isoformat(),
        "end": datetime.fromtimestamp(now + 3600, UTC).isoformat(),
    }]}  # fmt: skip
    publisher.publish(
        planned_outages_topic(s.mqtt_topic_prefix), orjson.dumps(listing), retain=True
    )
    try:
        async with running_service(s) as (runtime, http):
            rules = runtime.rules
            assert rules is not None and rules.outages is not None
            await eventually(lambda: _has(rules.outages))
            topic = device_topic(s.mqtt_topic_prefix, "nga-bay", "cabinet", "nb-cab-03", "event")
            publisher.publish(topic, orjson.dumps({"ts": int(now * 1000), "type": "power_loss"}))
            headers = {"Authorization": f"Bearer {TOKEN}"}

            async def firing() -> list[dict[str, object]]:
                r = await http.get("/api/v1/alerts", params={"state": "firing"}, headers=headers)
                return [a for a in r.json() if a["rule"] == "cabinet-power-loss"]

            (alert,) = await eventually(firing)
            await rules.tick(now)
            (alert,) = await firing()
            reason = alert["suppressed_by"]
            assert isinstance(reason, dict) and reason["planned_outage"] == "EVN-CT-2026-0500"
    finally:
        publisher.publish(planned_outages_topic(s.mqtt_topic_prefix), b"", retain=True)


async def _has(book: OutageBook) -> bool:
    return bool(book.current())
