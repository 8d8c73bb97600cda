"""The agent console: sign-in, roles, CSRF and every ticket state through the app (SQLite
and PostgreSQL); a day's work in a real browser (Debian's Chromium driven by Playwright,
screenshots in ``$CARELENS_HOME/screenshots``). Under CI=true the browser test runs; a
machine without Chromium skips it with the reason."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.serving.factories import ADMIN_KEY, uvicorn_thread

FIRE = "The charger caught fire after two days! I want a refund."


def _sign_in(http, key: str):
    return http.post(
        "/console/login", data={"key": key, "next": "/console"}, follow_redirects=False
    )


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_sign_in_roles_csrf_and_revoked_keys(desk):
    http = desk.http
    assert http.get("/", follow_redirects=False).headers["location"] == "/console"
    r = http.get("/console/reviews", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login?next=/console/reviews"
    bad = _sign_in(http, "clk_not-a-key")
    assert bad.status_code == 401 and "unknown or revoked key" in bad.text
    service = _sign_in(http, desk.service.api_key)
    assert service.status_code == 403 and "needs an agent or admin key" in service.text
    ok = _sign_in(http, desk.agent.api_key)
    assert ok.status_code == 303 and ok.headers["location"] == "/console"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert desk.agent.api_key not in ok.headers["set-cookie"]  # the key is never in it
    page = http.get("/console")
    assert page.status_code == 200 and "alice" in page.text and "escalations" in page.text

    posted = desk.service.post_message(channel="email", text=FIRE, customer_id="c1")
    tid = posted["ticket_id"]
    forged = http.post(f"/console/tickets/{tid}/claim", data={"csrf": "x"}, follow_redirects=False)
    assert forged.status_code == 303 and "error=" in forged.headers["location"]
    assert desk.agent.ticket(tid)["state"] == "open"  # nothing happened
    csrf = _csrf(http.get(f"/console/tickets/{tid}").text)
    claimed = http.post(f"/console/tickets/{tid}/claim", data={"csrf": csrf})
    assert claimed.status_code == 200
    assert desk.agent.ticket(tid)["claimed_by"] == "alice"  # the API's claim, the API sees it

    key_id = next(k["id"] for k in desk.admin.list_keys() if k["name"] == "alice")
    desk.admin.revoke_key(key_id)
    assert (
        http.get("/console", follow_redirects=False)
        .headers["location"]
        .startswith("/console/login")
    )


def test_every_ticket_state_has_its_page_in_both_languages(desk, clock):
    http = desk.http
    _sign_in(http, desk.agent.api_key)
    tickets = {}
    for state in ("open", "claimed", "waiting_on_customer", "resolved", "no_response_needed"):
        posted = desk.service.post_message(
            channel="email",
            text=f"Where is my parcel? ({state})",
            subject="Parcel",
            customer_id=f"c-{state}",
            order_id="111-2223334-5556667",
        )
        tid = tickets[state] = posted["ticket_id"]
        if state != "open":
            desk.agent.claim_ticket(tid)
        if state == "waiting_on_customer":
            desk.agent.reply(tid, "It is on its way.", wait_for_customer=True)
        elif state == "resolved":
            desk.agent.resolve(tid)
        elif state == "no_response_needed":
            desk.agent.no_response_needed(tid)
    review = desk.service.post_message(
        channel="review", text="Broke after a week", rating=1, product_id="B0KETTLE"
    )
    tickets["review"] = review["ticket_id"]
    raw = (
        b"From: Dana Wu <dana@example.com>\r\nTo: shop@example.com\r\nSubject: Re: Parcel\r\n"
        b"Message-ID: <m2@example.com>\r\nIn-Reply-To: <m1@shop.example>\r\n"
        b"References: <m0@example.com> <m1@shop.example>\r\n\r\nStill no parcel.\r\n"
    )
    mail = desk.service.post_email(raw)["ticket_id"]
    clock.advance(minutes=1)  # the figures count messages received before now
    for lang, word in (("en", "Ticket"), ("zh", "工单")):
        http.get(f"/console/lang/{lang}?next=/console")
        for state, tid in tickets.items():
            r = http.get(f"/console/tickets/{tid}")
            assert r.status_code == 200, (state, r.text[:300])
            assert f"{word} {tid}" in r.text
        for path in (
            "/console",
            "/console/reviews",
            "/console/queues/general",
            "/console/products",
            "/console/team",
            "/console/returns",
        ):
            assert http.get(path).status_code == 200, path
        counted = "数据统计于" if lang == "zh" else "Figures counted at"
        assert f"{counted} <time" in http.get("/console/team").text
        for chart in ("products/mix", "products/trends", "team/first_response", "team/sla_met"):
            png = http.get(f"/console/{chart}.png")
            assert png.status_code == 200 and png.content[:4] == b"\x89PNG", chart
    assert "物流配送" in http.get(f"/console/tickets/{tickets['open']}").text
    headers = http.get(f"/console/tickets/{mail}").text  # the e-mail's headers
    for shown in ("Dana Wu &lt;dana@example.com&gt;", "&lt;m2@example.com&gt;", "m0@example.com"):
        assert shown in headers, shown
    missing = http.get("/console/tickets/999999")
    assert missing.status_code == 404 and "999999" in missing.text
    for listing in ("/console/reviews", "/console/queues/general"):
        stale = http.get(f"{listing}?after=not-a-cursor")
        assert stale.status_code == 422 and "after" in stale.text, listing
    for bad in ("99999999999999999999", "0", "-1", "abc"):  # refused, never a 500
        assert http.get(f"/console/tickets/{bad}").status_code == 422, bad
    r = http.post("/console/tickets/1/return-state", data={"csrf": "x", "return_id": "9" * 30})
    assert r.status_code == 200
    assert http.get("/console/queues/nope").status_code == 404
    csrf = _csrf(http.get(f"/console/tickets/{tickets['resolved']}").text)
    r = http.post(
        f"/console/tickets/{tickets['resolved']}/reply", data={"csrf": csrf, "text": "again"}
    )
    assert r.status_code == 200 and "flash error" in r.text  # the API's 409, on the page
    r = http.post(f"/console/tickets/{tickets['open']}/explode", data={"csrf": csrf})
    assert r.status_code == 404

    # a return opened and moved from the ticket page is the API's return
    tid = tickets["claimed"]
    page = http.post(f"/console/tickets/{tid}/return", data={"csrf": csrf, "note": "unused"})
    assert page.status_code == 200 and "requested" in page.text
    return_id = re.search(r'name="return_id" value="(\d+)"', page.text).group(1)
    page = http.post(
        f"/console/tickets/{tid}/return-state",
        data={"csrf": csrf, "return_id": return_id, "state": "approved"},
    )
    assert "<strong>approved</strong>" in page.text
    r = http.get(f"/v1/returns/{return_id}", headers={"X-API-Key": desk.agent.api_key})
    assert r.json()["state"] == "approved" and r.json()["note"] == "unused"
    listed = http.get("/console/returns")
    assert f'href="/console/tickets/{tid}"' in listed.text and "approved" in listed.text


# -- in a real browser -------------------------------------------------------------------


def _chromium() -> str | None:
    return (
        os.environ.get("CARELENS_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


@pytest.fixture
def served(tiny_model_dir, tmp_path):
    """The service on a loopback port (uvicorn in a thread), with a few messages."""
    from carelens_client import CarelensClient

    from serving.app import create_app
    from serving.settings import Settings

    settings = Settings(
        model_dir=tiny_model_dir,
        database_url=f"sqlite:///{tmp_path / 'console.db'}",
        bootstrap_admin_key=ADMIN_KEY,
        registry=tmp_path / "registry",
        jobs_dir=tmp_path / "jobs",
        sla_alert_poll_seconds=0,
        secret_key="test-secret-not-secret",
    )
    with (
        uvicorn_thread(create_app(settings)) as port,
        CarelensClient(f"http://127.0.0.1:{port}", api_key=ADMIN_KEY) as admin,
    ):
        url = f"http://127.0.0.1:{port}"
        keys = {role: admin.create_key(f"{role}-1", role)["key"] for role in ("agent", "service")}
        service = admin.with_key(keys["service"])
        service.post_message(channel="email", text=FIRE, customer_id="c1", subject="Fire!")
        service.post_message(
            channel="review", text="Broke after a week", rating=1, product_id="B0K"
        )
        service.post_message(channel="review", text="Lovely kettle", rating=5, product_id="B0K")
        yield url, keys, admin


@pytest.mark.skipif(
    _chromium() is None and os.environ.get("CI") != "true",
    reason="no Chromium (apt-get install chromium); CI installs it",
)
def test_a_day_in_the_console_in_chromium(served):
    from playwright.sync_api import expect, sync_playwright

    url, keys, admin = served
    shots = Path(os.environ.get("CARELENS_HOME", "var")) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
        page.goto(url + "/")
        expect(page).to_have_url(re.compile(r"/console/login"))
        page.screenshot(path=shots / "login.png")
        page.fill("#key", keys["agent"])
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Queues")
        page.screenshot(path=shots / "queues.png", full_page=True)
        page.click("a[href='/console/queues/escalations']")
        expect(page.locator("h1")).to_contain_text("escalations")
        page.screenshot(path=shots / "queue.png", full_page=True)

        page.keyboard.press("c")  # claim the top ticket
        expect(page.locator("h1")).to_have_text(re.compile(r"Ticket \d+"))
        tid = int(page.locator("h1").inner_text().split()[-1])
        expect(page.get_by_role("button", name="Release")).to_be_visible()
        expect(page.locator("mark", has_text="caught fire")).to_be_visible()
        page.screenshot(path=shots / "ticket.png", full_page=True)

        page.click("details.correct summary")
        for box in page.locator("input[name=issue_type]").all():
            box.uncheck()
        page.check("input[name=issue_type][value=refund_return]")
        page.check("input[name=issue_type][value=safety_hazard]")
        page.check("input[name=sentiment][value=negative]")
        page.click("text=Save labels")
        expect(page.locator(".flash.note")).to_be_visible()
        labels = admin.ticket(tid)["labels"]
        assert sorted(labels["issue_type"]) == ["refund_return", "safety_hazard"]
        assert labels["sentiment"] == ["negative"]

        page.keyboard.press("r")
        page.fill("#reply-text", "We are sorry: please do not use it. A refund is on its way.")
        page.click("text=Send reply")
        expect(page.locator(".flash.note")).to_be_visible()
        assert admin.ticket(tid)["first_response_at"] is not None
        page.click("button:has-text('Resolve')")
        expect(page.locator("h1")).to_contain_text("escalations")
        assert admin.ticket(tid)["state"] == "resolved"
        expect(page.locator(f"a[href='/console/tickets/{tid}']")).to_have_count(0)

        page.click("a[lang=zh]")
        expect(page.locator("h1")).to_contain_text("队列")
        page.goto(url + "/console/reviews")
        expect(page.locator("h1")).to_have_text("评价")
        first = page.locator("table.list tbody tr").first
        expect(first).to_contain_text("Broke after a week")  # unhandled negative first
        first.locator("input[name=note]").fill("replied publicly")
        first.locator("button").click()
        expect(page.locator(".flash.note")).to_be_visible()
        expect(page.locator("table.list tbody tr", has_text="Broke after a week")).to_contain_text(
            "replied publicly"
        )
        page.screenshot(path=shots / "reviews_zh.png", full_page=True)
        page.goto(url + "/console")
        page.screenshot(path=shots / "queues_zh.png", full_page=True)
        for name in ("products", "team"):
            page.goto(f"{url}/console/{name}")
            page.wait_for_function(  # every chart drawn (a PNG the server made)
                "[...document.images].every(i => i.complete && i.naturalWidth > 0)"
            )
            page.screenshot(path=shots / f"{name}_zh.png", full_page=True)

        wrong = browser.new_page()
        wrong.goto(url + "/console/login")
        wrong.fill("#key", keys["service"])
        wrong.click("button[type=submit]")
        expect(wrong.locator(".flash.error")).to_contain_text("agent or admin")

        lead = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
        lead.goto(url + "/console/admin")
        lead.fill("#key", ADMIN_KEY)
        lead.click("button[type=submit]")
        expect(lead.locator("h1")).to_have_text("Admin")
        lead.fill("input[name=name]", "dana")
        lead.click("text=New key")
        expect(lead.locator("code.key")).to_be_visible()
        lead.screenshot(path=shots / "admin.png", full_page=True)
        lead.locator("summary", has_text="Edit").first.click()  # a reply template
        edit = lead.locator("form.template-form").first
        edit.locator("input[name=title]").fill("Order change or cancellation, by the lead")
        lead.screenshot(path=shots / "admin_template.png", full_page=False)
        edit.locator("button[type=submit]").click()
        expect(lead.locator(".flash.note")).to_be_visible()
        expect(lead.locator("table.list")).to_contain_text(["by the lead"])
        browser.close()


def test_admin_page_keys_and_models_for_admins_only(desk):
    http = desk.http
    _sign_in(http, desk.agent.api_key)
    r = http.get("/console/admin")
    assert r.status_code == 403 and "admin key" in r.text
    assert "/console/admin" not in http.get("/console").text  # no link for agents
    _sign_in(http, ADMIN_KEY)
    page = http.get("/console/admin")
    assert page.status_code == 200 and "alice" in page.text and "API keys" in page.text
    assert "Reply templates" in page.text and "Refund &amp; return" in page.text
    csrf = _csrf(page.text)
    made = http.post("/console/admin/keys", data={"csrf": csrf, "name": "carol", "role": "agent"})
    assert made.status_code == 201 and "shown this once" in made.text
    key = re.search(r'<code class="key">([^<]+)</code>', made.text).group(1)
    assert desk.agent.with_key(key).queues()  # the new key works on the API
    carol = next(k for k in desk.admin.list_keys() if k["name"] == "carol")
    r = http.post("/console/admin/revoke", data={"csrf": csrf, "key_id": str(carol["id"])})
    assert r.status_code == 200
    assert next(k for k in desk.admin.list_keys() if k["name"] == "carol")["revoked_at"]
    dup = http.post("/console/admin/keys", data={"csrf": csrf, "name": "alice", "role": "agent"})
    assert dup.status_code == 200 and "already named" in dup.text  # the API's 409
    r = http.post("/console/admin/retrain", data={"csrf": csrf})
    assert "no labelled tickets yet" in r.text
    r = http.post("/console/admin/promote", data={"csrf": csrf, "version": "v999"})
    assert "flash error" in r.text
    forged = http.post("/console/admin/keys", data={"name": "x", "role": "agent"})
    assert "expired" in forged.text and "x" not in [k["name"] for k in desk.admin.list_keys()]


def test_admins_edit_add_and_delete_reply_templates_through_the_api_rules(desk):
    http = desk.http
    _sign_in(http, ADMIN_KEY)
    page = http.get("/console/admin").text
    csrf = _csrf(page)
    default = next(t for t in desk.admin.templates() if t["source"] == "file" and t["fallbacks"])
    form = {
        "csrf": csrf,
        "name": default["name"],
        "issue_type": default["issue_type"],
        "lang": default["lang"],
        "title": "Edited title",
        "body": "Hello, we are on it: " + " ".join(f"{{{k}}}" for k in default["fallbacks"]),
    }
    r = http.post("/console/admin/template", data=form)
    assert r.status_code == 200 and "flash note" in r.text
    edited = next(t for t in desk.admin.templates() if t["name"] == default["name"])
    assert (edited["title"], edited["source"], edited["updated_by"]) == (
        "Edited title",
        "store",
        "bootstrap-admin",
    )
    assert edited["fallbacks"] == default["fallbacks"]  # the text uses them all still
    new = {
        **form,
        "name": "en.praise.custom",
        "issue_type": "praise",
        "title": "Thanks",
        "body": "Thank you, {customer_name}!",
    }
    assert "flash note" in http.post("/console/admin/template", data=new).text
    assert "en.praise.custom" in http.get("/console/admin").text
    # the API's checks answer in the page: an unknown placeholder, a bad name, a wrong label
    for bad, says in (
        ({**new, "body": "Hi {nonsense}"}, "nonsense"),
        ({**new, "name": "has space"}, "name"),
        ({**new, "issue_type": "weather"}, "weather"),
    ):
        r = http.post("/console/admin/template", data=bad)
        assert r.status_code == 200 and "flash error" in r.text and says in r.text, says
    gone = http.post("/console/admin/template-delete", data={"csrf": csrf, "name": new["name"]})
    assert "flash note" in gone.text
    assert "en.praise.custom" not in [t["name"] for t in desk.admin.templates()]
    missing = http.post("/console/admin/template-delete", data={"csrf": csrf, "name": "nope"})
    assert "flash error" in missing.text and "nope" in missing.text
    _sign_in(http, desk.agent.api_key)
    refused = http.post(
        "/console/admin/template", data={**new, "csrf": _csrf(http.get("/console").text)}
    )
    assert refused.status_code == 403
