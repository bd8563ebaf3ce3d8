"""A server child process that the launcher owns, and stops on every exit path.

Shared by the PostgreSQL and Mosquitto launchers:

* **Account.** Servers never run as root (PostgreSQL refuses to). As root we run them as an
  existing unprivileged account (see each launcher's ``accounts``); no users are created.
* **Where files live.** The server's own files go in ``data_dir/<state_name>``, owned by that
  account. When the account cannot reach ``data_dir`` (a parent such as ``/root`` is 0700, or
  pytest's ``/tmp/pytest-of-root``) we do not loosen the user's folders; while the server runs,
  its files live in a private ``/tmp/ioc-embedded-<hash>/<state_name>`` instead, and
  ``data_dir/<state_name>.location`` names it. Only while it runs: ``stop()`` moves them back
  to ``data_dir/<state_name>`` (at rest the account need not reach them) and removes the /tmp
  directory, the next start moves them out again (a rename on one filesystem). A launcher
  killed before ``stop()`` leaves its /tmp directory: the next start on that data dir takes it
  up, and one whose ``data_dir`` is gone is deleted by any launcher. The log stays in
  ``data_dir``: the launcher opens it and hands the descriptor to the server.
* **One server per data dir.** The launcher holds an exclusive ``flock`` on ``data_dir/.lock``
  while its server runs, so a live server found on a data dir nobody holds is a leftover of a
  dead launcher: it is stopped, then a fresh one is started. A stale pid file is removed.
* **Stopping.** ``stop()`` on normal exit and in ``__exit__``; an ``atexit`` hook as a last
  resort; and, for a parent that dies without unwinding (SIGKILL, or a signal Python does not
  handle), the Linux parent-death signal. Servers run in their own session, so a Ctrl-C on the
  terminal reaches only the launcher, which stops them after the application has flushed.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self

from ioc.embedded.ports import free_port

log = logging.getLogger(__name__)

FALLBACK_ROOT = Path("/tmp")
FALLBACK_PREFIX = "ioc-embedded-"
LOG_ROTATE_BYTES = 10 * 1024 * 1024
_PORT_ATTEMPTS = 3
_ESCALATION_WAIT_S = 5.0


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started; carries the last lines of its log."""

    def __init__(self, name: str, reason: str, log_tail: str = "") -> None:
        self.name = name
        self.reason = reason
        self.log_tail = log_tail
        message = f"embedded {name}: {reason}"
        if log_tail:
            message += f"\n--- last lines of the {name} log ---\n{log_tail}"
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Account:
    """The Unix account a server runs as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def for_server(cls, server: str, candidates: Sequence[str]) -> Account:
        """The current user; as root, the first existing unprivileged one of ``candidates``."""
        uid = os.geteuid()
        if uid != 0:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:  # containers often run with a uid that has no passwd entry
                name = str(uid)
            return cls(name, uid, os.getegid(), tuple(os.getgroups()))
        for name in candidates:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            if entry.pw_uid != 0:
                groups = tuple(os.getgrouplist(name, entry.pw_gid))
                return cls(name, entry.pw_uid, entry.pw_gid, groups)
        raise EmbeddedServerError(
            server,
            f"running as root and none of the unprivileged accounts {', '.join(candidates)} "
            "exists; run as an ordinary user, or point the service at an external server",
        )

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()

    def popen_kwargs(self) -> dict[str, Any]:
        if self.is_current:
            return {}
        # extra_groups must be given: without it the child keeps root's supplementary groups.
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}

    def can_traverse(self, path: Path) -> bool:
        """Whether this account may pass through ``path`` and every parent of it.

        Mode bits only (ACLs are ignored, so the answer errs towards "no", which merely costs
        the /tmp fallback).
        """
        if self.uid == 0:
            return True
        for directory in (path, *path.parents):
            st = directory.stat()
            if st.st_uid == self.uid:
                bit = stat.S_IXUSR
            elif st.st_gid == self.gid or st.st_gid in self.groups:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return False
        return True


def make_private_dir(path: Path, account: Account) -> None:
    """Create ``path`` (mode 0700) owned by ``account``; re-own it if another account had it."""
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != account.uid:
        # A previous run used another account (e.g. ``nobody`` before ``postgres`` existed).
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                os.lchown(os.path.join(root, name), account.uid, account.gid)
        os.chown(path, account.uid, account.gid)


def own_tmp_dir(path: Path, mode: int) -> None:
    """Create a directory of ours under /tmp; refuse one that someone else planted there."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=mode)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise EmbeddedServerError(
            "embedded", f"{path} exists but is not a private directory of uid {os.geteuid()}"
        )
    os.chmod(path, mode)  # our own directory: the umask must not make it untraversable


def state_dir(data_dir: Path, name: str, account: Account, *, max_len: int = 4096) -> Path:
    """Where a server keeps its own files: ``data_dir/name`` or a private /tmp fallback.

    ``max_len`` bounds the path (a Unix socket path must fit in 107 bytes).
    """
    collect_orphaned_fallbacks()
    preferred = data_dir / name
    if account.can_traverse(data_dir) and len(str(preferred)) <= max_len:
        return preferred
    digest = hashlib.sha256(f"{data_dir}\0{account.uid}".encode()).hexdigest()[:16]
    outer = FALLBACK_ROOT / f"{FALLBACK_PREFIX}{digest}"
    own_tmp_dir(outer, 0o755)
    (outer / "origin").write_text(f"{data_dir}\n")
    live = outer / name
    if preferred.is_dir() and not preferred.is_symlink():
        if live.exists():  # left by a launcher killed while its server ran: the newer copy
            log.warning("%s: using %s, left by a launcher that did not stop; %s is older",
                        name, live, preferred)  # fmt: skip
        else:
            _move_tree(preferred, live)
    (data_dir / f"{name}.location").write_text(
        f"{live}\n(the {account.name} account cannot reach {data_dir}; moved back at stop)\n"
    )
    log.info("%s runs in %s: account %s cannot reach %s", name, outer, account.name, data_dir)
    return live


def is_fallback(state: Path) -> bool:
    """Whether ``state`` is a /tmp fallback made by :func:`state_dir`."""
    return state.parent.parent == FALLBACK_ROOT and state.parent.name.startswith(FALLBACK_PREFIX)


def park_state(state: Path, data_dir: Path) -> Path:
    """Move a stopped server's files from their /tmp fallback back to ``data_dir`` and delete
    the fallback directory once nothing else lives there; returns where the files now are."""
    resting = data_dir / state.name
    if resting.exists():
        log.warning("%s exists: %s stays in %s", resting, state.name, state.parent)
        return state
    if state.exists():
        _move_tree(state, resting)
    with contextlib.suppress(FileNotFoundError):
        (data_dir / f"{state.name}.location").unlink()
    remove_empty_fallback(state.parent)
    return resting


def remove_empty_fallback(outer: Path) -> None:
    try:
        others = [p for p in outer.iterdir() if p.name != "origin"]
    except FileNotFoundError:
        return
    if others:  # another server of the same data dir and account still runs there
        return
    shutil.rmtree(outer, ignore_errors=True)


def _move_tree(src: Path, dst: Path) -> None:
    """A rename where both sides share a filesystem; else a copy, then the source deleted
    (ownership is not copied: the launchers re-own their state with make_private_dir)."""
    try:
        os.rename(src, dst)
    except OSError:
        log.info("copying %s to %s (another filesystem)", src, dst)
        staging = dst.with_name(dst.name + ".moving")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(src, staging, symlinks=True)
        staging.rename(dst)
        shutil.rmtree(src)


def collect_orphaned_fallbacks() -> None:
    """Delete /tmp fallback directories whose data dir is gone and whose servers are dead."""
    for outer in FALLBACK_ROOT.glob(f"{FALLBACK_PREFIX}*"):
        try:
            st = outer.lstat()
            origin = Path((outer / "origin").read_text().strip())
        except OSError:
            continue  # not ours, or being created right now
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or origin.exists():
            continue
        if any(pid_alive(read_pid(p)) for p in outer.glob("*/*.pid")):
            continue
        log.info("removing %s (its data dir %s no longer exists)", outer, origin)
        shutil.rmtree(outer, ignore_errors=True)


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    if pid is None or pid <= 0:
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    except OSError:  # no procfs: fall back to the signal probe
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return fields[0] != "Z"


def proc_comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parent_death_signal(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec function that has the kernel send ``sig`` to the child when we die."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved now, not in the forked child
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def preexec() -> None:
        # Runs after Popen switched uid/gid (changing credentials clears the setting). The
        # kernel signals when the *thread* that forked us exits: start servers from the main
        # thread, as the CLI and the test fixtures do.
        prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def child_env() -> dict[str, str]:
    # PG* variables of the caller's shell must not steer initdb or the server; LC_ALL=C keeps
    # log messages in English, which start() matches ("Address already in use").
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_", "LANG"))}
    env["LC_ALL"] = "C"
    return env


_live: set[EmbeddedServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        if server._owner_pid == os.getpid():  # not in a forked child of the launcher
            server.stop()


class EmbeddedServer(abc.ABC):
    """Lifecycle shared by the launchers; subclasses supply the server-specific hooks.

    Besides ``url``, ``port`` and ``pid``: ``state`` is the directory holding the server's own
    files (``data_dir/<state_name>`` or its /tmp fallback), ``account`` the account running it
    (both known after ``start()``), ``log_path`` its log.
    """

    name: ClassVar[str]
    accounts: ClassVar[tuple[str, ...]]  # unprivileged accounts to run as when we are root
    state_name: ClassVar[str]  # directory for the server's own files
    pid_file_name: ClassVar[str]
    # Signals tried in order by stop(); the first is also the parent-death signal.
    stop_signals: ClassVar[tuple[signal.Signals, ...]]
    max_state_path: ClassVar[int] = 4096

    def __init__(self, data_dir: Path, *, port: int | None, log: Path | None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.log_path = Path(log).absolute() if log else self.data_dir / f"{self.name}.log"
        self._requested_port = port
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self._log_file: IO[bytes] | None = None
        self._log_start = 0
        self._owner_pid = os.getpid()
        self.account: Account | None = None
        self.state: Path | None = None

    # -- hooks --------------------------------------------------------------------------------

    @abc.abstractmethod
    def _prepare(self, deadline: float) -> None:
        """Make the state directory ready to start from (initdb, binaries)."""

    @abc.abstractmethod
    def _argv(self, port: int) -> list[str]:
        """The server's command line for ``port`` (may write a config file)."""

    @abc.abstractmethod
    def _is_ours(self, pid: int) -> bool:
        """Whether live ``pid`` is a server of this state directory."""

    @abc.abstractmethod
    def _ready(self) -> bool:
        """One readiness probe; False while the server is still starting."""

    def _on_ready(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Work after the first successful probe (e.g. create the database)."""

    # -- public -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1 (given, or picked at ``start()``)."""
        if self._port is None:
            raise RuntimeError(f"embedded {self.name} is not started")
        return self._port

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The URL clients use to reach the server."""

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 60) -> str:
        """Start the server (idempotent) and wait until it serves; return its URL."""
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        self.stop()  # releases what a previous run held, should its server have died
        deadline = time.monotonic() + timeout
        try:
            self._acquire()
            self._stop_leftover()
            self._prepare(deadline)
            self._launch_until_ready(deadline)
            self._on_ready()
        except BaseException:
            self.stop()
            raise
        _live.add(self)
        return self.url

    def stop(self, timeout: float = 30) -> None:
        """Stop the server and wait for it (escalating signals after ``timeout``); idempotent."""
        proc = self._proc
        if proc is not None:
            self._terminate(proc.pid, lambda t: _wait_child(proc, t), timeout)
            self._proc = None
        _live.discard(self)
        if self._lock_fd is not None and self.state is not None and is_fallback(self.state):
            # only while we hold the data dir's lock, and with no server left running there
            leftover = read_pid(self.state / self.pid_file_name)
            if proc is not None and proc.poll() is None:
                log.error("%s still runs: its files stay in %s", self.name, self.state)
            elif pid_alive(leftover) and leftover is not None and self._is_ours(leftover):
                log.error("%s (pid %d) still runs in %s", self.name, leftover, self.state)
            else:
                self.state = park_state(self.state, self.data_dir)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------

    def _acquire(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.data_dir / f".{self.name}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedServerError(
                self.name, f"{self.data_dir} is in use by another launcher (see {lock_path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        self.account = Account.for_server(self.name, self.accounts)
        self.state = state_dir(
            self.data_dir, self.state_name, self.account, max_len=self.max_state_path
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists() and self.log_path.stat().st_size > LOG_ROTATE_BYTES:
            self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        self._log_file = open(self.log_path, "ab")  # closed in stop()
        self._log_start = self._log_file.tell()

    def _stop_leftover(self) -> None:
        assert self.state is not None
        pid_file = self.state / self.pid_file_name
        pid = read_pid(pid_file)
        if pid is None:
            return
        if pid_alive(pid) and self._is_ours(pid):
            # We hold the data-dir lock, so whoever started it is gone.
            log.warning("stopping leftover %s (pid %d) of %s", self.name, pid, self.state)
            self._terminate(pid, lambda t: _wait_gone(pid, t), 30)
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()

    def _launch_until_ready(self, deadline: float) -> None:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = self._requested_port or free_port()
            self._log_start = self._tell_log()
            self._proc = self._spawn(self._argv(port))
            self._port = port
            try:
                self._wait_ready(deadline)
                return
            except EmbeddedServerError as exc:
                # Only an exited server is retried: a running one is stopped by start().
                taken = self._proc is None and "Address already in use" in exc.log_tail
                if not taken or self._requested_port or attempt == _PORT_ATTEMPTS:
                    raise
                log.info("%s: port %d was taken meanwhile; retrying", self.name, port)

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        """Run ``argv`` as the server account, output to the log, dying with this process."""
        assert self.account is not None and self._log_file is not None
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd="/",
            env=child_env(),
            start_new_session=True,
            preexec_fn=_parent_death_signal(self.stop_signals[0]),
            **self.account.popen_kwargs(),
        )

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        while True:
            status = self._proc.poll()
            if status is not None:
                self._proc = None
                raise EmbeddedServerError(
                    self.name, f"exited with status {status} while starting", self.log_tail()
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(self.name, "not ready in time", self.log_tail())
            time.sleep(0.05)

    def _terminate(self, pid: int, wait: Callable[[float], bool], timeout: float) -> None:
        graces = (timeout,) + (_ESCALATION_WAIT_S,) * (len(self.stop_signals) - 1)
        for sig, grace in zip(self.stop_signals, graces, strict=True):
            if wait(0) or not _signal(pid, sig):
                return
            if wait(grace):
                return
            log.warning("%s (pid %d) ignored %s for %.0fs", self.name, pid, sig.name, grace)
        _signal(pid, signal.SIGKILL)
        if not wait(_ESCALATION_WAIT_S):
            log.error("%s (pid %d) survived SIGKILL", self.name, pid)

    def _tell_log(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` the server logged since it was last launched."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                data = f.read()[-16384:]
        except OSError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _wait_child(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    """Poll a process that is not our child until it is gone."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
