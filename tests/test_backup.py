"""Backup and restore (ioc.storage.backup): a pg_dump/pg_restore round trip of a database the
running service filled — readings in their partitions, rollups, devices, alerts' tables,
incidents, tokens, the feed — restored into a new database that then serves the same data."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ioc.settings import Settings
from ioc.storage import backup, tokens
from ioc.storage import migrations as schema
from ioc.topics import device_topic
from tests.conftest import TOKEN, MqttPublisher, eventually, running_service

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
            # still closing) are not part of the database's contents
            " WHERE schemaname NOT LIKE 'pg\\_temp\\_%' ORDER BY 1"
        ).fetchall()]  # fmt: skip
        return {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
            for t in tables
        }


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
        assert [i["title"] for i in incidents] == ["Đèn tắt"]


def test_a_missing_archive_is_named(empty_database: str, tmp_path: Path) -> None:
    with pytest.raises(backup.BackupError, match="no backup file"):
        backup.restore(empty_database, tmp_path / "nope.dump")
