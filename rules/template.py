"""Message templates: ``{device.name}``, ``{value:.2f}``, ``{labels.ward}`` — look-ups only.

Deliberately not ``str.format`` (which can walk attributes of arbitrary objects): a field is a
dotted path into plain dictionaries, with an optional format spec for numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_FIELD = re.compile(
    r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)(?::([0-9.,+ <>^#%a-zA-Z-]*))?\}"
)
_ROOTS = ("device", "value", "threshold", "clear", "labels", "metric", "count", "window", "group")


class TemplateError(ValueError):
    pass


def check_template(text: str) -> None:
    stripped = _FIELD.sub("", text)
    if "{" in stripped or "}" in stripped:
        raise TemplateError(f"{text!r}: braces must enclose a field like {{device.name}}")
    for m in _FIELD.finditer(text):
        root = m.group(1).split(".")[0]
        if root not in _ROOTS:
            raise TemplateError(f"{text!r}: unknown field {m.group(1)!r} (fields: {_ROOTS})")


def render(text: str, context: Mapping[str, Any]) -> str:
    def one(m: re.Match[str]) -> str:
        value: Any = context
        for part in m.group(1).split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                return m.group(0)  # unknown at run time: leave the field visible, not blank
        spec = m.group(2)
        if spec and isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return format(value, spec)
            except ValueError:
                return str(value)
        return str(value)

    return _FIELD.sub(one, text)
