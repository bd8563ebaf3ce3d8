"""Public warnings as OASIS CAP 1.2 messages (``urn:oasis:names:tc:emergency:cap:1.2``).

A pure builder: an alert (what a rule saw, where, how bad) in, one CAP ``<alert>`` document out.
No database and no web here — ``ioc.api.cap`` gathers the facts, numbers the messages and stores
them (``ioc.storage.cap_messages``). docs/cap.md has the mapping tables and an example.

CAP rules this module keeps (CAP 1.2 §3):
- times are ``YYYY-MM-DDThh:mm:ss±hh:mm`` — never ``Z`` — here always in Asia/Ho_Chi_Minh
  (``+07:00``), to the second, so a ``references`` triple quotes an earlier ``sent`` exactly;
- ``identifier`` and ``sender`` hold no spaces, commas, ``<`` or ``&``;
- Update and Cancel carry ``references``: every earlier message of the same alert as
  ``sender,identifier,sent`` triples, space-separated, oldest first;
- a polygon is ``lat,lon`` pairs (WGS 84) separated by spaces, at least four, first == last;
  a circle is ``lat,lon radius_km``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from ioc.core.localtime import SITE_ZONE
from ioc.core.risk import risk_level
from ioc.core.site import CapSender

CAP_NS: Final = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_MEDIA_TYPE: Final = "application/cap+xml"

# Who signs the warnings (``<sender>``, ``<senderName>``, ``<web>``, ``<contact>``) is site data:
# the site file's ``cap_sender`` (:class:`ioc.core.site.CapSender`), passed to the builder. Not a
# setting: the sender is the IOC's identity in every alert hub that has indexed a message, so it
# changes with the site file (and the hubs are told), not with a deployment's environment.
# The identifiers' prefix stays: earlier messages, and the chains citing them, carry it.
IDENTIFIER_PREFIX: Final = "vn.haugiang.ioc"

MsgType = Literal["Alert", "Update", "Cancel"]
MSG_TYPES: Final = ("Alert", "Update", "Cancel")

_FORBIDDEN: Final = re.compile(r"[\s,<&]")
ALARM_NAMES: Final = {1: "BĐ I", 2: "BĐ II", 3: "BĐ III"}


class CapError(ValueError):
    """A message that cannot be built; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def cap_time(t: datetime) -> str:
    """A CAP date-time: local Asia/Ho_Chi_Minh time to the second with its offset, never ``Z``."""
    if t.tzinfo is None:
        raise CapError("time", "a CAP time needs a time zone")
    return t.astimezone(SITE_ZONE).replace(microsecond=0).isoformat()


def identifier_for(alert_id: int, n: int) -> str:
    """The ``n``-th message (1-based) about IOC alert ``alert_id``: unique for the sender."""
    return f"{IDENTIFIER_PREFIX}-{alert_id}-{n}"


# --------------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Reference:
    """An earlier message, as a later one cites it."""

    sender: str
    identifier: str
    sent: datetime

    def triple(self) -> str:
        return f"{self.sender},{self.identifier},{cap_time(self.sent)}"


@dataclass(frozen=True, slots=True)
class Area:
    """Where the warning applies. ``polygon`` is (lat, lon) points; ``circle`` is
    (lat, lon, radius_km). At least one of them; both may be given."""

    desc_vi: str
    desc_en: str
    polygon: tuple[tuple[float, float], ...] | None = None
    circle: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.polygon is None and self.circle is None:
            raise CapError("area", "needs a polygon or a circle")
        if self.polygon is not None:
            ring = tuple(self.polygon)
            if ring and ring[0] != ring[-1]:
                ring = (*ring, ring[0])  # CAP: the first and last pairs are the same point
            if len(ring) < 4:
                raise CapError("area.polygon", f"needs at least 3 distinct points, got {ring}")
            object.__setattr__(self, "polygon", ring)
        if self.circle is not None and not self.circle[2] > 0:
            raise CapError("area.circle", "the radius must be positive")

    @classmethod
    def from_outline(
        cls, outline: Sequence[tuple[float, float]], desc_vi: str, desc_en: str
    ) -> Area:
        """From a site ward outline, which is GeoJSON-ordered (lon, lat)."""
        return cls(desc_vi, desc_en, polygon=tuple((lat, lon) for lon, lat in outline))


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """The facts of one alert a warning is about (from the ``alerts`` row and its device).

    ``water_level_m`` and ``alarm_levels`` (BĐ I, II, III in metres) are for flood gauges: the
    level reached decides severity, urgency and the event name (see :func:`classify`).
    """

    alert_id: int
    rule: str
    domain: str
    severity: str  # the alert's: info, warning, critical
    state: str  # pending, firing, resolved
    summary_vi: str
    summary_en: str
    description_vi: str | None = None
    description_en: str | None = None
    onset: datetime | None = None
    device_name: str | None = None
    value: float | None = None
    water_level_m: float | None = None
    alarm_levels: tuple[float, float, float] | None = None
    station: str | None = None
    incident_id: int | None = None
    risk_level: int | None = None  # QĐ 18/2021/QĐ-TTg, from the alert's rule (1-5)
    # The alert's advisory (salinity: "lấy nước khi triều xuống" with the next low water),
    # appended to the instruction.
    advice_vi: str | None = None
    advice_en: str | None = None

    @property
    def alarm_level(self) -> int:
        """0 below BĐ I, else the highest BĐ level the water reaches (1, 2 or 3)."""
        if self.water_level_m is None or self.alarm_levels is None:
            return 0
        return sum(1 for t in self.alarm_levels if self.water_level_m >= t)


# --------------------------------------------------------------------------------- mapping


@dataclass(frozen=True, slots=True)
class Classification:
    """The CAP ``info`` codes for one warning."""

    categories: tuple[str, ...]
    event_vi: str
    event_en: str
    response_types: tuple[str, ...]
    urgency: str
    severity: str
    certainty: str
    instruction_vi: str
    instruction_en: str
    valid_for: timedelta  # expires = sent + valid_for


# Domains that may leave the IOC as public warnings, with their CAP categories. Device health
# (silent gauges, offline controllers) is the operators' business, not the public's.
CATEGORIES: Final[Mapping[str, tuple[str, ...]]] = {
    "flood": ("Met",),  # CAP 1.2 lists flood under Met ("Meteorological (inc. flood)")
    "rain": ("Met",),
    # Salinity intrusion spoils the water people and crops use: CAP's "Env" (pollution and other
    # environmental); QĐ 18/2021 counts it a natural disaster, like flood.
    "salinity": ("Env",),
    "traffic": ("Transport",),
    "lighting": ("Infra",),
}

# Flood gauges: the BĐ level reached (QĐ 05/2020/QĐ-TTg) → (severity, urgency, certainty,
# response types). Observed: a gauge measured it. BĐ III is Severe, not Extreme: in the bulletins
# of 2023–2025 spring tides over BĐ III are disaster risk level 1–2 (QĐ 18/2021), and Extreme is
# kept for what the PCTT committee declares itself.
FLOOD_LEVELS: Final[Mapping[int, tuple[str, str, str, tuple[str, ...]]]] = {
    3: ("Severe", "Immediate", "Observed", ("Prepare", "Avoid")),
    2: ("Moderate", "Expected", "Observed", ("Prepare", "Monitor")),
    1: ("Minor", "Expected", "Observed", ("Monitor",)),
}
# Everything else: the alert's own severity → (severity, urgency).
BY_ALERT_SEVERITY: Final[Mapping[str, tuple[str, str]]] = {
    "critical": ("Severe", "Immediate"),
    "warning": ("Moderate", "Expected"),
    "info": ("Minor", "Expected"),
}
RESPONSE_TYPES: Final[Mapping[str, tuple[str, ...]]] = {
    "flood": ("Prepare", "Monitor"),
    "rain": ("Prepare", "Monitor"),
    "salinity": ("Prepare", "Monitor"),
    "traffic": ("Avoid",),
    "lighting": ("Monitor",),
}
VALID_FOR: Final[Mapping[str, timedelta]] = {
    "flood": timedelta(hours=6),  # about half a semi-diurnal tide: the next peak gets an Update
    "rain": timedelta(hours=6),
    "salinity": timedelta(hours=12),  # one semi-diurnal cycle: the next peak gets an Update
    "traffic": timedelta(hours=2),
    "lighting": timedelta(hours=12),
}
CANCEL_VALID_FOR: Final = timedelta(hours=1)

_EVENTS: Final[Mapping[str, tuple[str, str]]] = {
    "flood": ("Nước lên nhanh, nguy cơ ngập", "Water rising fast, flood risk"),
    "rain": ("Mưa lớn", "Heavy rain"),
    "salinity": ("Xâm nhập mặn", "Salinity intrusion"),
    "traffic": ("Sự cố giao thông", "Traffic disruption"),
    "lighting": ("Sự cố chiếu sáng công cộng", "Public lighting outage"),
}

_INSTRUCTIONS: Final[Mapping[str, tuple[str, str]]] = {
    "flood-3": (
        "Không đi qua các tuyến đường, bờ kênh ngập sâu. Kê cao tài sản, đưa xe ra khỏi vùng "
        "trũng. Theo dõi thông báo của Ban Chỉ huy Phòng thủ dân sự phường, xã; gọi 112 khi "
        "cần cứu hộ.",
        "Do not cross deeply flooded roads or canal banks. Move belongings up and vehicles out "
        "of low-lying areas. Follow the ward or commune civil defence command's notices; call "
        "112 for rescue.",
    ),
    "flood-2": (
        "Chuẩn bị kê cao tài sản, hạn chế đi lại ven kênh rạch và theo dõi mực nước.",
        "Prepare to move belongings up, avoid canal banks and keep watching the water level.",
    ),
    "flood": (
        "Theo dõi mực nước và thông báo của chính quyền địa phương.",
        "Keep watching the water level and the local authorities' notices.",
    ),
    "rain": (
        "Hạn chế ra đường khi mưa to; đề phòng ngập úng cục bộ.",
        "Stay off the roads in heavy rain; expect local flooding.",
    ),
    "salinity": (
        "Không lấy nước sông, kênh khi triều lên và lúc mặn cao (thường khoảng 5–8 giờ và 18–21 "
        "giờ); chỉ lấy nước khi triều xuống và đo độ mặn trước khi tưới; trữ nước ngọt cho sinh "
        "hoạt.",
        "Take no river or canal water on the flood tide or at the salinity peaks (usually about "
        "05–08 h and 18–21 h); take water only on the ebb and measure salinity before "
        "irrigating; store fresh water for household use.",
    ),
    "traffic": (
        "Tránh khu vực, chọn tuyến đường khác và làm theo hướng dẫn của lực lượng Cảnh sát giao "
        "thông.",
        "Avoid the area, take another route and follow the traffic police's directions.",
    ),
    "lighting": (
        "Đi lại cẩn thận tại khu vực mất chiếu sáng, nhất là vào ban đêm.",
        "Take care in the unlit area, especially at night.",
    ),
}
_ALL_CLEAR: Final = (
    "Cảnh báo đã kết thúc. Tiếp tục theo dõi thông tin của chính quyền địa phương.",
    "The warning is over. Keep following the local authorities' information.",
)


def is_public_domain(domain: str | None) -> bool:
    return domain in CATEGORIES


def classify(w: AlertFacts, msg_type: MsgType) -> Classification:
    """The CAP codes for a warning (tables above; docs/cap.md repeats them)."""
    if w.domain not in CATEGORIES:
        raise CapError(
            "domain", f"{w.domain!r} alerts are not public warnings (one of {sorted(CATEGORIES)})"
        )
    categories = CATEGORIES[w.domain]
    event_vi, event_en = _EVENTS[w.domain]
    level = w.alarm_level if w.domain == "flood" else 0
    if level:
        severity, urgency, certainty, responses = FLOOD_LEVELS[level]
        name = ALARM_NAMES[level]
        event_vi = f"Mực nước vượt báo động {name.removeprefix('BĐ ')}"
        event_en = f"Water level above flood alarm level {name.removeprefix('BĐ ')}"
        instruction = _INSTRUCTIONS.get(f"flood-{level}", _INSTRUCTIONS["flood"])
    else:
        severity, urgency = BY_ALERT_SEVERITY.get(w.severity, ("Unknown", "Unknown"))
        # a flood alert with no BĐ level reached (water rising fast) forecasts a flood: Likely
        certainty = "Likely" if w.domain == "flood" else "Observed"
        responses = RESPONSE_TYPES[w.domain]
        instruction = _INSTRUCTIONS[w.domain]
    risk = risk_level(w.risk_level)
    if risk is not None:
        # the official risk level decides severity when the rule gives one: 100-200 mm of rain
        # in 24 h is risk level 1 ("low"), Minor — not Severe for being a "critical" alert
        # (ioc/site_data/risk_levels.yaml says why each level maps where it does)
        severity = risk.cap_severity
    if w.advice_vi or w.advice_en:
        instruction = (
            f"{instruction[0]} {w.advice_vi}." if w.advice_vi else instruction[0],
            f"{instruction[1]} {w.advice_en}." if w.advice_en else instruction[1],
        )
    valid_for = VALID_FOR[w.domain]
    if msg_type == "Cancel":
        # The hazard is over: CAP's all-clear (responseType AllClear, urgency Past).
        severity, urgency, certainty, responses = "Minor", "Past", "Observed", ("AllClear",)
        instruction = _ALL_CLEAR
        valid_for = CANCEL_VALID_FOR
    return Classification(
        categories, event_vi, event_en, responses, urgency, severity, certainty,
        instruction[0], instruction[1], valid_for,
    )  # fmt: skip


# --------------------------------------------------------------------------------- builder


@dataclass(frozen=True, slots=True)
class CapMessage:
    identifier: str
    msg_type: MsgType
    sent: datetime
    xml: str


def _check_token(field: str, value: str) -> str:
    if not value or _FORBIDDEN.search(value):
        raise CapError(field, f"{value!r} must be non-empty, without spaces, commas, '<' or '&'")
    return value


def _num(v: float, digits: int = 5) -> str:
    return f"{v:.{digits}f}".rstrip("0").rstrip(".")


def build_message(
    w: AlertFacts,
    *,
    msg_type: MsgType,
    identifier: str,
    sent: datetime,
    area: Area,
    sender: CapSender,
    references: Sequence[Reference] = (),
    instruction_vi: str | None = None,
    instruction_en: str | None = None,
    web: str | None = None,
) -> CapMessage:
    """One CAP 1.2 ``<alert>`` with a ``vi-VN`` and an ``en-US`` ``<info>`` for the same area,
    signed by ``sender`` (the site file's ``cap_sender``).

    ``instruction_vi`` (the operator's words) replaces the default Vietnamese instruction;
    ``references`` must be non-empty for Update and Cancel and empty for Alert; ``web`` (the
    message's own page) defaults to the sender's web page.
    """
    if msg_type not in MSG_TYPES:
        raise CapError("msg_type", f"{msg_type!r} is not one of {list(MSG_TYPES)}")
    if msg_type == "Alert" and references:
        raise CapError("references", "an Alert starts a chain and references nothing")
    if msg_type != "Alert" and not references:
        raise CapError("references", f"an {msg_type} must reference the messages it replaces")
    _check_token("identifier", identifier)
    _check_token("sender", sender.address)
    web = web or sender.web
    c = classify(w, msg_type)
    sent = sent.astimezone(SITE_ZONE).replace(microsecond=0)

    root = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(root, "identifier", identifier)
    _sub(root, "sender", sender.address)
    _sub(root, "sent", cap_time(sent))
    _sub(root, "status", "Actual")
    _sub(root, "msgType", msg_type)
    _sub(root, "scope", "Public")
    if references:
        _sub(root, "references", " ".join(r.triple() for r in references))
    if w.incident_id is not None:
        # CAP <incidents> groups messages about one incident across alerts (Update chains are
        # per alert; an incident can gather several alerts).
        _sub(root, "incidents", f"{IDENTIFIER_PREFIX}-incident-{w.incident_id}")

    prefix_vi, prefix_en = ("HỦY CẢNH BÁO: ", "CANCELLED: ") if msg_type == "Cancel" else ("", "")
    for lang, event, headline, description, instruction, sender_name in (
        (
            "vi-VN", c.event_vi, prefix_vi + w.summary_vi, w.description_vi or w.summary_vi,
            instruction_vi or c.instruction_vi, sender.name_vi,
        ),
        (
            "en-US", c.event_en, prefix_en + w.summary_en, w.description_en or w.summary_en,
            instruction_en or c.instruction_en, sender.name_en,
        ),
    ):  # fmt: skip
        info = _sub(root, "info")
        _sub(info, "language", lang)
        for cat in c.categories:
            _sub(info, "category", cat)
        _sub(info, "event", event)
        for rt in c.response_types:
            _sub(info, "responseType", rt)
        _sub(info, "urgency", c.urgency)
        _sub(info, "severity", c.severity)
        _sub(info, "certainty", c.certainty)
        if w.onset is not None:
            _sub(info, "onset", cap_time(w.onset))
        _sub(info, "expires", cap_time(sent + c.valid_for))
        _sub(info, "senderName", sender_name)
        _sub(info, "headline", headline)
        _sub(info, "description", description)
        _sub(info, "instruction", instruction)
        if web:
            _sub(info, "web", web)
        if sender.contact:
            _sub(info, "contact", sender.contact)
        for name, value in _parameters(w):
            p = _sub(info, "parameter")
            _sub(p, "valueName", name)
            _sub(p, "value", value)
        a = _sub(info, "area")
        _sub(a, "areaDesc", area.desc_vi if lang == "vi-VN" else area.desc_en)
        if area.polygon is not None:
            _sub(a, "polygon", " ".join(f"{_num(lat)},{_num(lon)}" for lat, lon in area.polygon))
        if area.circle is not None:
            lat, lon, radius = area.circle
            _sub(a, "circle", f"{_num(lat)},{_num(lon)} {_num(radius, 3)}")

    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode", default_namespace=CAP_NS)
    return CapMessage(identifier, msg_type, sent, '<?xml version="1.0" encoding="UTF-8"?>\n' + body)


def sender_of(xml: str) -> str:
    """The ``<sender>`` of a stored message (an Update cites each earlier message with the sender
    it was signed with, which may predate a change of the site's ``cap_sender``)."""
    sender = ET.fromstring(xml.encode("utf-8")).findtext(f"{{{CAP_NS}}}sender")
    if not sender:
        raise CapError("references", "a stored message has no <sender>")
    return sender


def _parameters(w: AlertFacts) -> list[tuple[str, str]]:
    """``<parameter>`` pairs: the measurement behind the warning, and the IOC's alert id."""
    out: list[tuple[str, str]] = []
    if w.water_level_m is not None:
        out.append(("waterLevel_m", f"{w.water_level_m:.2f}"))
        level = w.alarm_level
        if level:
            out.append(("floodAlarmLevel", ALARM_NAMES[level]))
        if w.alarm_levels is not None:
            for n, t in zip((1, 2, 3), w.alarm_levels, strict=True):
                out.append((f"floodAlarmLevel{n}_m", f"{t:.2f}"))
        if w.station:
            out.append(("hydroStation", w.station))
    elif w.value is not None:
        out.append(("observedValue", _num(w.value, 4)))
    if w.risk_level is not None:
        out.append(("disasterRiskLevel", str(w.risk_level)))  # QĐ 18/2021/QĐ-TTg, 1-5
    out.append(("iocRule", w.rule))
    out.append(("iocAlertId", str(w.alert_id)))
    return out


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        el.text = text
    return el
