"""Campaigns within the marketplaces' rules, on SQLite and PostgreSQL: the refusals
(exact texts), the marketing audience with consent, opt-out, frequency cap, open
tickets and recent negatives (audit reasons), review requests once per order
whatever the sentiment, export, webhook, customer history."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from carelens_client import CarelensError

from serving import campaigns as camp
from serving.store import Campaign, CampaignContact, ReviewRequest


def _err(fn, *args, **kwargs) -> CarelensError:
    with pytest.raises(CarelensError) as info:
        fn(*args, **kwargs)
    return info.value


REVIEW_ALLOWED = "min_days_after_delivery, max_days_after_delivery, marketplace, product_ids"


def test_forbidden_campaigns_are_refused_with_the_rule(seller):  # noqa: F811
    desk = seller()
    err = _err(
        desk.admin.create_campaign,
        "spring sale",
        "marketing",
        "marketplace_messaging",
        body="20% off everything!",
    )
    assert err.status_code == 422
    assert err.detail == (
        "a marketing campaign cannot use channel marketplace_messaging: Amazon's Communication "
        "Guidelines permit buyer-seller messages only when they are necessary to complete an "
        "order or to respond to a customer service inquiry, and state that you cannot contact "
        "buyers for marketing or promotional purposes. Send marketing through channel "
        "own_email (your own list, to customers who gave you consent)."
    )
    selective = [
        ({"sentiment": "positive"}, "sentiment"),
        ({"min_positive_share": 0.8}, "min_positive_share"),
        ({"min_rating": 4}, "min_rating"),
        ({"stars": [4, 5]}, "stars"),
        ({"issue_type": ["praise"]}, "issue_type"),
        ({"min_reviews": 2}, "min_reviews"),
        ({"review_history": "positive"}, "review_history"),
        ({"no_open_ticket": True, "min_days_after_delivery": 5}, "no_open_ticket"),
        ({"min_messages": 3, "no_negative_days": 30}, "min_messages, no_negative_days"),
    ]
    for channel in ("marketplace_messaging", "own_email"):
        for audience, keys in selective:
            err = _err(
                desk.admin.create_campaign,
                "reviews please",
                "review_request",
                channel,
                subject="How was it?",
                body="Please review order {order_id}",
                audience=audience,
            )
            assert err.status_code == 422
            assert err.detail == (
                f"a review_request campaign cannot choose its audience by {keys}: Amazon's "
                "customer product reviews policy says you may not ask for a positive review "
                "or ask for reviews only from buyers who had a positive experience (requests "
                "through the Solicitations API must not selectively seek positive reviews), "
                "and the FTC's guide for marketers (Soliciting and Paying for Online Reviews) "
                "says: don't ask for reviews only from customers you think will leave positive "
                f"ones. Ask every eligible order: the audience may only use {REVIEW_ALLOWED}."
            ), audience
    err = _err(
        desk.admin.create_campaign,
        "early ask",
        "review_request",
        "marketplace_messaging",
        body="Please review {order_id}",
        audience={"min_days_after_delivery": 1, "max_days_after_delivery": 40},
    )
    assert err.status_code == 422 and err.detail == (
        "a review_request on marketplace_messaging must be sent 5 to 30 days after delivery "
        "(Amazon Solicitations API: one review request per order, between 5 and 30 days after "
        "the order was delivered); got 1-40 days"
    )
    # malformed (not a rule): what to fix
    err = _err(
        desk.admin.create_campaign,
        "x",
        "marketing",
        "own_email",
        subject="Hi",
        body="Use {coupon}",
    )
    assert err.detail.startswith("body: unknown placeholder {coupon} (known: {customer_id}")
    err = _err(
        desk.admin.create_campaign,
        "x",
        "marketing",
        "own_email",
        subject="Hi",
        body="b",
        audience={"vip": True},
    )
    assert err.detail == (
        "audience: unknown key 'vip' for a marketing campaign (keys: min_messages, "
        "min_positive_share, no_open_ticket, no_negative_days)"
    )
    assert _err(desk.agent.campaigns).status_code == 403
    assert desk.count(Campaign) == 0
    # the allowed ones
    ok = desk.admin.create_campaign(
        "ask every buyer",
        "review_request",
        "marketplace_messaging",
        body="How is your {product_id}? Please review order {order_id}.",
    )
    assert ok["audience"] == {
        "min_days_after_delivery": 5,
        "max_days_after_delivery": 30,
        "marketplace": None,
        "product_ids": None,
    }
    assert (
        desk.admin.create_campaign(
            "fans", "marketing", "own_email", subject="New colours", body="Hi {customer_id}!"
        )["audience"]
        == camp.MARKETING_AUDIENCE
    )


def _post(desk, predictor, customer: str, sentiments: list[str], channel="review", days_ago=20):
    """Messages from ``customer``, one a day ending ``days_ago`` days before now."""
    now = desk.app.state.services.clock()
    out = []
    for i, sentiment in enumerate(sentiments):
        text = predictor.plan(f"{customer} says {sentiment} #{i}", sentiment, praise=0.9)
        out.append(
            desk.service.post_message(
                channel=channel,
                text=text,
                customer_id=customer,
                rating=5 if sentiment == "positive" else 1,
                received_at=now - timedelta(days=days_ago + len(sentiments) - i),
            )
        )
    return out


def _reasons(run: dict) -> dict[str, str]:
    return {c["customer_id"]: c["reason"] for c in run["contacts"]}


def test_marketing_audience_consent_optout_cap_and_exclusions(seller, planned, clock):  # noqa: F811
    desk = seller(marketing_cap_contacts=2, marketing_cap_days=30)
    pos3 = ["positive"] * 3
    for c in ("fan", "fan2", "shy", "quitter", "few", "mixed", "busy", "grumpy", "lurker"):
        if c != "shy":
            desk.service.record_consent(c, source="shop sign-up", email=f"{c}@example.com")
    _post(desk, planned, "fan", pos3)  # positive reviews: closed as no response needed
    _post(desk, planned, "fan2", pos3, days_ago=5)
    _post(desk, planned, "shy", pos3)
    _post(desk, planned, "quitter", pos3)
    _post(desk, planned, "few", ["positive"] * 2)
    _post(desk, planned, "mixed", ["positive", "positive", "neutral", "negative"], days_ago=200)
    _post(desk, planned, "busy", pos3)
    _post(desk, planned, "busy", ["positive"], channel="email")  # a ticket still open
    grumpy = _post(desk, planned, "grumpy", ["positive"] * 9 + ["negative"], days_ago=10)
    desk.agent.resolve(grumpy[-1]["ticket_id"])  # answered; still a recent negative
    desk.agent.opt_out("quitter", source="ticket: stop e-mailing me")

    campaign = desk.admin.create_campaign(
        "new colours",
        "marketing",
        "own_email",
        subject="New colours for you",
        body="Hi {customer_id}, our kettle now comes in green.",
        audience={"min_positive_share": 0.75},
    )
    run = desk.admin.run_campaign(campaign["id"])
    assert _reasons(run) == {
        "fan": "eligible",
        "fan2": "eligible",
        "shy": "no_consent",
        "quitter": "opted_out",
        "few": "too_few_messages",
        "mixed": "low_positive_share",
        "busy": "open_ticket",
        "grumpy": "recent_negative",
        "lurker": "too_few_messages",  # consent but never wrote
    }
    assert run["considered"] == 9 and run["included"] == 2 and run["excluded"] == 7
    details = {c["customer_id"]: c["detail"] for c in run["contacts"]}
    assert details["mixed"] == "positive share 0.50 (2/4) below 0.75"
    assert details["few"] == "2 messages or reviews (min_messages 3)"
    assert details["busy"] == "1 open ticket(s)"
    assert (
        details["grumpy"].startswith("negative message at ")
        and "(within 90 days)" in details["grumpy"]
    )
    fan = next(c for c in run["contacts"] if c["customer_id"] == "fan")
    assert fan["message"]["email"] == "fan@example.com"
    assert fan["message"]["subject"] == "New colours for you"
    assert fan["message"]["body"].startswith("Hi fan, our kettle")

    # an opt-out is honoured by the very next run; the cap stops the second contact of
    # 30 days for the others (cap 2: run 1 and 2 count, run 3 is capped)
    clock.advance(hours=1)
    desk.agent.opt_out("fan2")
    run2 = desk.admin.run_campaign(campaign["id"])
    assert _reasons(run2)["fan2"] == "opted_out" and _reasons(run2)["fan"] == "eligible"
    clock.advance(hours=1)
    run3 = desk.admin.run_campaign(campaign["id"])
    assert _reasons(run3)["fan"] == "frequency_cap"
    fan3 = next(c for c in run3["contacts"] if c["customer_id"] == "fan")
    assert fan3["detail"] == "2 marketing contact(s) in the last 30 days (cap 2)"
    assert run3["excluded_by_reason"]["frequency_cap"] == 1
    clock.advance(days=30)
    assert _reasons(desk.admin.run_campaign(campaign["id"]))["fan"] == "eligible"
    # a new consent after an opt-out is a new consent
    desk.service.record_consent("fan2", source="re-subscribed on the shop")
    clock.advance(hours=1)
    assert _reasons(desk.admin.run_campaign(campaign["id"]))["fan2"] == "eligible"

    # the audit keeps every customer of every run; the history shows the contacts
    assert desk.count(CampaignContact) == 5 * 9
    history = desk.agent.customer("fan")
    contacts = [e for e in history["timeline"] if e["kind"] == "campaign_contact"]
    assert len(contacts) == 4 and contacts[0]["detail"]["campaign"] == "new colours"
    assert history["consent"]["consented"] is True
    quitter = desk.agent.customer("quitter")
    assert quitter["consent"]["opted_out"] is True
    assert [e["kind"] for e in quitter["timeline"]][-1] == "opt_out"
    assert not [e for e in quitter["timeline"] if e["kind"] == "campaign_contact"]


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        length = int(self.headers["Content-Length"])
        _Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook.received
    server.shutdown()
    server.server_close()


def test_review_requests_every_order_once_whatever_the_sentiment(
    seller,  # noqa: F811
    planned,  # noqa: F811
    clock,
    webhook,
):
    url, received = webhook
    desk = seller(campaign_webhook_url=url)
    now = clock.now
    desk.service.post_orders(
        [
            {
                "order_id": "O-angry",
                "customer_id": "angry",
                "product_id": "P1",
                "delivered_at": now - timedelta(days=10),
            },
            {
                "order_id": "O-happy",
                "customer_id": "happy",
                "product_id": "P1",
                "delivered_at": now - timedelta(days=6),
            },
            {
                "order_id": "O-quit",
                "customer_id": "quitter",
                "product_id": "P2",
                "delivered_at": now - timedelta(days=7),
            },
            {
                "order_id": "O-new",
                "customer_id": "happy",
                "product_id": "P2",
                "delivered_at": now - timedelta(days=2),
            },
            {
                "order_id": "O-old",
                "customer_id": "angry",
                "product_id": "P2",
                "delivered_at": now - timedelta(days=45),
            },
            {"order_id": "O-transit", "customer_id": "happy", "product_id": "P3"},
        ]
    )
    _post(desk, planned, "angry", ["negative"] * 3, days_ago=1)  # unhappy: asked all the same
    _post(desk, planned, "happy", ["positive"] * 3, days_ago=1)
    desk.agent.opt_out("quitter")
    campaign = desk.admin.create_campaign(
        "review request",
        "review_request",
        "marketplace_messaging",
        body="Thank you for order {order_id}. Would you review {product_id}?",
    )
    run = desk.admin.run_campaign(campaign["id"])
    by_order = {c["order_id"]: (c["included"], c["reason"]) for c in run["contacts"]}
    assert by_order == {
        "O-angry": (True, "eligible"),
        "O-happy": (True, "eligible"),
        "O-quit": (False, "opted_out"),
    }
    angry = next(c for c in run["contacts"] if c["order_id"] == "O-angry")
    assert angry["detail"] == "delivered 10 days ago"
    assert angry["message"]["body"] == "Thank you for order O-angry. Would you review P1?"

    # the webhook got the rendered messages; the export says the same
    assert run["webhook_status"] == "HTTP 204"
    assert [m["order_id"] for m in received[0]["messages"]] == ["O-angry", "O-happy"]
    exported = json.loads(desk.admin.export_campaign_run(campaign["id"], run["id"]))
    assert exported["messages"] == received[0]["messages"]
    rows = list(
        csv.DictReader(
            io.StringIO(desk.admin.export_campaign_run(campaign["id"], run["id"], "csv"))
        )
    )
    assert [(r["customer_id"], r["order_id"]) for r in rows] == [
        ("angry", "O-angry"),
        ("happy", "O-happy"),
    ]

    # one request per order, ever: the next run only adds the order that entered the window
    clock.advance(days=4)
    desk.service.post_orders(
        [
            {
                "order_id": "O-transit",
                "customer_id": "happy",
                "delivered_at": clock.now - timedelta(days=5),
            }
        ]
    )
    run2 = desk.admin.run_campaign(campaign["id"])
    by_order = {c["order_id"]: (c["included"], c["reason"]) for c in run2["contacts"]}
    assert by_order == {
        "O-angry": (False, "already_requested"),
        "O-happy": (False, "already_requested"),
        "O-quit": (False, "opted_out"),
        "O-new": (True, "eligible"),
        "O-transit": (True, "eligible"),
    }
    assert desk.count(ReviewRequest) == 4
    assert [r["id"] for r in desk.admin.campaign_runs(campaign["id"])] == [run["id"], run2["id"]]
    assert desk.admin.campaign_run(campaign["id"], run["id"])["contacts"] == run["contacts"]
    assert _err(desk.admin.campaign_run, campaign["id"], 999).status_code == 404
    history = desk.agent.customer("happy")
    asked = [
        e["detail"]["order_id"] for e in history["timeline"] if e["kind"] == "campaign_contact"
    ]
    assert asked == ["O-happy", "O-new", "O-transit"]


def test_a_failing_webhook_keeps_the_run(seller):  # noqa: F811
    desk = seller(campaign_webhook_url="http://127.0.0.1:9/nothing-listens-here")
    c = desk.admin.create_campaign("r", "review_request", "own_email", subject="s", body="b")
    run = desk.admin.run_campaign(c["id"])
    assert run["webhook_status"].startswith("failed: ConnectError")
    assert desk.admin.campaign_run(c["id"], run["id"])["webhook_status"] == run["webhook_status"]


@pytest.mark.slow
def test_campaigns_on_the_shop(db_url, clock):
    """The shop fixture (a few hundred messages, three agents): consent for most
    regulars, two opt-outs; each regular's audit reason matches what the plan says,
    and review requests go to every delivered order, negative reviewers included."""
    from fastapi.testclient import TestClient

    from tests.serving.factories import Desk
    from tests.serving.shop import SHOP_NOW, fill_shop, shop_app

    with TestClient(shop_app(db_url, clock)) as tc:
        desk = Desk(tc)
        shop = fill_shop(desk, clock)
        assert len(shop.messages) >= 200
        regulars = sorted({m.customer_id for m in shop.messages if m.customer_id[0] == "C"})
        no_consent = set(regulars[:3])
        opted_out = set(regulars[3:5])
        for cid in regulars:
            if cid not in no_consent:
                desk.service.record_consent(cid, source="newsletter sign-up")
        for cid in opted_out:
            desk.agent.opt_out(cid, source="unsubscribe link")
        audience = {"min_messages": 3, "min_positive_share": 0.4, "no_negative_days": 7}
        c = desk.admin.create_campaign(
            "loyal fans", "marketing", "own_email", subject="Thanks", body="Hi {customer_id}",
            audience=audience,
        )  # fmt: skip
        run = desk.admin.run_campaign(c["id"])
        reasons = _reasons(run)

        def expected(cid: str) -> str:
            if cid in opted_out:
                return "opted_out"
            if cid in no_consent:
                return "no_consent"
            mine = [m for m in shop.messages if m.customer_id == cid]
            sentiments = [shop.effective_labels(m)["sentiment"][0] for m in mine]
            if len(mine) < 3:
                return "too_few_messages"
            if sentiments.count("positive") / len(mine) < 0.4:
                return "low_positive_share"
            if desk.agent.customer(cid)["open_tickets"]:
                return "open_ticket"
            recent = SHOP_NOW - timedelta(days=7)
            if any(
                s == "negative" and m.received_at >= recent
                for m, s in zip(mine, sentiments, strict=True)
            ):
                return "recent_negative"
            return "eligible"

        assert {cid: reasons[cid] for cid in regulars} == {cid: expected(cid) for cid in regulars}
        # every exclusion occurs among the regulars (seeded shop: fixed counts)
        assert Counter(reasons[cid] for cid in regulars) == {
            "eligible": 4,
            "low_positive_share": 16,
            "no_consent": 3,
            "open_ticket": 2,
            "opted_out": 2,
            "recent_negative": 2,
            "too_few_messages": 1,
        }
        # one-off buyers never consented
        assert {r for cid, r in reasons.items() if cid not in regulars} == {"no_consent"}
        assert run["considered"] == len({m.customer_id for m in shop.messages})

        # review requests: every order delivered 5-30 days ago, whatever was said
        orders = {}
        for m in shop.messages:
            if m.order_id and m.order_id not in orders:
                orders[m.order_id] = {
                    "order_id": m.order_id,
                    "customer_id": m.customer_id,
                    "product_id": m.product_id,
                    "delivered_at": m.received_at - timedelta(days=1),
                }
        desk.service.post_orders(list(orders.values()))
        rr = desk.admin.create_campaign(
            "ask all", "review_request", "marketplace_messaging", body="Review {order_id}?"
        )
        run = desk.admin.run_campaign(rr["id"])
        lo, hi = SHOP_NOW - timedelta(days=30), SHOP_NOW - timedelta(days=5)
        window = {o for o, v in orders.items() if lo <= v["delivered_at"] <= hi}
        assert {x["order_id"] for x in run["contacts"]} == window
        included = {x["order_id"] for x in run["contacts"] if x["included"]}
        assert included == {o for o in window if orders[o]["customer_id"] not in opted_out}
        negative = {
            m.order_id
            for m in shop.messages
            if m.channel == "review" and shop.effective_labels(m)["sentiment"] == ["negative"]
        }
        assert included & negative  # unhappy reviewers are asked too


@pytest.mark.parametrize(
    "subject, body, what, found",
    [
        (
            None,
            "Loved it? Leave us a 5-star review for {order_id}!",
            "ask for a positive",
            "5-star review",
        ),
        (
            None,
            "Please leave a positive review of {product_id}",
            "ask for a positive",
            "positive review",
        ),
        ("Five stars?", "Tell us about order {order_id}", "ask for a positive", "Five stars"),
        (None, "If you are happy, review {order_id}", "ask for a positive", "If you are happy"),
        (None, "Review {order_id} and get a $10 gift card", "offer anything", "$10"),
        (
            None,
            "Review order {order_id} in exchange for 20% off",
            "offer anything",
            "in exchange for",
        ),
        (None, "给个好评吧，订单 {order_id}", "ask for a positive", "好评"),
        (None, "评价订单 {order_id} 即可返现", "offer anything", "返现"),
    ],
)
def test_review_request_wording_is_checked(desk, subject, body, what, found):
    err = _err(
        desk.admin.create_campaign,
        "ask",
        "review_request",
        "marketplace_messaging",
        subject=subject,
        body=body,
    )
    assert err.status_code == 422
    assert err.detail.startswith(f"a review_request may not {what}")
    assert f"(found: {found!r})" in err.detail and "FTC" in err.detail


def test_an_honest_review_request_passes_the_wording_check(desk):
    ok = desk.admin.create_campaign(
        "honest ask",
        "review_request",
        "marketplace_messaging",
        body="How is your {product_id}? We would value your honest review of order {order_id}.",
    )
    assert ok["kind"] == "review_request"


def test_marketing_names_the_customer_and_product_and_unsubscribes_without_login(
    seller,  # noqa: F811
    planned,  # noqa: F811
    clock,
):
    desk = seller(public_url="https://help.example.com", marketing_cap_contacts=10)
    for c in ("ann", "bo", "chen"):
        desk.service.record_consent(c, source="shop sign-up", email=f"{c}@example.com")
        _post(desk, planned, c, ["positive"] * 3)
    desk.service.post_orders(
        [
            {
                "order_id": "111-1",
                "customer_id": "ann",
                "product_id": "B0KETTLE",
                "customer_name": "Ann Lee",
                "product_name": "Green kettle",
                "delivered_at": clock() - timedelta(days=40),
            }
        ]
    )
    err = _err(
        desk.admin.create_campaign,
        "bad",
        "marketing",
        "own_email",
        subject="Hi",
        body="Hi {customer_name}",
        fallbacks={"unsubscribe_link": "none"},
    )
    assert err.status_code == 422 and "fallbacks: 'unsubscribe_link' is not" in err.detail
    campaign = desk.admin.create_campaign(
        "blue",
        "marketing",
        "own_email",
        subject="{customer_name}, something new",
        body="Hi {customer_name}, the {product} now comes in blue.",
        fallbacks={"customer_name": "there"},
    )
    assert campaign["fallbacks"] == {"customer_name": "there"}
    run = desk.admin.run_campaign(campaign["id"])
    messages = {c["customer_id"]: c["message"] for c in run["contacts"]}
    ann, bo = messages["ann"], messages["bo"]
    assert ann["subject"] == "Ann Lee, something new"
    body, footer = ann["body"].split("\n\n")
    assert body == "Hi Ann Lee, the Green kettle now comes in blue." and ann["missing"] == []
    link = ann["unsubscribe_url"]
    assert link.startswith("https://help.example.com/unsubscribe/") and link.endswith("?lang=en")
    assert footer == f"To stop receiving these e-mails: {link}"
    assert ann["headers"] == {
        "List-Unsubscribe": f"<{link}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert bo["body"].startswith("Hi there, the {product} now") and bo["missing"] == ["product"]
    assert bo["unsubscribe_url"] != link
    redacted = desk.admin.export_campaign_run(campaign["id"], run["id"], redact=True)
    assert "Ann Lee" not in redacted and "/unsubscribe/" not in redacted
    assert "Hi <name>, the Green kettle" in redacted and "Hi there" in redacted

    path = link.removeprefix("https://help.example.com")
    page = desk.http.get(path)  # a link scanner opening it changes nothing
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert _reasons(desk.admin.run_campaign(campaign["id"]))["ann"] == "eligible"
    clock.advance(hours=1)
    done = desk.http.post(path, content="List-Unsubscribe=One-Click")  # RFC 8058
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert _reasons(desk.admin.run_campaign(campaign["id"]))["ann"] == "opted_out"
    events = desk.agent.customer("ann")["timeline"]
    opt_out = [e for e in events if e["kind"] == "opt_out"]
    assert len(opt_out) == 1 and "unsubscribe link" in json.dumps(opt_out[0])
    bare = path.split("?")[0]  # no lang in the link: the browser's language
    again = desk.http.post(bare, headers={"Accept-Language": "zh-CN"})
    assert again.status_code == 200 and "已经退订" in again.text
    assert len([e for e in desk.agent.customer("ann")["timeline"] if e["kind"] == "opt_out"]) == 1

    token = bare.split("/")[-1]
    encoded, sig = token.split(".")
    forged = camp.wrap(b"another secret", "unsubscribe", "bo")  # signed with another key
    for bad in (f"{encoded[:-1]}A.{sig}", forged, "x", "%00", "a." + "b" * 22, "." * 500):
        r = desk.http.post(f"/unsubscribe/{bad}")
        assert r.status_code == 404 and "not valid" in r.text, bad
        assert desk.http.get(f"/unsubscribe/{bad}?lang=zh").status_code == 404
    assert desk.agent.customer("bo")["consent"]["opted_out"] is False

    zh = desk.admin.create_campaign(
        "新品",
        "marketing",
        "own_email",
        subject="新品上市",
        body="{customer_name}您好，新款水壶上市了。",
    )
    chen = next(
        c for c in desk.admin.run_campaign(zh["id"])["contacts"] if c["customer_id"] == "chen"
    )
    assert chen["message"]["body"].endswith("退订此类邮件：" + chen["message"]["unsubscribe_url"])
    assert chen["message"]["unsubscribe_url"].endswith("?lang=zh")
