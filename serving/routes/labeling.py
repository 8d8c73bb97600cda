"""Active learning for agents: the messages whose labels would help the model most."""

from __future__ import annotations

from datetime import datetime

from carelens_client.vocabulary import Channel
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from serving.active_learning import next_to_label
from serving.deps import AgentKey, Svc
from serving.errors import ApiRoute

router = APIRouter(prefix="/v1/labeling", tags=["labeling"], route_class=ApiRoute)


class ToLabel(BaseModel):
    """A message whose labels would help the model, and why."""

    message_id: int
    ticket_id: int
    score: float = Field(description="uncertainty + disagreement: higher first.")
    uncertainty: float = Field(description="How unsure the model is (0-1).")
    disagreement: float = Field(
        description="How much the prediction contradicts itself, the stars or the rules."
    )
    reasons: list[str]
    lang: str
    channel: Channel
    product_id: str | None
    rating: int | None
    subject: str | None
    text: str
    predicted: dict[str, list[str]] = Field(description="The model's labels per task.")
    confidence: dict[str, float | None]
    model_version: str | None
    received_at: datetime


@router.get("/next")
def labeling_next(
    *,
    n: int = Query(20, ge=1, le=200, description="How many messages."),
    svc: Svc,
    _: AgentKey,
) -> list[ToLabel]:
    """Unlabelled messages with the least confident or most self-contradicting
    predictions, spread over products and languages. Label one with
    ``POST /v1/tickets/{ticket_id}/labels``; it then leaves this list."""
    with svc.sessions() as s:
        return next_to_label(s, n)
