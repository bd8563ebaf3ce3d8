"""Display names for the ids that labels and records carry, so people read names, never ids.

Ids (``phuong-nga-bay``, ``nb-cab-01``, ``chieu-sang``) are stable keys for topics, labels and
rows; whatever a person reads — rule annotations, incident titles, the wall — shows the name the
site and routing files give them, in the reader's language. Unknown ids come back unchanged (a
label value that is not an id of the site, e.g. a phase ``L1``, is already what people read).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ioc.core.wording import in_sentence

if TYPE_CHECKING:
    from ioc.core.site import Site


class Category(Protocol):
    """A report category as the routing file names it (``ioc.routing.table.Category``): the
    floor takes the names, not the routing file."""

    @property
    def code(self) -> str: ...
    @property
    def name_vi(self) -> str: ...
    @property
    def name_en(self) -> str: ...

# The channels a citizen's report comes by (reports.source), as people call them.
CHANNEL_NAMES = {
    "app": ("ứng dụng", "the app"),
    "hotline": ("đường dây nóng", "the hotline"),
    "zalo": ("Zalo", "Zalo"),
    "open311": ("cổng phản ánh", "the reporting portal"),
}


def channel_name(source: str, lang: str = "vi") -> str:
    names = CHANNEL_NAMES.get(source)
    return (names[1] if lang == "en" else names[0]) if names else source


# Label names whose values are device ids (a cabinet is a device of kind cabinet).
_DEVICE_LABELS = ("device_id", "cabinet", "device")


class Names:
    """Look-ups by (label, id, language) over one site (and its routing, for categories)."""

    def __init__(self, site: Site, categories: Iterable[Category] = ()) -> None:
        self.site = site
        self._categories = {c.code: (c.name_vi, c.name_en) for c in categories}
        self._junctions = junction_names(site)

    def __call__(self, label: str, value: str, lang: str = "vi") -> str:
        """The name of ``value`` as the ``label`` it is (``ward``, ``city``, ``cabinet``, …)."""
        en = lang == "en"
        if label == "ward":
            try:
                return self.site.ward(value).name
            except KeyError:
                return value
        if label == "city":
            city = self.site.cities_by_id.get(value)
            return city.name if city else value
        if label == "agency":
            try:
                agency = self.site.agency(value)
            except KeyError:
                return value
            return agency.name_en if en else agency.name_vi
        if label == "category":
            names = self._categories.get(value)
            return (names[1] if en else names[0]) if names else value
        if label == "junction":
            return self._junctions.get(value, value)
        if label in _DEVICE_LABELS:
            device = self.site.devices_by_id.get(value)
            return device.name if device else value
        return value

    def in_sentence(self, label: str, value: str, lang: str = "vi") -> str:
        """As :meth:`__call__`, written for the middle of a Vietnamese sentence: ``phường I``,
        ``chiếu sáng công cộng`` (a category is a common noun; names of places keep capitals)."""
        name = self(label, value, lang)
        if lang != "vi" or name == value:
            return name
        if label == "category":
            return name[:1].lower() + name[1:]
        return in_sentence(name)

    @property
    def junctions(self) -> dict[str, str]:
        return dict(self._junctions)


def junction_names(site: Site) -> dict[str, str]:
    """Junction id → name. A device's ``junction_name`` attribute wins; otherwise the name is
    read from the names of the junction's devices, which the site file writes as "… nút <A> –
    <B>" (cameras) or "… nút <A> – <B> – nhánh …" (detectors); the id when neither is there."""
    out: dict[str, str] = {}
    derived: dict[str, str] = {}
    for d in site.devices:
        junction = d.attributes.get("junction")
        if not isinstance(junction, str):
            continue
        given = d.attributes.get("junction_name")
        if isinstance(given, str) and given:
            out[junction] = given
            continue
        at = d.name.find("nút ")
        if at >= 0 and junction not in derived:
            derived[junction] = "Nút " + d.name[at + 4 :].split(" – nhánh", 1)[0]
    for junction, name in derived.items():
        out.setdefault(junction, name)
    for d in site.devices:
        junction = d.attributes.get("junction")
        if isinstance(junction, str):
            out.setdefault(junction, junction)
    return out
