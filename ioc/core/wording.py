"""How server-built text reads to people: numbers, times and place names, per language.

One place for what the wall does with ``Intl.NumberFormat('vi-VN')`` in the browser: in Vietnamese
the decimal separator is a comma and thousands are grouped with a dot (``0,85 m``, ``1.250 kWh``);
times are shown in Asia/Ho_Chi_Minh as ``18:05 27/10/2026`` (hour first, day before month). Rule
annotations, incident titles and notes, CAP text and the simulators' report texts use these
functions instead of formatting numbers and dates themselves. Pure: no I/O, no settings.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

DISPLAY_ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
LANGUAGES = ("vi", "en")

# Administrative-unit words that open an official name ("Phường Vị Tân", "Xã Hỏa Lựu") and are
# written in lower case inside a sentence ("tại phường Vị Tân, thành phố Cần Thơ").
_UNIT_WORDS = ("Phường", "Xã", "Thị trấn", "Thành phố", "Tỉnh", "Quận", "Huyện", "Thị xã")


def number(value: float, decimals: int = 0, lang: str = "vi") -> str:
    """``value`` with ``decimals`` places: ``1.234,5`` in Vietnamese, ``1,234.5`` in English."""
    text = f"{value:,.{decimals}f}"
    return vi_separators(text) if lang == "vi" else text


_VI_SEPARATORS = str.maketrans({",": ".", ".": ","})


def vi_separators(formatted: str) -> str:
    """A number Python formatted (``1,234.5``) with Vietnamese separators (``1.234,5``)."""
    return formatted.translate(_VI_SEPARATORS)


def percent(ratio: float, lang: str = "vi") -> str:
    """A share as a whole percentage with the space both languages' style guides use: ``85 %``."""
    return f"{number(ratio * 100, 0, lang)} %"


def localise_numbers(text: str, lang: str) -> str:
    """Decimal points of numbers already written into ``text`` made Vietnamese (``0.85`` →
    ``0,85``). For text formatted elsewhere with Python's point (a rule's ``{value:.2f}``);
    leaves ids, versions and times (``01-002``, ``18:05``) alone: only digit.digit is touched."""
    if lang != "vi":
        return text
    return _DECIMAL.sub(r"\1,\2", text)


_DECIMAL = re.compile(r"(?<![\w.])(\d+)\.(\d+)(?![\w.])")


def when(t: datetime, lang: str = "vi", *, seconds: bool = False) -> str:
    """A moment in local time: ``18:05 27/10/2026`` (vi) or ``27/10/2026 18:05`` (en)."""
    local = t.astimezone(DISPLAY_ZONE)
    clock = local.strftime("%H:%M:%S" if seconds else "%H:%M")
    day = local.strftime("%d/%m/%Y")
    return f"{clock} {day}" if lang == "vi" else f"{day} {clock}"


def day(t: datetime, lang: str = "vi") -> str:
    """A local date: ``27/10/2026`` in both languages (day before month, as operators write)."""
    return t.astimezone(DISPLAY_ZONE).strftime("%d/%m/%Y")


def in_sentence(name: str) -> str:
    """An official unit name as written inside a Vietnamese sentence: ``Phường Vị Tân`` →
    ``phường Vị Tân``; other names unchanged."""
    for word in _UNIT_WORDS:
        if name.startswith(word + " "):
            return word.lower() + name[len(word) :]
    return name
