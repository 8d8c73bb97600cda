"""Quality feedback per product: issue mix, sentiment, stars, languages, a time series
and a spike detector, over reviews and tickets together.

What is counted: every stored message with a product id received in [since, until)
(reviews and the other channels alike), once, with its effective labels: the ticket's
labels (the model's, overridden by the critical rules, then by an agent's correction),
or the model's prediction where a message has no ticket. Issue types are multi-label,
so a message with two issues counts for both and the shares (count / messages) need
not sum to 1. Negative share: messages whose sentiment is ``negative``. Mean rating:
over messages with stars (reviews).

The spike test (one-sided, per product and issue type), anchored at ``until``:

- recent window R = [until - window_days, until), baseline B = [R start - baseline_days,
  R start);
- x = the product's messages in R with the issue, n = its messages in R;
- the baseline share is smoothed towards the shop-wide share (all products) so that a
  product with few or no baseline messages has a sensible expectation:
  q  = (K_all + 0.5) / (N_all + 1)              (all products in B, Jeffreys prior)
  p0 = (k_B + w * q) / (n_B + w)                (w = prior_weight pseudo-messages)
- only issue types with x >= min_count are tested; the p-value is the exact binomial
  tail P(X >= x | X ~ Binomial(n, p0)) (``scipy.stats.binomtest``, alternative
  "greater");
- Bonferroni over the issue types tested for that product: p_adjusted = min(1, p * m);
  a spike is flagged when p_adjusted < alpha and x / n > p0.
A flagged spike carries its counts, shares, p-values and the newest example messages.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scipy.stats import binomtest
from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.store import Message, Prediction, Ticket

SORT_KEYS = ("messages", "negative_share", "mean_rating", "spikes", "product_id")


@dataclass(frozen=True)
class SpikeConfig:
    window_days: int = 7
    baseline_days: int = 28
    min_count: int = 5
    alpha: float = 0.01
    prior_weight: float = 10.0
    examples: int = 3

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> SpikeConfig:
        values = {
            "window_days": settings.spike_window_days,
            "baseline_days": settings.spike_baseline_days,
            "min_count": settings.spike_min_count,
            "alpha": settings.spike_alpha,
            "prior_weight": settings.spike_prior_weight,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class Item:
    """One message as the insights read it."""

    message_id: int
    ticket_id: int | None
    product_id: str
    channel: str
    lang: str
    rating: int | None
    received_at: datetime
    issues: list[str]
    sentiment: str | None


def load_items(
    session: Session, since: datetime, until: datetime, product_id: str | None = None
) -> list[Item]:
    """Messages with a product id received in [since, until), with effective labels."""
    q = (
        select(
            Message.id,
            Ticket.id,
            Message.product_id,
            Message.channel,
            Message.lang,
            Message.rating,
            Message.received_at,
            # only the parts read (small JSON values decode faster than whole labels)
            Ticket.labels["issue_type"],
            Ticket.labels[("sentiment", 0)].as_string(),
            Prediction.labels["issue_type"],
            Prediction.labels[("sentiment", 0)].as_string(),
        )
        .outerjoin(Ticket, Ticket.message_id == Message.id)
        .outerjoin(Prediction, Prediction.message_id == Message.id)
        .where(
            Message.product_id.is_not(None),
            Message.received_at >= since,
            Message.received_at < until,
        )
        .order_by(Message.received_at, Message.id)
    )
    if product_id is not None:
        q = q.where(Message.product_id == product_id)
    out = []
    for (
        mid,
        tid,
        pid,
        channel,
        lang,
        rating,
        received,
        t_iss,
        t_sent,
        p_iss,
        p_sent,
    ) in session.execute(q):
        issues, sentiment = (t_iss, t_sent) if tid is not None else (p_iss, p_sent)
        out.append(
            Item(
                message_id=mid,
                ticket_id=tid,
                product_id=pid,
                channel=channel,
                lang=lang,
                rating=rating,
                received_at=received,
                issues=list(issues or []),
                sentiment=sentiment,
            )
        )
    return out


def issue_order(items: list[Item], known: list[str] | None) -> list[str]:
    """The taxonomy's issue types (when known), then any other label seen, by name."""
    order = list(known or [])
    seen = sorted({i for it in items for i in it.issues} - set(order))
    return order + seen


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def bucket_start(t: datetime, bucket: str, until: datetime) -> datetime:
    """Days: calendar days (UTC midnight). Weeks: 7-day spans ending at ``until``, so the
    last week is the spike test's recent window."""
    if bucket == "week":
        span = timedelta(days=7)
        return until - span * ((until - t) // span + 1)
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def summarise(
    items: list[Item],
    issue_types: list[str],
    since: datetime,
    until: datetime,
    bucket: str = "week",
    series: bool = True,
) -> dict[str, Any]:
    """Counts and shares of one product's (or any set of) messages."""
    n = len(items)
    counts = Counter(i for it in items for i in it.issues)
    negative = sum(it.sentiment == "negative" for it in items)
    stars = [it.rating for it in items if it.rating is not None]
    out: dict[str, Any] = {
        "messages": n,
        "reviews": sum(it.channel == "review" for it in items),
        "tickets": sum(it.channel != "review" for it in items),
        "issues": [
            {
                "issue_type": k,
                "count": counts.get(k, 0),
                "share": _round(counts[k] / n) if n else None,
            }
            for k in issue_types
        ],
        "no_issue": sum(not it.issues for it in items),
        "negative": negative,
        "negative_share": _round(negative / n) if n else None,
        "mean_rating": _round(sum(stars) / len(stars), 3) if stars else None,
        "ratings": {str(s): stars.count(s) for s in range(1, 6)},
        "languages": dict(sorted(Counter(it.lang for it in items).items())),
    }
    if series:
        out["bucket"] = bucket
        out["series"] = time_series(items, since, until, bucket)
    return out


def time_series(
    items: list[Item], since: datetime, until: datetime, bucket: str
) -> list[dict[str, Any]]:
    """One row per day or week from since to until, empty ones included; ``start`` and
    ``end`` are clipped to [since, until)."""
    step = timedelta(days=7 if bucket == "week" else 1)
    rows: dict[datetime, dict[str, Any]] = {}
    start = bucket_start(since, bucket, until)
    while start < until:
        rows[start] = {
            "start": max(start, since),
            "end": min(start + step, until),
            "messages": 0,
            "negative": 0,
            "issues": {},
        }
        start += step
    for it in items:
        row = rows[bucket_start(it.received_at, bucket, until)]
        row["messages"] += 1
        row["negative"] += it.sentiment == "negative"
        for i in it.issues:
            row["issues"][i] = row["issues"].get(i, 0) + 1
    return list(rows.values())


def detect_spikes(
    items: list[Item], until: datetime, cfg: SpikeConfig, issue_types: list[str]
) -> dict[str, dict[str, Any]]:
    """Per product: the spike test of every issue type (see the module docstring).

    ``items`` must cover [until - window - baseline, until) for all products (the
    shop-wide share needs them). Returns {product: {"tested": [...], "spikes": [...]}}
    where each test row has the counts, shares and p-values (examples not attached)."""
    recent_start = until - timedelta(days=cfg.window_days)
    base_start = recent_start - timedelta(days=cfg.baseline_days)
    base_all = [it for it in items if base_start <= it.received_at < recent_start]
    n_all = len(base_all)
    k_all = Counter(i for it in base_all for i in it.issues)
    by_product: dict[str, tuple[list[Item], list[Item]]] = {}
    for it in items:
        if not base_start <= it.received_at < until:
            continue
        recent, base = by_product.setdefault(it.product_id, ([], []))
        (recent if it.received_at >= recent_start else base).append(it)
    out: dict[str, dict[str, Any]] = {}
    for pid, (recent, base) in sorted(by_product.items()):
        n, nb = len(recent), len(base)
        x_counts = Counter(i for it in recent for i in it.issues)
        kb_counts = Counter(i for it in base for i in it.issues)
        tested = []
        for issue in issue_order(recent, issue_types):
            x = x_counts.get(issue, 0)
            if x < cfg.min_count:
                continue
            q = (k_all.get(issue, 0) + 0.5) / (n_all + 1)
            kb = kb_counts.get(issue, 0)
            p0 = (kb + cfg.prior_weight * q) / (nb + cfg.prior_weight)
            p = float(binomtest(x, n, p0, alternative="greater").pvalue)
            tested.append(
                {
                    "product_id": pid,
                    "issue_type": issue,
                    "window_start": recent_start,
                    "window_end": until,
                    "baseline_start": base_start,
                    "count": x,
                    "messages": n,
                    "share": _round(x / n),
                    "baseline_count": kb,
                    "baseline_messages": nb,
                    "baseline_share": _round(kb / nb) if nb else None,
                    "shop_share": _round(q),
                    "expected_share": _round(p0),
                    "ratio": _round((x / n) / p0, 3),
                    "p_value": p,
                }
            )
        for row in tested:
            row["tests"] = len(tested)
            row["p_adjusted"] = min(1.0, row["p_value"] * len(tested))
            row["alpha"] = cfg.alpha
            row["flagged"] = row["p_adjusted"] < cfg.alpha and row["share"] > row["expected_share"]
        spikes = sorted((r for r in tested if r["flagged"]), key=lambda r: r["p_value"])
        out[pid] = {"tested": tested, "spikes": spikes}
    return out


def attach_examples(
    session: Session, spikes: list[dict[str, Any]], items: list[Item], limit: int
) -> None:
    """The newest ``limit`` messages of each spike's product and issue in its window."""
    for spike in spikes:
        ids = [
            it.message_id
            for it in sorted(items, key=lambda it: (it.received_at, it.message_id), reverse=True)
            if it.product_id == spike["product_id"]
            and spike["issue_type"] in it.issues
            and spike["window_start"] <= it.received_at < spike["window_end"]
        ][:limit]
        rows = (
            {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(ids)))}
            if ids
            else {}
        )
        spike["examples"] = [
            {
                "message_id": m.id,
                "channel": m.channel,
                "lang": m.lang,
                "rating": m.rating,
                "received_at": m.received_at,
                "subject": m.subject,
                "text": m.text,
            }
            for m in (rows[i] for i in ids)
        ]


def product_insights(
    session: Session,
    product_id: str,
    since: datetime,
    until: datetime,
    cfg: SpikeConfig,
    issue_types: list[str] | None = None,
    bucket: str = "week",
) -> dict[str, Any] | None:
    """One product's insights; None when the store has no message about it at all."""
    if session.scalar(select(Message.id).where(Message.product_id == product_id).limit(1)) is None:
        return None
    items = load_items(session, since, until, product_id)
    window_items = spike_items(session, until, cfg)
    order = issue_order(items + window_items, issue_types)
    result = detect_spikes(window_items, until, cfg, order).get(
        product_id, {"tested": [], "spikes": []}
    )
    attach_examples(session, result["spikes"], window_items, cfg.examples)
    return {
        "product_id": product_id,
        "since": since,
        "until": until,
        **summarise(items, order, since, until, bucket),
        "spike_test": _test_params(cfg),
        "spikes": result["spikes"],
        "tested": [{k: r[k] for k in ("issue_type", "count", "p_value")} for r in result["tested"]],
        "returns": product_returns(session, product_id, since, until),
    }


def product_returns(
    session: Session, product_id: str, since: datetime, until: datetime
) -> dict[str, Any]:
    """The product's returns requested in the period: how many, how many still open,
    and their reasons (the tickets' issue types)."""
    from serving.returns import OPEN_STATES
    from serving.store import ReturnRequest

    rows = list(
        session.scalars(
            select(ReturnRequest).where(
                ReturnRequest.product_id == product_id,
                ReturnRequest.created_at >= since,
                ReturnRequest.created_at <= until,
            )
        )
    )
    reasons: dict[str, int] = {}
    for r in rows:
        for reason in r.reasons or ["(none)"]:
            reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "requested": len(rows),
        "open": sum(r.state in OPEN_STATES for r in rows),
        "refunded": sum(r.state == "refunded" for r in rows),
        "reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def all_products(
    session: Session,
    since: datetime,
    until: datetime,
    cfg: SpikeConfig,
    issue_types: list[str] | None = None,
    sort: str = "messages",
    descending: bool = True,
    min_messages: int = 1,
    bucket: str = "week",
    series: bool = False,
) -> dict[str, Any]:
    """Every product with at least ``min_messages`` in the range, sorted by ``sort``:
    one of SORT_KEYS or an issue type (its share)."""
    items = load_items(session, since, until)
    window_start = until - timedelta(days=cfg.window_days + cfg.baseline_days)
    if since <= window_start:  # the spike test reads a part of what is loaded
        window_items = [it for it in items if it.received_at >= window_start]
    else:
        window_items = spike_items(session, until, cfg)
    order = issue_order(items + window_items, issue_types)
    if sort not in SORT_KEYS and sort not in order:
        raise ValueError(
            f"sort: {sort!r} is not one of {', '.join(SORT_KEYS)} or an issue type "
            f"({', '.join(order)})"
        )
    spikes = detect_spikes(window_items, until, cfg, order)
    grouped: dict[str, list[Item]] = {}
    for it in items:
        grouped.setdefault(it.product_id, []).append(it)
    rows = []
    for pid, mine in grouped.items():
        if len(mine) < min_messages:
            continue
        found = spikes.get(pid, {"spikes": []})["spikes"]
        attach_examples(session, found, window_items, cfg.examples)
        rows.append(
            {
                "product_id": pid,
                **summarise(mine, order, since, until, bucket, series),
                "spikes": found,
            }
        )

    def key(row: dict[str, Any]):
        if sort == "product_id":
            return (False, row["product_id"])
        if sort == "spikes":
            best = min((s["p_value"] for s in row["spikes"]), default=1.0)
            return (False, (len(row["spikes"]), -best))
        if sort in SORT_KEYS:
            value = row[sort]
        else:
            value = next(i["share"] for i in row["issues"] if i["issue_type"] == sort)
        return (value is None, value if value is not None else 0)

    rows.sort(key=lambda r: r["product_id"])
    present = [r for r in rows if not key(r)[0]]
    missing = [r for r in rows if key(r)[0]]
    present.sort(key=lambda r: key(r)[1], reverse=descending)
    return {
        "since": since,
        "until": until,
        "issue_types": order,
        "spike_test": _test_params(cfg),
        "products": present + missing,
    }


def spike_items(session: Session, until: datetime, cfg: SpikeConfig) -> list[Item]:
    """The messages the spike test of windows ending at ``until`` reads."""
    start = until - timedelta(days=cfg.window_days + cfg.baseline_days)
    return load_items(session, start, until)


def _test_params(cfg: SpikeConfig) -> dict[str, Any]:
    return {
        "test": "one-sided exact binomial, baseline share smoothed towards the shop-wide "
        "share, Bonferroni over the product's tested issue types",
        "window_days": cfg.window_days,
        "baseline_days": cfg.baseline_days,
        "min_count": cfg.min_count,
        "alpha": cfg.alpha,
        "prior_weight": cfg.prior_weight,
    }
