"""Bearer-token authentication. Only the bootstrap admin token exists so far (IOC_ADMIN_TOKEN);
agency and device tokens come with the dispatch and security issues."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, status


def require_admin(request: Request) -> str:
    """FastAPI dependency: the caller's identity, or 401."""
    expected: str = request.app.state.runtime.admin_token
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return "admin"
