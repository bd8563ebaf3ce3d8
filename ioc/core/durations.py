"""One duration grammar for every file and parameter that takes a length of time: a rule's
``for:``/``window:``, a scenario's ``duration:``/``ramp:``/``+offset``, a reading query's
``bucket``.

    duration  := component+          (in the order d, h, m, s; each unit at most once)
    component := number unit         number := digits ["." digits]    unit := d | h | m | s

``90s``, ``10m``, ``1h30m``, ``2d``, ``1.5h``. A bare number (an int or float in YAML or JSON)
is seconds. Whitespace around is ignored, none inside. Zero is a duration; a caller that needs a
positive one says so. Units are Prometheus's (without ``ms``, ``w``, ``y``: nothing here needs
them).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any, Final

EXAMPLES: Final = "90s, 10m, 1h30m, 2d"
_NUMBER = r"(\d+(?:\.\d+)?)"
_GRAMMAR: Final = re.compile(rf"^(?:{_NUMBER}d)?(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s)?$")
_UNIT_S: Final = (86_400.0, 3_600.0, 60.0, 1.0)


def is_duration(text: str) -> bool:
    """Whether ``text`` is written in the grammar (a number alone is not: it has no unit)."""
    m = _GRAMMAR.match(text.strip())
    return m is not None and any(m.groups())


def parse_seconds(value: Any) -> float:
    """A duration (text in the grammar, or a number of seconds) → seconds; ``ValueError``
    naming the value otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{value!r} must be a non-negative number of seconds")
        return float(value)
    if isinstance(value, str):
        m = _GRAMMAR.match(value.strip())
        if m is not None and any(m.groups()):
            return sum(float(g) * unit for g, unit in zip(m.groups(), _UNIT_S, strict=True) if g)
    raise ValueError(f"{value!r} is not a duration (e.g. {EXAMPLES})")


def parse(value: Any) -> timedelta:
    """:func:`parse_seconds` as a ``timedelta``."""
    return timedelta(seconds=parse_seconds(value))
