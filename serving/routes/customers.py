"""Customer history: everything one buyer wrote and what became of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from serving import customers
from serving.deps import AgentKey, Svc
from serving.errors import ApiRoute
from serving.fields import CustomerId

router = APIRouter(prefix="/v1/customers", tags=["customers"], route_class=ApiRoute)


class CustomerEvent(BaseModel):
    at: datetime
    kind: str = Field(
        description="message, review, ticket_* event, label_correction, consent, opt_out "
        "or campaign_contact"
    )
    message_id: int | None = None
    ticket_id: int | None = None
    detail: dict[str, Any]


class CustomerHistory(BaseModel):
    customer_id: str
    messages: int
    first_contact_at: datetime | None
    last_contact_at: datetime | None
    open_tickets: list[int]
    sentiment_trend: list[dict[str, Any]] = Field(
        description="Per message in time order: sentiment and its score (-1, 0, 1)."
    )
    sentiment_mean_last_5: float | None
    sentiment_mean_before: float | None
    consent: dict[str, Any] | None = Field(
        None,
        description="Marketing consent in force (consented, opted_out, since), if recorded.",
    )
    timeline: list[CustomerEvent]


@router.get("/{customer_id}", response_model=CustomerHistory)
def customer_history(customer_id: CustomerId, svc: Svc, _: AgentKey) -> CustomerHistory:
    """Every message, review, ticket event and label of one buyer in time order, with
    the sentiment trend and the open tickets."""
    with svc.sessions() as s:
        found = customers.history(s, customer_id, svc.clock())
    if found is None:
        raise HTTPException(404, detail=f"no messages from customer {customer_id!r}")
    return CustomerHistory(**found)
