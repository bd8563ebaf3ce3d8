"""Backup and restore (ioc.storage.backup): a pg_dump/pg_restore round trip of a database the
running service filled — readings in their partitions, rollups, devices, alerts' tables,
incidents, tokens, the feed — restored into a new database that then serves the same data."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess

import orjson
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import ioc
from ioc.core.settings import Settings
from ioc.core.topics import device_topic
from ioc.storage import Flavour, backup, tokens
from ioc.storage import devices as device_store
from ioc.storage import migrations as schema
from tests.conftest import (
    FLOOD,
    TOKEN,
    MqttPublisher,
    eventually,
    fresh_database,
    running_service,
)

REPO = Path(__file__).resolve().parents[1]

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    name = f"ioc_restore_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(server_url, dbname=name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _row_counts(conninfo: str) -> dict[str, int]:
    with psycopg.connect(conninfo) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables"
            # other sessions' temporary tables (the ingest's staging table of a connection
            # still closing) are not part of the database's contents; TimescaleDB's catalog and
            # materialisations change as its jobs run (the rollups are compared by their views)
            " WHERE schemaname NOT LIKE 'pg\\_temp\\_%'"
            " AND schemaname NOT LIKE '\\_timescaledb%' AND schemaname NOT LIKE 'timescaledb%'"
            " ORDER BY 1"
        ).fetchall()]  # fmt: skip
        counts = {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
            for t in tables
        }
        for view in ("readings_1m", "readings_1h"):  # tables (plain) or continuous aggregates
            row = conn.execute(f"SELECT count(*), sum(count) FROM {view}").fetchone()
            assert row is not None
            counts[f"{view} rows"], counts[f"{view} readings"] = int(row[0]), int(row[1] or 0)
        return counts


async def test_dump_and_restore_round_trip(
    settings: Settings, publisher: MqttPublisher, empty_database: str, tmp_path: Path
) -> None:
    t0 = (int(time.time()) // 3600 - 1) * 3600
    topic = device_topic(
        settings.mqtt_topic_prefix, "vi-thanh", "flood", "vt-flood-01", "telemetry"
    )
    async with running_service(settings) as (runtime, http):
        publisher.publish_many([
            (topic, orjson.dumps({"ts": (t0 + 60 * i) * 1000, "seq": i,
                                  "metrics": {"water_level_m": 0.3 + i / 100}}))
            for i in range(30)
        ])  # fmt: skip

        async def stored() -> bool:
            assert runtime.ingest is not None
            return runtime.ingest.committed >= 30

        await eventually(stored)
        r = await http.post(
            "/api/v1/incidents",
            headers=AUTH,
            json={
                "category": "chieu-sang",
                "title": "Đèn tắt",
                "city": "vi-thanh",
                "ward": "phuong-5",
            },
        )
        assert r.status_code == 201, r.text
        async with runtime.pool.connection() as conn:
            await tokens.create(conn, name="wall", role="viewer")

    before = _row_counts(settings.database_url or "")
    assert before["public.readings"] == 30  # the parent table counts every partition
    archive = backup.dump(settings.database_url or "", tmp_path / "ioc.dump")
    assert archive.stat().st_size > 0
    backup.restore(empty_database, archive)

    assert _row_counts(empty_database) == before
    assert backup.flavour_of(empty_database) == backup.flavour_of(settings.database_url or "")
    # the restored database is current: migrating it again applies nothing
    with psycopg.connect(empty_database) as conn:
        versions = conn.execute("SELECT count(*) FROM ioc_schema_migrations").fetchone()
    schema.migrate(empty_database)
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT count(*) FROM ioc_schema_migrations").fetchone() == versions
    # ... and the service runs on it with the same data
    restored = settings.model_copy(update={"database_url": empty_database})
    async with running_service(restored) as (_, http):
        q = {"metric": "water_level_m", "from": datetime.fromtimestamp(t0, UTC).isoformat(),
             "to": datetime.fromtimestamp(t0 + 3600, UTC).isoformat()}  # fmt: skip
        got = (await http.get("/api/v1/devices/vt-flood-01/readings", params=q,
                              headers=AUTH)).json()  # fmt: skip
        assert len(got["points"]) == 30
        incidents = (await http.get("/api/v1/incidents", headers=AUTH)).json()
        # (the restored service may add its own: the device has been silent since the backup)
        assert "Đèn tắt" in [i["title"] for i in incidents]


def test_a_missing_archive_is_named(empty_database: str, tmp_path: Path) -> None:
    with pytest.raises(backup.BackupError, match="no backup file"):
        backup.restore(empty_database, tmp_path / "nope.dump")


def ioc_cli(*args: str, database_url: str | None = None, cwd: Path = REPO) -> CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env["PYTHONPATH"] = str(REPO)
    if database_url is not None:
        env["IOC_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "ioc", *args],
        capture_output=True, text=True, env=env, cwd=cwd, check=False,
    )  # fmt: skip


def test_version_needs_no_configuration() -> None:
    done = ioc_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ioc {ioc.__version__}"


async def test_cli_backup_and_restore(
    database_url: str,
    flavour: Flavour,
    empty_database: str,
    db: psycopg.AsyncConnection,
    tmp_path: Path,
) -> None:
    await device_store.insert_device(db, FLOOD)
    _, secret = await tokens.create(db, name="wall", role="viewer")
    archive = tmp_path / "ioc.dump"

    done = ioc_cli("db", "backup", str(archive), database_url=database_url)
    assert done.returncode == 0, done.stderr
    assert archive.stat().st_size > 0 and str(archive) in done.stdout
    again = ioc_cli("db", "backup", str(archive), database_url=database_url)
    assert again.returncode == 1 and "never overwritten" in again.stderr

    done = ioc_cli("db", "restore", str(archive), database_url=empty_database)
    assert done.returncode == 0, done.stderr
    assert f"{flavour} flavour" in done.stdout
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT name FROM devices WHERE id = %s", (FLOOD.id,)).fetchone() == (
            FLOOD.name,
        )
        assert conn.execute("SELECT count(*) FROM api_tokens").fetchone() == (1,)
        if flavour is Flavour.TIMESCALE:
            # timescaledb_post_restore() ran: the database is out of restoring mode, and the
            # readings table is a hypertable again
            assert conn.execute("SHOW timescaledb.restoring").fetchone() == ("off",)
            assert conn.execute(
                "SELECT count(*) FROM timescaledb_information.hypertables"
                " WHERE hypertable_name = 'readings'"
            ).fetchone() == (1,)
    async with await psycopg.AsyncConnection.connect(empty_database) as conn:
        assert (await tokens.lookup(conn, secret)) is not None

    # over a database that holds the IOC already: refused, nothing touched
    over = ioc_cli("db", "restore", str(archive), database_url=database_url)
    assert over.returncode == 1 and "already holds IOC tables" in over.stderr
    missing = ioc_cli("db", "restore", str(tmp_path / "nope.dump"), database_url=empty_database)
    assert missing.returncode == 1 and "no backup file" in missing.stderr
    junk = tmp_path / "junk.dump"
    junk.write_text("not an archive")
    bad = ioc_cli("db", "restore", str(junk), database_url=empty_database)
    assert bad.returncode == 1 and "is not a pg_dump archive" in bad.stderr
    nowhere = make_conninfo(database_url, dbname="ioc_no_such_database")
    lost = ioc_cli("db", "backup", str(tmp_path / "x.dump"), database_url=nowhere)
    assert lost.returncode == 1 and "cannot connect to the database" in lost.stderr


def test_a_timescale_archive_needs_timescaledb_on_the_target(
    database_url: str, flavour: Flavour, tmp_path: Path
) -> None:
    target_server = os.environ.get("IOC_TEST_UNPRELOADED_DATABASE_URL")
    if flavour is not Flavour.TIMESCALE or not target_server:
        pytest.skip(
            "needs the suite on TimescaleDB and IOC_TEST_UNPRELOADED_DATABASE_URL (a server "
            "where TimescaleDB cannot be used; README, Tests)"
        )
    archive = backup.dump(database_url, tmp_path / "ioc.dump")
    with fresh_database(target_server) as target, pytest.raises(backup.BackupError) as refused:
        backup.restore(target, archive)
    assert "shared_preload_libraries" in str(refused.value)
