"""Signal alerts, on SQLite and PostgreSQL: sentiment and urgency shifts per language,
issue-type spikes per product, the model's weekly label drift against its training
rows; each sent once to a webhook and by e-mail (a real HTTP and a real SMTP server),
never with a customer's words."""

from __future__ import annotations

from datetime import datetime, timedelta

from serving import signals
from serving.outbox import SmtpConfig
from serving.store import SignalAlert
from tests.serving.test_alerts import smtp, webhook  # noqa: F401  (fixtures)

TODAY = datetime.fromisoformat("2026-11-20T00:00:00+00:00")  # the clock's day (a Friday)
TRAINING = {"sentiment": {"positive": 0.7, "neutral": 0.2, "negative": 0.1}}


def _rows(planned, lang, n, negative, start, hours):  # noqa: F811
    """``n`` reviews in ``lang`` from ``start`` every ``hours``, the first ``negative``
    of them negative (the rest positive)."""
    rows = []
    for i in range(n):
        sentiment = "negative" if i < negative else "positive"
        text = (
            f"note {start:%m%d} {sentiment} {i}"
            if lang == "en"
            else f"第{i}条{start:%m%d}留言{'差评' if sentiment == 'negative' else '好评'}"
        )
        planned.plan(text, sentiment)
        rows.append(
            {
                "channel": "review",
                "text": text,
                "rating": 1 if sentiment == "negative" else 5,
                "received_at": (start + timedelta(hours=hours * i)).isoformat(),
            }
        )
    return rows


def _shop(desk, planned):  # noqa: F811
    base, recent = TODAY - timedelta(days=35), TODAY - timedelta(days=7)
    rows = [
        *_rows(planned, "en", 30, 3, base, 20),  # baseline: 10% negative
        *_rows(planned, "zh", 20, 4, base, 30),  # baseline: 20% negative
        *_rows(planned, "en", 20, 15, recent, 8),  # this week: 75% negative
        *_rows(planned, "zh", 20, 5, recent, 8),  # this week: 25%, within chance
    ]
    for i in range(6):  # safety: the rules make them critical
        text = planned.plan(f"The kettle caught fire on day {i}", "negative")
        rows.append(
            {
                "channel": "review",
                "text": text,
                "rating": 1,
                "received_at": (recent + timedelta(hours=20 * i + 3)).isoformat(),
            }
        )
    for i in range(20):  # a product: baseline fine, this week broken
        broken = i >= 12
        text = planned.plan(
            f"kettle review {i}", "negative" if broken else "positive",
            **({"damaged_defective": 0.9} if broken else {"praise": 0.9}),
        )  # fmt: skip
        at = (
            (base + timedelta(days=2 * i)) if not broken else recent + timedelta(hours=12 * i - 140)
        )
        rows.append(
            {"channel": "review", "text": text, "product_id": "B0KETTLE", "received_at": at.isoformat()}
        )  # fmt: skip
    for start in range(0, len(rows), 50):
        desk.service.post_messages(rows[start : start + 50])


def test_signals_show_shifts_spikes_and_drift(seller, planned):  # noqa: F811
    planned.model.metrics = {"label_distribution": TRAINING}
    desk = seller(drift_min_messages=10)
    _shop(desk, planned)
    r = desk.http.get("/v1/stats/signals", headers={"X-API-Key": desk.agent.api_key})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["until"].startswith("2026-11-20T00:00")
    shifts = {(s["kind"], s["lang"]): s for s in out["shifts"]}
    flagged = {k for k, s in shifts.items() if s["flagged"]}
    assert flagged == {("sentiment_shift", "en"), ("urgency_shift", "en")}
    en = shifts[("sentiment_shift", "en")]
    assert en["baseline_count"] == 3 and en["share"] > 0.5 and en["p_adjusted"] < 0.01
    assert not shifts[("sentiment_shift", "zh")]["flagged"]  # tested, within chance
    assert shifts[("urgency_shift", "en")]["count"] == 6
    spikes = [(s["product_id"], s["issue_type"]) for s in out["issue_spikes"]]
    assert spikes == [("B0KETTLE", "damaged_defective")]
    drift = out["label_drift"]
    assert drift["available"] and drift["window_start"].startswith("2026-11-09")
    sentiment = next(t for t in drift["tasks"] if t["task"] == "sentiment")
    assert sentiment["flagged"] and sentiment["psi"] >= 0.25
    assert sentiment["most_changed"][0]["label"] in ("negative", "positive")

    # the same week measured against itself does not drift
    with desk.sessions() as s:
        week = signals.label_drift(s, desk.app.state.services.clock(), TRAINING, 10, 0.25)
        task = week["tasks"][0]
        shares = _week_shares(s, week)
        again = signals.label_drift(
            s, desk.app.state.services.clock(), {"sentiment": shares}, 10, 0.25
        )
    assert task["flagged"] and again["tasks"][0]["psi"] < 0.01


def _week_shares(session, week) -> dict[str, float]:
    from sqlalchemy import select

    from serving.store import Message, Prediction

    rows = session.execute(
        select(Prediction.labels)
        .join(Message, Message.id == Prediction.message_id)
        .where(
            Message.received_at >= datetime.fromisoformat(str(week["window_start"])),
            Message.received_at < datetime.fromisoformat(str(week["window_end"])),
        )
    ).all()
    labels = [r[0]["sentiment"][0] for r in rows]
    return {k: labels.count(k) / len(labels) for k in set(labels)}


def test_signal_alerts_are_sent_once_without_customer_words(
    seller,  # noqa: F811
    planned,  # noqa: F811
    clock,
    webhook,  # noqa: F811
    smtp,  # noqa: F811
):
    planned.model.metrics = {"label_distribution": TRAINING}
    desk = seller(drift_min_messages=10)
    _shop(desk, planned)
    svc = desk.app.state.services
    url, got = webhook
    cfg = signals.SignalConfig.from_settings(svc.settings)
    relay = SmtpConfig(host="127.0.0.1", port=smtp.port, security="none")

    def round_():
        ids = signals.scan(svc.sessions, clock(), cfg, signals.training_distribution(planned))
        signals.deliver(svc.sessions, ids, url, ["lead@shop.example"], relay, "desk@shop.example")
        return ids

    assert len(round_()) == 4
    kinds = sorted((g["alert"], g["subject"]) for g in got)
    assert kinds == [
        ("issue_spike", "B0KETTLE:damaged_defective"),
        ("label_drift", "sentiment"),
        ("sentiment_shift", "en"),
        ("urgency_shift", "en"),
    ]
    assert round_() == []  # once
    clock.advance(days=1)  # still flagged tomorrow: not again within the week
    assert round_() == []
    for g in got:
        text = str(g)
        assert "caught fire" not in text and "note 1" not in text and "examples" not in g
    subjects = sorted(m.message["Subject"] for m in smtp.received)
    assert "[carelens] more negative messages in en" in subjects
    assert "[carelens] the model's sentiment labels drifted" in subjects
    assert all(m.rcpt_tos == ["lead@shop.example"] for m in smtp.received)
    with desk.sessions() as s:
        rows = s.query(SignalAlert).all()
        assert {(r.webhook_status, r.email_status) for r in rows} == {("HTTP 204", "sent to 1")}
    listed = desk.http.get("/v1/stats/signals", headers={"X-API-Key": desk.agent.api_key}).json()
    assert len(listed["alerts"]) == 4

    # the console's products page lists them, in the agent's language
    desk.http.post("/console/login", data={"key": desk.agent.api_key, "next": "/console"})
    page = desk.http.get("/console/products").text
    assert "Alerts sent" in page and "Issue spike" in page and "Model labels drifted" in page
    assert "PSI" in page and "caught fire" not in page
    zh = desk.http.get("/console/products", headers={"Accept-Language": "zh-CN"}).text
    assert "已发出的预警" in zh and "负面消息增多" in zh


def test_drift_needs_the_models_training_distribution(seller, planned):  # noqa: F811
    desk = seller()
    out = desk.http.get("/v1/stats/signals", headers={"X-API-Key": desk.agent.api_key}).json()
    assert out["label_drift"]["available"] is False
    assert "label_distribution" in out["label_drift"]["reason"]
    assert out["shifts"] == [] and out["issue_spikes"] == []
    r = desk.http.get("/v1/stats/signals?window=3", headers={"X-API-Key": desk.agent.api_key})
    assert r.status_code == 422 and "window" in r.text
