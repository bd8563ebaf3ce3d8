"""/api/v1/deliveries: what was sent to which agency, every attempt, and retry of failed ones.

Viewers may look; operators may retry. docs/dispatch.md describes states and the retry policy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from ioc.api.auth import Caller, require_operator, require_viewer
from ioc.api.context import runtime_of
from ioc.dispatch.deliveries import (
    STATES,
    NotRetryable,
    get_delivery,
    list_deliveries,
    retry_failed,
)
from ioc.dispatch.delivery import CHANNELS

router = APIRouter(prefix="/api/v1/deliveries", tags=["dispatch"])


class DeliveryOut(BaseModel):
    id: int
    idempotency_key: str = Field(description="sent as Idempotency-Key and as the message id")
    incident_id: int | None
    agency_id: str
    channel: str = Field(description="webhook or mqtt")
    target: str = Field(description="webhook URL or MQTT topic")
    kind: str = Field(description="incident.dispatched, incident.updated, …")
    state: str = Field(description="pending, delivered or failed")
    attempts: int = Field(description="attempts since it was written or last retried by hand")
    next_attempt_at: datetime = Field(description="when a pending delivery is tried next")
    created_at: datetime
    delivered_at: datetime | None
    last_error: str | None
    retried_at: datetime | None = Field(description="last retry by an operator")
    retried_by: str | None
    waiting_for: int | None = Field(
        description="an earlier undelivered delivery of the same incident, agency and channel "
        "that this one waits behind (order is kept)"
    )


class AttemptOut(BaseModel):
    time: datetime
    duration_ms: float
    outcome: str = Field(description="delivered, retry or failed")
    status_code: int | None = Field(description="HTTP status of a webhook attempt")
    error: str | None


class DeliveryDetail(DeliveryOut):
    payload: dict[str, Any] = Field(description="the incident as sent")
    attempt_log: list[AttemptOut]


def _not_found(delivery_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"id: delivery {delivery_id} does not exist")


@router.get("", response_model=list[DeliveryOut], dependencies=[Depends(require_viewer)])
async def deliveries(
    request: Request,
    state: Annotated[
        list[str] | None, Query(description="pending, delivered, failed (comma-separated)")
    ] = None,
    agency: str | None = None,
    incident: int | None = None,
    channel: str | None = None,
    before: Annotated[int | None, Query(description="page on: ids below this")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    states = [s for part in state or [] for s in part.split(",") if s]
    for s in states:
        if s not in STATES:
            raise HTTPException(422, f"state: {s!r} is not one of {list(STATES)}")
    if channel is not None and channel not in CHANNELS:
        raise HTTPException(422, f"channel: {channel!r} is not one of {list(CHANNELS)}")
    async with runtime_of(request).pool.connection() as conn:
        return await list_deliveries(
            conn,
            states=states,
            agency=agency,
            incident=incident,
            channel=channel,
            before=before,
            limit=limit,
        )


@router.get("/{delivery_id}", response_model=DeliveryDetail, dependencies=[Depends(require_viewer)])
async def delivery(delivery_id: int, request: Request) -> dict[str, Any]:
    async with runtime_of(request).pool.connection() as conn:
        row = await get_delivery(conn, delivery_id)
    if row is None:
        raise _not_found(delivery_id)
    return row


@router.post("/{delivery_id}/retry", response_model=DeliveryDetail)
async def retry(
    delivery_id: int, request: Request, caller: Annotated[Caller, Depends(require_operator)]
) -> dict[str, Any]:
    """A failed delivery goes back to pending, due now, with a fresh attempt budget (409 unless
    it is failed)."""
    async with runtime_of(request).pool.connection() as conn:
        try:
            row = await retry_failed(conn, delivery_id, by=caller.actor)
        except NotRetryable as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, f"state: {exc}") from exc
    if row is None:
        raise _not_found(delivery_id)
    return row
