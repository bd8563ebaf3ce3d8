"""Bearer-token authentication and roles.

Two kinds of token: the bootstrap admin token (``IOC_ADMIN_TOKEN``, compared in constant time)
and tokens issued with ``ioc tokens create`` / stored hashed in ``api_tokens``
(:mod:`ioc.storage.tokens`). Roles:

- ``admin`` — everything; ``operator`` — watch and act (ack, dispatch, close);
- ``viewer`` — read only; ``agency:{code}`` — only that agency's incidents, through the agency API;
- ``open311`` — a citizen-facing application posting service requests (its Open311 api_key).

Route dependencies: :func:`require_admin`, :func:`require_operator`, :func:`require_viewer`,
:func:`require_agency`; each answers 401 without a valid token and 403 for a wrong role. Each
also depends on :data:`BEARER`, which only declares the HTTP bearer scheme (``bearerAuth``) in
the OpenAPI document, on exactly the operations behind a check, so Swagger UI's "Authorize" takes
a token; the checks themselves read the header (with their own error messages).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from ioc.api.context import runtime_of
from ioc.storage import tokens as token_store


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: ``name`` goes into audit trails (acknowledged_by, incident events)."""

    name: str
    role: str

    @property
    def agency(self) -> str | None:
        """The agency code of an ``agency:{code}`` token, else None."""
        kind, _, code = self.role.partition(":")
        return code if kind == "agency" and code else None

    @property
    def actor(self) -> str:
        """How the caller appears in histories: ``admin`` or ``{role}/{name}``."""
        return (
            "admin" if self.name == "admin" and self.role == "admin" else f"{self.role}/{self.name}"
        )


BEARER = HTTPBearer(
    auto_error=False,  # the checks below answer, naming what is wrong
    scheme_name="bearerAuth",
    description="An API token: the admin token (IOC_ADMIN_TOKEN) or one issued with "
    "`ioc tokens create --role ROLE --name NAME`.",
)
# A parameter of every check: declares the scheme in OpenAPI; its value is not used.
Declared = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]

_OPERATORS = frozenset({"admin", "operator"})
VIEWERS = frozenset({"admin", "operator", "viewer"})


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def identify(connection: HTTPConnection, token: str) -> Caller | None:
    """The caller a token belongs to, or None for an unknown or revoked token (``connection``:
    the HTTP request or the websocket)."""
    runtime = runtime_of(connection)
    expected: str = runtime.admin_token
    if hmac.compare_digest(token.encode(), expected.encode()):
        return Caller("admin", "admin")
    async with runtime.pool.connection() as conn:
        found = await token_store.lookup(conn, token)
    return Caller(found.name, found.role) if found is not None else None


async def authenticate(request: Request, _bearer: Declared = None) -> Caller:
    """FastAPI dependency: any valid token, or 401."""
    caller = await identify(request, bearer_token(request))
    if caller is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    request.state.caller = caller
    return caller


def _forbidden(caller: Caller, needed: str) -> HTTPException:
    return HTTPException(
        status.HTTP_403_FORBIDDEN, f"role {caller.role!r} may not do this: needs {needed}"
    )


async def require_admin(request: Request, _bearer: Declared = None) -> str:
    """Admin only; returns the actor name (kept as ``str`` for the routes written before roles)."""
    caller = await authenticate(request)
    if caller.role != "admin":
        raise _forbidden(caller, "admin")
    return caller.actor


async def require_operator(request: Request, _bearer: Declared = None) -> Caller:
    caller = await authenticate(request)
    if caller.role not in _OPERATORS:
        raise _forbidden(caller, "operator or admin")
    return caller


async def require_viewer(request: Request, _bearer: Declared = None) -> Caller:
    caller = await authenticate(request)
    if caller.role not in VIEWERS:
        raise _forbidden(caller, "viewer, operator or admin")
    return caller


async def require_provisioning(request: Request, _bearer: Declared = None) -> Caller:
    """Registering devices: administrators, and the installers' device-provisioning tokens."""
    caller = await authenticate(request)
    if caller.role not in ("admin", "device-provisioning"):
        raise _forbidden(caller, "admin or device-provisioning")
    return caller


async def require_agency(request: Request, _bearer: Declared = None) -> Caller:
    caller = await authenticate(request)
    if caller.agency is None:
        raise _forbidden(caller, "an agency:{code} token")
    return caller
