"""A posted service request (and a feedback), checked field by field before anything is stored.

Bodies come form-encoded (the spec) or as a JSON object (accepted too); either way they become
one flat ``{field: text}`` mapping first, so both are checked by the same code. As the spec says
of optional arguments, an empty field is the same as an absent one.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ioc.open311.errors import Open311Error

MAX_BODY_BYTES = 64 * 1024  # a description of 4,000 characters is at most 16 KB of UTF-8
MAX_FIELD = 200  # names, e-mail, phone, device and account ids, address_id
MAX_ADDRESS = 500
MAX_MEDIA_URL = 2048
MAX_COMMENT = 1000
# Who the citizen is: kept on the report (personal data, never listed by GET requests).
REPORTER_FIELDS = ("email", "first_name", "last_name", "phone", "device_id", "account_id")


def fields_of(body: bytes, content_type: str, query: Mapping[str, str]) -> dict[str, str]:
    """Query parameters overlaid with the body's fields (form-encoded or JSON)."""
    if len(body) > MAX_BODY_BYTES:
        raise Open311Error(400, f"request body: larger than {MAX_BODY_BYTES} bytes")
    fields = {k: v for k, v in query.items() if v != ""}
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json":
        try:
            doc = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError as exc:
            raise Open311Error(400, f"request body: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise Open311Error(400, "request body: a JSON object of fields is expected")
        for name, value in doc.items():
            text = _json_field(name, value)
            if text is not None:
                fields[name] = text
    elif media in ("application/x-www-form-urlencoded", ""):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Open311Error(400, "request body: not UTF-8") from None
        for name, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
            if value.strip() != "":
                fields[name] = value
    else:
        raise Open311Error(
            400,
            f"request body: content type {media!r} is not accepted:"
            " use application/x-www-form-urlencoded or application/json",
        )
    return fields


def _json_field(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Open311Error(400, f"{name}: must be a string or a number")
    text = value if isinstance(value, str) else repr(value)
    return text if text.strip() != "" else None


@dataclass(frozen=True, slots=True)
class Submission:
    service_code: str
    lat: float | None
    long: float | None
    address_string: str | None
    address_id: str | None
    description: str
    media_url: str | None
    reporter: dict[str, str]

    @property
    def device_id(self) -> str | None:
        return self.reporter.get("device_id")

    @property
    def account_id(self) -> str | None:
        return self.reporter.get("account_id")


def parse_submission(fields: Mapping[str, str], *, max_description: int) -> Submission:
    """Check a POST's fields (not the api_key, not whether the service exists: the caller does
    that, with the routing data). Raises :class:`Open311Error` 400 naming the field."""
    code = fields.get("service_code", "").strip()
    if not code:
        raise Open311Error(400, "service_code: required")
    lat = _coordinate(fields, "lat", 90.0)
    long = _coordinate(fields, "long", 180.0)
    if (lat is None) != (long is None):
        missing = "long" if long is None else "lat"
        raise Open311Error(
            400, f"{missing}: required with {'lat' if missing == 'long' else 'long'}"
        )
    address = _optional(fields, "address_string", MAX_ADDRESS)
    address_id = _optional(fields, "address_id", MAX_FIELD)
    if lat is None and address is None and address_id is None:
        raise Open311Error(
            400, "lat/long: a location is required: lat and long, address_string or address_id"
        )
    description = fields.get("description", "").strip()
    if len(description) > max_description:
        raise Open311Error(
            400,
            f"description: {len(description)} characters, at most {max_description} accepted",
        )
    media_url = _optional(fields, "media_url", MAX_MEDIA_URL)
    if media_url is not None:
        parsed = urllib.parse.urlsplit(media_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise Open311Error(400, f"media_url: {media_url[:80]!r} is not an http(s) URL")
    reporter = {}
    for name in REPORTER_FIELDS:
        value = _optional(fields, name, MAX_FIELD)
        if value is not None:
            reporter[name] = value
    return Submission(code, lat, long, address, address_id, description, media_url, reporter)


def _optional(fields: Mapping[str, str], name: str, limit: int) -> str | None:
    value = fields.get(name, "").strip()
    if not value:
        return None
    if len(value) > limit:
        raise Open311Error(400, f"{name}: {len(value)} characters, at most {limit} accepted")
    return value


def _coordinate(fields: Mapping[str, str], name: str, bound: float) -> float | None:
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Open311Error(400, f"{name}: {raw[:40]!r} is not a number") from None
    if not math.isfinite(value) or not -bound <= value <= bound:
        raise Open311Error(400, f"{name}: {raw[:40]!r} is outside -{bound:g}..{bound:g}")
    return value


@dataclass(frozen=True, slots=True)
class Feedback:
    rating: int
    comment: str | None


def parse_feedback(fields: Mapping[str, str]) -> Feedback:
    raw = fields.get("rating", "").strip()
    if not raw:
        raise Open311Error(400, "rating: required (1 to 5)")
    try:
        rating = int(raw)
    except ValueError:
        raise Open311Error(400, f"rating: {raw[:20]!r} is not a whole number 1 to 5") from None
    if not 1 <= rating <= 5:
        raise Open311Error(400, f"rating: {rating} is not 1 to 5")
    return Feedback(rating, _optional(fields, "comment", MAX_COMMENT))
