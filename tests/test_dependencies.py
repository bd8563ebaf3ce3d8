"""Dependencies: pyproject.toml declares what the code imports (and nothing it does not), the lock
files pin exactly what pyproject.toml asks for, the project carries its licence."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
RUNTIME_CODE = ("ioc", "mqttclient", "dashboards")
OWN = {"ioc", "ingest", "rules", "simulators", "mqttclient", "dashboards", "tests", "report"}
# Declared but never imported by name, each for a reason:
NOT_IMPORTED = {
    "websockets": "uvicorn's websocket protocol for /ws (and test clients)",
    "ruff": "the linter, run by scripts/test",
    "mypy": "the type checker, run by scripts/test",
    "types-pyyaml": "type stubs for mypy",
    "pytest-asyncio": "a pytest plugin",
    "pytest-timeout": "a pytest plugin",
}


def _requirements(*extras: str) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return reqs


def _lock(name: str) -> dict[str, list[Version]]:
    """Package → pinned versions (two when the lock pins per Python version, with markers)."""
    pins: dict[str, list[Version]] = {}
    text = (ROOT / "requirements" / name).read_text(encoding="utf-8")
    for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", text, re.MULTILINE):
        pins.setdefault(canonicalize_name(m.group(1)), []).append(Version(m.group(2)))
    return pins


def _direct(name: str) -> set[str]:
    """What the lock says pyproject.toml asked for ("# via hau-giang-ioc (pyproject.toml)")."""
    direct = set()
    text = (ROOT / "requirements" / name).read_text(encoding="utf-8")
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9_.\-]+)==", block)
        if head and "hau-giang-ioc (pyproject.toml)" in block:
            direct.add(canonicalize_name(head.group(1)))
    return direct


def test_each_lock_pins_exactly_the_declared_requirements_within_their_ranges() -> None:
    for lock, extras in (("runtime.lock", ()), ("test.lock", ("test",))):
        reqs = _requirements(*extras)
        pins = _lock(lock)
        declared = {canonicalize_name(r.name) for r in reqs}
        # a requirement added to or dropped from pyproject.toml without running scripts/lock
        assert _direct(lock) == declared, f"{lock} is stale: run scripts/lock"
        for req in reqs:
            for version in pins[canonicalize_name(req.name)]:
                assert req.specifier.contains(version, prereleases=True), (lock, req, version)
            for extra in req.extras:  # psycopg[binary] → psycopg-binary pinned too
                assert canonicalize_name(f"{req.name}-{extra}") in pins, (lock, req)
    runtime, test = _lock("runtime.lock"), _lock("test.lock")
    # the image and the tests run the same versions of what the service uses
    assert {k: v for k, v in test.items() if k in runtime} == runtime
    assert "uv" in _lock("tools.lock")


_BY_NAME = frozenset({"importorskip", "find_spec", "import_module"})


def _imports(paths: list[Path]) -> set[str]:
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif (  # pytest.importorskip("x"), importlib.util.find_spec("x"), import_module("x")
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) in _BY_NAME
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value.split(".")[0])
    return found - set(sys.stdlib_module_names) - OWN - {"__future__"}


def _distributions(modules: set[str]) -> dict[str, set[str]]:
    """Top-level module → the installed distributions that provide it."""
    provided = metadata.packages_distributions()
    return {m: {canonicalize_name(d) for d in provided.get(m, [])} for m in modules}


def test_every_imported_package_is_declared_and_every_declared_one_used() -> None:
    runtime_files = [p for d in RUNTIME_CODE for p in (ROOT / d).rglob("*.py")]
    test_files = list((ROOT / "tests").rglob("*.py"))
    runtime_decl = {canonicalize_name(r.name) for r in _requirements()}
    test_decl = runtime_decl | {canonicalize_name(r.name) for r in _requirements("test")}
    runtime_imports = _imports(runtime_files)
    for module, dists in _distributions(runtime_imports).items():
        assert dists & runtime_decl, f"the service imports {module} ({dists}): not declared"
    test_imports = _imports(test_files)
    for module, dists in _distributions(test_imports).items():
        assert dists & test_decl, f"the tests import {module} ({dists}): not declared"
    used = set()
    for dists in _distributions(runtime_imports | test_imports).values():
        used |= dists
    unused = test_decl - used - {canonicalize_name(n) for n in NOT_IMPORTED}
    assert unused == set(), f"declared, never imported: {unused}"


def test_the_project_is_apache_licensed_with_the_licence_text() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
