"""docs/asyncapi.yaml against the code, so the device contract cannot drift from what ingest does.

The document is what device makers build against; the code is what the IOC accepts. These tests
hold them together: topics (``ioc.core.topics``), metric names, units and ranges and event types
(``ioc.core.catalogue``), dead-letter reasons (``ioc.ingest.errors``), limits and session settings
(``ioc.core.settings``), and every example in the document is run through the real ``Decoder``.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from ioc.alerting.outages import parse_message
from ioc.core.catalogue import EVENT_TYPES, METRICS
from ioc.core.devices import DEVICE_ID
from ioc.core.settings import Settings
from ioc.core.topics import (
    REPORT_CHANNELS,
    Channel,
    device_topic,
    dispatch_topic,
    every_topic,
    parse_device_topic,
    planned_outages_topic,
    report_topic,
    subscriptions,
)
from ioc.ingest.decoding import MEDIA_URL_MAX, PLACE_MAX, REPORT_ID_MAX, Decoder, ReportVocabulary
from ioc.ingest.errors import DecodeError, Reason
from ioc.ingest.records import CitizenReport, DeviceEvent, StatusChange, Telemetry
from ioc.routing.intake import report_vocabulary

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml"
PREFIX = "hg"  # the production prefix of contract v1 (IOC_MQTT_TOPIC_PREFIX's default)
CITIES = {"vi-thanh", "nga-bay"}  # the site's cities, contract v1 (DESIGN.md)
DOC_URI = "urn:hau-giang-ioc:asyncapi"

_DEFAULTS = {name: f.default for name, f in Settings.model_fields.items()}
DISPATCH_PREFIX = _DEFAULTS["dispatch_mqtt_prefix"]  # ioc/dispatch
_DEVICE_ADDRESS = re.compile(
    rf"^{PREFIX}/\{{city\}}/(?P<kind>[^/{{}}]+)/\{{device_id\}}/(?P<channel>[a-z]+)$"
)
_TOPIC_IN_TEXT = re.compile(r"`((?:" + PREFIX + "|" + DISPATCH_PREFIX + r")/[^`\s]+)`")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


# -- navigating the document -----------------------------------------------------------------------


def follow(doc: dict[str, Any], node: Any, pointer: str = "") -> tuple[str, Any]:
    """Follow ``$ref`` chains inside the document; returns (JSON pointer, resolved node)."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert isinstance(ref, str) and ref.startswith("#/"), f"only local refs expected: {ref!r}"
        assert ref not in seen, f"$ref cycle at {ref}"
        seen.add(ref)
        pointer = ref[1:]
        node = doc
        for part in pointer[1:].split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and key in node, f"dangling $ref {ref}"
            node = node[key]
    return pointer, node


def resolve(doc: dict[str, Any], node: Any) -> Any:
    return follow(doc, node)[1]


def property_schemas(doc: dict[str, Any], schema: Any, name: str) -> list[dict[str, Any]]:
    """Every subschema that constrains property ``name``, through ``allOf``."""
    schema = resolve(doc, schema)
    found = []
    prop = schema.get("properties", {}).get(name)
    if prop is not None:
        found.append(resolve(doc, prop))
    for part in schema.get("allOf", []):
        found.extend(property_schemas(doc, part, name))
    return found


def device_channels(doc: dict[str, Any]) -> dict[tuple[str, Channel], tuple[str, dict[str, Any]]]:
    """(kind, channel) -> (channel id, channel object) for every device channel."""
    out = {}
    for cid, channel in doc["channels"].items():
        m = _DEVICE_ADDRESS.match(channel["address"])
        if m:
            key = (m["kind"], Channel(m["channel"]))
            assert key not in out, f"two channels for {key}"
            out[key] = (cid, channel)
    return out


def channel_messages(doc: dict[str, Any], channel: dict[str, Any]) -> list[tuple[str, dict]]:
    """(JSON pointer, message) for each message of a channel."""
    return [follow(doc, m) for m in channel["messages"].values()]


def examples(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(channel id, message pointer, message, example) for every message example.

    A message shared by several channels (status) is yielded once per example, with the channel
    whose address the example's topic fits.
    """
    users: dict[str, list[str]] = {}
    messages: dict[str, dict[str, Any]] = {}
    for cid, channel in doc["channels"].items():
        for pointer, message in channel_messages(doc, channel):
            users.setdefault(pointer, []).append(cid)
            messages[pointer] = message
    for pointer, message in messages.items():
        for example in message.get("examples", []):
            topic = example_topic(example)
            fits = [
                cid
                for cid in users[pointer]
                if address_regex(doc["channels"][cid]["address"]).match(topic)
            ]
            assert len(fits) == 1, f"example {example.get('name')!r}: {topic} fits {fits}"
            yield fits[0], pointer, message, example


def example_topic(example: dict[str, Any]) -> str:
    """The topic an example is published on: its summary names it in backquotes."""
    topics = _TOPIC_IN_TEXT.findall(example.get("summary", ""))
    assert len(topics) == 1, f"example {example.get('name')!r} must name exactly one topic"
    return topics[0]


def address_regex(address: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/+#]+", re.escape(address)) + "$")


def payload_bytes(message: dict[str, Any], payload: Any) -> bytes:
    if message.get("contentType") == "text/plain":
        assert isinstance(payload, str)
        return payload.encode("utf-8")
    return orjson.dumps(payload)


def received_at_for(payload: Any) -> float:
    """A receipt time shortly after the example's own ``ts`` (inside the accepted window)."""
    ts = payload.get("ts") if isinstance(payload, dict) else None
    if ts is None:
        return 1_795_867_200.0
    if isinstance(ts, str):
        return datetime.fromisoformat(ts).timestamp() + 30.0
    assert isinstance(ts, int), f"ts {ts!r} must be a quoted string or an integer in the YAML"
    return ts / 1000.0 + 30.0


@functools.cache
def _report_vocabulary() -> ReportVocabulary:
    return report_vocabulary(Settings())  # the packaged site and routing files, defaults


def decoder(devices: dict[str, tuple[str, str]]) -> Decoder:
    return Decoder(
        topic_prefix=PREFIX,
        devices=devices,
        max_payload_bytes=_DEFAULTS["max_payload_bytes"],
        max_age_s=_DEFAULTS["reading_max_age_s"],
        max_future_s=_DEFAULTS["reading_max_future_s"],
        reports=_report_vocabulary(),
    )


def example_devices(doc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The device index the examples imply: id -> (kind, city), from their topics."""
    devices: dict[str, tuple[str, str]] = {}
    for _, _, _, example in examples(doc):
        topic = example_topic(example)
        if not topic.startswith(f"{PREFIX}/") or "/reports/" in topic:
            continue  # an agency's dispatch topic, or a citizen report's
        if topic == planned_outages_topic(PREFIX):
            continue
        where = parse_device_topic(PREFIX, topic)
        known = devices.setdefault(where.device_id, (where.kind, where.city))
        assert known == (where.kind, where.city), f"{where.device_id} used as two devices"
    return devices


# -- structure -------------------------------------------------------------------------------------


def test_is_asyncapi_3(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["version"] == "1.0.0"
    assert doc["defaultContentType"] == "application/json"
    for name in ("production", "demo"):
        server = doc["servers"][name]
        assert server["protocol"] == "mqtt"
        assert str(server["protocolVersion"]) == "5"


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                follow(doc, node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)


def test_one_channel_per_kind_and_channel(doc: dict[str, Any]) -> None:
    channels = device_channels(doc)
    assert set(channels) == {(k, c) for k in METRICS for c in Channel}
    for (kind, ch), (_, channel) in channels.items():
        assert channel["address"] == device_topic(PREFIX, "{city}", kind, "{device_id}", ch)
        assert set(channel["parameters"]) == {"city", "device_id"}
    reports = [c for c in doc["channels"].values() if "/reports/" in c["address"]]
    assert [c["address"] for c in reports] == [report_topic(PREFIX, "{city}", "{channel}")]
    # and the power company's planned-outage list, which the ingest filters do not match
    assert doc["channels"]["plannedOutages"]["address"] == planned_outages_topic(PREFIX)
    assert not any(
        address_regex(f.replace("+", "{x}")).match(planned_outages_topic(PREFIX))
        for f in subscriptions(PREFIX)
    )
    # and the IOC's dispatches to each agency, outside the device prefix
    dispatch = doc["channels"]["agencyDispatch"]["address"]
    assert dispatch == dispatch_topic(DISPATCH_PREFIX, "{agency}")
    assert len(doc["channels"]) == len(channels) + 3


def test_the_channels_are_every_topic_the_code_uses(doc: dict[str, Any]) -> None:
    """Each topic of ioc/core/topics.py that the system publishes or reads has its channel, and the
    document has no channel the code does not use."""
    addresses = [c["address"] for c in doc["channels"].values()]
    assert len(addresses) == len(set(addresses))
    assert set(addresses) == every_topic(PREFIX, DISPATCH_PREFIX, METRICS)
    # each channel has the operations of both sides: who publishes and who reads
    actions: dict[str, set[str]] = {}
    for op in doc["operations"].values():
        actions.setdefault(op["channel"]["$ref"].removeprefix("#/channels/"), set()).add(
            op["action"]
        )
    assert all(actions.get(cid) == {"send", "receive"} for cid in doc["channels"]), actions


def test_parameters_match_the_code(doc: dict[str, Any]) -> None:
    for channel in doc["channels"].values():
        if "parameters" not in channel:
            continue  # the planned-outage list: one fixed topic
        params = {k: resolve(doc, v) for k, v in channel["parameters"].items()}
        if "agency" in params:  # dispatch: the site's agencies (data, so examples, no enum)
            site = _report_vocabulary().site
            assert set(params["agency"]["examples"]) <= {a.id for a in site.agencies}
            continue
        assert set(params["city"]["enum"]) == CITIES
        if "device_id" in params:
            device_id = params["device_id"]
            assert device_id["x-pattern"] == DEVICE_ID.pattern
            assert DEVICE_ID.pattern in device_id["description"]
            assert all(DEVICE_ID.match(e) for e in device_id["examples"])


def test_operations_qos1_and_retained_status(doc: dict[str, Any]) -> None:
    ops_by_channel: dict[str, list[dict[str, Any]]] = {}
    for op in doc["operations"].values():
        cid = op["channel"]["$ref"].removeprefix("#/channels/")
        assert cid in doc["channels"]
        for m in op["messages"]:
            assert m["$ref"].startswith(f"#/channels/{cid}/messages/")
            follow(doc, m)
        ops_by_channel.setdefault(cid, []).append(op)
    for (_, ch), (cid, _) in device_channels(doc).items():
        ops = ops_by_channel.get(cid, [])
        assert sorted(op["action"] for op in ops) == ["receive", "send"], cid
        for op in ops:
            mqtt = resolve(doc, op["bindings"])["mqtt"]
            assert mqtt["qos"] == 1, cid
            if op["action"] == "send":
                assert mqtt["retain"] is (ch is Channel.STATUS), cid


def test_server_bindings_match_ingest_settings(doc: dict[str, Any]) -> None:
    for name in ("production", "demo"):
        mqtt = doc["servers"][name]["bindings"]["mqtt"]
        assert mqtt["clientId"] == _DEFAULTS["mqtt_client_id"]
        assert mqtt["cleanSession"] is False  # ingest connects with clean_start=False
        assert mqtt["sessionExpiryInterval"] == _DEFAULTS["mqtt_session_expiry_s"]
        assert mqtt["keepAlive"] == _DEFAULTS["mqtt_keepalive_s"]
        will = mqtt["lastWill"]
        assert will["topic"] == device_topic(
            PREFIX, "{city}", "{kind}", "{device_id}", Channel.STATUS
        )
        assert (will["qos"], will["message"], will["retain"]) == (1, "offline", True)


def test_limits_match_settings(doc: dict[str, Any]) -> None:
    limits = doc["info"]["x-limits"]
    assert limits == {
        "maxPayloadBytes": _DEFAULTS["max_payload_bytes"],
        "maxTimestampAgeSeconds": _DEFAULTS["reading_max_age_s"],
        "maxTimestampFutureSeconds": _DEFAULTS["reading_max_future_s"],
    }
    text = doc["info"]["description"]
    assert f"{_DEFAULTS['max_payload_bytes']} bytes" in text
    assert f"{_DEFAULTS['reading_max_age_s'] // 86400} days" in text
    assert f"{_DEFAULTS['reading_max_future_s'] // 60} minutes" in text


# -- catalogue -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(METRICS))
def test_metric_schema_is_the_catalogue(doc: dict[str, Any], kind: str) -> None:
    _, channel = device_channels(doc)[(kind, Channel.TELEMETRY)]
    [(_, message)] = channel_messages(doc, channel)
    candidates = property_schemas(doc, message["payload"], "metrics")
    [metrics] = [s for s in candidates if "properties" in s]
    assert metrics["additionalProperties"] is False
    assert metrics["minProperties"] == 1
    props = {name: resolve(doc, s) for name, s in metrics["properties"].items()}
    assert set(props) == set(METRICS[kind])
    for name, spec in METRICS[kind].items():
        schema = props[name]
        assert schema["type"] == "number", name
        assert float(schema["minimum"]) == spec.minimum, name
        assert float(schema["maximum"]) == spec.maximum, name
        assert schema["x-unit"] == spec.unit, name
        if spec.unit not in ("", "bool"):
            assert f"({spec.unit})" in schema["description"], name


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_event_types_are_the_catalogue(doc: dict[str, Any], kind: str) -> None:
    _, channel = device_channels(doc)[(kind, Channel.EVENT)]
    [(_, message)] = channel_messages(doc, channel)
    payload = resolve(doc, message["payload"])
    [envelope] = [resolve(doc, p) for p in payload["allOf"] if "required" in resolve(doc, p)]
    assert set(envelope["required"]) == {"ts", "type"}
    [types] = [s for s in property_schemas(doc, payload, "type") if "enum" in s]
    assert set(types["enum"]) == EVENT_TYPES[kind]
    for t in EVENT_TYPES[kind]:
        assert f"`{t}`" in types["description"], f"{kind} event {t} is not described"


def test_status_is_what_the_decoder_accepts(doc: dict[str, Any]) -> None:
    for (kind, ch), (_, channel) in device_channels(doc).items():
        if ch is not Channel.STATUS:
            continue
        [(_, message)] = channel_messages(doc, channel)
        assert message["contentType"] == "text/plain"
        words = resolve(doc, message["payload"])["enum"]
        assert set(words) == {"online", "offline"}
        topic = device_topic(PREFIX, "vi-thanh", kind, "dev-1", ch)
        for word in words:
            rec = decoder({"dev-1": (kind, "vi-thanh")}).decode(topic, word.encode(), 0.0)
            assert isinstance(rec, StatusChange)
            assert rec.online is (word == "online")


def test_dead_letter_reasons_are_the_code(doc: dict[str, Any]) -> None:
    schema = doc["components"]["schemas"]["DeadLetterReason"]
    assert set(schema["enum"]) == {r.value for r in Reason}
    assert len(schema["enum"]) == len(Reason)
    for r in Reason:
        assert f"`{r.value}`" in schema["description"], f"reason {r.value} is not described"


# -- examples --------------------------------------------------------------------------------------


def test_examples_name_a_topic_of_their_channel(doc: dict[str, Any]) -> None:
    count = 0
    for cid, _, _, example in examples(doc):  # examples() checks each fits its channel
        topic = example_topic(example)
        if cid in ("plannedOutages", "agencyDispatch"):
            continue
        city = topic.split("/")[1]
        assert city in CITIES, topic
        count += 1
    for (kind, ch), (_, channel) in device_channels(doc).items():
        assert any(m.get("examples") for _, m in channel_messages(doc, channel)), (
            f"no example for {kind} {ch}"
        )
    assert count >= 2 * len(METRICS) + 1


def test_examples_are_accepted_by_the_decoder(doc: dict[str, Any]) -> None:
    dec = decoder(example_devices(doc))
    checked = 0
    for cid, _, message, example in examples(doc):
        topic = example_topic(example)
        payload = example["payload"]
        if cid == "agencyDispatch":  # sent by the IOC: see test_dispatch_message_is_the_code
            continue
        if cid == "plannedOutages":  # read by the rules service, not the decoder
            parsed = parse_message(orjson.dumps(payload), _report_vocabulary().site, topic)
            assert not parsed.problems and len(parsed.outages) == len(payload["outages"])
            continue
        rec = dec.decode(topic, payload_bytes(message, payload), received_at_for(payload))
        if "/reports/" in topic:
            assert isinstance(rec, CitizenReport), cid
            assert (rec.external_id, rec.category, rec.description, rec.media_url) == (
                payload["id"],
                payload["category"],
                payload["description"],
                payload["media_url"],
            )
            if "place" in payload:  # no position: the ward named (a former one resolves)
                assert rec.lat is None and rec.ward == "phuong-vi-tan", cid
            checked += 1
            continue
        where = parse_device_topic(PREFIX, topic)
        if where.channel is Channel.TELEMETRY:
            assert isinstance(rec, Telemetry), cid
            assert dict(rec.metrics) == {k: float(v) for k, v in payload["metrics"].items()}
            assert rec.seq == payload.get("seq")
        elif where.channel is Channel.EVENT:
            assert isinstance(rec, DeviceEvent), cid
            assert rec.type == payload["type"]
            extra = {k: v for k, v in payload.items() if k not in ("ts", "type")}
            assert orjson.loads(rec.data_json) == extra
        else:
            assert isinstance(rec, StatusChange), cid
        checked += 1
    assert checked >= 2 * len(METRICS) + 1


def test_example_times_are_both_forms(doc: dict[str, Any]) -> None:
    forms = set()
    for _, _, _, example in examples(doc):
        payload = example["payload"]
        if isinstance(payload, dict) and "ts" in payload:
            forms.add(type(payload["ts"]))
    assert forms == {str, int}


# -- JSON Schema (test-only dependency) ------------------------------------------------------------


def _validator(doc: dict[str, Any], pointer: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT7

    registry = referencing.Registry().with_resource(DOC_URI, DRAFT7.create_resource(doc))
    return jsonschema.Draft7Validator({"$ref": f"{DOC_URI}#{pointer}"}, registry=registry)


def test_examples_match_their_schemas(doc: dict[str, Any]) -> None:
    pytest.importorskip("jsonschema")
    for cid, pointer, _, example in examples(doc):
        validator = _validator(doc, f"{pointer}/payload")
        errors = [e.message for e in validator.iter_errors(example["payload"])]
        assert not errors, (cid, example.get("name"), errors)


def _flood_example(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    _, channel = device_channels(doc)[("flood", Channel.TELEMETRY)]
    [(pointer, message)] = channel_messages(doc, channel)
    return pointer, message["examples"][0]


_BAD_TELEMETRY = [
    ("missing ts", {"ts": ...}, Reason.MISSING_TIMESTAMP),
    ("ts without offset", {"ts": "2026-11-28T19:00:00"}, Reason.WRONG_TYPE),
    ("ts as words", {"ts": "yesterday"}, Reason.WRONG_TYPE),
    ("negative seq", {"seq": -1}, Reason.WRONG_TYPE),
    ("seq as text", {"seq": "7"}, Reason.WRONG_TYPE),
    ("no metrics", {"metrics": ...}, Reason.INVALID_PAYLOAD),
    ("empty metrics", {"metrics": {}}, Reason.INVALID_PAYLOAD),
    ("metric as text", {"metrics": {"water_level_m": "0.82"}}, Reason.WRONG_TYPE),
    ("metric as bool", {"metrics": {"water_level_m": True}}, Reason.WRONG_TYPE),
    ("metric null", {"metrics": {"water_level_m": None}}, Reason.WRONG_TYPE),
    ("unknown metric", {"metrics": {"temperature_c": 30}}, Reason.UNKNOWN_METRIC),
    ("other kind's metric", {"metrics": {"rain_mm": 1.0}}, Reason.UNKNOWN_METRIC),
    ("above range", {"metrics": {"water_level_m": 15.01}}, Reason.OUT_OF_RANGE),
    ("below range", {"metrics": {"water_level_m": -5.01}}, Reason.OUT_OF_RANGE),
]


@pytest.mark.parametrize(
    ("change", "reason"), [c[1:] for c in _BAD_TELEMETRY], ids=[c[0] for c in _BAD_TELEMETRY]
)
def test_schema_and_decoder_refuse_alike(
    doc: dict[str, Any], change: dict[str, Any], reason: Reason
) -> None:
    """What the schema refuses the decoder refuses too, with the documented reason."""
    pointer, example = _flood_example(doc)
    payload = {**example["payload"], **change}
    payload = {k: v for k, v in payload.items() if v is not ...}
    validator = _validator(doc, f"{pointer}/payload")
    assert not validator.is_valid(payload)
    topic = example_topic(example)
    with pytest.raises(DecodeError) as err:
        decoder(example_devices(doc)).decode(
            topic, orjson.dumps(payload), received_at_for(example["payload"])
        )
    assert err.value.reason is reason


# -- citizen reports -------------------------------------------------------------------------------


def _report_channel(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    [(cid, channel)] = [(k, c) for k, c in doc["channels"].items() if "/reports/" in c["address"]]
    return cid, channel


def test_report_schema_is_what_the_decoder_checks(doc: dict[str, Any]) -> None:
    _, channel = _report_channel(doc)
    assert set(resolve(doc, channel["parameters"]["channel"])["enum"]) == REPORT_CHANNELS
    [(_, message)] = channel_messages(doc, channel)
    schema = resolve(doc, message["payload"])
    props = {k: resolve(doc, v) for k, v in schema["properties"].items()}
    categories = props["category"]["enum"]
    assert set(categories) == _report_vocabulary().categories
    for code in categories:
        assert f"`{code}`" in props["category"]["description"], code
    assert props["description"]["maxLength"] == _DEFAULTS["open311_max_description"]
    assert props["id"]["maxLength"] == REPORT_ID_MAX
    assert props["media_url"]["maxLength"] == MEDIA_URL_MAX
    assert set(schema["required"]) == {"id", "ts", "category", "description"}
    # a position, or the place named (a ward id or name, former ones included)
    assert schema["anyOf"] == [{"required": ["lat", "lon"]}, {"required": ["place"]}]
    assert props["place"]["maxLength"] == PLACE_MAX


def _report_example(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    _, channel = _report_channel(doc)
    [(pointer, message)] = channel_messages(doc, channel)
    return pointer, message["examples"][0]


_BAD_REPORTS = [
    ("missing id", {"id": ...}, Reason.INVALID_PAYLOAD),
    ("empty id", {"id": ""}, Reason.INVALID_PAYLOAD),
    ("id too long", {"id": "x" * 129}, Reason.TOO_LONG),
    ("unknown category", {"category": "ufo"}, Reason.UNKNOWN_CATEGORY),
    ("device category", {"category": "thiet-bi"}, Reason.UNKNOWN_CATEGORY),
    ("lat as text", {"lat": "9.78"}, Reason.WRONG_TYPE),
    ("missing lon", {"lon": ...}, Reason.INVALID_PAYLOAD),
    ("missing description", {"description": ...}, Reason.INVALID_PAYLOAD),
    ("blank description", {"description": "  "}, Reason.INVALID_PAYLOAD),
    ("description too long", {"description": "x" * 4001}, Reason.TOO_LONG),
    ("media_url not http", {"media_url": "ftp://x.vn/a.jpg"}, Reason.INVALID_PAYLOAD),
    ("ts without offset", {"ts": "2026-11-28T19:20:00"}, Reason.WRONG_TYPE),
]


@pytest.mark.parametrize(
    ("change", "reason"), [c[1:] for c in _BAD_REPORTS], ids=[c[0] for c in _BAD_REPORTS]
)
def test_report_schema_and_decoder_refuse_alike(
    doc: dict[str, Any], change: dict[str, Any], reason: Reason
) -> None:
    pointer, example = _report_example(doc)
    payload = {**example["payload"], **change}
    payload = {k: v for k, v in payload.items() if v is not ...}
    assert not _validator(doc, f"{pointer}/payload").is_valid(payload)
    with pytest.raises(DecodeError) as err:
        decoder({}).decode(
            example_topic(example), orjson.dumps(payload), received_at_for(example["payload"])
        )
    assert err.value.reason is reason


def test_report_position_must_be_in_the_topics_city(doc: dict[str, Any]) -> None:
    """What no schema can say: the place decides the ward, and the topic's city must agree."""
    _, example = _report_example(doc)
    topic = example_topic(example).replace("/vi-thanh/", "/nga-bay/")
    with pytest.raises(DecodeError) as err:
        decoder({}).decode(
            topic, orjson.dumps(example["payload"]), received_at_for(example["payload"])
        )
    assert err.value.reason is Reason.CITY_MISMATCH


def test_dispatch_message_is_the_code(doc: dict[str, Any]) -> None:
    """What ioc.dispatch publishes matches the schema, and the schema's kinds are the kinds the
    incident workflow sends (ioc/incidents)."""
    pytest.importorskip("jsonschema")
    from ioc.dispatch.delivery import MQTT, Delivery
    from ioc.dispatch.envelope import envelope
    from ioc.dispatch.outbox import mqtt_topic

    pointer = "/components/schemas/DispatchMessage"
    schema = resolve(doc, {"$ref": f"#{pointer}"})
    root = Path(__file__).resolve().parents[1] / "ioc" / "incidents"
    sent = set()
    for path in root.glob("*.py"):
        sent |= set(re.findall(r"\"(incident\.[a-z_]+)\"", path.read_text(encoding="utf-8")))
    assert sent and set(schema["properties"]["kind"]["enum"]) == sent
    now = datetime.now(UTC)
    settings = Settings()
    validator = _validator(doc, pointer)
    for kind in sorted(sent):
        delivery = Delivery(
            id=1, idempotency_key=str(uuid.uuid4()), incident_id=42, agency_id="urban-works",
            channel=MQTT, target=mqtt_topic(settings, "urban-works"), kind=kind,
            payload={"id": 42, "status": "dispatched"}, attempts=1, created_at=now, lease=now,
        )  # fmt: skip
        assert address_regex(doc["channels"]["agencyDispatch"]["address"]).match(delivery.target)
        message = orjson.loads(envelope(delivery, now))
        errors = [e.message for e in validator.iter_errors(message)]
        assert not errors, (kind, errors)
