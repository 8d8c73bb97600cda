"""Active learning for agents: the messages whose labels would help the model most."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from serving.active_learning import next_to_label
from serving.deps import AgentKey, Svc
from serving.errors import ApiRoute

router = APIRouter(prefix="/v1/labeling", tags=["labeling"], route_class=ApiRoute)


@router.get("/next")
def labeling_next(
    *,
    n: int = Query(20, ge=1, le=200, description="How many messages."),
    svc: Svc,
    _: AgentKey,
) -> list[dict[str, Any]]:
    """Unlabelled messages with the least confident or most self-contradicting
    predictions, spread over products and languages. Label one with
    ``POST /v1/tickets/{ticket_id}/labels``; it then leaves this list."""
    with svc.sessions() as s:
        return next_to_label(s, n)
