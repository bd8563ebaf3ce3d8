"""API tokens: `ioc tokens create/list/revoke` against the real database, stored hashed."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from ioc.app.cli import main
from ioc.storage import tokens


async def test_tokens_cli_round_trip(
    database_url: str, db: psycopg.AsyncConnection, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("IOC_DATABASE_URL", database_url)
    import asyncio

    # the CLI runs its own event loop: give it a thread
    rc = await asyncio.to_thread(
        main, ["tokens", "create", "--role", "agency:urban-works", "--name", "urban works"]
    )
    assert rc == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    found = await tokens.lookup(db, secret)
    assert found is not None and (found.role, found.name) == ("agency:urban-works", "urban works")
    # only the hash is stored
    row = await (await db.execute("SELECT token_hash FROM api_tokens")).fetchone()
    assert row is not None and bytes(row[0]) == hashlib.sha256(secret.encode()).digest()

    assert await asyncio.to_thread(main, ["tokens", "list"]) == 0
    assert "agency:urban-works" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["tokens", "revoke", str(found.id)]) == 0
    assert await tokens.lookup(db, secret) is None
    assert await asyncio.to_thread(main, ["tokens", "revoke", str(found.id)]) == 1

    assert (
        await asyncio.to_thread(main, ["tokens", "create", "--role", "superuser", "--name", "x"])
        == 2
    )
    assert "unknown role 'superuser'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("token", "why"),
    [("short-token", "has 11 characters"), ("please-change-me-now", "placeholder")],
)
def test_serve_refuses_a_weak_admin_token(
    token: str, why: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IOC_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("IOC_MQTT_URL", "mqtt://127.0.0.1:1")
    monkeypatch.setenv("IOC_ADMIN_TOKEN", token)
    assert main(["serve"]) == 2  # refused before touching the database or the broker
    assert why in capsys.readouterr().err
