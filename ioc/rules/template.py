"""Message templates: ``{device.name}``, ``{value:.2f}``, ``{labels.ward}`` — look-ups only.

Deliberately not ``str.format`` (which can walk attributes of arbitrary objects): a field is a
dotted path into plain dictionaries, with an optional format spec for numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from ioc.core.wording import vi_separators

_FIELD = re.compile(
    r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)(?::([0-9.,+ <>^#%a-zA-Z-]*))?\}"
)
# peak: forecast_peak rules, the predicted high water ({peak.time}, {peak.level:.2f})
_ROOTS = (
    "device", "value", "threshold", "clear", "labels", "metric", "count", "window", "group", "peak",
)  # fmt: skip
# Largest width or precision a format spec may ask for: a message is a line on a screen, and
# ``{value:99999999}`` would build a string of 100 MB on every transition.
MAX_SPEC_NUMBER = 40
_NUMBER = re.compile(r"\d+")


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
        if not _spec_ok(m.group(2)):
            raise TemplateError(f"{text!r}: format width or precision above {MAX_SPEC_NUMBER}")


def _spec_ok(spec: str | None) -> bool:
    """Every number in the spec (fill digit, width, precision) within MAX_SPEC_NUMBER."""
    return not spec or all(len(n) <= 3 and int(n) <= MAX_SPEC_NUMBER for n in _NUMBER.findall(spec))


_Part = tuple[str, tuple[str, ...] | None, str | None]  # literal, field path, format spec


@lru_cache(maxsize=4096)
def _compile(text: str) -> tuple[_Part, ...]:
    parts: list[_Part] = []
    pos = 0
    for m in _FIELD.finditer(text):
        if m.start() > pos:
            parts.append((text[pos : m.start()], None, None))
        # an oversized spec is refused at validation; should one get here all the same, the
        # value is shown plainly rather than padded to millions of characters
        spec = m.group(2) if _spec_ok(m.group(2)) else None
        parts.append((m.group(0), tuple(m.group(1).split(".")), spec))
        pos = m.end()
    if pos < len(text):
        parts.append((text[pos:], None, None))
    return tuple(parts)


def render(text: str, context: Mapping[str, Any], lang: str | None = None) -> str:
    """Fill the fields from ``context`` (nested dicts); a field not found stays visible as
    written rather than blank. Templates are parsed once and cached (rendering is on the
    engine's hot path: every transition renders its messages). With ``lang="vi"`` numbers
    formatted by a spec are written the Vietnamese way (``0,85``; ``ioc.core.wording``)."""
    out: list[str] = []
    for literal, path, spec in _compile(text):
        if path is None:
            out.append(literal)
            continue
        value: Any = context
        for part in path:
            if type(value) is dict and part in value:
                value = value[part]
            elif isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                value = literal
                spec = None
                break
        if spec and isinstance(value, int | float) and not isinstance(value, bool):
            try:
                formatted = format(value, spec)
                if spec.endswith("%"):  # "45 %": a space before the sign, as in both styles
                    formatted = formatted[:-1] + " %"
                out.append(vi_separators(formatted) if lang == "vi" else formatted)
                continue
            except ValueError:
                pass
        out.append(value if type(value) is str else str(value))
    return "".join(out)
