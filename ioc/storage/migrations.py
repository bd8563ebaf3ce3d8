"""Versioned SQL migrations, applied at start and by ``ioc db migrate``.

Files in ``migrations/`` are named ``NNNN_name.sql`` (always applied) or
``NNNN_name.<flavour>.sql`` (applied only for that storage flavour). The flavour is chosen once,
on the first migration of a database, and recorded: a database never switches flavour underneath
its data.

Choosing it (``IOC_STORAGE_FLAVOUR``): ``plain`` never touches TimescaleDB; ``timescale``
requires it; ``auto`` (the default) uses TimescaleDB when the server offers it and plain
PostgreSQL when the server does not have the extension at all. A server that has the extension
but cannot use it in this database (installed but not in ``shared_preload_libraries``, or a role
not allowed to create it) is refused with what to set, rather than silently recorded as plain:
the choice is permanent, and an operator who installed TimescaleDB meant to use it. The probe's
``CREATE EXTENSION`` runs on a connection of its own, because without the preload TimescaleDB
ends the session with a FATAL error.
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


class FlavourChoice(StrEnum):
    """``IOC_STORAGE_FLAVOUR``: what the first migration of a database may record."""

    AUTO = "auto"
    PLAIN = "plain"
    TIMESCALE = "timescale"


class FlavourError(RuntimeError):
    """The storage flavour asked for (or recorded) cannot be used on this server."""


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


def migrate(conninfo: str, *, choice: FlavourChoice | str = FlavourChoice.AUTO) -> Flavour:
    """Bring the database to the newest schema; returns the storage flavour in use.

    ``choice`` (``IOC_STORAGE_FLAVOUR``) decides the flavour of a database migrated for the
    first time, and must agree with the flavour recorded in one migrated before.
    Synchronous on purpose: it runs once before any async machinery starts, and from the CLI.
    """
    choice = FlavourChoice(choice)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            flavour = _ensure_bookkeeping(conn, conninfo, choice)
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


def _ensure_bookkeeping(conn: psycopg.Connection, conninfo: str, choice: FlavourChoice) -> Flavour:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS ioc_schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS ioc_meta (key text PRIMARY KEY, value text NOT NULL)")
    row = conn.execute("SELECT value FROM ioc_meta WHERE key = 'storage_flavour'").fetchone()
    if row is not None:
        recorded = Flavour(row[0])
        if choice is not FlavourChoice.AUTO and recorded != choice:
            raise FlavourError(
                f"IOC_STORAGE_FLAVOUR={choice} but this database was first migrated with the "
                f"{recorded} flavour, which it keeps (its data is laid out for it): set "
                f"IOC_STORAGE_FLAVOUR={recorded} or auto, or use a new database"
            )
        return recorded
    flavour = choose_flavour(conn, conninfo, choice)
    conn.execute("INSERT INTO ioc_meta (key, value) VALUES ('storage_flavour', %s)", (flavour,))
    return flavour


def choose_flavour(conn: psycopg.Connection, conninfo: str, choice: FlavourChoice) -> Flavour:
    """The flavour for a database migrated for the first time (see the module docstring)."""
    if choice is FlavourChoice.PLAIN:
        log.info("storage flavour: plain PostgreSQL (IOC_STORAGE_FLAVOUR=plain)")
        return Flavour.PLAIN
    offered = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if offered is None:
        if choice is FlavourChoice.TIMESCALE:
            raise FlavourError(
                "IOC_STORAGE_FLAVOUR=timescale but this PostgreSQL server does not have the "
                "TimescaleDB extension installed: install it (and add timescaledb to "
                "shared_preload_libraries), or set IOC_STORAGE_FLAVOUR=plain"
            )
        log.info(
            "storage flavour: plain PostgreSQL (the server has no TimescaleDB extension; "
            "IOC_STORAGE_FLAVOUR=auto)"
        )
        return Flavour.PLAIN
    problem = _create_timescale_extension(conninfo)
    if problem is not None:
        raise FlavourError(
            f"TimescaleDB is installed on this PostgreSQL server but cannot be used in this "
            f"database: {problem}. Either fix that (for a missing preload: add timescaledb to "
            "shared_preload_libraries in postgresql.conf and restart the server), or set "
            "IOC_STORAGE_FLAVOUR=plain to store readings in plain PostgreSQL tables (the "
            "database keeps the flavour it is first migrated with)"
        )
    log.info("storage flavour: TimescaleDB (IOC_STORAGE_FLAVOUR=%s)", choice)
    return Flavour.TIMESCALE


def _create_timescale_extension(conninfo: str) -> str | None:
    """``CREATE EXTENSION timescaledb`` on a connection of its own; None when it worked, else
    the server's reason. Without the preload the server ends that session (FATAL), which must
    not take the migrating connection with it."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as probe:
            probe.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            # the extension is usable only if its library is loaded in every session
            probe.execute("SELECT count(*) FROM timescaledb_information.hypertables")
    except psycopg.Error as exc:
        diag = getattr(exc, "diag", None)
        message = diag.message_primary if diag is not None and diag.message_primary else None
        return message or str(exc).strip().splitlines()[0]
    return None
