"""The Prometheus alerting rules shipped for the IOC's own health (deploy/prometheus/rules):
well-formed, on metrics the IOC exports, loaded by the compose deployment; `promtool` checks
them and runs their unit tests (tests/data/prometheus) where Debian's prometheus is installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "ioc.yml"
RULE_TESTS = ROOT / "tests" / "data" / "prometheus" / "ioc_rules_test.yml"
SEVERITIES = {"critical", "warning"}
# Metrics of Prometheus itself, not of the IOC.
PROMETHEUS_OWN = {"up"}
# scripts/bootstrap test puts promtool into .venv/bin (from Debian's prometheus package)
PROMTOOL = shutil.which(
    "promtool", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
)


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _exported() -> set[str]:
    from prometheus_client import REGISTRY

    import ioc.app.runtime
    import ioc.core.build_info  # noqa: F401 - both register their instruments

    names: set[str] = set()
    for family in REGISTRY.collect():
        names |= {family.name + s for s in ("", "_total", "_bucket", "_sum", "_count")}
    return names


def test_rules_are_well_formed_and_use_metrics_the_ioc_exports() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    exported = _exported()
    for rule in rules:
        where = rule["alert"]
        assert re.fullmatch(r"Ioc[A-Z][A-Za-z0-9]+", where)
        assert rule["labels"]["severity"] in SEVERITIES, where
        assert rule["labels"]["component"], where
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], where
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0m")), where
        ioc_metrics = set(re.findall(r"\b(ioc_[a-z0-9_]+)", rule["expr"]))
        own = {m for m in PROMETHEUS_OWN if re.search(rf"\b{m}\{{", rule["expr"])}
        assert ioc_metrics or own, (where, rule["expr"])
        for metric in ioc_metrics:
            assert metric in exported, f"{where}: {metric} is not a metric the IOC exports"


def test_the_four_health_concerns_each_have_an_alert() -> None:
    exprs = " ".join(r["expr"] for r in _rules())
    for metric in (
        "ioc_ingest_lag_seconds",  # ingest lag
        "ioc_ingest_dead_letters_total",  # dead-letter rate
        'ioc_dispatch_deliveries_total{outcome="failed"}',  # dispatch failures
        "ioc_live_feed_lag_seconds",  # feed lag
    ):
        assert metric in exprs, metric


def test_compose_loads_the_rules_into_prometheus() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text("utf-8"))
    mounts = compose["services"]["prometheus"]["volumes"]
    mount = next(v for v in mounts if v.startswith("./deploy/prometheus/rules:"))
    inside = mount.split(":")[1]
    assert prom["rule_files"] == [f"{inside}/*.yml"]
    assert RULES.parent == ROOT / mount.split(":")[0]


@pytest.mark.skipif(PROMTOOL is None, reason="no promtool (scripts/bootstrap test fetches it)")
def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    promtool = PROMTOOL
    assert promtool is not None
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr
