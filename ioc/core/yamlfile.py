"""Reading the project's YAML data files, one way.

Every file the IOC reads — the site, routing, calendar, tides, risk levels, KPI targets,
notification routes, planned outages, rule packs, scenarios, report volumes — goes through
:func:`read` (a file) or :func:`parse` (text). Both use PyYAML's safe loader (libyaml's when
built with it) and turn every way of failing into one error type, :class:`DataFileError`, that
names the file, where in it (an entry path such as ``devices[12].kind``, or ``line 4, column 7``
for a syntax error) and what is wrong. Each file's own checker raises the same type (its
subclass: ``SiteError``, ``RoutingError``, ...) with the entry path, so an operator reads every
refusal the same way: ``<file>: <where>: <what>``.

:func:`parse_with_lines` keeps the line of each mapping and key (:class:`LineMap`) for checkers
that report lines (the rule language: ``ioc rules check`` prints ``file:line: problem``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, TypeVar

import yaml

# yaml.safe_load semantics; the libyaml-backed loader when PyYAML was built with it (7x faster).
_SAFE_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DataFileError(ValueError):
    """A data file that cannot be used: ``path``, ``where`` in it (may be empty) and ``message``."""

    def __init__(self, path: Path | str, where: str, message: str) -> None:
        self.path = Path(path)
        self.where = where
        self.message = message
        super().__init__(f"{self.path}: {where}: {message}" if where else f"{self.path}: {message}")


E = TypeVar("E", bound=DataFileError)


def parse(text: str, name: Path | str, error: type[E] = DataFileError) -> Any:  # type: ignore[assignment]
    """The YAML document in ``text`` (``name`` says where it came from, for the error)."""
    try:
        return yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise error(name, _where(exc), f"not valid YAML: {_problem(exc)}") from None


def read(path: Path | str, error: type[E] = DataFileError) -> Any:  # type: ignore[assignment]
    """The YAML document in the file at ``path``; ``error`` (a :class:`DataFileError`) names
    the file when it is missing, unreadable, not UTF-8 or not YAML."""
    return parse(read_text(path, error), path, error)


def read_text(path: Path | str, error: type[E] = DataFileError) -> str:  # type: ignore[assignment]
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(path, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise error(path, "", f"cannot read: {exc.strerror or exc}") from None


class LineMap(dict[str, Any]):
    """A mapping that remembers its own line and each key's (1-based)."""

    def __init__(self) -> None:
        super().__init__()
        self.line = 0
        self.key_lines: dict[str, int] = {}

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineMap:
    m = LineMap()
    m.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        m[str(key)] = loader.construct_object(value_node, deep=True)
        m.key_lines[str(key)] = key_node.start_mark.line + 1
    return m


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_with_lines(text: str, name: Path | str, error: type[E] = DataFileError) -> Any:  # type: ignore[assignment]
    """Like :func:`parse`, with every mapping a :class:`LineMap`."""
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        raise error(name, _where(exc), f"not valid YAML: {_problem(exc)}") from None


def syntax_line(exc: DataFileError) -> int:
    """The line a syntax error names (1 when it names none)."""
    where = exc.where
    if where.startswith("line "):
        return int(where.split()[1].rstrip(","))
    return 1


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _problem(exc: yaml.YAMLError) -> str:
    return str(getattr(exc, "problem", None) or exc)
