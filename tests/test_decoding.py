"""The decoder alone: every dead-letter reason, and fuzzing that no exception escapes."""

from __future__ import annotations

import functools
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.ingest.decoding import Decoder
from ioc.ingest.errors import DecodeError, Reason
from ioc.ingest.records import CitizenReport, DeadLetter, DeviceEvent, StatusChange, Telemetry

NOW = time.time()
T = "hg/vi-thanh/flood/vt-flood-01/telemetry"


def decoder() -> Decoder:
    return Decoder(
        topic_prefix="hg",
        devices={"vt-flood-01": ("flood", "vi-thanh"), "vt-lamp-1": ("lighting", "vi-thanh")},
        max_payload_bytes=1024,
        max_age_s=7 * 86400,
        max_future_s=300,
    )


def doc(**over: object) -> bytes:
    base: dict[str, object] = {"ts": int(NOW * 1000), "seq": 1, "metrics": {"water_level_m": 0.82}}
    base.update(over)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_telemetry_epoch_ms() -> None:
    rec = decoder().decode(T, doc(), NOW)
    assert isinstance(rec, Telemetry)
    assert rec.device_id == "vt-flood-01"
    assert rec.metrics == (("water_level_m", 0.82),)
    assert rec.time == pytest.approx(int(NOW * 1000) / 1000)


def test_telemetry_rfc3339_with_offset() -> None:
    rec = decoder().decode(T, doc(ts="2026-11-28T09:00:00+07:00"), 1_795_831_200.0)
    assert isinstance(rec, Telemetry)
    assert rec.time == 1_795_831_200.0  # 02:00 UTC


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "names"),
    [
        ("other/vi-thanh/flood/vt-flood-01/telemetry", doc(), Reason.BAD_TOPIC, "other"),
        ("hg/vi-thanh/flood/vt-flood-01", doc(), Reason.BAD_TOPIC, "{channel}"),
        ("hg/vi-thanh/flood/vt-flood-01/bogus", doc(), Reason.BAD_TOPIC, "bogus"),
        (T, b"x" * 2000, Reason.OVERSIZE, "2000 bytes"),
        (T, b"{not json", Reason.MALFORMED_JSON, "JSON"),
        (T, b"\xff\xfe", Reason.MALFORMED_JSON, "JSON"),
        (T, b"[1, 2]", Reason.INVALID_PAYLOAD, "object"),
        (T, doc(metrics={"water_level_m": "high"}), Reason.WRONG_TYPE, "water_level_m"),
        (T, doc(metrics={"water_level_m": True}), Reason.WRONG_TYPE, "water_level_m"),
        (T, doc(seq=-1), Reason.WRONG_TYPE, "seq"),
        (T, doc(ts="yesterday"), Reason.WRONG_TYPE, "yesterday"),
        (T, doc(ts="2026-11-28T09:00:00"), Reason.WRONG_TYPE, "offset"),
        ("hg/vi-thanh/flood/ghost-01/telemetry", doc(), Reason.UNKNOWN_DEVICE, "ghost-01"),
        ("hg/nga-bay/flood/vt-flood-01/telemetry", doc(), Reason.DEVICE_MISMATCH, "nga-bay"),
        (T, doc(metrics={"temperature_c": 30}), Reason.UNKNOWN_METRIC, "temperature_c"),
        (T, doc(metrics={}), Reason.INVALID_PAYLOAD, "metrics"),
        (T, doc(metrics={"water_level_m": 99.0}), Reason.OUT_OF_RANGE, "water_level_m"),
        (T, doc(ts=...), Reason.MISSING_TIMESTAMP, "ts"),
        (T, doc(ts=int((NOW + 3600) * 1000)), Reason.TIMESTAMP_OUT_OF_BOUNDS, "window"),
        (T, doc(ts="1970-01-02T00:00:00Z"), Reason.TIMESTAMP_OUT_OF_BOUNDS, "window"),
        (
            "hg/vi-thanh/lighting/vt-lamp-1/event",
            orjson.dumps({"ts": int(NOW * 1000), "type": "explosion"}),
            Reason.UNKNOWN_EVENT_TYPE,
            "explosion",
        ),
        ("hg/vi-thanh/flood/vt-flood-01/status", b"sleeping", Reason.INVALID_STATUS, "sleeping"),
    ],
)
def test_each_reason_names_the_problem(
    topic: str, payload: bytes, reason: Reason, names: str
) -> None:
    with pytest.raises(DecodeError) as err:
        decoder().decode(topic, payload, NOW)
    assert err.value.reason is reason
    assert names in err.value.detail
    dl = decoder().decode_or_dead_letter(topic, payload, NOW)
    assert isinstance(dl, DeadLetter) and dl.reason is reason and dl.payload == payload


@pytest.mark.parametrize("payload", [b"online", b" online\n", b'"online"', b'{"status": "online"}'])
def test_status_forms(payload: bytes) -> None:
    rec = decoder().decode("hg/vi-thanh/flood/vt-flood-01/status", payload, NOW)
    assert rec == StatusChange("vt-flood-01", True, NOW)


def test_event_keeps_extra_fields() -> None:
    payload = orjson.dumps({"ts": int(NOW * 1000), "type": "lamp_failure", "code": 5})
    rec = decoder().decode("hg/vi-thanh/lighting/vt-lamp-1/event", payload, NOW)
    assert isinstance(rec, DeviceEvent)
    assert rec.type == "lamp_failure" and orjson.loads(rec.data_json) == {"code": 5}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
topics = st.sampled_from(
    [T, "hg/vi-thanh/lighting/vt-lamp-1/event", "hg/vi-thanh/flood/vt-flood-01/status", "hg/x"]
) | st.text(max_size=60)


@settings(max_examples=400, deadline=None)
@given(topic=topics, payload=st.binary(max_size=300))
def test_random_bytes_never_escape(topic: str, payload: bytes) -> None:
    # decode() itself: anything but a DecodeError would be a decoder bug.
    try:
        rec = decoder().decode(topic, payload, NOW)
    except DecodeError as exc:
        assert exc.reason in set(Reason) and exc.detail
    else:
        assert isinstance(rec, Telemetry | StatusChange | DeviceEvent)


@settings(max_examples=400, deadline=None)
@given(
    topic=topics,
    body=st.fixed_dictionaries(
        {},
        optional={
            "ts": json_values | st.integers(0, 2**62),
            "seq": json_values,
            "metrics": json_values
            | st.dictionaries(st.sampled_from(["water_level_m", "battery_v", "x"]), json_values),
            "type": json_values,
        },
    ),
)
def test_random_json_never_escapes(topic: str, body: dict[str, object]) -> None:
    try:
        decoder().decode(topic, orjson.dumps(body), NOW)
    except DecodeError as exc:
        assert exc.reason in set(Reason) and exc.detail


# -- citizen reports -------------------------------------------------------------------------------

R = "hg/vi-thanh/reports/app"


@functools.cache
def report_decoder() -> Decoder:
    from ioc.core.settings import Settings
    from ioc.routing.intake import report_vocabulary

    d = decoder()
    d.reports = report_vocabulary(Settings(open311_max_description=50))
    return d


def report(**over: object) -> bytes:
    base: dict[str, object] = {
        "id": "app-000123",
        "ts": "2026-11-28T19:20:00+07:00",
        "category": "chieu-sang",
        "lat": 9.784,
        "lon": 105.470,
        "description": "Đèn đường không sáng.",
        "media_url": None,
    }
    base.update(over)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


REPORT_NOW = 1_795_868_400.0 + 60  # a minute after the report's ts


def test_report_decodes_with_its_ward() -> None:
    rec = report_decoder().decode(R, report(media_url="https://x.vn/a.jpg"), REPORT_NOW)
    assert rec == CitizenReport(
        "vi-thanh", "app", "app-000123", 1_795_868_400.0, "chieu-sang", 9.784, 105.47,
        "phuong-vi-tan", "Đèn đường không sáng.", "https://x.vn/a.jpg",  # ex-Phường V
    )  # fmt: skip


@pytest.mark.parametrize(
    ("place", "ward"),
    [
        ("phuong-5", "phuong-vi-tan"),  # a former ward id (Phường V, abolished 1 July 2025)
        ("Phường 5", "phuong-vi-tan"),  # its name as people write it
        ("xã Hỏa Tiến", "xa-hoa-luu"),
        ("phuong-vi-thanh", "phuong-vi-thanh"),  # the current unit
    ],
)
def test_a_report_without_a_position_lands_in_the_unit_its_place_names(
    place: str, ward: str
) -> None:
    rec = report_decoder().decode(R, report(lat=..., lon=..., place=place), REPORT_NOW)
    assert isinstance(rec, CitizenReport)
    assert (rec.city, rec.ward, rec.lat, rec.lon) == ("vi-thanh", ward, None, None)


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "names"),
    [
        ("hg/vi-thanh/reports/fax", report(), Reason.BAD_TOPIC, "fax"),
        ("hg/hue/reports/app", report(), Reason.BAD_TOPIC, "hue"),
        ("hg/vi-thanh/reports", report(), Reason.BAD_TOPIC, "{channel}"),
        (R, report(category="ufo"), Reason.UNKNOWN_CATEGORY, "ufo"),
        (R, report(category="thiet-bi"), Reason.UNKNOWN_CATEGORY, "thiet-bi"),  # not public
        (R, report(category=...), Reason.INVALID_PAYLOAD, "category"),
        (R, report(description=...), Reason.INVALID_PAYLOAD, "description"),
        (R, report(description="   "), Reason.INVALID_PAYLOAD, "description"),
        (R, report(description=42), Reason.WRONG_TYPE, "description"),
        (R, report(description="x" * 51), Reason.TOO_LONG, "description is 51 characters"),
        (R, report(id=...), Reason.INVALID_PAYLOAD, "'id'"),
        (R, report(id="x" * 200), Reason.TOO_LONG, "id"),
        (R, report(lat=...), Reason.INVALID_PAYLOAD, "lat"),
        (R, report(lon="105.47"), Reason.WRONG_TYPE, "lon"),
        (R, report(lat=True), Reason.WRONG_TYPE, "lat"),
        (R, report(lat=10.5, lon=106.0), Reason.OUTSIDE_SITE, "no ward"),
        ("hg/nga-bay/reports/app", report(), Reason.CITY_MISMATCH, "nga-bay"),
        (R, report(ts=...), Reason.MISSING_TIMESTAMP, "ts"),
        (R, report(ts="tomorrow"), Reason.WRONG_TYPE, "tomorrow"),
        (R, report(ts="2026-11-28T19:20:00"), Reason.WRONG_TYPE, "offset"),
        (R, report(ts="2026-10-01T19:20:00+07:00"), Reason.TIMESTAMP_OUT_OF_BOUNDS, "window"),
        (R, report(media_url="ftp://x/a.jpg"), Reason.INVALID_PAYLOAD, "media_url"),
        (R, report(media_url=5), Reason.WRONG_TYPE, "media_url"),
        (R, b"[]", Reason.INVALID_PAYLOAD, "object"),
        (R, report(lat=..., lon=..., place="Quận Ninh Kiều"), Reason.OUTSIDE_SITE, "Ninh Kiều"),
        (R, report(lat=..., lon=..., place="hiep-loi"), Reason.CITY_MISMATCH, "nga-bay"),
        (R, report(lat=..., lon=..., place=7), Reason.WRONG_TYPE, "place"),
        (R, report(lat=..., lon=..., place=" "), Reason.INVALID_PAYLOAD, "place"),
        (R, report(lon=..., place="phuong-5"), Reason.INVALID_PAYLOAD, "lon"),  # half a position
    ],
)
def test_each_report_reason_names_the_problem(
    topic: str, payload: bytes, reason: Reason, names: str
) -> None:
    with pytest.raises(DecodeError) as err:
        report_decoder().decode(topic, payload, REPORT_NOW)
    assert err.value.reason is reason
    assert names in err.value.detail


def test_reports_refused_where_the_intake_is_off() -> None:
    with pytest.raises(DecodeError) as err:
        decoder().decode(R, report(), REPORT_NOW)
    assert err.value.reason is Reason.BAD_TOPIC


@settings(max_examples=300, deadline=None)
@given(
    channel=st.sampled_from(["app", "hotline", "zalo", "x", ""]),
    body=st.fixed_dictionaries(
        {},
        optional={
            "id": json_values,
            "ts": json_values | st.just("2026-11-28T19:20:00+07:00"),
            "category": json_values | st.sampled_from(["chieu-sang", "khac"]),
            "lat": json_values | st.floats(9.7, 9.9),
            "lon": json_values | st.floats(105.4, 105.9),
            "description": json_values,
            "media_url": json_values,
        },
    ),
)
def test_random_reports_never_escape(channel: str, body: dict[str, object]) -> None:
    try:
        rec = report_decoder().decode(f"hg/vi-thanh/reports/{channel}", orjson.dumps(body), NOW)
    except DecodeError as exc:
        assert exc.reason in set(Reason) and exc.detail
    else:
        assert isinstance(rec, CitizenReport)


def test_a_device_over_its_rate_is_dead_lettered_and_others_go_on() -> None:
    d = Decoder(
        topic_prefix="hg",
        devices={"vt-flood-01": ("flood", "vi-thanh"), "vt-flood-02": ("flood", "vi-thanh")},
        max_payload_bytes=1024, max_age_s=7 * 86400, max_future_s=300,
        device_rate=(2.0, 3),  # 2 messages/s after a burst of 3
    )  # fmt: skip
    other = "hg/vi-thanh/flood/vt-flood-02/telemetry"
    burst = [d.decode_or_dead_letter(T, doc(), NOW) for _ in range(4)]
    assert [type(r) for r in burst] == [Telemetry, Telemetry, Telemetry, DeadLetter]
    refused = burst[-1]
    assert isinstance(refused, DeadLetter) and refused.reason is Reason.RATE_LIMITED
    assert "'vt-flood-01' is over 2 messages/s (burst 3)" in refused.detail
    assert isinstance(d.decode_or_dead_letter(other, doc(), NOW), Telemetry)  # its own allowance
    # half a second later the device has earned one more message, not two
    later = [d.decode_or_dead_letter(T, doc(), NOW + 0.5) for _ in range(2)]
    assert [type(r) for r in later] == [Telemetry, DeadLetter]


def test_a_registry_change_applies_to_topics_already_seen() -> None:
    """The decoder remembers topics that passed the registry's checks; replacing the registry
    (a device decommissioned, deleted, or registered as another kind) must forget them."""
    d = decoder()
    assert isinstance(d.decode(T, doc(), NOW), Telemetry)
    d.decommissioned = frozenset({"vt-flood-01"})
    with pytest.raises(DecodeError) as refused:
        d.decode(T, doc(), NOW)
    assert refused.value.reason is Reason.DECOMMISSIONED
    d.decommissioned = frozenset()
    assert isinstance(d.decode(T, doc(), NOW), Telemetry)
    d.devices = {"vt-flood-01": ("lighting", "vi-thanh")}
    with pytest.raises(DecodeError) as moved:
        d.decode(T, doc(), NOW)
    assert moved.value.reason is Reason.DEVICE_MISMATCH
    d.devices = {}
    with pytest.raises(DecodeError) as gone:
        d.decode(T, doc(), NOW)
    assert gone.value.reason is Reason.UNKNOWN_DEVICE
