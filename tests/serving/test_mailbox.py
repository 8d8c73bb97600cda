"""The mailbox: mail in from a real IMAP server (Dovecot), replies out to a real SMTP
server (aiosmtpd), threads, claims by id, attachments, marketplace relay mail."""

from __future__ import annotations

import time
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from carelens_client import CarelensError
from fastapi.testclient import TestClient
from sqlalchemy import select

from serving.inbound import parse_email
from serving.mailbox import REJECTED, ImapConfig, MailboxError, poll_once
from serving.outbox import SENDING_LEASE, SmtpConfig, deliver_due, take_due
from serving.store import Message, OutboundMail, Ticket
from tests.serving.factories import Desk
from tests.serving.mail_servers import IMAP_PASSWORD, IMAP_USER, start_dovecot, start_smtp

SELLER = "support@shop.example"


def customer_mail(
    text: str,
    subject: str = "Where is my order 112-1234567-1234567?",
    sender: str = "buyer@example.com",
    msgid: str | None = None,
    in_reply_to: str | None = None,
    attachment: tuple[str, str, bytes] | None = None,
) -> tuple[bytes, str]:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = SELLER
    mail["Subject"] = subject
    mail["Message-ID"] = msgid or make_msgid(domain="example.com")
    if in_reply_to:
        mail["In-Reply-To"] = in_reply_to
        mail["References"] = in_reply_to
    mail.set_content(text)
    if attachment:
        name, ctype, data = attachment
        maintype, subtype = ctype.split("/")
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return mail.as_bytes(), mail["Message-ID"]


@pytest.fixture
def smtp():
    server, controller = start_smtp()
    yield server
    controller.stop()


@pytest.fixture
def dovecot():
    import shutil
    import tempfile
    from pathlib import Path

    # not under pytest's tmp_path: Dovecot's own users must be able to walk to it
    root = Path(tempfile.mkdtemp(prefix="carelens-dovecot-"))
    root.chmod(0o755)
    server, proc = start_dovecot(root)
    yield server
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mail_desk(make_app, db_url, smtp):
    app = make_app(
        db_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_security="none",
        mail_from=f"Shop Support <{SELLER}>",
        outbox_poll_seconds=0,  # the tests deliver when they choose
    )
    with TestClient(app) as tc:
        yield Desk(tc)


def deliver(desk: Desk, smtp) -> object:
    svc = desk.app.state.services
    cfg = SmtpConfig(host="127.0.0.1", port=smtp.port, security="none")
    return deliver_due(svc.sessions, cfg, svc.clock, skip_locked=svc.skip_locked)


def imap_config(dovecot) -> ImapConfig:
    return ImapConfig(
        host="127.0.0.1", port=dovecot.port, security="none", user=IMAP_USER, password=IMAP_PASSWORD
    )


def handler(desk: Desk):
    from serving.routes.messages import mailbox_handler

    return mailbox_handler(desk.app.state.services)


# -- mail in: a real IMAP mailbox -----------------------------------------------------


def test_mail_appended_to_the_mailbox_becomes_a_ticket_and_is_marked_seen_after(desk, dovecot):
    raw, msgid = customer_mail("My parcel has not arrived after two weeks.")
    dovecot.append(raw)
    dovecot.append(b"this is not an e-mail at all\r\n")
    raw2, _ = customer_mail("The kettle arrived with a cracked lid.", subject="Broken kettle")
    dovecot.append(raw2)

    report = poll_once(imap_config(dovecot), handler(desk))
    assert (report.unseen, report.stored, report.already_stored) == (3, 2, 0)
    assert len(report.rejected) == 1 and "RFC 822" in report.rejected[0]
    flags = dovecot.flags()
    assert "\\Seen" in flags[0] and "\\Seen" in flags[2]
    # the refused one stays unseen for a person, flagged so it is not read again
    assert "\\Seen" not in flags[1] and REJECTED in flags[1]
    with desk.sessions() as s:
        stored = s.scalar(select(Message).where(Message.external_id == msgid))
        assert stored.ticket is not None and stored.order_id == "112-1234567-1234567"
        assert stored.reply_to == "buyer@example.com"

    again = poll_once(imap_config(dovecot), handler(desk))
    assert (again.unseen, again.stored, again.rejected) == (0, 0, [])


def test_a_crash_after_the_commit_reads_the_message_again_and_stores_nothing_twice(desk, dovecot):
    raw, msgid = customer_mail("Still waiting for the refund.")
    dovecot.append(raw)
    # the ticket was committed, then the poller died before flagging the message
    desk.service.post_email(raw)
    report = poll_once(imap_config(dovecot), handler(desk))
    assert (report.stored, report.already_stored) == (0, 1)
    assert "\\Seen" in dovecot.flags()[0]
    assert desk.count(Ticket) == 1


def test_an_unusable_mailbox_says_why(desk, dovecot):
    wrong = ImapConfig(
        host="127.0.0.1", port=dovecot.port, security="none", user=IMAP_USER, password="wrong"
    )
    with pytest.raises(MailboxError, match="refused the login"):
        poll_once(wrong, handler(desk))
    from tests.serving.mail_servers import free_port

    nobody = ImapConfig(host="127.0.0.1", port=free_port(), security="none", user="u", password="p")
    with pytest.raises(MailboxError, match="cannot reach"):
        poll_once(nobody, handler(desk))
    missing = ImapConfig(
        host="127.0.0.1",
        port=dovecot.port,
        security="none",
        user=IMAP_USER,
        password=IMAP_PASSWORD,
        folder="Nope",
    )
    with pytest.raises(MailboxError, match="no folder 'Nope'"):
        poll_once(missing, handler(desk))


def polling_app(make_app, db_url, dovecot, password=IMAP_PASSWORD):
    """The app reading the Dovecot mailbox itself every 0.2 s."""
    return make_app(
        db_url,
        imap_host="127.0.0.1",
        imap_port=dovecot.port,
        imap_security="none",
        imap_user=IMAP_USER,
        imap_password=password,
        imap_poll_seconds=0.2,
    )


def test_the_service_polls_the_mailbox_itself_and_readyz_reports_it(make_app, db_url, dovecot):
    app = polling_app(make_app, db_url, dovecot)
    raw, _ = customer_mail("Where is my parcel?")
    dovecot.append(raw)
    with TestClient(app) as tc:
        desk = Desk(tc)
        deadline = time.monotonic() + 20
        while desk.count(Ticket) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert desk.count(Ticket) == 1
        inbox = tc.get("/readyz").json()["mail"]["inbox"]
        assert inbox["error"] is None and inbox["every_seconds"] == 0.2


# -- replies out: a real SMTP server --------------------------------------------------


def test_a_reply_reaches_the_smtp_server_threaded_to_the_customers_mail(mail_desk, smtp):
    raw, msgid = customer_mail("Where is my parcel?", sender="Ann Buyer <ann@example.com>")
    ticket_id = mail_desk.service.post_email(raw)["ticket_id"]
    out = mail_desk.agent.reply(ticket_id, "It left our warehouse today.", wait_for_customer=True)
    assert out["delivery"]["state"] == "queued"
    assert out["outbound"][0]["state"] == "queued"
    assert smtp.received == []  # nothing leaves before the commit and the delivery

    report = deliver(mail_desk, smtp)
    assert (report.sent, report.retrying, report.failed) == (1, 0, 0)
    [got] = smtp.received
    assert got.rcpt_tos == ["ann@example.com"]
    assert got.mail_from == SELLER
    assert got.message["In-Reply-To"] == msgid
    assert msgid in got.message["References"]
    assert got.message["Subject"] == "Re: Where is my order 112-1234567-1234567?"
    assert "It left our warehouse today." in got.message.get_content()
    ticket = mail_desk.agent.ticket(ticket_id)
    assert ticket["outbound"][0]["state"] == "sent"
    assert ticket["outbound"][0]["message_id"] == got.message["Message-ID"]
    assert deliver(mail_desk, smtp).sent == 0  # sent once


def test_a_refusing_server_gets_the_reply_again_later(mail_desk, smtp, clock):
    raw, _ = customer_mail("Where is my parcel?")
    ticket_id = mail_desk.service.post_email(raw)["ticket_id"]
    mail_desk.agent.reply(ticket_id, "On its way.")
    smtp.refusals.append("451 4.3.0 try again later")
    report = deliver(mail_desk, smtp)
    assert (report.sent, report.retrying) == (0, 1)
    row = mail_desk.agent.ticket(ticket_id)["outbound"][0]
    assert row["state"] == "queued" and row["attempts"] == 1 and "451" in row["last_error"]
    assert deliver(mail_desk, smtp).sent == 0  # not before its backoff
    clock.advance(seconds=31)
    assert deliver(mail_desk, smtp).sent == 1
    assert len(smtp.received) == 1
    row = mail_desk.agent.ticket(ticket_id)["outbound"][0]
    assert (row["state"], row["attempts"]) == ("sent", 2)


def test_a_permanent_refusal_marks_the_reply_failed(mail_desk, smtp):
    raw, _ = customer_mail("Where is my parcel?")
    ticket_id = mail_desk.service.post_email(raw)["ticket_id"]
    mail_desk.agent.reply(ticket_id, "On its way.")
    smtp.refusals.append("550 5.1.1 no such mailbox")
    assert deliver(mail_desk, smtp).failed == 1
    row = mail_desk.agent.ticket(ticket_id)["outbound"][0]
    assert row["state"] == "failed" and "550" in row["last_error"]


def test_a_crash_between_send_and_commit_resends_with_the_same_message_id(mail_desk, smtp, clock):
    raw, _ = customer_mail("Where is my parcel?")
    ticket_id = mail_desk.service.post_email(raw)["ticket_id"]
    mail_desk.agent.reply(ticket_id, "On its way.")
    svc = mail_desk.app.state.services
    # the worker took the row and sent it, then died before marking it sent
    [row_id] = take_due(svc.sessions, clock(), 10, svc.skip_locked)
    import smtplib

    from serving.outbox import render

    with svc.sessions() as s:
        mail = render(s.get(OutboundMail, row_id))
    with smtplib.SMTP("127.0.0.1", smtp.port) as conn:
        conn.send_message(mail)
    assert deliver(mail_desk, smtp).sent == 0  # another worker leaves it alone meanwhile
    clock.advance(seconds=SENDING_LEASE.total_seconds() + 1)
    assert deliver(mail_desk, smtp).sent == 1
    ids = {r.message["Message-ID"] for r in smtp.received}
    assert len(smtp.received) == 2 and len(ids) == 1  # the receiver sees one message
    assert mail_desk.count(OutboundMail) == 1


def test_without_a_relay_the_reply_is_recorded_and_not_sent(desk):
    raw, _ = customer_mail("Where is my parcel?")
    ticket_id = desk.service.post_email(raw)["ticket_id"]
    out = desk.agent.reply(ticket_id, "On its way.")
    assert out["delivery"]["state"] == "not_sent"
    assert "CARELENS_SMTP_HOST" in out["delivery"]["reason"]
    assert out["outbound"] == [] and out["first_response_at"] is not None


def test_a_chat_has_no_address_to_send_to(mail_desk):
    ticket_id = mail_desk.service.post_message(channel="chat", text="Where is my parcel?")[
        "ticket_id"
    ]
    out = mail_desk.agent.reply(ticket_id, "On its way.")
    assert (
        out["delivery"]["state"] == "not_sent" and "no reply address" in out["delivery"]["reason"]
    )


# -- threads ------------------------------------------------------------------------


def test_the_customers_answer_reopens_the_same_ticket(mail_desk, smtp, clock):
    raw, _ = customer_mail("Where is my parcel?")
    ticket_id = mail_desk.service.post_email(raw)["ticket_id"]
    mail_desk.agent.claim_ticket(ticket_id)
    mail_desk.agent.reply(ticket_id, "Could you confirm your address?", wait_for_customer=True)
    deliver(mail_desk, smtp)
    our_id = smtp.received[0].message["Message-ID"]

    clock.advance(hours=5)
    waiting = mail_desk.agent.tickets(state="waiting_on_customer")
    assert [t["id"] for t in waiting] == [ticket_id]
    assert waiting[0]["waiting_hours"] == 5.0
    queue = mail_desk.agent.ticket(ticket_id)["queue"]
    assert [q for q in mail_desk.agent.queues() if q["queue"] == queue][0][
        "waiting_on_customer"
    ] == 1

    answer, _ = customer_mail(
        "Yes, 1 Main Street.", subject="Re: Where is my order", in_reply_to=our_id
    )
    stored = mail_desk.service.post_email(answer)
    assert stored["ticket_id"] == ticket_id and stored["answered"] is True
    ticket = mail_desk.agent.ticket(ticket_id)
    assert ticket["state"] == "open"
    assert ticket["reply_due_at"] is not None
    assert [a["text"] for a in ticket["answers"]] == ["Yes, 1 Main Street."]
    assert mail_desk.count(Ticket) == 1
    listed = mail_desk.agent.queue_tickets(queue)
    assert ticket_id in [t["id"] for t in listed]

    # the next reply is threaded to the answer, and clears its deadline
    out = mail_desk.agent.reply(ticket_id, "Thanks, it is on its way.")
    assert out["reply_due_at"] is None
    deliver(mail_desk, smtp)
    assert smtp.received[1].message["In-Reply-To"] == stored_message_id(mail_desk, ticket_id)


def stored_message_id(desk, ticket_id):
    with desk.sessions() as s:
        return s.get(Ticket, ticket_id).answers[-1].external_id


def test_an_answer_without_headers_joins_by_customer_and_order(desk, clock):
    first = desk.service.post_message(
        channel="chat", text="Where is my parcel?", customer_id="c-1", order_id="o-1"
    )
    desk.agent.reply(first["ticket_id"], "Checking.", wait_for_customer=True)
    clock.advance(days=2)
    again = desk.service.post_message(
        channel="chat", text="Any news?", customer_id="c-1", order_id="o-1"
    )
    assert again["ticket_id"] == first["ticket_id"] and again["answered"]
    other = desk.service.post_message(
        channel="chat", text="And my other order?", customer_id="c-1", order_id="o-2"
    )
    assert other["ticket_id"] != first["ticket_id"]
    clock.advance(days=30)  # past the routing file's threads.days
    late = desk.service.post_message(
        channel="chat", text="Hello again", customer_id="c-1", order_id="o-1"
    )
    assert late["ticket_id"] != first["ticket_id"]


def test_an_agent_claims_a_given_ticket(desk, clock):
    ticket_id = desk.service.post_message(channel="chat", text="Where is my parcel?")["ticket_id"]
    claimed = desk.agent.claim_ticket(ticket_id)
    assert claimed["state"] == "claimed" and claimed["claimed_by"] == "alice"
    with pytest.raises(CarelensError) as err:
        desk.agent2.claim_ticket(ticket_id)
    assert err.value.status_code == 409 and "claimed by alice" in err.value.detail
    assert desk.agent.claim_ticket(ticket_id)["state"] == "claimed"  # renewed
    clock.advance(seconds=desk.app.state.settings.lease_seconds + 1)
    assert desk.agent2.claim_ticket(ticket_id)["claimed_by"] == "bob"  # the lease ran out
    kinds = [e.kind for e in _events(desk, ticket_id)]
    assert kinds[-2:] == ["lease_expired", "claimed"]
    desk.agent2.resolve(ticket_id)
    with pytest.raises(CarelensError) as err:
        desk.agent.claim_ticket(ticket_id)
    assert err.value.status_code == 409 and "resolved" in err.value.detail
    with pytest.raises(CarelensError) as err:
        desk.agent.claim_ticket(10_000)
    assert err.value.status_code == 404


def _events(desk, ticket_id):
    with desk.sessions() as s:
        return list(s.get(Ticket, ticket_id).events)


# -- attachments, relay mail, charsets ---------------------------------------------------


def test_attachments_are_kept_listed_and_downloadable(desk):
    photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    raw, _ = customer_mail(
        "The lid is cracked, photo attached.", attachment=("lid.png", "image/png", photo)
    )
    ticket_id = desk.service.post_email(raw)["ticket_id"]
    [att] = desk.agent.ticket(ticket_id)["attachments"]
    assert (att["filename"], att["content_type"], att["size"]) == ("lid.png", "image/png", 264)
    got = desk.http.get(
        f"/v1/tickets/{ticket_id}/attachments/{att['id']}",
        headers={"Authorization": f"Bearer {desk.agent.api_key}"},
    )
    assert got.status_code == 200 and got.content == photo
    assert got.headers["content-disposition"].startswith("attachment;")
    missing = desk.http.get(
        f"/v1/tickets/{ticket_id}/attachments/{att['id'] + 1}",
        headers={"Authorization": f"Bearer {desk.agent.api_key}"},
    )
    assert missing.status_code == 404


def test_a_photo_without_words_becomes_a_ticket(desk):
    mail = EmailMessage()
    mail["From"] = "buyer@example.com"
    mail["Message-ID"] = make_msgid()
    mail.add_attachment(b"\xff\xd8\xff", maintype="image", subtype="jpeg", filename="box.jpg")
    stored = desk.service.post_email(mail.as_bytes())
    ticket = desk.agent.ticket(stored["ticket_id"])
    assert ticket["message"]["text"] == "[1 attachment: box.jpg]"
    assert [a["filename"] for a in ticket["attachments"]] == ["box.jpg"]


AMAZON_RELAY = """\
From: "Ann - Amazon Marketplace" <9xk2mq7vsb5nrdp@marketplace.amazon.com>
To: support@shop.example
Subject: Inquiry from Amazon customer Ann (Order: 114-3941689-8772232)
Message-ID: <relay-1@marketplace.amazon.com>
Date: Thu, 19 Nov 2026 09:00:00 +0000
Content-Type: text/plain; charset=utf-8

------------- Begin message -------------

The blender arrived but the jug is cracked. Can I get a replacement?

------------- End message -------------

For Your Information: To help arbitrate disputes and preserve trust and safety, we retain all messages buyers and sellers send through Amazon.com for two years.

Order ID: 114-3941689-8772232
Item: Blender 600W
ASIN: B07XJ8C8F5

To respond to this customer, please reply to this e-mail or visit your seller account.

Was this email helpful?

Copyright 2026 Amazon.com, Inc. or its affiliates. All rights reserved.
"""


def test_amazon_relay_mail_keeps_the_buyers_words_and_the_ids():
    parsed = parse_email(AMAZON_RELAY.encode())
    assert parsed.text == ("The blender arrived but the jug is cracked. Can I get a replacement?")
    assert parsed.order_id == "114-3941689-8772232"
    assert parsed.product_id == "B07XJ8C8F5"
    assert parsed.reply_to == "9xk2mq7vsb5nrdp@marketplace.amazon.com"


def test_relay_frames_without_begin_and_end_are_removed_too():
    raw = (
        b"From: buyer@marketplace.amazon.de\nSubject: Frage\n\n"
        b"[Important: Please do not reply above this line]\n"
        b"Is the charger compatible with 230V?\n\nWas this email helpful?\n"
    )
    assert parse_email(raw).text == "Is the charger compatible with 230V?"


def test_chinese_mail_declared_gb2312_but_written_in_gbk_reads_right():
    text = "喆哥，收到的镕铸件有裂纹，要求退货。"  # 喆 and 镕 are GBK, not GB2312
    raw = (
        b"From: buyer@example.cn\nSubject: =?gb2312?b?"
        + __import__("base64").b64encode("退货".encode("gb2312"))
        + b"?=\nContent-Type: text/plain; charset=gb2312\nContent-Transfer-Encoding: 8bit\n\n"
        + text.encode("gbk")
        + b"\n"
    )
    parsed = parse_email(raw)
    assert parsed.text == text and parsed.subject == "退货"


def test_bytes_no_charset_reads_are_replaced_not_refused():
    raw = b"From: a@b.c\nContent-Type: text/plain; charset=x-unknown-9\n\nbroken \xff\xfe text\n"
    assert parse_email(raw).text.startswith("broken ")
    raw = b"From: a@b.c\nContent-Type: text/plain; charset=utf-8\n\nbroken \xff\xfe text\n"
    assert "\ufffd" in parse_email(raw).text


def test_the_outbox_backoff_grows_and_stops_at_an_hour():
    from serving.outbox import backoff

    assert [backoff(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff(30) == timedelta(hours=1)


def test_an_empty_plain_part_gives_way_to_the_html_one():
    raw = (
        b"From: a@b.c\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/alternative; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain; charset=utf-8\n\n\n\n"
        b"--B\nContent-Type: text/html; charset=utf-8\n\n<p>The zip is broken</p>\n--B--\n"
    )
    parsed = parse_email(raw)
    assert parsed.text == "The zip is broken" and parsed.attachments == []


def test_obsolete_blanks_before_a_header_colon_are_read():
    raw = b"From  : ann@example.com\nSubject   : Saying hello\n\nHello there.\n"
    parsed = parse_email(raw)
    assert (parsed.sender, parsed.subject, parsed.text) == (
        "ann@example.com",
        "Saying hello",
        "Hello there.",
    )


def test_a_refused_login_shows_in_readyz_and_the_service_stays_up(make_app, db_url, dovecot):
    app = polling_app(make_app, db_url, dovecot, password="wrong")
    with TestClient(app) as tc:
        deadline = time.monotonic() + 20
        inbox = {}
        while time.monotonic() < deadline:
            ready = tc.get("/readyz").json()
            inbox = ready["mail"]["inbox"]
            if inbox["error"]:
                break
            time.sleep(0.1)
        assert ready["ready"] is True
        assert "refused the login" in inbox["error"] and "CARELENS_IMAP_PASSWORD" in inbox["error"]
