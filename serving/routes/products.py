"""Quality feedback per product: issue mix, sentiment, stars, languages, a series and
the spike test (``serving.insights`` documents what is counted and the test)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query

from serving.deps import AgentKey, Services, Svc
from serving.errors import ApiRoute
from serving.fields import ProductId, Timestamp
from serving.insights import SpikeConfig, all_products, product_insights
from serving.store import as_utc

router = APIRouter(prefix="/v1/products", tags=["products"], route_class=ApiRoute)


class SpikeParams:
    """Query parameters of the spike test (defaults: the CARELENS_SPIKE_* settings)."""

    def __init__(
        self,
        window_days: int | None = Query(None, ge=1, le=365, description="Recent window (days)."),
        baseline_days: int | None = Query(
            None, ge=1, le=3650, description="Baseline window before it (days)."
        ),
        min_count: int | None = Query(
            None, ge=1, description="Fewest recent messages with the issue to test it."
        ),
        alpha: float | None = Query(
            None, gt=0, lt=1, description="Significance level (Bonferroni-adjusted p-value)."
        ),
        prior_weight: float | None = Query(
            None, ge=0, description="Pseudo-messages of the shop-wide share in the baseline."
        ),
    ) -> None:
        self.values = {
            "window_days": window_days,
            "baseline_days": baseline_days,
            "min_count": min_count,
            "alpha": alpha,
            "prior_weight": prior_weight,
        }

    def config(self, svc: Services) -> SpikeConfig:
        return SpikeConfig.from_settings(svc.settings, **self.values)


def _range(
    svc: Services, cfg: SpikeConfig, since: datetime | None, until: datetime | None
) -> tuple[datetime, datetime]:
    until = as_utc(until) if until else svc.clock()
    since = as_utc(since) if since else until - timedelta(days=cfg.window_days + cfg.baseline_days)
    if since >= until:
        raise HTTPException(422, detail="since: must be before until")
    return since, until


def _issue_types(svc: Services) -> list[str] | None:
    if svc.predictor is None or "issue_type" not in svc.predictor.taxonomy:
        return None
    return list(svc.predictor.taxonomy["issue_type"].label_names)


SINCE = Query(None, description="Start (inclusive); default: until - (window + baseline) days.")
UNTIL = Query(None, description="End (exclusive); default: now. The spike windows end here.")
BUCKET = Query("week", description="Series per day or per ISO week (Monday).")


@router.get("/insights")
def products_insights(
    *,
    since: Timestamp | None = SINCE,
    until: Timestamp | None = UNTIL,
    sort: str = Query(
        "messages",
        description="messages, negative_share, mean_rating, spikes, product_id, or an issue "
        "type (its share).",
    ),
    order: Literal["asc", "desc"] = Query("desc"),
    min_messages: int = Query(1, ge=1, description="Leave out products with fewer messages."),
    series: bool = Query(False, description="Include each product's series."),
    bucket: Literal["day", "week"] = BUCKET,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    spike: SpikeParams = Depends(),
    svc: Svc,
    _: AgentKey,
) -> dict[str, Any]:
    """Every product with messages in the range (reviews and tickets together): counts
    and shares of each issue type, negative share, mean stars, languages, and the
    flagged spikes with their evidence; sortable."""
    cfg = spike.config(svc)
    since, until = _range(svc, cfg, since, until)
    with svc.sessions() as s:
        try:
            out = all_products(
                s,
                since,
                until,
                cfg,
                _issue_types(svc),
                sort=sort,
                descending=order == "desc",
                min_messages=min_messages,
                bucket=bucket,
                series=series,
            )
        except ValueError as exc:
            raise HTTPException(422, detail=str(exc)) from exc
    out["total"] = len(out["products"])
    out["products"] = out["products"][offset : offset + limit]
    return out


@router.get("/{product_id}/insights")
def one_product_insights(
    *,
    product_id: ProductId,
    since: Timestamp | None = SINCE,
    until: Timestamp | None = UNTIL,
    bucket: Literal["day", "week"] = BUCKET,
    spike: SpikeParams = Depends(),
    svc: Svc,
    _: AgentKey,
) -> dict[str, Any]:
    """One product (ASIN or SKU): issue mix, negative share, stars, languages, a daily or
    weekly series, the spike test (flagged spikes with p-values and examples), and its
    returns with their reasons."""
    cfg = spike.config(svc)
    since, until = _range(svc, cfg, since, until)
    with svc.sessions() as s:
        out = product_insights(s, product_id, since, until, cfg, _issue_types(svc), bucket)
    if out is None:
        raise HTTPException(404, detail=f"no messages about product {product_id!r}")
    return out
