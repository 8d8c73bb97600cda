"""Routing rules, SLA deadlines and the priority score,
all read from one validated config file (``data/routing.yaml`` by default).

Priority (documented in docs/service.md):

    points      = urgency points + negative-sentiment points
                  + repeat_contact_points * min(earlier contacts in N days, max)
    priority(t) = points - hours left until the first-response deadline at time t

so a ticket gains one point per hour it waits, a breached ticket keeps climbing, and a
critical one starts 48 hours "ahead". Ordering by priority at any moment is ordering by
``rank_at = deadline - points hours`` (stored, indexable, the same for every t); ties
go to the older message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from model.taxonomy import Taxonomy

DEFAULT_ROUTING_PATH = Path(__file__).resolve().parent.parent / "data" / "routing.yaml"


class RoutingError(ValueError):
    """The routing file is wrong; the message names the file and the entry."""


@dataclass(frozen=True)
class Route:
    when: dict[str, Any]
    queue: str

    def matches(self, labels: dict[str, list[str]], facts: dict[str, Any]) -> bool:
        for key, wanted in self.when.items():
            if key == "needs_review":
                if bool(facts.get("needs_review")) != bool(wanted):
                    return False
            elif key == "stars":  # the message's star rating; none matches no list
                if facts.get("stars") not in wanted:
                    return False
            elif key in ("channel", "rule"):
                have = facts.get(key) or []
                have = [have] if isinstance(have, str) else have
                if not set(have) & set(wanted):
                    return False
            elif not set(labels.get(key, [])) & set(wanted):
                return False
        return True


@dataclass(frozen=True)
class SlaOverride:
    hours: float
    channel: str | None = None
    marketplace: str | None = None


@dataclass(frozen=True)
class Decision:
    """Where one message goes (``RoutingConfig.decide``)."""

    queue: str
    sla_hours: float
    sla_due_at: datetime
    points: float  # priority points: urgency, sentiment, repeat contacts
    rank_at: datetime  # the deadline moved earlier by the points (``rank_at``)
    no_response_needed: bool  # closed at once (e.g. a positive review)


@dataclass
class RoutingConfig:
    queues: dict[str, str]
    default_queue: str
    routes: list[Route]
    sla_default_hours: float
    sla_overrides: list[SlaOverride]
    # urgency label -> at most this many hours, whatever the channel's SLA
    sla_urgency_hours: dict[str, float] = field(default_factory=dict)
    no_response: list[Route] = field(default_factory=list)
    urgency_points: dict[str, float] = field(default_factory=dict)
    sentiment_points: dict[str, float] = field(default_factory=dict)
    repeat_points: float = 6.0
    repeat_max: int = 4
    repeat_days: int = 30
    # a follow-up from the same customer within this many days of a resolution
    # reopens the resolved ticket (same order id: any time); 0 turns the days rule off
    reopen_days: int = 7
    # a customer's message naming the order of a ticket still in work, within this many
    # days of the ticket's last activity, joins that ticket (0: only by Message-ID)
    thread_days: float = 14
    # queue -> addresses told when a ticket's answer is about to be late (SLA alerts)
    owners: dict[str, list[str]] = field(default_factory=dict)
    source: str = "routing"

    # -- loading ---------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> RoutingConfig:
        path = Path(path or DEFAULT_ROUTING_PATH)
        if not path.is_file():
            raise RoutingError(f"routing file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise RoutingError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "routing") -> RoutingConfig:
        def fail(msg: str) -> RoutingError:
            return RoutingError(f"{source}: {msg}")

        if not isinstance(data, dict):
            raise fail("expected a mapping at the top level")
        queues = data.get("queues")
        if not isinstance(queues, dict) or not queues:
            raise fail("`queues` must map queue names to descriptions")
        queues = {str(k): str(v or "") for k, v in queues.items()}
        default_queue = str(data.get("default_queue", ""))
        if default_queue not in queues:
            raise fail(f"default_queue {default_queue!r} is not one of the queues")

        def parse_when(where: str, raw: Any) -> dict[str, Any]:
            if not isinstance(raw, dict) or not isinstance(raw.get("when"), dict):
                raise fail(f"{where}: expected {{when: {{...}}}}")
            when = {}
            for key, value in raw["when"].items():
                if key == "needs_review":
                    if not isinstance(value, bool):
                        raise fail(f"{where}.when.needs_review must be true or false")
                    when[key] = value
                elif key == "stars":
                    values = value if isinstance(value, list) else [value]
                    if not values or not all(
                        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5
                        for v in values
                    ):
                        raise fail(f"{where}.when.stars: expected a list of ratings 1 to 5")
                    when[key] = [int(v) for v in values]
                else:
                    values = [value] if isinstance(value, str) else value
                    if not isinstance(values, list) or not values:
                        raise fail(f"{where}.when.{key}: expected a list of names")
                    when[key] = [str(v) for v in values]
            return when

        routes = []
        for i, raw in enumerate(data.get("routes") or []):
            when = parse_when(f"routes[{i}]", raw)
            if raw.get("queue") not in queues:
                raise fail(f"routes[{i}]: unknown queue {raw.get('queue')!r}")
            routes.append(Route(when=when, queue=str(raw["queue"])))
        no_response = [
            Route(when=parse_when(f"no_response_needed[{i}]", raw), queue="")
            for i, raw in enumerate(data.get("no_response_needed") or [])
        ]

        sla = data.get("sla") or {}
        try:
            default_hours = float(sla.get("default_hours", 24))
            overrides = [
                SlaOverride(
                    hours=float(o["hours"]),
                    channel=o.get("channel"),
                    marketplace=o.get("marketplace"),
                )
                for o in sla.get("overrides") or []
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise fail(f"sla: every override needs numeric `hours` ({exc})") from exc
        if default_hours <= 0 or any(o.hours <= 0 for o in overrides):
            raise fail("sla: hours must be positive")
        try:
            urgency_hours = {str(k): float(v) for k, v in (sla.get("urgency_hours") or {}).items()}
        except (AttributeError, TypeError, ValueError) as exc:
            raise fail(f"sla.urgency_hours: expected {{urgency label: hours}} ({exc})") from exc
        if any(h <= 0 for h in urgency_hours.values()):
            raise fail("sla.urgency_hours: hours must be positive")

        if "rules" in data:
            raise fail(
                "`rules` is not a routing key: the critical rules live in the rules file "
                "(CARELENS_RULES_FILE, default data/rules.yaml)"
            )
        prio = data.get("priority") or {}
        try:
            reopen_days = int((data.get("reopen") or {}).get("days", 7))
        except (AttributeError, TypeError, ValueError) as exc:
            raise fail(f"reopen: expected {{days: N}} ({exc})") from exc
        if reopen_days < 0:
            raise fail("reopen.days must be 0 or more")
        try:
            thread_days = float((data.get("threads") or {}).get("days", 14))
        except (AttributeError, TypeError, ValueError) as exc:
            raise fail(f"threads: expected {{days: N}} ({exc})") from exc
        if thread_days < 0:
            raise fail("threads.days must be 0 or more")
        owners_raw = data.get("owners") or {}
        if not isinstance(owners_raw, dict):
            raise fail("`owners` must map queue names to lists of e-mail addresses")
        owners: dict[str, list[str]] = {}
        for q, addresses in owners_raw.items():
            if str(q) not in queues:
                raise fail(f"owners: unknown queue {q!r}")
            if isinstance(addresses, str):
                addresses = [addresses]
            if not isinstance(addresses, list) or not all(
                isinstance(a, str) and "@" in a for a in addresses
            ):
                raise fail(f"owners.{q}: expected a list of e-mail addresses")
            owners[str(q)] = list(addresses)
        return cls(
            queues=queues,
            default_queue=default_queue,
            routes=routes,
            sla_default_hours=default_hours,
            sla_overrides=overrides,
            sla_urgency_hours=urgency_hours,
            no_response=no_response,
            urgency_points={str(k): float(v) for k, v in (prio.get("urgency") or {}).items()},
            sentiment_points={str(k): float(v) for k, v in (prio.get("sentiment") or {}).items()},
            repeat_points=float(prio.get("repeat_contact_points", 6)),
            repeat_max=int(prio.get("repeat_contact_max", 4)),
            repeat_days=int(prio.get("repeat_contact_days", 30)),
            reopen_days=reopen_days,
            thread_days=thread_days,
            owners=owners,
            source=source,
        )

    def validate(
        self, taxonomy: Taxonomy, channels: tuple[str, ...], rule_names: list[str] | None = None
    ) -> None:
        """Every task and label named here exists in the model's taxonomy; every `rule`
        condition names a critical rule of the rules file (``rule_names``)."""

        def check(where: str, task: str, labels: list[str]) -> None:
            if task not in taxonomy:
                raise RoutingError(
                    f"{self.source}: {where}: unknown task {task!r} "
                    f"(the model's taxonomy has {', '.join(taxonomy.task_names)})"
                )
            unknown = [x for x in labels if x not in taxonomy[task].label_names]
            if unknown:
                raise RoutingError(
                    f"{self.source}: {where}: unknown {task} label(s) {', '.join(unknown)}"
                )

        named = [(f"routes[{i}]", r) for i, r in enumerate(self.routes)]
        named += [(f"no_response_needed[{i}]", r) for i, r in enumerate(self.no_response)]
        for where, route in named:
            for key, wanted in route.when.items():
                if key == "channel":
                    bad = [c for c in wanted if c not in channels]
                    if bad:
                        raise RoutingError(f"{self.source}: {where}: unknown channel {bad[0]!r}")
                elif key == "rule":
                    bad = [r for r in wanted if rule_names is not None and r not in rule_names]
                    if bad:
                        raise RoutingError(f"{self.source}: {where}: unknown rule {bad[0]!r}")
                elif key not in ("needs_review", "stars"):
                    check(where, key, wanted)
        for name, table in (("urgency", self.urgency_points), ("sentiment", self.sentiment_points)):
            if table and name in taxonomy:
                check(f"priority.{name}", name, list(table))
        if self.sla_urgency_hours and "urgency" in taxonomy:
            check("sla.urgency_hours", "urgency", list(self.sla_urgency_hours))
        for o in self.sla_overrides:
            if o.channel is not None and o.channel not in channels:
                raise RoutingError(f"{self.source}: sla override: unknown channel {o.channel!r}")

    # -- use -------------------------------------------------------------------
    def decide(
        self,
        labels: dict[str, list[str]],
        facts: dict[str, Any],
        received_at: datetime,
        marketplace: str | None = None,
        earlier_contacts: int = 0,
        sla_hours: float | None = None,
    ) -> Decision:
        """The routing file's one answer for a message: its queue, its SLA deadline,
        its priority and whether it needs an answer at all. ``facts``: what the
        conditions besides the labels read (channel, needs_review, rule, stars);
        ``sla_hours`` overrides the file's hours (CARELENS_SLA_HOURS)."""
        hours = sla_hours or self.sla_hours(facts.get("channel"), marketplace)
        # critical and high urgency are answered soon whatever the channel's SLA (a
        # safety review is not left for the reviews' three days)
        for label in labels.get("urgency", []):
            hours = min(hours, self.sla_urgency_hours.get(label, hours))
        due = deadline(received_at, hours)
        points = self.points(labels, earlier_contacts)
        return Decision(
            queue=self.route(labels, facts),
            sla_hours=hours,
            sla_due_at=due,
            points=points,
            rank_at=rank_at(due, points),
            no_response_needed=self.no_response_needed(labels, facts),
        )

    def route(self, labels: dict[str, list[str]], facts: dict[str, Any]) -> str:
        for route in self.routes:
            if route.matches(labels, facts):
                return route.queue
        return self.default_queue

    def no_response_needed(self, labels: dict[str, list[str]], facts: dict[str, Any]) -> bool:
        """Tickets that need no answer (e.g. positive reviews): closed at once."""
        return any(r.matches(labels, facts) for r in self.no_response)

    def sla_hours(self, channel: str | None, marketplace: str | None) -> float:
        best, best_score = self.sla_default_hours, -1
        for o in self.sla_overrides:
            if o.channel is not None and o.channel != channel:
                continue
            if o.marketplace is not None and o.marketplace != marketplace:
                continue
            score = (o.channel is not None) + (o.marketplace is not None)
            if score > best_score:
                best, best_score = o.hours, score
        return best

    def points(self, labels: dict[str, list[str]], earlier_contacts: int) -> float:
        total = 0.0
        for task, table in (("urgency", self.urgency_points), ("sentiment", self.sentiment_points)):
            for label in labels.get(task, []):
                total += table.get(label, 0.0)
        total += self.repeat_points * min(max(earlier_contacts, 0), self.repeat_max)
        return total


def deadline(received_at: datetime, hours: float) -> datetime:
    """First-response deadline in calendar hours: nights, weekends and holidays count."""
    return received_at + timedelta(hours=hours)


def rank_at(due: datetime, points: float) -> datetime:
    return due - timedelta(hours=points)


def priority_at(rank: datetime, now: datetime) -> float:
    """priority(t) = points - hours left = hours from rank_at to t."""
    return round((now - rank).total_seconds() / 3600.0, 2)
