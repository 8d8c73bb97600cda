"""Reply templates: the file defaults, admins' edits (unknown placeholders refused),
suggested replies for an English and a Chinese ticket, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from carelens_client import CarelensError

from model.taxonomy import Taxonomy
from serving.templates import (
    TemplateError,
    check,
    fill,
    issue_type_problem,
    load_file_templates,
    placeholders,
)


def _err(fn, *args, **kwargs) -> CarelensError:
    with pytest.raises(CarelensError) as info:
        fn(*args, **kwargs)
    return info.value


def test_default_templates_cover_the_taxonomy_in_both_languages():
    templates = load_file_templates()
    taxonomy = Taxonomy.default()
    labels = set(taxonomy["issue_type"].label_names)
    for lang in ("en", "zh"):
        assert {t.issue_type for t in templates.values() if t.lang == lang} == labels
    assert all(issue_type_problem(t.issue_type, taxonomy) is None for t in templates.values())
    late = templates["en.shipping_delivery.late"]
    assert late.required == ["order_id", "agent_name"]  # customer_name has a fallback


def test_placeholder_rules():
    assert placeholders("Hi {customer_name}, {{literal}} {order_id}") == [
        "customer_name",
        "order_id",
    ]
    for body, needle in [
        ("Use {coupon_code}", "unknown placeholder {coupon_code}"),
        ("{order_id!r}", "takes no conversion"),
        ("{order_id:>10}", "takes no conversion"),
        ("{}", "positional"),
        ("{order_id", "literal braces"),
    ]:
        with pytest.raises(TemplateError, match=needle.replace("{", r"\{").replace("}", r"\}")):
            placeholders(body)
    assert fill("Hi {customer_name}, order {order_id}", {"customer_name": "Ann"}) == (
        "Hi Ann, order {order_id}",
        ["order_id"],
    )
    with pytest.raises(TemplateError, match="not a label of the served taxonomy"):
        check("x", "teleport", "en", "t", "b", {}, Taxonomy.default())
    with pytest.raises(TemplateError, match="the body does not use"):
        check("x", "other", "en", "t", "b", {"order_id": "-"}, Taxonomy.default())


def test_suggested_replies_en_and_zh(seller, planned):  # noqa: F811
    desk = seller()
    en = desk.service.post_message(
        channel="email",
        text=planned.plan(
            "My parcel is late and I want my money back",
            "negative",
            shipping_delivery=0.9,
            refund_return=0.6,
        ),
        order_id="113-0000001-0000001",
        product_id="B0KETTLE01",
    )
    out = desk.agent.suggested_replies(en["ticket_id"])
    assert [s["name"] for s in out] == [
        "en.shipping_delivery.late",
        "en.shipping_delivery.status",
        "en.refund_return.started",
    ]
    first = out[0]
    assert first["ready"] and first["missing"] == [] and first["lang_match"] == "exact"
    assert first["label_score"] == 0.9 and first["label_source"] == "model"
    assert first["text"].startswith("Hi there,\n\nI'm sorry your order 113-0000001-0000001 ")
    assert first["text"].endswith("Best regards,\nalice")
    named = desk.agent.suggested_replies(en["ticket_id"], customer_name="Ann", limit=1)
    assert len(named) == 1 and named[0]["text"].startswith("Hi Ann,")

    # Chinese, no order id: the template that needs {order_id} comes after the complete
    # one although its label is more probable, with the missing field listed
    zh = desk.service.post_message(
        channel="chat",
        text=planned.plan(
            "快递太慢了，收到的电水壶还不能开机",
            "negative",
            shipping_delivery=0.8,
            damaged_defective=0.7,
        ),
        product_id="B0KETTLE01",
    )
    out = desk.agent.suggested_replies(zh["ticket_id"], product="电水壶")
    assert [(s["name"], s["ready"]) for s in out] == [
        ("zh.damaged_defective.replace", True),
        ("en.damaged_defective.replace", True),
        ("zh.shipping_delivery.late", False),
        ("zh.shipping_delivery.status", False),
        ("en.shipping_delivery.late", False),
        ("en.shipping_delivery.status", False),
    ]
    assert out[0]["lang_match"] == "exact" and out[1]["lang_match"] == "fallback"
    assert out[0]["text"] == (
        "亲，您好！\n\n很抱歉电水壶出现了损坏或故障。麻烦您拍一张问题照片发给我们，我们会免费为您补发或退款，\n"
        "坏的商品无需寄回。\n\n客服 alice"
    )
    assert out[2]["missing"] == ["order_id"] and "{order_id}" in out[2]["text"]

    # an agent's correction decides: its labels count 1.0
    desk.agent.set_labels(zh["ticket_id"], {"issue_type": ["wrong_item"]})
    out = desk.agent.suggested_replies(zh["ticket_id"])
    assert [s["name"] for s in out] == ["zh.wrong_item.exchange", "en.wrong_item.exchange"]
    assert out[0]["label_source"] == "agent" and out[0]["label_score"] == 1.0
    assert _err(desk.agent.suggested_replies, 999).status_code == 404


def test_admins_add_edit_and_delete_templates(seller, planned):  # noqa: F811
    desk = seller()
    before = {t["name"]: t for t in desk.admin.templates()}
    assert before["en.praise.thanks"]["source"] == "file" and before["en.praise.thanks"]["active"]

    err = _err(
        desk.admin.add_template,
        "en.billing.coupon",
        "billing_payment",
        "en",
        "Coupon",
        "Hi {customer_name}, here is {coupon_code}.",
    )
    assert err.status_code == 422
    assert err.detail.startswith("body: unknown placeholder {coupon_code} (known: {customer_name}")
    err = _err(desk.admin.add_template, "x.y", "teleport", "en", "T", "Hi")
    assert err.status_code == 422 and "issue_type 'teleport' is not a label" in err.detail
    err = _err(desk.admin.add_template, "en.praise.thanks", "praise", "en", "T", "Thanks!")
    assert err.status_code == 409 and "PUT /v1/templates/en.praise.thanks" in err.detail
    assert len(desk.admin.templates()) == len(before)  # nothing stored

    added = desk.admin.add_template(
        "en.shipping_delivery.tracking",
        "shipping_delivery",
        "en",
        "Tracking link",
        "Dear {customer_name}, the tracking of {order_id} is in your account. {agent_name}",
        fallbacks={"customer_name": "customer"},
    )
    assert added["source"] == "store" and added["required"] == ["order_id", "agent_name"]
    desk.admin.put_template(
        "en.shipping_delivery.late",
        "shipping_delivery",
        "en",
        "Late (edited)",
        "Sorry {customer_name}, order {order_id} is late. {agent_name}",
        fallbacks={"customer_name": "there"},
    )
    desk.admin.delete_template("en.refund_return.started")  # hides a file default
    assert _err(desk.admin.delete_template, "en.refund_return.started").status_code == 404

    ticket = desk.service.post_message(
        channel="email",
        text=planned.plan("late and refund", "negative", shipping_delivery=0.9, refund_return=0.8),
        order_id="O-1",
    )["ticket_id"]
    out = desk.agent.suggested_replies(ticket)
    assert [(s["name"], s["source"]) for s in out] == [
        ("en.shipping_delivery.late", "store"),
        ("en.shipping_delivery.status", "file"),
        ("en.shipping_delivery.tracking", "store"),
    ]
    assert out[0]["text"] == "Sorry there, order O-1 is late. alice"
    desk.admin.delete_template("en.shipping_delivery.tracking")
    names = {t["name"] for t in desk.admin.templates()}
    assert "en.shipping_delivery.tracking" not in names and "en.refund_return.started" not in names
    assert len(names) == len(before) - 1
