"""API tokens stored hashed (SHA-256 of the token; the token itself is shown once, at creation).

Tokens are 32 random bytes, so a fast hash is enough: there is nothing to brute-force that a
slow password hash would protect.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ioc.storage import audit

# device-provisioning: an installer's tool registering field devices (POST /api/v1/devices), nothing
# else; open311: a citizen-facing app's Open311 api_key.
ROLES = ("admin", "operator", "viewer", "open311", "device-provisioning")
_AGENCY_ROLE = re.compile(r"^agency:[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True, slots=True)
class Token:
    id: int
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


def check_role(role: str) -> str:
    """The role if it is one of :data:`ROLES` or ``agency:{code}``, else ValueError."""
    if role in ROLES or _AGENCY_ROLE.match(role):
        return role
    raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)} or agency:{{code}}")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


# Tokens are issued and revoked from the command line (`ioc tokens …`, run by an administrator
# on the server) or by `ioc demo`; the audit log names that actor.
COMMAND_LINE = "command line"


async def create(
    conn: psycopg.AsyncConnection[Any], *, name: str, role: str, actor: str = COMMAND_LINE
) -> tuple[Token, str]:
    """A new token for ``role``; returns the stored record and the secret (shown once). The
    change is written to the audit log in the same transaction."""
    check_role(role)
    secret = secrets.token_urlsafe(32)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "INSERT INTO api_tokens (token_hash, role, name) VALUES (%s, %s, %s)"
            " RETURNING id, name, role, created_at, revoked_at",
            (_digest(secret), role, name),
        )
        row = await cur.fetchone()
        assert row is not None
        await audit.record(
            conn, actor=actor, role="admin", action="token.created",
            target=f"token={row['id']} role={role} name={name}",
        )  # fmt: skip
    return Token(**row), secret


async def lookup(conn: psycopg.AsyncConnection[Any], secret: str) -> Token | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, name, role, created_at, revoked_at FROM api_tokens"
            " WHERE token_hash = %s AND revoked_at IS NULL",
            (_digest(secret),),
        )
        row = await cur.fetchone()
    return Token(**row) if row else None


async def list_all(conn: psycopg.AsyncConnection[Any]) -> list[Token]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, name, role, created_at, revoked_at FROM api_tokens ORDER BY id"
        )
        return [Token(**r) for r in await cur.fetchall()]


async def revoke(
    conn: psycopg.AsyncConnection[Any], token_id: int, *, actor: str = COMMAND_LINE
) -> bool:
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
            (token_id,),
        )
        if cur.rowcount == 1:
            await audit.record(
                conn, actor=actor, role="admin", action="token.revoked", target=f"token={token_id}"
            )
    return cur.rowcount == 1
