"""The storage flavour probe in every server state: no TimescaleDB, TimescaleDB installed but
not preloaded, preloaded, and the explicit IOC_STORAGE_FLAVOUR settings.

The suite's server (``IOC_TEST_DATABASE_URL``) is in one of the first and third states; the
"installed but not preloaded" state needs a second server, named by
``IOC_TEST_UNPRELOADED_DATABASE_URL`` (README, "Tests"); tests of a state the servers at hand
are not in skip, saying which.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ioc.storage import Flavour, FlavourChoice, FlavourError, migrate
from tests.conftest import fresh_database

REPO = Path(__file__).resolve().parents[1]
UNPRELOADED_ENV = "IOC_TEST_UNPRELOADED_DATABASE_URL"


def server_state(server_url: str) -> str:
    """``none`` (no TimescaleDB), ``unpreloaded`` (installed, not preloaded) or ``preloaded``."""
    with psycopg.connect(server_url) as conn:
        offered = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        preload = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    if offered is None:
        return "none"
    return "preloaded" if preload and "timescaledb" in str(preload[0]) else "unpreloaded"


def has_extension(url: str) -> bool:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        return found.fetchone() is not None


def recorded_flavour(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('ioc_meta')").fetchone()
        if exists is None or exists[0] is None:
            return None
        row = conn.execute("SELECT value FROM ioc_meta WHERE key = 'storage_flavour'").fetchone()
        return row[0] if row else None


@pytest.fixture
def fresh(server_url: str) -> Iterator[str]:
    with fresh_database(server_url) as url:
        yield url


@pytest.fixture
def unpreloaded_server() -> str:
    url = os.environ.get(UNPRELOADED_ENV)
    if not url:
        pytest.skip(
            f"{UNPRELOADED_ENV} is unset: no PostgreSQL with TimescaleDB installed but not "
            "preloaded at hand (README, Tests)"
        )
    if server_state(url) != "unpreloaded":
        pytest.fail(f"{UNPRELOADED_ENV} names a server in state {server_state(url)!r}")
    return url


def test_forced_plain_never_touches_timescaledb(fresh: str) -> None:
    assert migrate(fresh, choice="plain") is Flavour.PLAIN
    assert recorded_flavour(fresh) == "plain"
    assert not has_extension(fresh)
    with psycopg.connect(fresh) as conn:  # partitioned readings, the plain layout
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'readings'").fetchone()
    assert kind == ("p",)


def test_a_recorded_flavour_is_kept_and_a_contrary_setting_refused(fresh: str) -> None:
    assert migrate(fresh, choice="plain") is Flavour.PLAIN
    assert migrate(fresh) is Flavour.PLAIN  # auto follows what is recorded
    with pytest.raises(FlavourError, match="first migrated with the plain flavour"):
        migrate(fresh, choice="timescale")


def test_an_unknown_choice_is_named() -> None:
    with pytest.raises(ValueError, match="'hypertable'"):
        migrate("postgresql://unused", choice="hypertable")


def test_no_extension_auto_is_plain_and_timescale_refused(server_url: str, fresh: str) -> None:
    if server_state(server_url) != "none":
        pytest.skip("this server has TimescaleDB; the no-extension state is CI's server")
    with pytest.raises(FlavourError, match="does not have the TimescaleDB extension"):
        migrate(fresh, choice=FlavourChoice.TIMESCALE)
    assert recorded_flavour(fresh) is None  # refused: nothing recorded, a later choice is free
    assert migrate(fresh) is Flavour.PLAIN


def test_preloaded_auto_and_timescale_use_it(server_url: str) -> None:
    if server_state(server_url) != "preloaded":
        pytest.skip("no TimescaleDB preloaded on this server (README: the suite on TimescaleDB)")
    for choice in ("auto", "timescale"):
        with fresh_database(server_url) as url:
            assert migrate(url, choice=choice) is Flavour.TIMESCALE
            assert has_extension(url)
            assert migrate(url, choice=choice) is Flavour.TIMESCALE


def test_preloaded_but_forced_plain(server_url: str, fresh: str) -> None:
    if server_state(server_url) != "preloaded":
        pytest.skip("no TimescaleDB preloaded on this server (README: the suite on TimescaleDB)")
    assert migrate(fresh, choice="plain") is Flavour.PLAIN
    assert not has_extension(fresh)
    with pytest.raises(FlavourError, match="first migrated with the plain flavour"):
        migrate(fresh, choice="timescale")


def test_installed_but_not_preloaded_is_refused_naming_the_fix(unpreloaded_server: str) -> None:
    """Before: the probe's CREATE EXTENSION ended the session (FATAL "must be preloaded"), the
    log said "using plain PostgreSQL" and the next statement failed "the connection is closed"."""
    with fresh_database(unpreloaded_server) as url:
        for choice in ("auto", "timescale"):
            with pytest.raises(FlavourError) as refused:
                migrate(url, choice=choice)
            message = str(refused.value)
            assert "must be preloaded" in message
            assert "shared_preload_libraries" in message
            assert "IOC_STORAGE_FLAVOUR=plain" in message
            assert recorded_flavour(url) is None
        # the way out the message names
        assert migrate(url, choice="plain") is Flavour.PLAIN
        assert migrate(url) is Flavour.PLAIN  # and then auto keeps it


def test_cli_refuses_an_unpreloaded_server_with_the_message(
    unpreloaded_server: str, mqtt_url: str
) -> None:
    """`ioc serve` (which crashed there) and `ioc db migrate` exit 2 with the message; with
    IOC_STORAGE_FLAVOUR=plain the database is migrated."""
    with fresh_database(unpreloaded_server) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
        env.update(
            PYTHONPATH=str(REPO), IOC_DATABASE_URL=url, IOC_MQTT_URL=mqtt_url,
            IOC_ADMIN_TOKEN="k3Jd9-vQx2-LmP7-wZr4", IOC_HTTP_PORT="0",
        )  # fmt: skip
        for command in (["serve"], ["db", "migrate"]):
            done = subprocess.run(
                [sys.executable, "-m", "ioc", *command],
                capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
            )  # fmt: skip
            assert done.returncode == 2, (command, done.stderr)
            assert "shared_preload_libraries" in done.stderr
            assert "IOC_STORAGE_FLAVOUR=plain" in done.stderr
            assert "Traceback" not in done.stderr
        env["IOC_STORAGE_FLAVOUR"] = "plain"
        done = subprocess.run(
            [sys.executable, "-m", "ioc", "db", "migrate"],
            capture_output=True, text=True, env=env, cwd=REPO, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "storage flavour: plain" in done.stdout
