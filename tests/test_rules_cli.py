"""``ioc rules check`` and ``ioc rules backtest`` as a user runs them."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from ioc.app.cli import main
from ioc.storage import Flavour
from ioc.storage import devices as device_store
from ioc.storage.maintenance import ensure_partitions_ahead
from tests.conftest import FLOOD


def test_check_reports_ok_or_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rules", "check", "ioc/rules/packs"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: x\n    type: threshold\n    select: {kind: flood}\n")
    assert main(["rules", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: rule x: needs 'labels'" in err and "problem(s)" in err
    # the water keys: a risk level without its source, a forecast rule without a horizon
    water = tmp_path / "water.yaml"
    water.write_text(
        "rules:\n  - id: f\n    type: forecast_peak\n"
        "    select: {kind: flood, metric: water_level_m}\n"
        "    when: {op: '>=', threshold: device.bd3}\n"
        "    risk: {level: 2}\n"
        "    labels: {severity: warning}\n"
        "    annotations: {summary_vi: a, summary_en: a}\n"
    )
    assert main(["rules", "check", str(water)]) == 1
    err = capsys.readouterr().err
    assert f"{water}:2: rule f: a forecast_peak rule needs a 'horizon'" in err
    assert f"{water}:6: rule f: risk needs 'source'" in err


async def test_backtest_command_counts_alerts_per_day(
    db: psycopg.AsyncConnection,
    database_url: str,
    flavour: Flavour,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await device_store.insert_device(db, FLOOD)
    if flavour is Flavour.PLAIN:  # a hypertable makes its chunks itself
        await ensure_partitions_ahead(db, 7 * 86400)
    start = (int(time.time()) // 3600 - 30) * 3600
    # 30 hours a minute apart: above 0.75 m for 20 minutes at hour 5 and at hour 20
    await db.execute(
        """INSERT INTO readings (time, device_id, metric, value)
           SELECT to_timestamp(%s + 60 * i), %s, 'water_level_m',
                  CASE WHEN i %% 900 BETWEEN 300 AND 319 THEN 0.9 ELSE 0.4 END
           FROM generate_series(0, 1799) AS i""",
        (start, FLOOD.id),
    )
    rule = tmp_path / "bd3.yaml"
    rule.write_text(
        """rules:
  - id: bd3
    type: threshold
    select: {kind: flood, metric: water_level_m}
    when: {op: ">=", threshold: device.bd3}
    for: 10m
    labels: {severity: critical}
    annotations: {summary_vi: "BĐ III", summary_en: "above BĐ III"}
"""
    )
    monkeypatch.setenv("IOC_DATABASE_URL", database_url)
    frm = datetime.fromtimestamp(start, UTC).isoformat()
    to = datetime.fromtimestamp(start + 31 * 3600, UTC).isoformat()
    args = ["rules", "backtest", str(rule), "--from", frm, "--to", to, "--alerts"]
    assert await asyncio.to_thread(main, args) == 0
    out = capsys.readouterr().out
    assert "1,800 readings" in out and "2 alerts fired" in out
    assert "  bd3: 2" in out and out.count("above BĐ III") == 2


def test_rules_inside_workers_of_a_shared_subscription_are_refused() -> None:
    from pydantic import ValidationError

    from ioc.core.settings import Settings

    with pytest.raises(ValidationError, match="IOC_RULES_IN_INGEST=false"):
        Settings(mqtt_shared_group="ioc")
    assert Settings(mqtt_shared_group="ioc", rules_in_ingest=False).mqtt_shared_group == "ioc"
