"""Campaigns within the marketplaces' rules (admins), consent and opt-out, orders.

Roles: admins create, run and export campaigns; the shop's integration (service key)
records orders and consent; agents (and admins) record opt-outs — a buyer who asks in
a ticket to stop e-mails is honoured at once. A customer's consent state and
campaign contacts show in ``GET /v1/customers/{id}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from serving import campaigns as camp
from serving.db import transaction
from serving.deps import (
    AdminKey,
    AgentKey,
    ServiceKey,
    Svc,
)
from serving.errors import ApiRoute
from serving.fields import (
    CustomerId,
    Email,
    Marketplace,
    ProductId,
    RequestBody,
    RowId,
    Timestamp,
    bounded_text,
    free_text,
    identifier,
)
from serving.store import Campaign, CampaignRun, ConsentEvent, Order, as_utc

OrderRef = identifier(Order.order_id, min_length=1)
CustomerRef = identifier(Order.customer_id, min_length=1)
ConsentSource = bounded_text(ConsentEvent.source)
ConsentSourceRequired = bounded_text(ConsentEvent.source, min_length=1)
CampaignName = identifier(Campaign.name, min_length=1)
CampaignSubject = bounded_text(Campaign.subject)
CampaignBody = free_text(min_length=1, max_length=50_000)
OrderCustomerName = bounded_text(Order.customer_name)
FallbackText = free_text(min_length=1, max_length=200)
ProductName = bounded_text(Order.product_name)

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], route_class=ApiRoute)
orders_router = APIRouter(prefix="/v1/orders", tags=["campaigns"], route_class=ApiRoute)
customer_router = APIRouter(prefix="/v1/customers", tags=["campaigns"], route_class=ApiRoute)


# -- orders and consent ------------------------------------------------------------------


class OrderIn(RequestBody):
    order_id: OrderRef
    customer_id: CustomerRef
    product_id: ProductId | None = None
    marketplace: Marketplace | None = None
    delivered_at: Timestamp | None = Field(
        None, description="When the order was delivered (review requests count from it)."
    )
    customer_name: OrderCustomerName | None = Field(
        None, description="The buyer's name ({customer_name} in campaigns)."
    )
    product_name: ProductName | None = Field(
        None, description="The product's name ({product} in campaigns)."
    )


class OrdersIn(RequestBody):
    orders: list[OrderIn] = Field(..., min_length=1, max_length=10_000)


class ConsentIn(RequestBody):
    email: Email | None = Field(None, description="Address for the own list.")
    source: ConsentSourceRequired = Field(
        ...,
        description="Where the consent was given (e.g. 'shop checkout checkbox 2026-11').",
    )
    at: Timestamp | None = Field(None, description="When it was given (default: now).")


class OptOutIn(RequestBody):
    source: ConsentSource | None = Field(None, description="e.g. 'ticket 42', 'unsubscribe link'")


class ConsentOut(BaseModel):
    customer_id: str
    consented: bool
    opted_out: bool
    email: str | None
    since: datetime | None
    events: list[dict[str, Any]]


def _consent_out(session, customer_id: str) -> ConsentOut:
    state = camp.consent_states(session, [customer_id]).get(customer_id)
    events = camp.consent_events(session, customer_id)
    return ConsentOut(
        customer_id=customer_id,
        consented=bool(state and state.consented),
        opted_out=bool(state and state.opted_out),
        email=state.email if state else None,
        since=state.since if state else None,
        events=[
            {
                "kind": e.kind,
                "at": e.at,
                "source": e.source,
                "actor": e.actor,
                "actor_key_id": e.actor_key_id,
                "email": e.email,
            }
            for e in events
        ],
    )


@orders_router.post("")
def post_orders(body: OrdersIn, svc: Svc, _: ServiceKey) -> dict[str, int]:
    """Record orders and their delivery dates (upsert by order_id); review requests
    are built from them."""
    ids = [o.order_id for o in body.orders]
    if len(set(ids)) != len(ids):
        raise HTTPException(422, detail="orders: an order_id appears twice in this request")
    rows = [
        {**o.model_dump(), "delivered_at": as_utc(o.delivered_at) if o.delivered_at else None}
        for o in body.orders
    ]
    with transaction(svc.sessions) as s:
        return camp.upsert_orders(s, rows, svc.clock())


@customer_router.post("/{customer_id}/consent", response_model=ConsentOut, status_code=201)
def post_consent(
    customer_id: CustomerId,
    body: ConsentIn,
    svc: Svc,
    who: ServiceKey,
) -> ConsentOut:
    """Record a customer's consent to marketing e-mail on the seller's own list."""
    with transaction(svc.sessions) as s:
        camp.record_consent(
            s,
            customer_id,
            "consent",
            who.actor,
            svc.clock(),
            email=body.email,
            source=body.source,
            at=as_utc(body.at) if body.at else None,
            actor_key_id=who.key_id,
        )
        return _consent_out(s, customer_id)


@customer_router.post("/{customer_id}/opt-out", response_model=ConsentOut, status_code=201)
def post_opt_out(
    *,
    customer_id: CustomerId,
    body: OptOutIn | None = None,
    svc: Svc,
    who: AgentKey,
) -> ConsentOut:
    """Record an opt-out; every later campaign run leaves the customer out."""
    with transaction(svc.sessions) as s:
        camp.record_consent(
            s,
            customer_id,
            "opt_out",
            who.actor,
            svc.clock(),
            source=body.source if body else None,
            actor_key_id=who.key_id,
        )
        return _consent_out(s, customer_id)


# -- campaigns -----------------------------------------------------------------------------


class CampaignIn(RequestBody):
    name: CampaignName
    kind: Literal["marketing", "review_request"]
    channel: Literal["marketplace_messaging", "own_email"]
    audience: dict[str, Any] = Field(
        default_factory=dict,
        description="marketing: min_messages, min_positive_share, no_open_ticket, "
        "no_negative_days; review_request: min_days_after_delivery, "
        "max_days_after_delivery, marketplace, product_ids.",
    )
    subject: CampaignSubject | None = None
    body: CampaignBody
    fallbacks: dict[str, FallbackText] = Field(
        default_factory=dict,
        description="What a placeholder says for a customer without a value, e.g. "
        '{"customer_name": "there"}; without one the message lists it in "missing".',
    )


class CampaignOut(BaseModel):
    id: int
    name: str
    kind: str
    channel: str
    audience: dict[str, Any]
    subject: str | None
    body: str
    fallbacks: dict[str, str]
    created_by: str
    created_by_key_id: int | None = Field(description="The id of the key that created it.")
    created_at: datetime


class RunOut(BaseModel):
    id: int
    campaign_id: int
    actor: str = Field(description="The name of the key that ran it.")
    actor_key_id: int | None = Field(description="The id of the key that ran it.")
    at: datetime
    considered: int
    included: int
    excluded: int
    webhook_status: str | None


class RunDetail(RunOut):
    excluded_by_reason: dict[str, int]
    contacts: list[dict[str, Any]] = Field(
        description="The audit: every customer (or order) considered, in or out and why."
    )


def _campaign(s, campaign_id: int) -> Campaign:
    row = s.get(Campaign, campaign_id)
    if row is None:
        raise HTTPException(404, detail=f"campaign {campaign_id} not found")
    return row


def _run(s, campaign_id: int, run_id: int) -> CampaignRun:
    row = s.get(CampaignRun, run_id)
    if row is None or row.campaign_id != campaign_id:
        raise HTTPException(404, detail=f"run {run_id} of campaign {campaign_id} not found")
    return row


@router.post("", response_model=CampaignOut, status_code=201)
def create_campaign(body: CampaignIn, svc: Svc, who: AdminKey) -> CampaignOut:
    """Create a campaign. Refused (422, citing the rule): marketing on
    marketplace_messaging; a review_request whose audience uses sentiment, ratings,
    issue types, tickets or review history; a marketplace review request outside 5-30
    days after delivery."""
    try:
        audience = camp.validate(
            body.kind, body.channel, body.audience, body.subject, body.body, body.fallbacks
        )
    except (camp.CampaignRefused, camp.CampaignInvalid) as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    with transaction(svc.sessions) as s:
        row = Campaign(
            name=body.name,
            kind=body.kind,
            channel=body.channel,
            audience=audience,
            subject=body.subject,
            body=body.body,
            fallbacks=body.fallbacks or None,
            created_by=who.actor,
            created_by_key_id=who.key_id,
            created_at=svc.clock(),
        )
        s.add(row)
        s.flush()
        return CampaignOut(**camp.campaign_view(row))


@router.get("", response_model=list[CampaignOut])
def list_campaigns(svc: Svc, _: AdminKey) -> list[CampaignOut]:
    with svc.sessions() as s:
        return [CampaignOut(**camp.campaign_view(c)) for c in camp.all_campaigns(s)]


@router.get("/{campaign_id}", response_model=CampaignOut)
def show_campaign(campaign_id: RowId, svc: Svc, _: AdminKey) -> CampaignOut:
    with svc.sessions() as s:
        return CampaignOut(**camp.campaign_view(_campaign(s, campaign_id)))


@router.post(
    "/{campaign_id}/runs",
    response_model=RunDetail,
    status_code=201,
    responses={409: {"description": "Another run of a review request is in progress."}},
)
def run_campaign(campaign_id: RowId, svc: Svc, who: AdminKey) -> RunDetail:
    """Build the audience now: one audit row per customer (or order) considered and
    the rendered messages of those included. Nothing is sent; if
    CARELENS_CAMPAIGN_WEBHOOK_URL is set, the messages are POSTed there as JSON."""
    now = svc.clock()
    try:
        with transaction(svc.sessions) as s:
            campaign = _campaign(s, campaign_id)
            run_row = camp.run(
                s,
                campaign,
                who.actor,
                now,
                svc.settings.marketing_cap_contacts,
                svc.settings.marketing_cap_days,
                actor_key_id=who.key_id,
                public_url=svc.settings.public_url,
                secret=svc.link_secret,
            )
            contacts = camp.run_contacts(s, run_row.id)
            payload = camp.export_messages(campaign, run_row, contacts, "json")
    except (camp.CampaignRefused, camp.CampaignInvalid) as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    except IntegrityError as exc:  # a concurrent run took the same order first
        raise HTTPException(
            409, detail="another run of a review request is in progress; retry"
        ) from exc
    url = svc.settings.campaign_webhook_url
    if url:
        status = camp.post_to_webhook(url, payload)
        with transaction(svc.sessions) as s:
            row = s.get(CampaignRun, run_row.id)
            row.webhook_status = status
            run_row = row
    return _detail(run_row, contacts)


def _detail(run_row: CampaignRun, contacts) -> RunDetail:
    reasons: dict[str, int] = {}
    for c in contacts:
        if not c.included:
            reasons[c.reason] = reasons.get(c.reason, 0) + 1
    return RunDetail(
        **camp.run_view(run_row),
        excluded_by_reason=dict(sorted(reasons.items())),
        contacts=[camp.contact_view(c) for c in contacts],
    )


@router.get("/{campaign_id}/runs", response_model=list[RunOut])
def list_runs(campaign_id: RowId, svc: Svc, _: AdminKey) -> list[RunOut]:
    with svc.sessions() as s:
        _campaign(s, campaign_id)
        return [RunOut(**camp.run_view(r)) for r in camp.runs(s, campaign_id)]


@router.get("/{campaign_id}/runs/{run_id}", response_model=RunDetail)
def show_run(
    campaign_id: RowId,
    run_id: RowId,
    svc: Svc,
    _: AdminKey,
) -> RunDetail:
    """A run with its audit: every customer considered, included or excluded and why."""
    with svc.sessions() as s:
        run_row = _run(s, campaign_id, run_id)
        return _detail(run_row, camp.run_contacts(s, run_id))


@router.get(
    "/{campaign_id}/runs/{run_id}/export",
    response_class=Response,
    responses={
        200: {
            "description": "JSON (the campaign, the run and its messages), or the messages "
            "as CSV with a header row.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["campaign", "run", "messages"],
                        "properties": {
                            "campaign": {"type": "object"},
                            "run": {"type": "object"},
                            "messages": {"type": "array", "items": {"type": "object"}},
                        },
                    }
                },
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
def export_run(
    *,
    campaign_id: RowId,
    run_id: RowId,
    format: Literal["json", "csv"] = Query("json"),
    redact: bool = Query(
        False,
        description="Without personal data (to share or audit, not to send): customer ids "
        "pseudonymised, e-mail addresses and order ids masked, also in subjects and bodies.",
    ),
    svc: Svc,
    _: AdminKey,
) -> Response:
    """The rendered messages of a run, for the seller's mail tool."""
    with svc.sessions() as s:
        campaign = _campaign(s, campaign_id)
        run_row = _run(s, campaign_id, run_id)
        contacts = camp.run_contacts(s, run_id)
        body = camp.export_messages(campaign, run_row, contacts, format, redacted=redact)
    media = "application/json" if format == "json" else "text/csv"
    return Response(body, media_type=f"{media}; charset=utf-8")
