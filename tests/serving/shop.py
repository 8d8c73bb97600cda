"""A deterministic shop for the seller workflows: a few hundred messages over five
weeks, in English and Chinese, from hand-written templates (no external data).

- five products with reviews (stars) and tickets (email, chat); one product, the kettle
  ``SPIKE_PRODUCT``, gets a planted spike of ``SPIKE_ISSUE`` in the last 7 days;
- a few messages without a product (billing, account);
- repeat customers (a pool of regulars) and one-off buyers;
- three agents (alice, bob, carol) working the queues twice a day: claim, reply, resolve
  (some left waiting on the customer), reviews that need no answer closed as such;
- some templates the model gets wrong (``MISPREDICTED``): the agent who claims such a
  ticket corrects its issue type through ``POST /v1/tickets/{id}/labels``;
- planted follow-ups for the reopen rule (``REOPEN_CASES``).

Labels come from ``shop_predictor()``, a ``PlannedPredictor`` (a stand-in for the model)
that returns each template's planned labels, so every count is known in advance.

Use::

    app = shop_app(db_url, clock)                 # create_app with the shop's stand-in model
    with TestClient(app) as tc:
        desk = Desk(tc)                           # tests/serving/factories.py
        shop = fill_shop(desk, clock)             # posts everything, works the queues

``clock`` ends at ``SHOP_NOW`` (the conftest clock's start, a Friday 18:00 UTC).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.serving.factories import PlannedPredictor

SHOP_NOW = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
DAYS = 35
SHOP_START = SHOP_NOW - timedelta(days=DAYS)
SEED = 20261120

# product id -> (English name, Chinese name)
PRODUCTS: dict[str, tuple[str, str]] = {
    "B0KETTLE01": ("kettle", "电水壶"),
    "B0HEADSET2": ("headset", "耳机"),
    "B0YOGAMAT3": ("yoga mat", "瑜伽垫"),
    "B0PHONECS4": ("phone case", "手机壳"),
    "B0DESKLMP5": ("desk lamp", "台灯"),
}
SPIKE_PRODUCT = "B0KETTLE01"
SPIKE_ISSUE = "damaged_defective"
SPIKE_DAYS = 7
AGENTS = ("alice", "bob", "carol")
WORK_HOURS = (9, 14)  # the agents work the queues at 09:00 and 14:00 UTC
QUEUE_ORDER = ("escalations", "returns", "shipping", "billing", "reviews", "triage", "general")


@dataclass(frozen=True)
class Template:
    key: str
    text: str  # {p}: the product's name in the template's language
    lang: str
    issues: tuple[str, ...]
    sentiment: str
    stars: tuple[int, ...] = ()  # reviews: the ratings it goes with
    predicted_issues: tuple[str, ...] | None = None  # the model's mistake, if any

    @property
    def urgency(self) -> str:
        return "medium" if self.sentiment == "negative" else "low"


def _t(key, text, lang, issues, sentiment, stars=(), predicted=None) -> Template:
    return Template(key, text, lang, tuple(issues), sentiment, tuple(stars), predicted)


REVIEW_TEMPLATES: dict[str, list[Template]] = {
    "praise": [
        _t("praise-en-1", "Love this {p}, it works great.", "en", ["praise"], "positive", (5,)),
        _t(
            "praise-en-2",
            "Great {p} for the price, very happy.",
            "en",
            ["praise"],
            "positive",
            (4, 5),
        ),
        _t("praise-en-3", "Good quality {p}, would buy again.", "en", ["praise"], "positive", (5,)),
        _t("praise-zh-1", "这个{p}很好用，推荐！", "zh", ["praise"], "positive", (5,)),
        _t("praise-zh-2", "{p}质量很好，很满意。", "zh", ["praise"], "positive", (4, 5)),
    ],
    "neutral": [
        _t("neutral-en-1", "The {p} is okay, does what it says.", "en", [], "neutral", (3,)),
        _t("neutral-zh-1", "{p}一般般，还可以。", "zh", [], "neutral", (3,)),
    ],
    "product_quality": [
        _t(
            "quality-en-1",
            "The {p} feels cheap and flimsy.",
            "en",
            ["product_quality"],
            "negative",
            (2, 3),
        ),
        _t(
            "quality-en-2",
            "Not as pictured, the {p} looks cheap.",
            "en",
            ["product_quality"],
            "negative",
            (2,),
        ),
        _t("quality-zh-1", "{p}质量差，做工粗糙。", "zh", ["product_quality"], "negative", (2,)),
        # the model reads "wobbles" as a defect; agents correct it to product quality
        _t(
            "quality-en-3",
            "Cheap plastic, the {p} wobbles on the table.",
            "en",
            ["product_quality"],
            "negative",
            (2,),
            predicted=("damaged_defective",),
        ),
    ],
    "damaged_defective": [
        _t(
            "defect-en-1",
            "The {p} stopped working after three days.",
            "en",
            ["damaged_defective"],
            "negative",
            (1, 2),
        ),
        _t(
            "defect-en-2",
            "Arrived dead, the {p} will not switch on.",
            "en",
            ["damaged_defective"],
            "negative",
            (1,),
        ),
        _t("defect-zh-1", "{p}用了三天就坏了。", "zh", ["damaged_defective"], "negative", (1,)),
        _t("defect-zh-2", "收到的{p}不能开机。", "zh", ["damaged_defective"], "negative", (1, 2)),
        # the model reads this as a quality complaint; agents correct it to a defect
        _t(
            "defect-en-3",
            "The lid of the {p} snapped off the first time I opened it.",
            "en",
            ["damaged_defective"],
            "negative",
            (1,),
            predicted=("product_quality",),
        ),
    ],
    "size_fit": [
        _t(
            "size-en-1",
            "The {p} is too small, it runs small.",
            "en",
            ["size_fit"],
            "negative",
            (2, 3),
        ),
        _t("size-zh-1", "{p}尺码偏小。", "zh", ["size_fit"], "negative", (3,)),
    ],
    "wrong_item": [
        _t(
            "wrong-en-1", "You sent the wrong color of {p}.", "en", ["wrong_item"], "negative", (2,)
        ),
        _t("wrong-zh-1", "{p}发错颜色了。", "zh", ["wrong_item"], "negative", (2,)),
    ],
}

TICKET_TEMPLATES: dict[str, list[Template]] = {
    "shipping_delivery": [
        _t(
            "ship-en-1",
            "Where is my {p}? The tracking has not moved for a week.",
            "en",
            ["shipping_delivery"],
            "negative",
        ),
        _t("ship-zh-1", "快递太慢了，{p}还没到。", "zh", ["shipping_delivery"], "negative"),
    ],
    "refund_return": [
        _t(
            "refund-en-1",
            "I want to return the {p} and get my money back.",
            "en",
            ["refund_return"],
            "neutral",
        ),
        _t("refund-zh-1", "{p}我要退货退款。", "zh", ["refund_return"], "neutral"),
    ],
    "damaged_defective": [
        _t(
            "defect-mail-en-1",
            "My {p} arrived broken, please send a replacement or refund.",
            "en",
            ["damaged_defective", "refund_return"],
            "negative",
        ),
        _t(
            "defect-mail-zh-1",
            "{p}收到就是坏的，请退款。",
            "zh",
            ["damaged_defective", "refund_return"],
            "negative",
        ),
    ],
    "wrong_item": [
        _t(
            "wrong-mail-en-1",
            "I ordered the black {p} but got a white one.",
            "en",
            ["wrong_item"],
            "negative",
        ),
    ],
    "usage_question": [
        _t(
            "usage-en-1",
            "How do I set up the {p}? The manual is unclear.",
            "en",
            ["usage_question"],
            "neutral",
        ),
        _t("usage-zh-1", "请问{p}怎么使用？", "zh", ["usage_question"], "neutral"),
    ],
}

NO_PRODUCT_TEMPLATES: list[Template] = [
    _t(
        "billing-en-1",
        "I was charged twice for my order, please fix it.",
        "en",
        ["billing_payment"],
        "negative",
    ),
    _t(
        "account-en-1",
        "Please cancel my order, I ordered by mistake.",
        "en",
        ["account_order"],
        "neutral",
    ),
    _t("account-zh-1", "请帮我取消订单。", "zh", ["account_order"], "neutral"),
]

SPIKE_TEMPLATES: list[Template] = [
    _t(
        "spike-en-1",
        "The {p} stopped heating after two days, the switch is dead.",
        "en",
        ["damaged_defective"],
        "negative",
        (1,),
    ),
    _t(
        "spike-en-2",
        "New {p} leaks from the bottom, it is faulty.",
        "en",
        ["damaged_defective"],
        "negative",
        (1, 2),
    ),
    _t(
        "spike-zh-1",
        "{p}底部漏水，质量有问题，坏了。",
        "zh",
        ["damaged_defective"],
        "negative",
        (1,),
    ),
]

# review mix per product (weights over REVIEW_TEMPLATES groups)
REVIEW_MIX: dict[str, dict[str, int]] = {
    "B0KETTLE01": {"praise": 12, "neutral": 3, "product_quality": 3, "damaged_defective": 2},
    "B0HEADSET2": {"praise": 11, "neutral": 3, "product_quality": 4, "damaged_defective": 2},
    "B0YOGAMAT3": {"praise": 12, "neutral": 3, "product_quality": 2, "size_fit": 3},
    "B0PHONECS4": {"praise": 10, "neutral": 3, "size_fit": 4, "wrong_item": 2},
    "B0DESKLMP5": {"praise": 9, "neutral": 3, "product_quality": 6, "damaged_defective": 2},
}
TICKET_MIX: dict[str, int] = {
    "shipping_delivery": 5,
    "refund_return": 4,
    "damaged_defective": 1,
    "wrong_item": 1,
    "usage_question": 3,
}

# follow-ups planted for the reopen rule:
# (case, day, hour of first message, order id or None, days to follow-up,
#  order id of the follow-up, resolve the first one?, expected reopen?)
REOPEN_CASES = [
    ("same-order", 10, 9.5, "114-0000001-0000001", 2, "114-0000001-0000001", True, True),
    ("no-order-3d", 20, 9.5, None, 3, None, True, True),
    ("no-order-11d", 5, 9.5, None, 11, None, True, False),
    ("other-order", 25, 9.5, "114-0000004-0000001", 1, "114-0000004-0000002", True, False),
    ("not-resolved", 29, 9.5, "114-0000005-0000001", 1, "114-0000005-0000001", False, False),
]
REOPEN_FIRST = _t(
    "reopen-en-1", "My refund for the {p} has not arrived yet.", "en", ["refund_return"], "negative"
)
REOPEN_AGAIN = _t(
    "reopen-en-2",
    "Still no refund for the {p}, please check again.",
    "en",
    ["refund_return"],
    "negative",
)


@dataclass
class ShopMessage:
    external_id: str
    channel: str
    template: Template
    text: str
    received_at: datetime
    customer_id: str
    product_id: str | None = None
    order_id: str | None = None
    rating: int | None = None
    case: str | None = None  # reopen case name
    message_id: int | None = None
    ticket_id: int | None = None

    @property
    def lang(self) -> str:
        return self.template.lang

    @property
    def labels(self) -> dict[str, list[str]]:
        """The true labels (what an agent would set)."""
        t = self.template
        return {"issue_type": list(t.issues), "sentiment": [t.sentiment], "urgency": [t.urgency]}

    @property
    def predicted(self) -> dict[str, list[str]]:
        t = self.template
        issues = t.issues if t.predicted_issues is None else t.predicted_issues
        return {"issue_type": list(issues), "sentiment": [t.sentiment], "urgency": [t.urgency]}

    def body(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "text": self.text,
            "external_id": self.external_id,
            "customer_id": self.customer_id,
            "order_id": self.order_id,
            "product_id": self.product_id,
            "marketplace": "amazon.com",
            "rating": self.rating,
            "received_at": self.received_at,
        }


def _fill(t: Template, product_id: str | None) -> str:
    if product_id is None:
        return t.text
    en, zh = PRODUCTS[product_id]
    return t.text.format(p=zh if t.lang == "zh" else en)


def shop_messages(seed: int = SEED) -> list[ShopMessage]:
    """The planned messages in time order (same list for the same seed)."""
    rng = random.Random(seed)
    regulars = [f"C{i:03d}" for i in range(1, 31)]
    out: list[ShopMessage] = []
    serial = 0

    def customer() -> str:
        nonlocal serial
        serial += 1
        return rng.choice(regulars) if rng.random() < 0.55 else f"N{serial:04d}"

    def order() -> str:
        return f"113-{rng.randrange(10**7):07d}-{rng.randrange(10**7):07d}"

    def at(day: int) -> datetime:
        return SHOP_START + timedelta(days=day, minutes=rng.randrange(24 * 60))

    def pick(groups: dict[str, list[Template]], mix: dict[str, int]) -> Template:
        group = rng.choices(list(mix), weights=list(mix.values()))[0]
        return rng.choice(groups[group])

    for day in range(DAYS):
        for pid in PRODUCTS:
            for _ in range(rng.choice([0, 1, 1, 2, 2])):
                t = pick(REVIEW_TEMPLATES, REVIEW_MIX[pid])
                out.append(
                    ShopMessage(
                        "",
                        "review",
                        t,
                        _fill(t, pid),
                        at(day),
                        customer(),
                        pid,
                        order(),
                        rng.choice(t.stars),
                    )
                )
            for _ in range(rng.choice([0, 0, 1, 1, 2])):
                t = pick(TICKET_TEMPLATES, TICKET_MIX)
                channel = rng.choice(["email", "email", "chat"])
                out.append(
                    ShopMessage("", channel, t, _fill(t, pid), at(day), customer(), pid, order())
                )
        if rng.random() < 0.5:
            t = rng.choice(NO_PRODUCT_TEMPLATES)
            out.append(ShopMessage("", "email", t, t.text, at(day), customer(), None, order()))
        if day >= DAYS - SPIKE_DAYS:
            for _ in range(2):
                t = rng.choice(SPIKE_TEMPLATES)
                if rng.random() < 0.7:
                    out.append(
                        ShopMessage(
                            "",
                            "review",
                            t,
                            _fill(t, SPIKE_PRODUCT),
                            at(day),
                            customer(),
                            SPIKE_PRODUCT,
                            order(),
                            rng.choice(t.stars),
                        )
                    )
                else:
                    out.append(
                        ShopMessage(
                            "",
                            "email",
                            t,
                            _fill(t, SPIKE_PRODUCT),
                            at(day),
                            customer(),
                            SPIKE_PRODUCT,
                            order(),
                        )
                    )
    # the reopen cases: a refund question resolved within the hour, then a follow-up
    for i, (case, day, hour, order1, gap, order2, _resolve, _reopen) in enumerate(REOPEN_CASES):
        cid = f"R{i + 1}"
        pid = "B0HEADSET2"
        first = SHOP_START.replace(hour=0, minute=0) + timedelta(days=day, hours=hour)
        out.append(
            ShopMessage(
                "",
                "email",
                REOPEN_FIRST,
                _fill(REOPEN_FIRST, pid),
                first,
                cid,
                pid,
                order1,
                case=case,
            )
        )
        out.append(
            ShopMessage(
                "",
                "email",
                REOPEN_AGAIN,
                _fill(REOPEN_AGAIN, pid),
                first + timedelta(days=gap),
                cid,
                pid,
                order2,
                case=case,
            )
        )
    out = [m for m in out if m.received_at < SHOP_NOW]
    out.sort(key=lambda m: (m.received_at, m.channel, m.text))
    for i, m in enumerate(out):
        m.external_id = f"shop-{i:04d}"
    return out


ALL_TEMPLATES: list[Template] = (
    [t for group in REVIEW_TEMPLATES.values() for t in group]
    + [t for group in TICKET_TEMPLATES.values() for t in group]
    + NO_PRODUCT_TEMPLATES
    + (SPIKE_TEMPLATES + [REOPEN_FIRST, REOPEN_AGAIN])
)
MISPREDICTED = {t.key for t in ALL_TEMPLATES if t.predicted_issues is not None}


def shop_predictor() -> PlannedPredictor:
    """The stand-in model of the shop: the planned (predicted) labels of every shop text,
    confident, no evidence."""
    planned = PlannedPredictor("shop-fixture-1")
    for t in ALL_TEMPLATES:
        issues = t.issues if t.predicted_issues is None else t.predicted_issues
        labels = {"issue_type": list(issues), "sentiment": [t.sentiment], "urgency": [t.urgency]}
        for pid in [*PRODUCTS, None]:
            planned.plan_labels(_fill(t, pid), labels)
    return planned


def shop_app(db_url: str, clock, model_dir: str | Path | None = None, **settings):
    """``create_app`` on ``db_url`` with the shop's stand-in model and the test admin key."""
    from serving.app import create_app
    from serving.settings import Settings
    from tests.serving.factories import ADMIN_KEY

    settings.setdefault("bootstrap_admin_key", ADMIN_KEY)
    if model_dir is not None:
        settings["model_dir"] = model_dir
    return create_app(
        Settings(database_url=db_url, **settings), predictor=shop_predictor(), clock=clock
    )


@dataclass
class Shop:
    messages: list[ShopMessage]
    corrected: set[int] = field(default_factory=set)  # ticket ids whose labels agents fixed
    agents: dict[str, Any] = field(default_factory=dict)  # name -> CarelensClient

    def effective_labels(self, m: ShopMessage) -> dict[str, list[str]]:
        """What the store holds: the true labels where an agent corrected, else predicted."""
        return m.labels if m.ticket_id in self.corrected else m.predicted

    def of_product(
        self, product_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> list[ShopMessage]:
        return [
            m
            for m in self.messages
            if m.product_id == product_id
            and (since is None or m.received_at >= since)
            and (until is None or m.received_at < until)
        ]

    def issue_counts(self, product_id: str, since=None, until=None) -> Counter:
        c: Counter = Counter()
        for m in self.of_product(product_id, since, until):
            c.update(self.effective_labels(m)["issue_type"])
        return c

    def case(self, name: str) -> tuple[ShopMessage, ShopMessage]:
        first, again = [m for m in self.messages if m.case == name]
        return first, again


def fill_shop(desk, clock, seed: int = SEED) -> Shop:
    """Post the shop's messages through the API in time order and let the agents work
    the queues twice a day; ``clock`` ends at ``SHOP_NOW``. ``desk`` is a conftest
    ``Desk`` on an app from ``shop_app``. Returns the plan with ids filled in."""
    shop = Shop(shop_messages(seed))
    agents = {"alice": desk.agent, "bob": desk.agent2}
    agents["carol"] = desk.admin.with_key(desk.admin.create_key("carol", "agent")["key"])
    shop.agents = agents
    by_text_correct = {m.text: m.labels for m in shop.messages}
    clock.now = SHOP_START

    sessions = [
        SHOP_START.replace(hour=0, minute=0) + timedelta(days=d, hours=h)
        for d in range(DAYS + 1)
        for h in WORK_HOURS
    ]
    sessions = [s for s in sessions if SHOP_START < s < SHOP_NOW]
    pending = list(shop.messages)
    direct: list[tuple[datetime, ShopMessage, str]] = []  # planned actions on reopen cases
    for m in shop.messages:
        if m.case is not None and m is shop.case(m.case)[0]:
            resolve = next(c for c in REOPEN_CASES if c[0] == m.case)[6]
            direct.append(
                (m.received_at + timedelta(minutes=20), m, "resolve" if resolve else "wait")
            )

    def post_until(t: datetime) -> None:
        batch = []
        while pending and pending[0].received_at <= t:
            batch.append(pending.pop(0))
        if not batch:
            return
        clock.now = max(clock.now, batch[-1].received_at)
        stored = desk.service.post_messages([m.body() for m in batch])
        for m, s in zip(batch, stored, strict=True):
            m.message_id, m.ticket_id = s["message_id"], s["ticket_id"]

    def act_direct(t: datetime) -> None:
        while direct and direct[0][0] <= t:
            when, m, what = direct.pop(0)
            post_until(when)
            clock.now = max(clock.now, when)
            agent = agents["alice"] if m.case != "no-order-3d" else agents["bob"]
            agent.reply(m.ticket_id, "Your refund is on its way.", wait_for_customer=what == "wait")
            if what == "resolve":
                clock.advance(minutes=5)
                agent.resolve(m.ticket_id)

    for n, start in enumerate(sessions):
        act_direct(start)
        post_until(start)
        clock.now = max(clock.now, start)
        waiting = {q["queue"]: q["unclaimed"] for q in desk.agent.queues()}
        for qi, queue in enumerate(QUEUE_ORDER):
            name = AGENTS[(n + qi) % len(AGENTS)]
            agent = agents[name]
            for i in range(min(8, waiting.get(queue, 0))):
                ticket = agent.claim(queue)
                if ticket is None:
                    break
                clock.advance(minutes=6)
                text = ticket["message"]["text"]
                truth = by_text_correct.get(text)
                if truth and truth["issue_type"] != ticket["labels"]["issue_type"]:
                    agent.set_labels(ticket["id"], {"issue_type": truth["issue_type"]})
                    shop.corrected.add(ticket["id"])
                if queue == "reviews" and "negative" not in ticket["labels"]["sentiment"]:
                    agent.no_response_needed(ticket["id"])
                    continue
                wait = (n + i) % 5 == 4
                agent.reply(ticket["id"], "Thank you, we are on it.", wait_for_customer=wait)
                if not wait:
                    clock.advance(minutes=3)
                    agent.resolve(ticket["id"])
    act_direct(SHOP_NOW)
    post_until(SHOP_NOW)
    clock.now = SHOP_NOW
    return shop
