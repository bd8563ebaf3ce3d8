"""Versioned SQL migrations, applied at start and by ``ioc db migrate``.

Files in ``migrations/`` are named ``NNNN_name.sql`` (always applied) or
``NNNN_name.<flavour>.sql`` (applied only for that storage flavour). The flavour is chosen once,
on the first migration of a database, by trying ``CREATE EXTENSION timescaledb``, and recorded:
a database never switches flavour underneath its data.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)(?:\.(plain|timescale))?\.sql$")
# Any constant works; it only has to be the same in every process migrating this database.
_LOCK_KEY = 0x10C_D8


class Flavour(StrEnum):
    PLAIN = "plain"
    TIMESCALE = "timescale"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    flavour: Flavour | None
    path: Path


class MigrationError(RuntimeError):
    def __init__(self, migration: Migration, cause: Exception) -> None:
        super().__init__(f"migration {migration.path.name} failed: {cause}")
        self.migration = migration


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if m is None:
            raise ValueError(f"migration file {path.name!r} is not NNNN_name[.flavour].sql")
        flavour = Flavour(m.group(3)) if m.group(3) else None
        found.append(Migration(int(m.group(1)), m.group(2), flavour, path))
    return found


def migrate(conninfo: str, *, allow_timescale: bool = True) -> Flavour:
    """Bring the database to the newest schema; returns the storage flavour in use.

    Synchronous on purpose: it runs once before any async machinery starts, and from the CLI.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            flavour = _ensure_bookkeeping(conn, allow_timescale)
            applied = {row[0] for row in conn.execute("SELECT version FROM ioc_schema_migrations")}
            for mig in available_migrations():
                if mig.version in applied or (mig.flavour and mig.flavour != flavour):
                    continue
                log.info("applying migration %s", mig.path.name)
                try:
                    with conn.transaction():
                        conn.execute(mig.path.read_text(encoding="utf-8").encode())
                        conn.execute(
                            "INSERT INTO ioc_schema_migrations (version, name) VALUES (%s, %s)",
                            (mig.version, mig.name),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(mig, exc) from exc
            return flavour
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def current_flavour(conn: psycopg.Connection) -> Flavour:
    row = conn.execute("SELECT value FROM ioc_meta WHERE key = 'storage_flavour'").fetchone()
    if row is None:
        raise RuntimeError("database is not migrated: run `ioc db migrate`")
    return Flavour(row[0])


def _ensure_bookkeeping(conn: psycopg.Connection, allow_timescale: bool) -> Flavour:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS ioc_schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS ioc_meta (key text PRIMARY KEY, value text NOT NULL)")
    row = conn.execute("SELECT value FROM ioc_meta WHERE key = 'storage_flavour'").fetchone()
    if row is not None:
        return Flavour(row[0])
    flavour = Flavour.TIMESCALE if allow_timescale and _try_timescale(conn) else Flavour.PLAIN
    log.info("storage flavour: %s", flavour)
    conn.execute("INSERT INTO ioc_meta (key, value) VALUES ('storage_flavour', %s)", (flavour,))
    return flavour


def _try_timescale(conn: psycopg.Connection) -> bool:
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return True
    except psycopg.Error as exc:
        log.info("TimescaleDB not available (%s); using plain PostgreSQL", exc.diag.message_primary)
        return False
