"""Satisfaction surveys: the signed single-use link, its page in the customer's
language for every state, and CSAT in the statistics."""

from __future__ import annotations

import pytest

from serving.store import SurveyAnswer


def _resolved(desk, text="Where is my parcel?", customer="c1", agent=None):
    agent = agent or desk.agent
    ticket_id = desk.service.post_message(channel="email", text=text, customer_id=customer)[
        "ticket_id"
    ]
    agent.claim_ticket(ticket_id)
    agent.reply(ticket_id, "It arrives tomorrow.")
    return agent.resolve(ticket_id)


def _path(url: str) -> str:
    return url.split("http://127.0.0.1:8000", 1)[1]


def test_a_resolved_ticket_has_a_survey_link_answered_once(desk):
    ticket = _resolved(desk)
    path = _path(ticket["survey_url"])
    page = desk.http.get(path)
    assert page.status_code == 200 and "How did we do?" in page.text
    assert 'name="stars"' in page.text and page.headers["cache-control"] == "no-store"
    done = desk.http.post(path, data={"stars": "4", "comment": "Fast, <b>thanks</b>"})
    assert done.status_code == 200 and "Thank you for your answer." in done.text
    again = desk.http.post(path, data={"stars": "1"})
    assert again.status_code == 200 and "already been answered" in again.text
    assert "already been answered" in desk.http.get(path).text
    survey = desk.agent.ticket(ticket["id"])["survey"]
    assert survey["stars"] == 4 and survey["comment"] == "Fast, <b>thanks</b>"
    assert desk.count(SurveyAnswer) == 1


def test_the_page_speaks_the_customers_language_and_escapes_what_it_shows(desk):
    ticket = _resolved(desk, text="快递到哪了？", customer="c2")
    path = _path(ticket["survey_url"])
    assert "您对我们的服务满意吗" in desk.http.get(path).text
    missing = desk.http.post(path, data={"comment": "<script>alert(1)</script>"})
    assert missing.status_code == 422 and "请选择 1 到 5 星" in missing.text
    assert "<script>alert(1)" not in missing.text and "&lt;script&gt;" in missing.text
    assert desk.count(SurveyAnswer) == 0


@pytest.mark.parametrize("mangle", ["forged", "other_ticket", "garbage", "huge"])
def test_forged_links_get_a_clear_page(desk, mangle):
    ticket = _resolved(desk)
    token = ticket["survey_url"].rsplit("/", 1)[1]
    tid, sig = token.split(".")
    bad = {
        "forged": f"{tid}.{'A' * len(sig)}",
        "other_ticket": f"{int(tid) + 1}.{sig}",
        "garbage": "not-a-token",
        "huge": f"{'9' * 40}.{sig}",
    }[mangle]
    for r in (
        desk.http.get(f"/survey/{bad}"),
        desk.http.post(f"/survey/{bad}", data={"stars": "5"}),
    ):
        assert r.status_code == 404 and "not valid" in r.text
    assert desk.count(SurveyAnswer) == 0


def test_a_link_opens_when_resolved_and_expires(desk, clock):
    ticket_id = desk.service.post_message(channel="email", text="Hello?", customer_id="c3")[
        "ticket_id"
    ]
    path = _path(desk.agent.ticket(ticket_id)["survey_url"])
    assert desk.http.get(path).status_code == 404  # not resolved yet
    desk.agent.resolve(ticket_id)
    assert desk.http.get(path).status_code == 200
    clock.advance(days=31)
    r = desk.http.post(path, data={"stars": "5"})
    assert r.status_code == 410 and "expired" in r.text


def test_reviews_have_no_survey(desk):
    posted = desk.service.post_message(channel="review", text="Broke", rating=1, customer_id="c4")
    desk.agent.mark_review_handled(posted["message_id"])
    assert desk.agent.ticket(posted["ticket_id"])["survey_url"] is None


def test_csat_per_agent_queue_issue_type_and_week(desk):
    answers = {1: "5", 2: "2"}
    for i in (1, 2, 3):
        agent = desk.agent if i < 3 else desk.agent2
        ticket = _resolved(desk, customer=f"k{i}", agent=agent)
        if i in answers:
            desk.http.post(_path(ticket["survey_url"]), data={"stars": answers[i]})
    agents = {a["agent"]: a["csat"] for a in desk.agent.agent_stats()["agents"]}
    assert agents["alice"] == {
        "surveys_sent": 2,
        "answered": 2,
        "response_rate": 1.0,
        "mean_stars": 3.5,
        "satisfied_share": 0.5,
    }
    assert agents["bob"]["surveys_sent"] == 1 and agents["bob"]["answered"] == 0
    kpis = desk.agent.kpis()
    assert kpis["csat"]["overall"]["response_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert sum(w["surveys_sent"] for w in kpis["csat"]["weeks"].values()) == 3
    assert sum(q["csat"]["answered"] for q in kpis["queues"]) == 2
    assert kpis["csat"]["issue_types"]


def test_a_template_can_carry_the_survey_link(desk):
    ticket = _resolved(desk)
    desk.admin.add_template(
        "en.other.survey", "other", "en", "Survey", "How did we do? {survey_link}"
    )
    desk.agent.set_labels(ticket["id"], {"issue_type": ["other"]})
    out = desk.agent.suggested_replies(ticket["id"])
    survey = next(s for s in out if s["name"] == "en.other.survey")
    assert survey["ready"] and survey["text"] == f"How did we do? {ticket['survey_url']}"
