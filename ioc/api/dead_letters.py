"""/api/v1/dead-letters: what ingest refused, and why."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from ioc.api.auth import require_admin
from ioc.api.context import runtime_of
from ioc.storage.dead_letters import list_dead_letters

router = APIRouter(
    prefix="/api/v1/dead-letters", tags=["dead letters"], dependencies=[Depends(require_admin)]
)


class DeadLetterOut(BaseModel):
    id: int
    received_at: datetime
    first_received_at: datetime
    occurrences: int
    topic: str
    reason: str
    detail: str
    payload: str | None
    payload_base64: str


@router.get("", response_model=list[DeadLetterOut])
async def dead_letters(
    request: Request,
    reason: str | None = None,
    topic_prefix: str | None = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterOut]:
    async with runtime_of(request).pool.connection() as conn:
        rows = await list_dead_letters(
            conn, reason=reason, topic_prefix=topic_prefix, since=since, limit=limit
        )
    out = []
    for r in rows:
        raw: bytes = r.pop("payload")
        try:
            text: str | None = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None  # not text: see payload_base64
        out.append(DeadLetterOut(**r, payload=text, payload_base64=base64.b64encode(raw).decode()))
    return out
