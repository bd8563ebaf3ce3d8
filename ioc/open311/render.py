"""Open311 bodies in both formats: JSON, and XML as the spec's examples show it.

The spec defines XML first and JSON as its Spark-convention mapping, so one structure serves both:
a list becomes a root element holding one element per item (``<services><service>…``), a list
inside an item becomes a wrapper holding singular elements (``<attributes><attribute>…``), a
null becomes an empty element (``<account_id/>``), booleans are ``true``/``false``. XML has no
namespace, and starts with the declaration naming UTF-8, as the spec asks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree import ElementTree as ET

import orjson
from starlette.responses import Response

from ioc.open311.errors import Open311Error

FORMATS = {
    "json": "application/json; charset=utf-8",
    "xml": "text/xml; charset=utf-8",
}
# Element name of the items of a list-valued field (the spec's plural → singular pairs).
_ITEM_OF = {
    "attributes": "attribute",
    "values": "value",
    "endpoints": "endpoint",
    "formats": "format",
    "errors": "error",
    "service_requests": "request",
    "services": "service",
}


def parse_format(fmt: str) -> str:
    """``json`` or ``xml`` (the path's extension), else 404."""
    if fmt not in FORMATS:
        raise Open311Error(404, f"format {fmt[:20]!r} is not served: use .json or .xml")
    return fmt


def respond(
    fmt: str,
    body: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    root: str,
    item: str = "",
    status: int = 200,
) -> Response:
    """``body`` as JSON, or as XML under ``root`` (a list: one ``item`` element per entry)."""
    if fmt == "json":
        return Response(orjson.dumps(body), status_code=status, media_type=FORMATS["json"])
    top = ET.Element(root)
    if isinstance(body, Mapping):
        _fill(top, body)
    else:
        for entry in body:
            _fill(ET.SubElement(top, item), entry)
    xml = b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(
        top, encoding="utf-8", xml_declaration=False
    )
    return Response(xml, status_code=status, media_type=FORMATS["xml"])


def error_response(fmt: str, status: int, description: str) -> Response:
    """The spec's error body: ``[{"code": 404, "description": "…"}]`` or
    ``<errors><error><code>404</code><description>…</description></error></errors>``."""
    return respond(
        fmt if fmt in FORMATS else "json",
        [{"code": status, "description": description}],
        root="errors",
        item="error",
        status=status,
    )


def _fill(parent: ET.Element, fields: Mapping[str, Any]) -> None:
    for name, value in fields.items():
        child = ET.SubElement(parent, name)
        if isinstance(value, Mapping):
            _fill(child, value)
        elif isinstance(value, list | tuple):
            inner = _ITEM_OF.get(name, "item")
            for entry in value:
                if isinstance(entry, Mapping):
                    _fill(ET.SubElement(child, inner), entry)
                else:
                    ET.SubElement(child, inner).text = _text(entry)
        elif value is not None:
            child.text = _text(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
