"""Campaigns within the marketplaces' rules: what is refused (with the rule), the
audience builders, consent and opt-out, orders, and runs with an audit row per
customer (or order) considered.

- ``marketing`` is allowed only on ``own_email`` (the seller's own list), only to
  customers with recorded consent who have not opted out since, and under a
  per-customer frequency cap. Its audience is "habitually positive" customers.
- ``review_request`` goes to every order delivered within the window, once per order
  ever, whatever the customer said: its audience may not use sentiment, ratings,
  issue types, tickets or review history.

The service sends nothing: a run stores the audience and the rendered messages, to
export (CSV/JSON) or hand to the seller's mail tool through a webhook.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.fields import MAX_ROW_ID, column_length, identifier_problem
from serving.inbound import detect_language
from serving.links import unwrap, wrap
from serving.redact import pseudonym, redact
from serving.store import (
    CLOSED_STATES,
    Campaign,
    CampaignContact,
    CampaignRun,
    ConsentEvent,
    Message,
    Order,
    ReviewRequest,
    Ticket,
)
from serving.templates import TemplateError, fill, placeholders

log = logging.getLogger(__name__)
KINDS = ("marketing", "review_request")
CHANNELS = ("marketplace_messaging", "own_email")

# -- the rules, quoted in the refusals -------------------------------------------------

RULE_NO_MARKETING_IN_MARKETPLACE_MESSAGING = (
    "a marketing campaign cannot use channel marketplace_messaging: Amazon's Communication "
    "Guidelines permit buyer-seller messages only when they are necessary to complete an "
    "order or to respond to a customer service inquiry, and state that you cannot contact "
    "buyers for marketing or promotional purposes. Send marketing through channel own_email "
    "(your own list, to customers who gave you consent)."
)
RULE_NO_SELECTIVE_REVIEW_REQUESTS = (
    "a review_request campaign cannot choose its audience by {keys}: Amazon's customer "
    "product reviews policy says you may not ask for a positive review or ask for reviews "
    "only from buyers who had a positive experience (requests through the Solicitations "
    "API must not selectively seek positive reviews), and the FTC's guide for marketers "
    "(Soliciting and Paying for Online Reviews) says: don't ask for reviews only from "
    "customers you think will leave positive ones. Ask every eligible order: the audience "
    "may only use {allowed}."
)
RULE_SOLICITATION_WINDOW = (
    "a review_request on marketplace_messaging must be sent 5 to 30 days after delivery "
    "(Amazon Solicitations API: one review request per order, between 5 and 30 days after "
    "the order was delivered); got {lo}-{hi} days"
)

RULE_REVIEW_WORDING = (
    "a review_request may not {what} (found: {found!r}): Amazon's customer product reviews "
    "policy forbids asking for a positive review and offering compensation for a review "
    "(money, gift cards, free or discounted products, refunds or other incentives), and the "
    "FTC's guide for marketers (Soliciting and Paying for Online Reviews) says: don't offer "
    "an incentive in exchange for a review, and don't ask only for positive ones. Ask for an "
    "honest review, and nothing in return."
)
# wording a review request may not use: asking for a good review ...
POSITIVE_ASK_RE = re.compile(
    r"\b(?:positive|good|great|glowing|favou?rable|excellent|nice|5[- ]?star|five[- ]?star)"
    r"\s+(?:review|rating|feedback)s?\b"
    r"|\b(?:5|five)\s+stars?\b"
    r"|\bif\s+you\s+(?:are|were)\s+(?:happy|satisfied|pleased)\b"
    r"|好评|五星|5星|满分",
    re.IGNORECASE,
)
# ... or offering something for it
INCENTIVE_RE = re.compile(
    r"\b(?:free|discount(?:ed)?|coupons?|vouchers?|gift(?:\s*cards?)?|rebates?|cash\s*back|"
    r"rewards?|giveaways?|compensat\w*)\b"
    r"|\bin\s+(?:return|exchange)\s+for\b|\d+\s*%\s*off\b|[$€£]\s*\d+"
    r"|返现|红包|优惠券|礼品|赠品|免费|折扣|奖励",
    re.IGNORECASE,
)


def wording_problem(subject: str | None, body: str) -> str | None:
    """Why a review request's wording breaks the reviews policy, or None."""
    text = f"{subject or ''}\n{body or ''}"
    if m := POSITIVE_ASK_RE.search(text):
        return RULE_REVIEW_WORDING.format(what="ask for a positive review", found=m.group(0))
    if m := INCENTIVE_RE.search(text):
        return RULE_REVIEW_WORDING.format(
            what="offer anything in return for a review", found=m.group(0)
        )
    return None


# audience keys a review request may never use (sentiment, rating, issue type, tickets,
# review or message history): matched as parts of a key's name
SELECTIVE_KEY_RE = re.compile(
    r"sentiment|positive|negative|rating|star|issue|label|review|ticket|message|"
    r"satisf|complain|feedback|nps|score|happy",
    re.IGNORECASE,
)

MARKETING_AUDIENCE: dict[str, Any] = {
    "min_messages": 3,  # at least N messages or reviews from the customer
    "min_positive_share": 0.8,  # share of them labelled positive
    "no_open_ticket": True,  # no ticket still open (open, claimed, waiting on customer)
    "no_negative_days": 90,  # no negative message in the last D days
}
REVIEW_AUDIENCE: dict[str, Any] = {
    "min_days_after_delivery": 5,
    "max_days_after_delivery": 30,
    "marketplace": None,
    "product_ids": None,
}
# the longest window of days an audience may use (a century): date arithmetic on it
# cannot overflow
MAX_DAYS = 36_500

FIELDS = {
    "marketing": {
        "customer_id": "the customer's id",
        "email": "the address recorded with the consent",
        "customer_name": "the buyer's name on their latest order, else the name they last "
        "signed a message with",
        "product": "the product name of the customer's latest order, else its product id",
        "product_id": "the product id of the customer's latest order",
        "unsubscribe_link": "the link that records the customer's opt-out, no login (added "
        "as the last line when the body does not place it)",
    },
    "review_request": {
        "customer_id": "the customer's id",
        "email": "the address recorded with the customer's consent, if any",
        "customer_name": "the buyer's name on the order, else the name they last signed a "
        "message with",
        "order_id": "the order's id",
        "product": "the order's product name, else its product id",
        "product_id": "the order's product id",
        "marketplace": "the order's marketplace",
    },
}
# the last line of a marketing message whose body does not place {unsubscribe_link}
UNSUBSCRIBE_LINE = {
    "en": "To stop receiving these e-mails: {unsubscribe_link}",
    "zh": "退订此类邮件：{unsubscribe_link}",
}

REASONS = {
    "eligible": "included",
    "opted_out": "the customer opted out",
    "no_consent": "no recorded marketing consent",
    "too_few_messages": "fewer messages or reviews than min_messages",
    "low_positive_share": "share of positive messages below min_positive_share",
    "open_ticket": "has a ticket still open",
    "recent_negative": "a negative message within no_negative_days",
    "frequency_cap": "reached the marketing frequency cap",
    "already_requested": "a review was already requested for this order",
}


class CampaignRefused(ValueError):
    """The campaign breaks a marketplace or FTC rule (HTTP 422, the rule in the text)."""


class CampaignInvalid(ValueError):
    """A malformed campaign (HTTP 422, what to fix)."""


# -- validation ------------------------------------------------------------------------


def validate(
    kind: str,
    channel: str,
    audience: dict[str, Any],
    subject: str | None,
    body: str,
    fallbacks: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The audience with defaults filled in; raises ``CampaignRefused`` citing the
    rule or ``CampaignInvalid`` saying what to fix. ``fallbacks``: the text a
    placeholder takes for a customer without a value (e.g. ``{"customer_name":
    "there"}``)."""
    if kind not in KINDS:
        raise CampaignInvalid(f"kind {kind!r}: use one of {', '.join(KINDS)}")
    if channel not in CHANNELS:
        raise CampaignInvalid(f"channel {channel!r}: use one of {', '.join(CHANNELS)}")
    if kind == "marketing" and channel == "marketplace_messaging":
        raise CampaignRefused(RULE_NO_MARKETING_IN_MARKETPLACE_MESSAGING)
    audience = dict(audience or {})
    if kind == "review_request":
        selective = sorted(k for k in audience if SELECTIVE_KEY_RE.search(k))
        if selective:
            raise CampaignRefused(
                RULE_NO_SELECTIVE_REVIEW_REQUESTS.format(
                    keys=", ".join(selective), allowed=", ".join(REVIEW_AUDIENCE)
                )
            )
        out = _with_defaults(audience, REVIEW_AUDIENCE, kind)
        lo, hi = out["min_days_after_delivery"], out["max_days_after_delivery"]
        for key in ("min_days_after_delivery", "max_days_after_delivery"):
            if not _whole(out[key], 0, MAX_DAYS):
                raise CampaignInvalid(
                    f"audience.{key}: give a whole number of days, 0 to {MAX_DAYS}"
                )
        if lo > hi:
            raise CampaignInvalid(
                "audience: min_days_after_delivery is after max_days_after_delivery"
            )
        if channel == "marketplace_messaging" and (lo < 5 or hi > 30):
            raise CampaignRefused(RULE_SOLICITATION_WINDOW.format(lo=lo, hi=hi))
        if out["marketplace"] is not None and not isinstance(out["marketplace"], str):
            raise CampaignInvalid("audience.marketplace: give a marketplace name")
        _check_identifier("audience.marketplace", out["marketplace"], Order.marketplace)
        ids = out["product_ids"]
        if ids is not None and (
            not isinstance(ids, list) or not all(isinstance(p, str) for p in ids)
        ):
            raise CampaignInvalid("audience.product_ids: give a list of product ids")
        for i, product_id in enumerate(ids or []):
            _check_identifier(f"audience.product_ids[{i}]", product_id, Order.product_id)
    else:
        out = _with_defaults(audience, MARKETING_AUDIENCE, kind)
        n, share, days = out["min_messages"], out["min_positive_share"], out["no_negative_days"]
        if not _whole(n, 1, MAX_ROW_ID):
            raise CampaignInvalid(f"audience.min_messages: give a whole number, 1 to {MAX_ROW_ID}")
        if not isinstance(share, int | float) or isinstance(share, bool) or not 0 <= share <= 1:
            raise CampaignInvalid("audience.min_positive_share: give a share from 0 to 1")
        if not _whole(days, 0, MAX_DAYS):
            raise CampaignInvalid(
                f"audience.no_negative_days: give a whole number of days, 0 to {MAX_DAYS}"
            )
        if not isinstance(out["no_open_ticket"], bool):
            raise CampaignInvalid("audience.no_open_ticket: give true or false")
    if kind == "review_request" and (problem := wording_problem(subject, body)):
        raise CampaignRefused(problem)
    if channel == "own_email" and not (subject or "").strip():
        raise CampaignInvalid("subject: an own_email campaign needs a subject line")
    if not (body or "").strip():
        raise CampaignInvalid("body: give the message text")
    try:
        placeholders(subject or "", FIELDS[kind], where="subject")
        placeholders(body, FIELDS[kind], where="body")
    except TemplateError as exc:
        raise CampaignInvalid(f"{exc} for a {kind} campaign") from exc
    for name, text in (fallbacks or {}).items():
        if name not in FIELDS[kind] or name == "unsubscribe_link":
            known = ", ".join(f for f in FIELDS[kind] if f != "unsubscribe_link")
            raise CampaignInvalid(
                f"fallbacks: {name!r} is not a placeholder a fallback can stand in for "
                f"(placeholders: {known})"
            )
        if not isinstance(text, str) or not text.strip() or len(text) > 200:
            raise CampaignInvalid(f"fallbacks.{name}: give a text of 1 to 200 characters")
    return out


def _whole(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _check_identifier(where: str, value: str | None, column) -> None:
    """An audience value matched against a store column: what the column can hold."""
    problem = None if value is None else identifier_problem(value, column_length(column))
    if problem:
        raise CampaignInvalid(f"{where} {problem}")


def _with_defaults(audience: dict[str, Any], defaults: dict[str, Any], kind: str):
    unknown = [k for k in audience if k not in defaults]
    if unknown:
        raise CampaignInvalid(
            f"audience: unknown key {unknown[0]!r} for a {kind} campaign "
            f"(keys: {', '.join(defaults)})"
        )
    return {**defaults, **audience}


# -- consent and orders --------------------------------------------------------------------


@dataclass
class ConsentState:
    customer_id: str
    consented: bool
    opted_out: bool
    email: str | None
    since: datetime | None


def consent_states(session: Session, customer_ids: list[str] | None = None):
    """Customer -> the state in force: the latest event wins (an opt-out after a
    consent withdraws it; a consent recorded after an opt-out is a new consent)."""
    q = select(ConsentEvent).order_by(ConsentEvent.at, ConsentEvent.id)
    if customer_ids is not None:
        q = q.where(ConsentEvent.customer_id.in_(customer_ids))
    states: dict[str, ConsentState] = {}
    for e in session.scalars(q):
        prev = states.get(e.customer_id)
        email = e.email or (prev.email if prev else None)
        states[e.customer_id] = ConsentState(
            customer_id=e.customer_id,
            consented=e.kind == "consent",
            opted_out=e.kind == "opt_out",
            email=email,
            since=e.at,
        )
    return states


def record_consent(
    session: Session,
    customer_id: str,
    kind: str,
    actor: str,
    now: datetime,
    email: str | None = None,
    source: str | None = None,
    at: datetime | None = None,
    actor_key_id: int | None = None,
) -> ConsentEvent:
    assert kind in ("consent", "opt_out")
    row = ConsentEvent(
        customer_id=customer_id,
        kind=kind,
        email=email,
        source=source,
        actor=actor,
        actor_key_id=actor_key_id,
        # an opt-out is in force from the moment it is recorded, never back-dated
        at=now if kind == "opt_out" else min(at or now, now),
    )
    session.add(row)
    session.flush()
    return row


def upsert_orders(session: Session, orders: list[dict[str, Any]], now: datetime) -> dict:
    ids = [o["order_id"] for o in orders]
    existing = {
        o.order_id: o for o in session.scalars(select(Order).where(Order.order_id.in_(ids)))
    }
    created = updated = 0
    for o in orders:
        row = existing.get(o["order_id"])
        if row is None:
            row = Order(order_id=o["order_id"], created_at=now, customer_id=o["customer_id"])
            session.add(row)
            existing[o["order_id"]] = row
            created += 1
        else:
            updated += 1
        row.customer_id = o["customer_id"]
        for key in ("product_id", "marketplace", "delivered_at", "customer_name", "product_name"):
            if o.get(key) is not None:
                setattr(row, key, o[key])
        row.updated_at = now
    session.flush()
    return {"created": created, "updated": updated}


# -- runs ------------------------------------------------------------------------------------


@dataclass
class Decision:
    customer_id: str
    included: bool
    reason: str
    detail: str
    order_id: str | None = None
    message: dict[str, Any] | None = None


def _sentiment(labels: dict[str, Any] | None) -> str | None:
    values = (labels or {}).get("sentiment") or []
    return values[0] if values else None


def marketing_audience(
    session: Session,
    campaign: Campaign,
    now: datetime,
    cap_contacts: int,
    cap_days: int,
    public_url: str = "http://127.0.0.1:8000",
    secret: bytes = b"",
) -> list[Decision]:
    """Every customer the store knows (from messages or consent records), in or out
    with the first reason that keeps them out. Checks in order: opt-out, consent,
    message count, positive share, open ticket, recent negative, frequency cap. Each
    message carries the customer's unsubscribe link (``public_url``, signed with
    ``secret``)."""
    a = campaign.audience
    rows = session.execute(
        select(Message.customer_id, Message.received_at, Ticket.labels, Ticket.state)
        .join(Ticket, Ticket.message_id == Message.id)
        .where(Message.customer_id.is_not(None))
    ).all()
    history: dict[str, list[tuple[datetime, str | None, str]]] = {}
    for customer, at, labels, state in rows:
        history.setdefault(customer, []).append((at, _sentiment(labels), state))
    consent = consent_states(session)
    since = now - timedelta(days=cap_days)
    contacts = dict(
        session.execute(
            select(CampaignContact.customer_id, func.count(CampaignContact.id))
            .where(
                CampaignContact.kind == "marketing",
                CampaignContact.included.is_(True),
                CampaignContact.at > since,
            )
            .group_by(CampaignContact.customer_id)
        ).all()
    )
    recent_cut = now - timedelta(days=a["no_negative_days"])
    out = []
    for customer in sorted(set(history) | set(consent)):
        msgs = history.get(customer, [])
        c = consent.get(customer)
        n = len(msgs)
        positive = sum(1 for _, s, _ in msgs if s == "positive")
        share = positive / n if n else 0.0
        open_tickets = sum(1 for _, _, st in msgs if st not in CLOSED_STATES)
        recent_neg = [at for at, s, _ in msgs if s == "negative" and at >= recent_cut]
        sent = contacts.get(customer, 0)

        def no(reason: str, detail: str, customer=customer) -> Decision:
            return Decision(customer, False, reason, detail)

        if c is not None and c.opted_out:
            d = no("opted_out", f"opted out at {c.since.isoformat()}")
        elif c is None or not c.consented:
            d = no("no_consent", "no recorded marketing consent")
        elif n < a["min_messages"]:
            d = no(
                "too_few_messages", f"{n} messages or reviews (min_messages {a['min_messages']})"
            )
        elif share < a["min_positive_share"]:
            d = no(
                "low_positive_share",
                f"positive share {share:.2f} ({positive}/{n}) below {a['min_positive_share']}",
            )
        elif a["no_open_ticket"] and open_tickets:
            d = no("open_ticket", f"{open_tickets} open ticket(s)")
        elif recent_neg:
            d = no(
                "recent_negative",
                f"negative message at {max(recent_neg).isoformat()} "
                f"(within {a['no_negative_days']} days)",
            )
        elif sent >= cap_contacts:
            d = no(
                "frequency_cap",
                f"{sent} marketing contact(s) in the last {cap_days} days (cap {cap_contacts})",
            )
        else:
            d = Decision(
                customer,
                True,
                "eligible",
                f"{n} messages, positive share {share:.2f}",
            )
            d.message = _render(
                campaign,
                {
                    "customer_id": customer,
                    "email": c.email,
                    **customer_facts(session, customer),
                    "unsubscribe_link": unsubscribe_url(public_url, secret, customer),
                },
            )
        out.append(d)
    return out


def customer_facts(session: Session, customer_id: str) -> dict[str, str | None]:
    """A customer's name and product for a marketing message: their latest order's
    buyer and product names (else the name they last signed a message with, and the
    order's product id)."""
    order = session.scalars(
        select(Order)
        .where(Order.customer_id == customer_id)
        .order_by(Order.delivered_at.desc().nulls_last(), Order.id.desc())
        .limit(1)
    ).first()
    name = order.customer_name if order is not None else None
    return {
        "customer_name": name or signed_name(session, customer_id),
        "product": (order.product_name or order.product_id) if order is not None else None,
        "product_id": order.product_id if order is not None else None,
    }


def signed_name(session: Session, customer_id: str) -> str | None:
    """The name a customer last signed a message with."""
    return session.scalars(
        select(Message.customer_name)
        .where(Message.customer_id == customer_id, Message.customer_name.is_not(None))
        .order_by(Message.received_at.desc(), Message.id.desc())
        .limit(1)
    ).first()


# -- the unsubscribe link ----------------------------------------------------------------


def unsubscribe_url(public_url: str, secret: bytes, customer_id: str) -> str:
    """``{public_url}/unsubscribe/{token}``: the customer id, signed; opening it and
    confirming (or a mail client's one-click POST, RFC 8058) records the opt-out."""
    return f"{public_url.rstrip('/')}/unsubscribe/{wrap(secret, 'unsubscribe', customer_id)}"


def customer_of_unsubscribe(secret: bytes, token: str) -> str | None:
    """The customer an unsubscribe token names, or None when it is not one of ours."""
    return unwrap(secret, "unsubscribe", token, max_chars=400)


def review_request_audience(session: Session, campaign: Campaign, now: datetime):
    """Every order delivered ``min_days``-``max_days`` days ago (optionally one
    marketplace / some products): in, unless its review was already requested or the
    customer opted out. Nothing about what the customer said is looked at."""
    a = campaign.audience
    q = (
        select(Order)
        .where(
            Order.delivered_at.is_not(None),
            Order.delivered_at <= now - timedelta(days=a["min_days_after_delivery"]),
            Order.delivered_at >= now - timedelta(days=a["max_days_after_delivery"]),
        )
        .order_by(Order.delivered_at, Order.id)
    )
    if a.get("marketplace"):
        q = q.where(Order.marketplace == a["marketplace"])
    if a.get("product_ids"):
        q = q.where(Order.product_id.in_(a["product_ids"]))
    orders = list(session.scalars(q))
    requested = set(
        session.scalars(
            select(ReviewRequest.order_id).where(
                ReviewRequest.order_id.in_([o.order_id for o in orders])
            )
        )
    )
    consent = consent_states(session, sorted({o.customer_id for o in orders}))
    out = []
    for o in orders:
        c = consent.get(o.customer_id)
        days = (now - o.delivered_at).days
        if o.order_id in requested:
            d = Decision(o.customer_id, False, "already_requested", "one request per order")
        elif c is not None and c.opted_out:
            d = Decision(o.customer_id, False, "opted_out", f"opted out at {c.since.isoformat()}")
        else:
            d = Decision(o.customer_id, True, "eligible", f"delivered {days} days ago")
            d.message = _render(
                campaign,
                {
                    "customer_id": o.customer_id,
                    "email": c.email if c else None,
                    "customer_name": o.customer_name or signed_name(session, o.customer_id),
                    "order_id": o.order_id,
                    "product": o.product_name or o.product_id,
                    "product_id": o.product_id,
                    "marketplace": o.marketplace,
                },
            )
        d.order_id = o.order_id
        out.append(d)
    return out


def _render(campaign: Campaign, values: dict[str, Any]) -> dict[str, Any]:
    """The customer's message: placeholders filled (a missing value takes the campaign's
    fallback); a marketing message ends with its unsubscribe link unless the body
    places it, and carries the List-Unsubscribe headers for the mail tool."""
    name = values.get("customer_name")  # the customer's own, not a fallback
    values = {**(campaign.fallbacks or {}), **_present(values)}
    body_text = campaign.body
    link = values.get("unsubscribe_link")
    if link:
        lang = "zh" if detect_language(body_text) == "zh" else "en"
        link = values["unsubscribe_link"] = f"{link}?lang={lang}"  # its page's language
        if "unsubscribe_link" not in placeholders(body_text, FIELDS[campaign.kind]):
            body_text = body_text.rstrip() + "\n\n" + UNSUBSCRIBE_LINE[lang]
    subject, _ = fill(campaign.subject or "", values)
    body, missing = fill(body_text, values)
    message = {
        "channel": campaign.channel,
        "customer_id": values["customer_id"],
        "email": values.get("email"),
        "order_id": values.get("order_id"),
        "customer_name": name or None,
        "subject": subject or None,
        "body": body,
        "missing": missing,
    }
    if link:
        message["unsubscribe_url"] = link
        message["headers"] = {
            "List-Unsubscribe": f"<{link}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
    return message


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v}


def run(
    session: Session,
    campaign: Campaign,
    actor: str,
    now: datetime,
    cap_contacts: int,
    cap_days: int,
    actor_key_id: int | None = None,
    public_url: str = "http://127.0.0.1:8000",
    secret: bytes = b"",
) -> CampaignRun:
    """Build the audience, store the run, one audit row per customer/order considered
    and (for review requests) the one-per-order marks; no commit. Marketing messages
    carry unsubscribe links under ``public_url``, signed with ``secret``."""
    # re-check the stored campaign: the rules apply to every run, not only at creation
    validate(
        campaign.kind,
        campaign.channel,
        campaign.audience,
        campaign.subject,
        campaign.body,
        campaign.fallbacks,
    )
    if campaign.kind == "marketing":
        decisions = marketing_audience(
            session, campaign, now, cap_contacts, cap_days, public_url, secret
        )
    else:
        decisions = review_request_audience(session, campaign, now)
    run_row = CampaignRun(
        campaign_id=campaign.id,
        actor=actor,
        actor_key_id=actor_key_id,
        at=now,
        considered=len(decisions),
        included=sum(d.included for d in decisions),
    )
    session.add(run_row)
    session.flush()
    for d in decisions:
        session.add(
            CampaignContact(
                run_id=run_row.id,
                campaign_id=campaign.id,
                kind=campaign.kind,
                customer_id=d.customer_id,
                order_id=d.order_id,
                included=d.included,
                reason=d.reason,
                detail=d.detail,
                message=d.message,
                at=now,
            )
        )
        if d.included and campaign.kind == "review_request":
            session.add(
                ReviewRequest(
                    order_id=d.order_id, run_id=run_row.id, customer_id=d.customer_id, at=now
                )
            )
    session.flush()
    return run_row


# -- views and export ----------------------------------------------------------------------


def campaign_view(c: Campaign) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "kind": c.kind,
        "channel": c.channel,
        "audience": c.audience,
        "subject": c.subject,
        "body": c.body,
        "fallbacks": c.fallbacks or {},
        "created_by": c.created_by,
        "created_by_key_id": c.created_by_key_id,
        "created_at": c.created_at,
    }


def run_view(r: CampaignRun) -> dict[str, Any]:
    return {
        "id": r.id,
        "campaign_id": r.campaign_id,
        "actor": r.actor,
        "actor_key_id": r.actor_key_id,
        "at": r.at,
        "considered": r.considered,
        "included": r.included,
        "excluded": r.considered - r.included,
        "webhook_status": r.webhook_status,
    }


def contact_view(c: CampaignContact) -> dict[str, Any]:
    return {
        "customer_id": c.customer_id,
        "order_id": c.order_id,
        "included": c.included,
        "reason": c.reason,
        "detail": c.detail,
        "message": c.message,
    }


def consent_events(session: Session, customer_id: str) -> list[ConsentEvent]:
    """A customer's consent and opt-out events in time order."""
    return list(
        session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.customer_id == customer_id)
            .order_by(ConsentEvent.at, ConsentEvent.id)
        )
    )


def all_campaigns(session: Session) -> list[Campaign]:
    return list(session.scalars(select(Campaign).order_by(Campaign.id)))


def runs(session: Session, campaign_id: int) -> list[CampaignRun]:
    return list(
        session.scalars(
            select(CampaignRun)
            .where(CampaignRun.campaign_id == campaign_id)
            .order_by(CampaignRun.id)
        )
    )


def post_to_webhook(url: str, payload: str) -> str:
    """POST a run's messages (JSON) to the seller's mail tool; the outcome as the run
    records it (``HTTP 200``, or ``failed: ...``). A failure is logged, never raised:
    the run stands and its messages can still be exported."""
    import httpx

    try:
        r = httpx.post(
            url, content=payload, headers={"Content-Type": "application/json"}, timeout=10.0
        )
    except httpx.HTTPError as exc:
        log.warning("campaign webhook %s failed: %s", url, exc)
        return f"failed: {type(exc).__name__}: {exc}"
    return f"HTTP {r.status_code}"


def run_contacts(session: Session, run_id: int) -> list[CampaignContact]:
    return list(
        session.scalars(
            select(CampaignContact)
            .where(CampaignContact.run_id == run_id)
            .order_by(CampaignContact.id)
        )
    )


_CUSTOMER_MARK = "\x00customer\x00"  # stands in for the alias while ``redact`` runs


def redact_message(message: dict[str, Any]) -> dict[str, Any]:
    """A rendered message with the customer unnamed: customer id pseudonymised, e-mail
    address, name, order id and unsubscribe link masked, also where the template wrote
    them into the subject or body, and anything else ``serving.redact`` recognises
    there masked too."""
    out = dict(message)
    customer = message.get("customer_id")
    alias = pseudonym(customer, "customer")
    email, order_id = message.get("email"), message.get("order_id")
    link, name = message.get("unsubscribe_url"), message.get("customer_name")
    for key in ("subject", "body"):
        text = out.get(key)
        if not text:
            continue
        if link:  # it carries the customer id
            text = text.replace(link, "<unsubscribe-link>")
        if email:
            text = text.replace(email, "<email>")
        if order_id:
            text = text.replace(order_id, "<order-id>")
        if name:
            text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", "<name>", text)
        if customer:  # as a whole word only ("fan" is not in "fantastic")
            text = re.sub(rf"(?<!\w){re.escape(customer)}(?!\w)", _CUSTOMER_MARK, text)
        out[key] = redact(text).replace(_CUSTOMER_MARK, alias or "")
    out["customer_id"] = alias
    if link:
        out["unsubscribe_url"] = "<unsubscribe-link>"
        out["headers"] = {**out["headers"], "List-Unsubscribe": "<unsubscribe-link>"}
    if name:
        out["customer_name"] = "<name>"
    if email:
        out["email"] = "<email>"
    if order_id:
        out["order_id"] = "<order-id>"
    return out


def export_messages(
    campaign: Campaign,
    run_row: CampaignRun,
    contacts: list[CampaignContact],
    fmt: str,
    redacted: bool = False,
) -> str:
    """The rendered messages of the included customers, as JSON or CSV.
    ``redacted``: without personal data (``redact_message``), to share or audit."""
    messages = [c.message for c in contacts if c.included and c.message]
    if redacted:
        messages = [redact_message(m) for m in messages]
    if fmt == "json":
        return json.dumps(
            {
                "campaign": campaign_view(campaign),
                "run": run_view(run_row),
                "messages": messages,
            },
            ensure_ascii=False,
            default=str,
        )
    buf = io.StringIO()
    fields = ["customer_id", "email", "order_id", "channel", "subject", "body", "unsubscribe_url"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for m in messages:
        writer.writerow(m)
    return buf.getvalue()
