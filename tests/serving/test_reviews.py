"""Reviews tied to their tickets, the buyer filter, and list routes that refuse query
parameters they do not take."""

from __future__ import annotations

from datetime import datetime

import pytest
from carelens_client import CarelensError

from serving.store import Ticket, TicketEvent
from tests.serving.factories import error_of


def _review(desk, text="Broke after a week", customer="A1", stars=1):
    return desk.service.post_message(
        channel="review", text=text, rating=stars, customer_id=customer, product_id="B0KETTLE"
    )


def _kinds(desk, ticket_id):
    with desk.sessions() as s:
        return [e.kind for e in s.get(Ticket, ticket_id).events]


def test_marking_a_review_handled_resolves_its_ticket_and_keeps_the_first_handler(desk):
    posted = _review(desk)
    first = desk.agent.mark_review_handled(posted["message_id"], note="replied publicly")
    assert first["first"] and first["ticket_state"] == "resolved"
    assert desk.agent.ticket(posted["ticket_id"])["state"] == "resolved"

    again = desk.agent2.mark_review_handled(posted["message_id"], note="called the buyer")
    assert not again["first"]
    assert (again["handled_by"], again["handled_note"]) == ("alice", "replied publicly")
    assert _kinds(desk, posted["ticket_id"]).count("review_handled") == 2
    with desk.sessions() as s:
        notes = [
            (e.actor, e.note)
            for e in s.query(TicketEvent).filter_by(
                ticket_id=posted["ticket_id"], kind="review_handled"
            )
        ]
    assert notes == [("alice", "replied publicly"), ("bob", "called the buyer")]


def test_resolving_a_reviews_ticket_marks_the_review_handled(desk):
    posted = _review(desk)
    desk.agent.claim_ticket(posted["ticket_id"])
    desk.agent.resolve(posted["ticket_id"], note="refund sent")
    [review] = desk.agent.reviews(customer_id="A1")
    assert review["handled"] and review["handled_by"] == "alice"
    assert review["handled_note"] == "refund sent"


def test_a_claimed_reviews_ticket_is_resolved_when_the_review_is_handled(desk):
    posted = _review(desk)
    desk.agent2.claim_ticket(posted["ticket_id"])
    desk.agent.mark_review_handled(posted["message_id"])
    ticket = desk.agent.ticket(posted["ticket_id"])
    assert ticket["state"] == "resolved" and ticket["claimed_by"] is None


def test_reviews_of_one_buyer(desk):
    _review(desk, customer="A1")
    _review(desk, "Lid cracked", customer="B2")
    _review(desk, "Leaks", customer="A1", stars=2)
    assert {r["text"] for r in desk.agent.reviews(customer_id="A1")} == {
        "Broke after a week",
        "Leaks",
    }
    assert desk.agent.reviews(customer_id="nobody") == []


def test_reviews_page_with_a_cursor_unhandled_negatives_first_then_newest(desk, clock):
    posted = []
    for i, stars in enumerate([5, 1, 4, 2, 5, 1, 3, 5, 2, 4, 1]):
        clock.advance(minutes=1)
        text = f"Review {i}: " + ("Broke, useless" if stars <= 2 else "Works well")
        posted.append((i, stars, desk.service.post_message(
            channel="review", text=text, rating=stars, customer_id=f"C{i}",
            product_id="B0KETTLE", received_at=clock().isoformat(),
        )["message_id"]))  # fmt: skip
    desk.agent.mark_review_handled(posted[3][2])  # a handled two-star review: with the rest
    whole = desk.agent.reviews(limit=500)
    negatives = [mid for i, stars, mid in reversed(posted) if stars <= 2 and i != 3]
    assert [r["id"] for r in whole[: len(negatives)]] == negatives  # newest first
    rest = [r["id"] for r in whole[len(negatives) :]]
    assert sorted(rest, reverse=True) == rest and len(whole) == len(posted)
    paged, after = [], None
    while True:  # three at a time: the pages cross from one group into the other
        page = desk.agent.reviews(limit=3, after=after)
        paged += [r["id"] for r in page]
        if len(page) < 3:
            break
        after = page[-1]["cursor"]
    assert paged == [r["id"] for r in whole]
    assert desk.agent.reviews(limit=3, after=whole[-1]["cursor"]) == []
    for bad in ("x", "2.1.1", "0.1", "0.99999999999999999999.1", "0.1.0", "1.1.1.1"):
        with pytest.raises(CarelensError) as err:
            desk.agent.reviews(after=bad)
        assert err.value.status_code == 422 and "after" in str(err.value), bad
    # issue types filtered in the database, with the same cursor
    # issue types filtered in the database: an agent's label counts, not the model's
    for r in whole[2:4]:
        desk.agent.set_labels(r["ticket_id"], {"issue_type": ["wrong_item"]})
    whole = desk.agent.reviews(limit=500)
    kept = desk.agent.reviews(issue_type="wrong_item", limit=500)
    expected = [r["id"] for r in whole if "wrong_item" in r["labels"].get("issue_type", [])]
    assert [r["id"] for r in kept] == expected and len(kept) >= 2
    assert (
        desk.agent.reviews(issue_type="wrong_item", limit=1, after=kept[0]["cursor"]) == (kept[1:2])
    )
    assert desk.agent.reviews(issue_type="no_such_label") == []


def test_a_queue_pages_with_a_cursor_in_claim_order(desk, clock):
    for i in range(7):
        clock.advance(minutes=1)
        desk.service.post_message(channel="email", text=f"Where is parcel {i}?")
    queue = max(desk.agent.queues(), key=lambda q: q["unclaimed"])["queue"]
    whole = desk.agent.queue_tickets(queue, limit=500)
    paged, after = [], None
    while page := desk.agent.queue_tickets(queue, limit=3, after=after):
        paged += [t["id"] for t in page]
        after = page[-1]["cursor"]
    assert paged == [t["id"] for t in whole] and len(paged) >= 7
    with pytest.raises(CarelensError) as err:
        desk.agent.queue_tickets(queue, after="1.2.3")  # a reviews cursor is not one
    assert err.value.status_code == 422


@pytest.mark.parametrize(
    "path, params, unknown",
    [
        ("/v1/reviews", {"prodct_id": "B0KETTLE"}, "prodct_id"),
        ("/v1/reviews", {"customer": "A1", "handled": "false"}, "customer"),
        ("/v1/tickets", {"stat": "open"}, "stat"),
        ("/v1/queues/general/tickets", {"limt": "5"}, "limt"),
        ("/v1/queues", {"x": "1"}, "x"),
    ],
)
def test_list_routes_refuse_query_parameters_they_do_not_take(desk, path, params, unknown):
    r = desk.http.get(path, params=params, headers={"X-API-Key": desk.agent.api_key})
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["query", unknown] and error["msg"].startswith("unknown query parameter")


def test_known_query_parameters_still_work(desk):
    _review(desk)
    r = desk.http.get(
        "/v1/reviews",
        params={"customer_id": "A1", "limit": 5},
        headers={"X-API-Key": desk.agent.api_key},
    )
    assert r.status_code == 200 and len(r.json()) == 1
    with pytest.raises(CarelensError):
        desk.agent.tickets(state="nonsense")


def test_late_response_rate_counts_buyer_messages_only_per_marketplace(desk, clock):
    def post(channel, customer, marketplace, **kw):
        return desk.service.post_message(
            channel=channel, text="Where is my parcel?", customer_id=customer,
            marketplace=marketplace, **kw,
        )["ticket_id"]  # fmt: skip

    on_time = post("email", "c1", "amazon.com")
    late = post("email", "c2", "amazon.de")
    post("chat", "c3", "amazon.com")  # never answered: a chat's own deadline
    post("review", "c4", "amazon.com", rating=1)  # never answered: a review's own deadline
    clock.advance(hours=1)
    desk.agent.reply(on_time, "On its way.")
    clock.advance(hours=29)
    desk.agent.reply(late, "Sorry, on its way.")
    clock.advance(days=3)
    kpis = desk.agent.kpis()
    late_rates = kpis["buyer_messages_late_response"]
    assert late_rates["shop"] == {"7d": 0.5, "30d": 0.5, "90d": 0.5}
    assert late_rates["marketplaces"]["amazon.com"]["7d"] == 0.0
    assert late_rates["marketplaces"]["amazon.de"]["7d"] == 1.0


def test_predictions_carry_display_names_in_english_or_chinese(desk):
    def classify(**kw):
        r = desk.http.post(
            "/v1/classify",
            json={"texts": ["The charger caught fire"]},
            headers={"X-API-Key": desk.service.api_key, **kw.pop("headers", {})},
            params=kw,
        )
        assert r.status_code == 200, r.text
        return r.json()["predictions"][0]["tasks"]

    zh = classify(headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
    assert zh["issue_type"]["display"] == "问题类型"
    names = {"low": "低", "medium": "中", "high": "高", "critical": "紧急"}
    assert zh["urgency"]["label_display"] == {u: names[u] for u in zh["urgency"]["labels"]}
    en = classify(lang="en", headers={"Accept-Language": "zh-CN"})
    assert en["issue_type"]["display"] == "Issue type"
    assert set(en["sentiment"]["label_display"]) == set(en["sentiment"]["labels"])
    assert classify()["issue_type"]["display"] == "Issue type"
    config = desk.admin.config()["taxonomy"]
    issue = next(t for t in config["tasks"] if t["name"] == "issue_type")
    assert issue["display"] == {"en": "Issue type", "zh": "问题类型"}
    safety = next(lb for lb in issue["labels"] if lb["name"] == "safety_hazard")
    assert safety["zh"] and safety["en"]
    assert "起火" in safety["definition_zh"] and "fire" in safety["definition"]
    assert issue["description_zh"]


def test_tickets_show_their_labels_display_names_in_the_agents_language(desk):
    posted = _review(desk, text="The charger caught fire", stars=1)
    key = {"X-API-Key": desk.agent.api_key}

    def ticket(path, **headers):
        r = desk.http.get(path, headers={**key, **headers})
        assert r.status_code == 200, r.text
        return r.json()

    shown = ticket(f"/v1/tickets/{posted['ticket_id']}", **{"Accept-Language": "zh-CN"})
    labels = shown["labels"]
    urgency = {"low": "低", "medium": "中", "high": "高", "critical": "紧急"}
    assert shown["label_display"]["urgency"] == {u: urgency[u] for u in labels["urgency"]}
    assert set(shown["label_display"]["issue_type"]) == set(labels["issue_type"])
    listed = ticket("/v1/tickets?lang=en", **{"Accept-Language": "zh-CN"})
    mine = next(t for t in listed if t["id"] == posted["ticket_id"])
    assert mine["label_display"]["urgency"][labels["urgency"][0]] == labels["urgency"][0].title()
    r = desk.http.get("/v1/tickets?lang=fr", headers=key)
    assert r.status_code == 422 and "lang" in r.text


def test_migration_marks_the_stored_unhandled_negative_reviews(db_url):

    from sqlalchemy import text

    from serving import db

    db.upgrade(db_url, "0009")
    engine = db.make_engine(db_url)
    now = datetime(2026, 11, 20, 18, 0)
    # (rating, handled, ticket labels, prediction labels) -> needs attention
    cases = [
        (1, False, '{"sentiment": ["positive"]}', None, True),  # one star, whatever it reads
        (4, False, '{"sentiment": ["negative"]}', None, True),
        (4, False, '{"sentiment": ["positive"]}', '{"sentiment": ["negative"]}', False),
        (4, False, None, '{"sentiment": ["negative"]}', True),  # no ticket: the model's
        (2, True, '{"sentiment": ["negative"]}', None, False),  # handled
        (5, False, None, None, False),
    ]
    try:
        with engine.begin() as conn:
            for i, (rating, handled, t_labels, p_labels, _) in enumerate(cases, 1):
                conn.execute(
                    text(
                        "INSERT INTO messages (id, channel, text, lang, rating, received_at, "
                        "created_at, handled_at) VALUES (:i, 'review', 'x', 'en', :r, :now, "
                        ":now, :handled)"
                    ),
                    {"i": i, "r": rating, "now": now, "handled": now if handled else None},
                )
                if t_labels:
                    conn.execute(
                        text(
                            "INSERT INTO tickets (message_id, queue, state, labels, rule_hits, "
                            "base_priority, rank_at, sla_hours, sla_due_at, created_at, "
                            "updated_at) VALUES (:i, 'reviews', 'open', :labels, '[]', 0, "
                            ":now, 72, :now, :now, :now)"
                        ),
                        {"i": i, "labels": t_labels, "now": now},
                    )
                if p_labels:
                    conn.execute(
                        text(
                            "INSERT INTO predictions (message_id, model_version, labels, "
                            "output, needs_review, created_at) VALUES (:i, 'v', :labels, "
                            "'{}', false, :now)"
                        ),
                        {"i": i, "labels": p_labels, "now": now},
                    )
        db.upgrade(db_url)
        with engine.connect() as conn:
            got = dict(conn.execute(text("SELECT id, needs_attention FROM messages")).all())
        assert [bool(got[i]) for i in range(1, len(cases) + 1)] == [c[-1] for c in cases]
    finally:
        engine.dispose()


def test_reviews_unhandled_negatives_first_and_handled(desk, clock):
    made = []
    for i, (stars, sentiment) in enumerate(
        [(5, "positive"), (1, "negative"), (2, "negative"), (4, "neutral"), (2, "positive")]
    ):
        out = desk.service.post_message(
            channel="review",
            text=f"review number {i}",
            rating=stars,
            product_id="B0REV" if i < 3 else "B0OTHER",
            customer_id=f"R{i}",
        )
        desk.agent.set_labels(out["ticket_id"], {"sentiment": sentiment})
        made.append(out["message_id"])
        clock.advance(minutes=10)
    desk.service.post_message(channel="chat", text="about my review", customer_id="R1")
    reviews = desk.agent.reviews()
    # negatives first, newest first: two stars count as negative whatever the label says
    assert [r["id"] for r in reviews[:3]] == [made[4], made[2], made[1]]
    desk.agent.mark_review_handled(made[4])
    reviews = desk.agent.reviews()
    assert [r["id"] for r in reviews[:2]] == [made[2], made[1]]
    assert reviews[0]["ticket_id"] and not reviews[0]["handled"]
    assert next(r for r in reviews if r["id"] == made[1])["other_messages_of_customer"] == 1
    desk.agent.mark_review_handled(made[2], note="replied publicly")
    reviews = desk.agent.reviews()
    assert reviews[0]["id"] == made[1]
    handled = next(r for r in reviews if r["id"] == made[2])
    assert handled["handled"] and handled["handled_by"] == "alice"
    assert handled["handled_note"] == "replied publicly"
    assert {r["id"] for r in desk.agent.reviews(product_id="B0REV")} == set(made[:3])
    assert [r["id"] for r in desk.agent.reviews(stars=[1, 2], handled=False)] == [made[1]]
    assert [r["id"] for r in desk.agent.reviews(sentiment="neutral")] == [made[3]]
    assert [r["id"] for r in desk.agent.reviews(sentiment="positive")] == [made[4], made[0]]
    assert error_of(desk.agent.mark_review_handled, 999).status_code == 404
