"""Automatic answers: the policy file, what it decides, and the answers that go out
through a real SMTP server (aiosmtpd) - for a confident shipping question, never for a
safety complaint."""

from __future__ import annotations

import random
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from carelens_client import CarelensError
from fastapi.testclient import TestClient

from serving.autoreply import AutoReplyError, AutoReplyPolicy, decide, held_back
from serving.outbox import SmtpConfig, deliver_due
from serving.templates import load_file_templates
from tests.conftest import tiny_model
from tests.serving.factories import Desk
from tests.serving.mail_servers import start_smtp

SELLER = "support@shop.example"
PHRASES = {
    "shipping_delivery": (
        ("where is my order", "neutral", "low"),
        ("has my parcel shipped yet", "neutral", "low"),
        ("我的快递到哪了", "neutral", "low"),
    ),
    "praise": (("great product love it", "positive", "low"), ("很好很喜欢", "positive", "low")),
    "damaged_defective": (("arrived broken", "negative", "medium"), ("坏了", "negative", "medium")),
}


@pytest.fixture(scope="module")
def triage_model_dir(tmp_path_factory):
    """A tiny model whose labels come from its sparse n-gram path alone, fitted on a few
    phrases: it knows a shipping question when it sees one."""
    from training.data import Example
    from training.sparse import fit_sparse

    rng = random.Random(0)
    rows = []
    for i in range(300):
        issue = rng.choice(list(PHRASES))
        text, sentiment, urgency = rng.choice(PHRASES[issue])
        labels = {"issue_type": [issue], "sentiment": [sentiment], "urgency": [urgency]}
        rows.append(
            Example(text=f"{text} {rng.choice(['please', 'thanks', '谢谢'])} {i}", labels=labels)
        )
    model = tiny_model(ngram=False, sparse=True)
    model.config.sparse_only = True
    model.classifier.silence_heads()
    # confident on its own phrases, as the shipped policy's bar (0.95) asks of a model
    fit_sparse(model, rows, c=100.0, progress=False)
    directory = tmp_path_factory.mktemp("triage") / "model"
    model.save_pretrained(directory)
    return directory


@pytest.fixture
def smtp():
    server, controller = start_smtp()
    yield server
    controller.stop()


@pytest.fixture
def auto_app(triage_model_dir, tmp_path, clock, db_url, smtp):
    from serving.app import create_app
    from serving.settings import Settings
    from tests.serving.factories import ADMIN_KEY

    def make(**settings):
        settings.setdefault("smtp_host", "127.0.0.1")
        settings.setdefault("smtp_port", smtp.port)
        settings.setdefault("smtp_security", "none")
        settings.setdefault("mail_from", SELLER)
        return create_app(
            Settings(
                model_dir=triage_model_dir,
                database_url=db_url,
                bootstrap_admin_key=ADMIN_KEY,
                registry=tmp_path / "registry",
                jobs_dir=tmp_path / "jobs",
                outbox_poll_seconds=0,
                **settings,
            ),
            clock=clock,
        )

    return make


@pytest.fixture
def auto_desk(auto_app):
    with TestClient(auto_app()) as tc:
        yield Desk(tc)


def mail(text: str, subject: str, sender: str = '"Ann - Amazon Marketplace" <ann@example.com>'):
    m = EmailMessage()
    m["From"] = sender
    m["To"] = SELLER
    m["Subject"] = subject
    m["Message-ID"] = make_msgid(domain="example.com")
    m.set_content(text)
    return m.as_bytes()


def deliver(desk, smtp):
    svc = desk.app.state.services
    cfg = SmtpConfig(host="127.0.0.1", port=smtp.port, security="none")
    return deliver_due(svc.sessions, cfg, svc.clock)


def kinds(desk, ticket_id):
    from serving.store import Ticket

    with desk.sessions() as s:
        return [e.kind for e in s.get(Ticket, ticket_id).events]


def test_a_confident_shipping_question_is_answered_automatically(auto_desk, smtp):
    stored = auto_desk.service.post_email(
        mail("where is my order please", "Order 112-1234567-1234567")
    )
    ticket = auto_desk.agent.ticket(stored["ticket_id"])
    assert ticket["labels"]["issue_type"] == ["shipping_delivery"]
    assert ticket["state"] == "waiting_on_customer"
    [out] = ticket["outbound"]
    assert out["automatic"] and out["state"] == "queued"
    assert ticket["first_response_at"] is None  # not before it was really sent
    assert "auto_replied" in kinds(auto_desk, ticket["id"])

    assert deliver(auto_desk, smtp).sent == 1
    [got] = smtp.received
    body = got.message.get_content()
    assert "Hi Ann," in body and "112-1234567-1234567" in body and "Customer Service" in body
    assert got.message["Auto-Submitted"] == "auto-replied"
    assert auto_desk.agent.ticket(ticket["id"])["first_response_at"] is not None


def test_a_safety_complaint_is_never_answered_automatically(auto_desk, smtp):
    stored = auto_desk.service.post_email(
        mail("where is my order, the charger caught fire", "Order 112-1234567-1234567")
    )
    ticket = auto_desk.agent.ticket(stored["ticket_id"])
    assert ticket["rule_hits"] and ticket["state"] == "open"
    assert ticket["outbound"] == [] and ticket["draft"] is None
    assert [k for k in kinds(auto_desk, ticket["id"]) if k.startswith("auto_")] == []
    assert deliver(auto_desk, smtp).sent == 0


def test_a_missing_order_id_makes_a_draft_never_an_answer(auto_desk):
    stored = auto_desk.service.post_email(mail("where is my order please", "Hello"))
    ticket = auto_desk.agent.ticket(stored["ticket_id"])
    assert ticket["state"] == "open" and ticket["outbound"] == []
    assert ticket["draft"]["missing"] == ["order_id"]
    with pytest.raises(CarelensError) as err:
        _send_draft(auto_desk, ticket["id"])
    assert err.value.status_code == 409 and "order_id" in err.value.detail


def _send_draft(desk, ticket_id):
    return desk.agent._json("POST", f"/v1/tickets/{ticket_id}/draft/send")


def test_a_chinese_shipping_question_is_drafted_and_sent_with_one_click(auto_desk, smtp):
    stored = auto_desk.service.post_email(
        mail("我的快递到哪了 谢谢", "订单 112-1234567-1234567", sender="买家 <buyer@example.cn>")
    )
    ticket = auto_desk.agent.ticket(stored["ticket_id"])
    assert ticket["state"] == "open" and ticket["outbound"] == []
    assert ticket["draft"]["template"] == "zh.shipping_delivery.status"
    sent = _send_draft(auto_desk, ticket["id"])
    assert sent["delivery"]["state"] == "queued" and sent["state"] == "waiting_on_customer"
    assert sent["draft"] is None and sent["first_response_at"] is not None
    assert deliver(auto_desk, smtp).sent == 1
    assert "买家，您好" in smtp.received[0].message.get_content()


def test_a_repeated_contact_goes_to_an_agent(auto_desk, clock):
    first = auto_desk.service.post_email(
        mail("where is my order please", "Order 112-1234567-1234567")
    )
    auto_desk.agent.claim_ticket(first["ticket_id"])
    auto_desk.agent.resolve(first["ticket_id"])
    clock.advance(days=10)
    again = auto_desk.service.post_email(
        mail("where is my order please", "Order 112-7654321-1234567")
    )
    ticket = auto_desk.agent.ticket(again["ticket_id"])
    assert ticket["outbound"] == [] and ticket["state"] == "open"


def test_no_relay_makes_a_draft(auto_app):
    with TestClient(auto_app(smtp_host=None)) as tc:
        desk = Desk(tc)
        stored = desk.service.post_email(
            mail("where is my order please", "Order 112-1234567-1234567")
        )
        ticket = desk.agent.ticket(stored["ticket_id"])
        assert ticket["state"] == "open" and ticket["outbound"] == []
        assert ticket["draft"]["template"] == "en.shipping_delivery.status"


def test_an_automatic_answer_the_relay_refuses_goes_back_to_the_agents(auto_desk, smtp):
    stored = auto_desk.service.post_email(
        mail("where is my order please", "Order 112-1234567-1234567")
    )
    smtp.refusals.append("550 5.1.1 no such mailbox")
    assert deliver(auto_desk, smtp).failed == 1
    ticket = auto_desk.agent.ticket(stored["ticket_id"])
    assert ticket["state"] == "open" and ticket["first_response_at"] is None
    assert kinds(auto_desk, ticket["id"])[-1] == "auto_reply_failed"


def test_a_queue_can_be_switched_off(auto_app, tmp_path):
    policy = tmp_path / "autoreply.yaml"
    policy.write_text(
        "enabled: true\nmin_confidence: 0.5\nqueues_off: [shipping]\n"
        "answers: {shipping_delivery: {en: send}}\n"
    )
    with TestClient(auto_app(autoreply_file=policy)) as tc:
        desk = Desk(tc)
        stored = desk.service.post_email(
            mail("where is my order please", "Order 112-1234567-1234567")
        )
        ticket = desk.agent.ticket(stored["ticket_id"])
        assert ticket["queue"] == "shipping" and ticket["outbound"] == []
        assert ticket["state"] == "open"


# -- the policy alone ---------------------------------------------------------------------


POLICY = AutoReplyPolicy.from_dict(
    {"enabled": True, "min_confidence": 0.8, "answers": {"shipping_delivery": {"en": "send"}}}
)
SHIPPING = {"issue_type": ["shipping_delivery"], "sentiment": ["neutral"], "urgency": ["low"]}
VALUES = {"order_id": "112-1", "agent_name": "CS", "customer_name": "Ann"}


def _decide(labels=SHIPPING, confidence=0.95, **kw):
    args = {
        "lang": "en",
        "channel": "email",
        "rule_hits": [],
        "queue": "shipping",
        "earlier_contacts": 0,
        "templates": load_file_templates(),
        "values": VALUES,
        "can_send": True,
    }
    args.update(kw)
    return decide(POLICY, labels, confidence, **args)


def test_the_policy_holds_back_what_a_person_must_answer():
    assert _decide().action == "send"
    assert _decide(confidence=0.7).action == "off"
    negative_high = {**SHIPPING, "sentiment": ["negative"], "urgency": ["high"]}
    assert "negative with high" in _decide(negative_high).reason
    assert _decide({**SHIPPING, "sentiment": ["negative"]}).action == "send"
    assert _decide(earlier_contacts=1).action == "off"
    assert _decide(channel="review").action == "off"
    assert _decide(rule_hits=[{"rule": "chargeback"}]).action == "off"
    both = {**SHIPPING, "issue_type": ["shipping_delivery", "safety_hazard"]}
    assert "safety" in _decide(both).reason
    assert _decide(lang="zh").reason.startswith("no automatic answer for")
    assert _decide(can_send=False).action == "draft"
    assert _decide(values={"agent_name": "CS"}).action == "draft"
    assert held_back(SHIPPING, "email", [], "escalations", 0, POLICY) is None


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"answers": {"shipping_delivery": {"en": "reply"}}}, "not one of send, draft, off"),
        ({"min_confidence": 2}, "between 0 and 1"),
        ({"answer": {}}, "unknown key(s) answer"),
        ({"answers": {"shipping_delivery": {"en": {"action": "send", "tmpl": "x"}}}}, "expected"),
    ],
)
def test_a_bad_policy_file_is_refused_with_the_reason(data, problem):
    with pytest.raises(AutoReplyError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        AutoReplyPolicy.from_dict(data)


def test_the_policy_names_templates_and_queues_that_exist():
    policy = AutoReplyPolicy.from_dict(
        {
            "answers": {
                "shipping_delivery": {"en": {"action": "send", "template": "en.praise.thanks"}}
            }
        }
    )
    with pytest.raises(AutoReplyError, match="is for praise/en"):
        policy.validate(["shipping"], load_file_templates())
    with pytest.raises(AutoReplyError, match="unknown queue"):
        AutoReplyPolicy.from_dict({"queues_off": ["nope"]}).validate(["shipping"], {})
    default = AutoReplyPolicy.load()
    default.validate(["escalations", "triage", "shipping"], load_file_templates())


def test_the_autoreply_bench_counts_answers_and_wrong_templates(triage_model_dir):
    from carelens.bench.autoreply import measure
    from model.predictor import Predictor
    from serving.routing import RoutingConfig
    from training.data import Example

    text = "where is my order please"
    rows = [
        Example(
            text=text,
            labels={"issue_type": ["shipping_delivery"]},
            meta={"source": "xci_complaints", "lang": "en"},
        ),
        Example(
            text=text,
            labels={"issue_type": ["refund_return"]},
            meta={"source": "xci_complaints", "lang": "en"},
        ),
        Example(
            text=text,
            labels={"issue_type": ["shipping_delivery"]},
            meta={"source": "amazon_reviews", "lang": "en", "rating": "2"},
        ),
    ]
    preds = Predictor.load(triage_model_dir).predict([r.text for r in rows])
    out = measure(
        rows, preds, AutoReplyPolicy.load(), RoutingConfig.load(), load_file_templates(), [0.0, 1.0]
    )
    low, high = out["bars"]
    assert (low["sent"], low["sent_wrong"], low["sent_wrong_share"]) == (2, 1, 0.5)
    assert low["per_source"] == {"xci_complaints": {"send": 2, "send_wrong": 1}}
    assert high["sent"] == 0 and high["sent_wrong_share"] is None
