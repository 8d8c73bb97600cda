"""Seller workflows on the shop fixture (tests/serving/shop.py), on SQLite and on
PostgreSQL: product insights and the spike test, reopen counting, the reports."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from carelens_client import CarelensError
from fastapi.testclient import TestClient
from scipy.stats import binomtest
from sqlalchemy import select

from model.taxonomy import Taxonomy
from serving.store import Ticket, TicketEvent
from tests.postgres import PG_URL
from tests.serving.factories import Clock, Desk
from tests.serving.shop import (
    PRODUCTS,
    REOPEN_CASES,
    SHOP_NOW,
    SPIKE_ISSUE,
    SPIKE_PRODUCT,
    fill_shop,
    shop_app,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
slow = pytest.mark.slow


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def shop_store(request, tmp_path_factory):
    """The filled shop (once per module and database): (desk, shop, database url)."""
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('shop') / 'shop.db'}"
    else:
        request.getfixturevalue("pg_ready")
        import psycopg

        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    clock = Clock(SHOP_NOW)
    try:
        with TestClient(shop_app(url, clock)) as tc:
            desk = Desk(tc)
            shop = fill_shop(desk, clock)
            yield desk, shop, url
    finally:
        if schema is not None:
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# -- insights ----------------------------------------------------------------------------


def _hand_spike_test(shop, product: str, issue: str, window=7, baseline=28, weight=10.0):
    """The documented test, computed from the plan (not from the service)."""
    recent_start = SHOP_NOW - timedelta(days=window)
    base_start = recent_start - timedelta(days=baseline)
    base_all = [m for m in shop.messages if m.product_id and base_start <= m.received_at]
    base_all = [m for m in base_all if m.received_at < recent_start]
    k_all = sum(issue in shop.effective_labels(m)["issue_type"] for m in base_all)
    q = (k_all + 0.5) / (len(base_all) + 1)
    base = shop.of_product(product, base_start, recent_start)
    kb = sum(issue in shop.effective_labels(m)["issue_type"] for m in base)
    recent = shop.of_product(product, recent_start, SHOP_NOW)
    x = sum(issue in shop.effective_labels(m)["issue_type"] for m in recent)
    p0 = (kb + weight * q) / (len(base) + weight)
    return x, len(recent), kb, len(base), p0, binomtest(x, len(recent), p0, "greater").pvalue


@slow
def test_planted_spike_is_flagged_with_its_evidence(shop_store):
    desk, shop, _ = shop_store
    out = desk.agent.product_insights(SPIKE_PRODUCT)
    assert [s["issue_type"] for s in out["spikes"]] == [SPIKE_ISSUE]
    spike = out["spikes"][0]
    x, n, kb, nb, p0, p = _hand_spike_test(shop, SPIKE_PRODUCT, SPIKE_ISSUE)
    assert (spike["count"], spike["messages"]) == (x, n)
    assert (spike["baseline_count"], spike["baseline_messages"]) == (kb, nb)
    assert spike["expected_share"] == pytest.approx(p0, abs=1e-4)
    assert spike["p_value"] == pytest.approx(p, rel=1e-6)
    assert spike["p_adjusted"] == pytest.approx(min(1.0, p * spike["tests"]), rel=1e-6)
    assert spike["p_adjusted"] < 0.01 and spike["share"] > 3 * spike["expected_share"]
    assert x >= 10 and spike["flagged"] is True
    # evidence: the newest messages of that issue, inside the recent window
    planned = {m.message_id: m for m in shop.messages}
    newest = sorted(
        (
            m
            for m in shop.of_product(SPIKE_PRODUCT, SHOP_NOW - timedelta(days=7), SHOP_NOW)
            if SPIKE_ISSUE in shop.effective_labels(m)["issue_type"]
        ),
        key=lambda m: (m.received_at, m.message_id),
        reverse=True,
    )[:3]
    assert [e["message_id"] for e in spike["examples"]] == [m.message_id for m in newest]
    for e in spike["examples"]:
        assert e["text"] == planned[e["message_id"]].text
    # a stricter test still flags it; a huge min_count leaves nothing to test
    strict = desk.agent.product_insights(SPIKE_PRODUCT, alpha=1e-6, prior_weight=50)
    assert [s["issue_type"] for s in strict["spikes"]] == [SPIKE_ISSUE]
    none = desk.agent.product_insights(SPIKE_PRODUCT, min_count=x + 1)
    assert none["spikes"] == [] and SPIKE_ISSUE not in [t["issue_type"] for t in none["tested"]]


@slow
def test_products_without_a_spike_are_not_flagged(shop_store):
    desk, _, _ = shop_store
    listing = desk.agent.products_insights(sort="spikes")
    assert listing["products"][0]["product_id"] == SPIKE_PRODUCT
    flagged = {(p["product_id"], s["issue_type"]) for p in listing["products"] for s in p["spikes"]}
    assert flagged == {(SPIKE_PRODUCT, SPIKE_ISSUE)}
    for pid in set(PRODUCTS) - {SPIKE_PRODUCT}:
        assert desk.agent.product_insights(pid)["spikes"] == []


@slow
def test_insight_counts_equal_hand_computed_ones(shop_store):
    desk, shop, _ = shop_store
    since, until = SHOP_NOW - timedelta(days=20), SHOP_NOW - timedelta(days=3)
    corrected_product_msgs = [m for m in shop.messages if m.ticket_id in shop.corrected]
    assert any(m.product_id for m in corrected_product_msgs), "the fixture corrects labels"
    assert any(m.predicted != m.labels for m in corrected_product_msgs)
    for pid in PRODUCTS:
        out = desk.agent.product_insights(pid, since=since, until=until, bucket="day")
        mine = shop.of_product(pid, since, until)
        assert out["messages"] == len(mine)
        assert out["reviews"] == sum(m.channel == "review" for m in mine)
        assert out["tickets"] == sum(m.channel != "review" for m in mine)
        counts = {i["issue_type"]: i["count"] for i in out["issues"] if i["count"]}
        assert counts == dict(shop.issue_counts(pid, since, until))
        shares = {i["issue_type"]: i["share"] for i in out["issues"] if i["count"]}
        assert shares == {k: round(v / len(mine), 4) for k, v in counts.items()}
        negative = sum(m.template.sentiment == "negative" for m in mine)
        assert out["negative_share"] == round(negative / len(mine), 4)
        stars = [m.rating for m in mine if m.rating]
        assert out["mean_rating"] == round(sum(stars) / len(stars), 3)
        assert out["ratings"] == {str(s): stars.count(s) for s in range(1, 6)}
        assert out["languages"] == dict(sorted(Counter(m.lang for m in mine).items()))
        assert len(out["series"]) == 18  # calendar days touched by [since, until)
        assert sum(r["messages"] for r in out["series"]) == len(mine)
        assert sum(r["negative"] for r in out["series"]) == negative
    # a corrected message counts with the agent's label, not the model's
    m = next(m for m in corrected_product_msgs if m.product_id and m.predicted != m.labels)
    day = m.received_at.replace(hour=0, minute=0, second=0, microsecond=0)
    out = desk.agent.product_insights(m.product_id, since=day, until=day + timedelta(days=1))
    got = {i["issue_type"]: i["count"] for i in out["issues"]}
    want = shop.issue_counts(m.product_id, day, day + timedelta(days=1))
    assert all(got[k] == want[k] for k in m.labels["issue_type"] + m.predicted["issue_type"])


@slow
def test_product_listing_sorts_filters_and_refuses_bad_input(shop_store):
    desk, shop, _ = shop_store
    all_rows = desk.agent.products_insights()["products"]
    sizes = {p["product_id"]: p["messages"] for p in all_rows}
    assert sizes == {
        pid: len(shop.of_product(pid, SHOP_NOW - timedelta(days=35))) for pid in PRODUCTS
    }
    assert [p["messages"] for p in all_rows] == sorted(sizes.values(), reverse=True)
    asc = desk.agent.products_insights(sort="negative_share", order="asc")["products"]
    assert [p["negative_share"] for p in asc] == sorted(p["negative_share"] for p in asc)
    by_issue = desk.agent.products_insights(sort=SPIKE_ISSUE)["products"]
    top_share = [next(i for i in p["issues"] if i["issue_type"] == SPIKE_ISSUE) for p in by_issue]
    assert [s["share"] for s in top_share] == sorted((s["share"] for s in top_share), reverse=True)
    cut = sorted(sizes.values())[1]
    kept = desk.agent.products_insights(min_messages=cut, limit=2)
    assert kept["total"] == sum(v >= cut for v in sizes.values()) and len(kept["products"]) == 2
    assert "series" in desk.agent.products_insights(series=True)["products"][0]
    err = pytest.raises(CarelensError, desk.agent.products_insights, sort="stars")
    assert err.value.status_code == 422 and "sort: 'stars'" in str(err.value.detail)
    err = pytest.raises(CarelensError, desk.agent.product_insights, "B0NOPE")
    assert err.value.status_code == 404
    err = pytest.raises(
        CarelensError, desk.agent.product_insights, SPIKE_PRODUCT, since=SHOP_NOW, until=SHOP_NOW
    )
    assert err.value.status_code == 422


# -- reopens -----------------------------------------------------------------------------


@slow
def test_reopens_on_the_shop_are_counted_per_agent_and_queue(shop_store):
    desk, shop, _ = shop_store
    with desk.sessions() as s:
        reopened = {
            t.id: json.loads(e.note)
            for t, e in s.execute(
                select(Ticket, TicketEvent)
                .join(TicketEvent, TicketEvent.ticket_id == Ticket.id)
                .where(TicketEvent.kind == "reopened")
            )
        }
    expected = {}
    for case, *_, reopen in REOPEN_CASES:
        first, again = shop.case(case)
        if reopen:
            expected[first.ticket_id] = {
                "message_id": again.message_id,
                "ticket_id": again.ticket_id,
            }
    assert reopened == expected and len(expected) == 2
    since = SHOP_NOW - timedelta(days=35)
    agents = {r["agent"]: r["reopened"] for r in desk.agent.agent_stats(since=since)["agents"]}
    assert agents == {"alice": 1, "bob": 1, "carol": 0}  # same-order: alice; no-order-3d: bob
    queues = {q["queue"]: q["reopened"] for q in desk.agent.kpis(since=since)["queues"]}
    assert queues["returns"] == 2 and sum(queues.values()) == 2
    # a period that ends before the follow-ups counts none
    early = desk.agent.agent_stats(since=since, until=since + timedelta(days=11))
    assert all(r["reopened"] == 0 for r in early["agents"])


def test_a_follow_up_reopens_the_resolved_ticket(desk, clock):
    def post(text, **kw):
        kw.setdefault("customer_id", "Z1")
        return desk.service.post_message(channel="email", text=text, **kw)

    def events(ticket_id):
        with desk.sessions() as s:
            rows = s.scalars(select(TicketEvent).where(TicketEvent.ticket_id == ticket_id))
            return [(e.kind, e.note) for e in rows]

    first = post("where is my parcel", order_id="111-1")
    desk.agent.reply(first["ticket_id"], "shipped today")
    clock.advance(hours=1)
    # the ticket is still in work: the customer's answer joins it, nothing is reopened
    early = post("any news?", order_id="111-1")
    assert early["ticket_id"] == first["ticket_id"] and early["answered"]
    assert "reopened" not in [k for k, _ in events(first["ticket_id"])]
    desk.agent.resolve(first["ticket_id"])
    clock.advance(days=20)
    other = post("a different order", order_id="222-2")  # another order: never
    assert "reopened" not in [k for k, _ in events(first["ticket_id"])]
    again = post("still not here", order_id="111-1")  # same order, 20 days later
    assert again["ticket_id"] != first["ticket_id"] and not again["answered"]
    assert again["state"] == "open" and again["sla_due_at"] > first["sla_due_at"]
    kinds = [k for k, _ in events(first["ticket_id"])]
    assert kinds.count("reopened") == 1
    note = json.loads(dict(events(first["ticket_id"]))["reopened"])
    assert note == {"message_id": again["message_id"], "ticket_id": again["ticket_id"]}
    follow = dict(events(again["ticket_id"]))["follow_up"]
    assert json.loads(follow) == {"reopened_ticket_id": first["ticket_id"]}
    # no order id: within reopen.days (7) of the resolution only; reviews never
    desk.agent.resolve(other["ticket_id"])
    clock.advance(days=3)
    desk.service.post_message(channel="review", text="meh", customer_id="Z1", rating=2)
    assert "reopened" not in [k for k, _ in events(other["ticket_id"])]
    post("hello again")
    assert [k for k, _ in events(other["ticket_id"])].count("reopened") == 1
    desk.agent.resolve(again["ticket_id"])
    clock.advance(days=8)
    post("one more question")
    assert "reopened" not in [k for k, _ in events(again["ticket_id"])]
    stats = {r["agent"]: r["reopened"] for r in desk.agent.agent_stats()["agents"]}
    assert stats["alice"] == 2


# -- reports -----------------------------------------------------------------------------


@slow
def test_report_commands_write_markdown_and_png_charts(shop_store, tmp_path):
    from typer.testing import CliRunner

    from serving.cli import app

    _, _, url = shop_store
    runner = CliRunner()
    out = tmp_path / "products"
    args = ["report", "products", "--since", "2026-10-16T18:00", "--until", SHOP_NOW.isoformat()]
    r = runner.invoke(app, [*args, "--out", str(out), "--database-url", url])
    assert r.exit_code == 0, r.output
    assert f"spike: {SPIKE_PRODUCT} {SPIKE_ISSUE}" in r.output
    for name in ("issue_mix.png", "trends.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    md = (out / "report.md").read_text(encoding="utf-8")
    spikes = md.split("## Spikes", 1)[1].split("## Products", 1)[0]
    shown = Taxonomy.default()["issue_type"].label_display("en")[SPIKE_ISSUE]
    assert f"| {SPIKE_PRODUCT} | {shown} |" in spikes
    assert f"### {SPIKE_PRODUCT}: {shown}" in spikes
    assert not any(pid in spikes for pid in set(PRODUCTS) - {SPIKE_PRODUCT})
    assert "![Issue mix per product](issue_mix.png)" in md
    assert all(f"| {pid} |" in md for pid in PRODUCTS)
    assert f"**{shown}** (`{SPIKE_ISSUE}`)" in md.split("## Issue types", 1)[1]

    out = tmp_path / "zh"
    r = runner.invoke(app, [*args, "--out", str(out), "--database-url", url, "--lang", "zh"])
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text(encoding="utf-8")
    zh = Taxonomy.default()["issue_type"].labels
    label = next(lb for lb in zh if lb.name == SPIKE_ISSUE)
    assert md.startswith("# 商品质量报告")
    assert f"### {SPIKE_PRODUCT}: {label.zh}" in md
    assert f"- **{label.zh}** (`{SPIKE_ISSUE}`): {label.definition_zh}" in md
    assert (out / "issue_mix.png").read_bytes().startswith(PNG_MAGIC)

    out = tmp_path / "kpis"
    r = runner.invoke(
        app,
        ["report", "kpis", "--since", "2026-10-16", "--until", "2026-11-20", "--out", str(out)]
        + ["--database-url", url],
    )
    assert r.exit_code == 0, r.output
    for name in ("first_response.png", "sla_met.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert all(f"| {a} |" in md for a in ("alice", "bob", "carol"))
    assert "| returns |" in md and "reopened" in md
    r = runner.invoke(
        app,
        ["report", "kpis", "--since", "2026-11-20", "--until", "2026-11-01"]
        + ["--out", str(out), "--database-url", url],
    )
    assert r.exit_code != 0 and "must be before" in r.output
