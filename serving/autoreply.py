"""Automatic answers: the policy file (``data/autoreply.yaml``) and what it decides for
a new ticket.

Per issue type and language the file says ``send`` (answered at once with a template),
``draft`` (the filled template waits on the ticket for one click) or ``off``, above a
bar on the model's confidence in the issue type. ``decide`` reads the file, the
ticket and its prediction; ``apply`` records the answer in the ingest's transaction
(an automatic reply goes through the outbox like an agent's, marked ``automatic``).

Never automatic, whatever the file says (``held_back``): a review; a ticket a critical
rule fired on; safety_hazard; negative sentiment with high or critical urgency; a
customer who wrote before (within the routing file's repeat-contact days); a queue in
``queues_off``; more than one issue type; a model below the bar. A template with a
field the ticket cannot fill is a draft, never sent; without an SMTP relay a ``send``
is a draft too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from serving.store import Ticket
from serving.templates import Template, fill

DEFAULT_AUTOREPLY_PATH = Path(__file__).resolve().parent.parent / "data" / "autoreply.yaml"
ACTIONS = ("send", "draft", "off")
ISSUE_TASK = "issue_type"
HELD_BACK_ISSUES = ("safety_hazard",)
HELD_BACK_URGENCY = ("high", "critical")


class AutoReplyError(ValueError):
    """The policy file cannot be used; the message names the problem."""


@dataclass(frozen=True)
class Rule:
    action: str
    template: str | None = None  # a template name; None: the issue type's first ready one


@dataclass
class AutoReplyPolicy:
    enabled: bool = False
    min_confidence: float = 0.9
    sign_as: str = "Customer Service"
    queues_off: list[str] = field(default_factory=list)
    rules: dict[str, dict[str, Rule]] = field(default_factory=dict)  # issue -> lang -> rule
    source: str = "autoreply"

    @classmethod
    def load(cls, path: str | Path | None = None) -> AutoReplyPolicy:
        path = Path(path or DEFAULT_AUTOREPLY_PATH)
        if not path.is_file():
            raise AutoReplyError(f"automatic-answer file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise AutoReplyError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "autoreply") -> AutoReplyPolicy:
        def fail(msg: str) -> AutoReplyError:
            return AutoReplyError(f"{source}: {msg}")

        if not isinstance(data, dict):
            raise fail("expected a mapping at the top level")
        unknown = set(data) - {"enabled", "min_confidence", "sign_as", "queues_off", "answers"}
        if unknown:
            raise fail(f"unknown key(s) {', '.join(sorted(unknown))}")
        try:
            bar = float(data.get("min_confidence", 0.9))
        except (TypeError, ValueError) as exc:
            raise fail("min_confidence must be a number between 0 and 1") from exc
        if not 0 <= bar <= 1:
            raise fail("min_confidence must be between 0 and 1")
        rules: dict[str, dict[str, Rule]] = {}
        answers = data.get("answers") or {}
        if not isinstance(answers, dict):
            raise fail("`answers` must map issue types to {language: action}")
        for issue, per_lang in answers.items():
            if not isinstance(per_lang, dict):
                raise fail(f"answers.{issue}: expected {{language: action}}")
            for lang, spec in per_lang.items():
                where = f"answers.{issue}.{lang}"
                if isinstance(spec, str):
                    spec = {"action": spec}
                if not isinstance(spec, dict) or set(spec) - {"action", "template"}:
                    raise fail(f"{where}: expected an action or {{action, template}}")
                action = str(spec.get("action", ""))
                if action not in ACTIONS:
                    raise fail(f"{where}: action {action!r} is not one of {', '.join(ACTIONS)}")
                template = spec.get("template")
                rules.setdefault(str(issue), {})[str(lang)] = Rule(
                    action, str(template) if template else None
                )
        queues_off = data.get("queues_off") or []
        if not isinstance(queues_off, list):
            raise fail("queues_off must be a list of queue names")
        return cls(
            enabled=bool(data.get("enabled", False)),
            min_confidence=bar,
            sign_as=str(data.get("sign_as") or "Customer Service"),
            queues_off=[str(q) for q in queues_off],
            rules=rules,
            source=source,
        )

    def answers_any(self, issues: list[str], lang: str) -> bool:
        """Whether the file answers (sends or drafts) any of ``issues`` in ``lang``."""
        if not self.enabled:
            return False
        rules = (self.rules.get(i, {}).get(lang) for i in issues)
        return any(r is not None and r.action != "off" for r in rules)

    def check_taxonomy(self, taxonomy) -> None:
        """Every issue type named here is a label of the served model's issue_type."""
        if not self.rules:
            return
        known = taxonomy[ISSUE_TASK].label_names if ISSUE_TASK in taxonomy else []
        for issue in self.rules:
            if issue not in known:
                raise AutoReplyError(
                    f"{self.source}: answers: {issue!r} is not an issue type of the model"
                )

    def validate(self, queues: list[str], templates: dict) -> None:
        """Every queue and template named here exists, each template for its issue type
        and language."""
        for issue, per_lang in self.rules.items():
            for lang, rule in per_lang.items():
                if rule.template is None:
                    continue
                t = templates.get(rule.template)
                if t is None:
                    raise AutoReplyError(
                        f"{self.source}: answers.{issue}.{lang}: no template {rule.template!r}"
                    )
                if t.issue_type != issue or t.lang != lang:
                    raise AutoReplyError(
                        f"{self.source}: answers.{issue}.{lang}: template {rule.template!r} "
                        f"is for {t.issue_type}/{t.lang}"
                    )
        for q in self.queues_off:
            if q not in queues:
                raise AutoReplyError(f"{self.source}: queues_off: unknown queue {q!r}")


@dataclass(frozen=True)
class Answer:
    """What the policy decided for one ticket: the action, why, and the filled
    template (``text``) with the fields it could not fill (``missing``)."""

    action: str  # send | draft | off
    reason: str
    template: str | None = None
    text: str | None = None
    missing: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "template": self.template,
            "text": self.text,
            "missing": list(self.missing),
        }


def held_back(
    labels: dict[str, list[str]],
    channel: str,
    rule_hits: list,
    queue: str,
    earlier_contacts: int,
    policy: AutoReplyPolicy,
) -> str | None:
    """Why no automatic answer may be given, whatever the file says; None if none."""
    issues = labels.get(ISSUE_TASK) or []
    if channel == "review":
        return "a review is answered by a person"
    if rule_hits:
        return "a critical rule fired: " + ", ".join(sorted({h["rule"] for h in rule_hits}))
    if any(i in HELD_BACK_ISSUES for i in issues):
        return "a safety hazard is answered by a person"
    negative = "negative" in (labels.get("sentiment") or [])
    if negative and any(u in HELD_BACK_URGENCY for u in labels.get("urgency") or []):
        return "negative with high or critical urgency"
    if earlier_contacts:
        return "the customer wrote before (a repeated contact)"
    if queue in policy.queues_off:
        return f"automatic answers are off in the {queue} queue"
    if len(issues) != 1:
        return "not exactly one issue type"
    return None


def decide(
    policy: AutoReplyPolicy,
    labels: dict[str, list[str]],
    confidence: float,
    lang: str,
    channel: str,
    rule_hits: list,
    queue: str,
    earlier_contacts: int,
    templates: dict[str, Template],
    values: dict[str, str | None],
    can_send: bool,
) -> Answer:
    """The policy's answer for one new ticket (pure: no store)."""
    if not policy.enabled:
        return Answer("off", "automatic answers are disabled")
    issues = labels.get(ISSUE_TASK) or []
    if not policy.answers_any(issues, lang):
        return Answer("off", f"no automatic answer for {issues} in {lang}")
    rules = [policy.rules.get(i, {}).get(lang) for i in issues]
    why = held_back(labels, channel, rule_hits, queue, earlier_contacts, policy)
    if why:
        return Answer("off", why)
    issue = issues[0]
    rule = rules[0]
    if confidence < policy.min_confidence:
        return Answer(
            "off", f"issue-type confidence {confidence:.2f} is below {policy.min_confidence}"
        )
    template = templates.get(rule.template) if rule.template else _first(templates, issue, lang)
    if template is None:
        return Answer("off", f"no {lang} template for {issue}")
    text, missing = fill(
        template.body, {**template.fallbacks, **{k: v for k, v in values.items() if v}}
    )
    action, reason = rule.action, f"{issue} in {lang}, confidence {confidence:.2f}"
    if missing and action == "send":
        action, reason = "draft", f"the ticket cannot fill {', '.join(missing)}"
    elif action == "send" and not can_send:
        action, reason = "draft", "no SMTP relay or sender address to send from"
    return Answer(action, reason, template.name, text, tuple(missing))


def _first(templates: dict[str, Template], issue: str, lang: str) -> Template | None:
    fitting = [t for t in templates.values() if t.issue_type == issue and t.lang == lang]
    return min(fitting, key=lambda t: t.name) if fitting else None


def record(session: Session, ticket: Ticket, answer: Answer, now: datetime) -> None:
    """A draft as the ticket's ``auto_draft`` event (the answer as its note)."""
    from serving.tickets import event

    note = json.dumps(answer.to_dict(), ensure_ascii=False)
    event(session, ticket, "auto_draft", None, now, note=note)


def latest_draft(ticket: Ticket) -> dict[str, Any] | None:
    """The ticket's automatic draft when no reply came after it."""
    draft = None
    for e in ticket.events:
        if e.kind == "auto_draft":
            draft = json.loads(e.note or "{}")
        elif e.kind in ("replied", "auto_replied", "resolved", "no_response_needed"):
            draft = None
    return draft


def apply(
    session: Session,
    ticket: Ticket,
    prediction,
    policy: AutoReplyPolicy,
    settings,
    earlier_contacts: int,
    now: datetime,
) -> Answer:
    """Decide for a new ticket and record it (the ingest's transaction): a ``send`` is
    an automatic reply in the outbox (event ``auto_replied``; the ticket waits on the
    customer; the first response counts when the relay accepts it), a ``draft`` an
    ``auto_draft`` event; otherwise nothing is recorded and an agent answers."""
    from serving.outbox import queue_reply, sending_configured
    from serving.templates import effective_templates, ticket_values
    from serving.tickets import event

    msg = ticket.message
    issue = prediction.tasks.get(ISSUE_TASK)
    if not policy.answers_any((ticket.labels or {}).get(ISSUE_TASK) or [], msg.lang):
        return Answer("off", "no automatic answer for these issue types")
    answer = decide(
        policy,
        ticket.labels,
        issue.confidence if issue is not None else 0.0,
        msg.lang,
        msg.channel,
        ticket.rule_hits,
        ticket.queue,
        earlier_contacts,
        effective_templates(session, settings.templates_dir),
        ticket_values(ticket, agent_name=policy.sign_as),
        can_send=sending_configured(settings) is None and bool(msg.reply_to),
    )
    if answer.action == "send":
        delivery = queue_reply(session, ticket, answer.text, settings, now, automatic=True)
        ticket.state = "waiting_on_customer"
        note = {**answer.to_dict(), "outbound_id": delivery.outbound_id}
        event(session, ticket, "auto_replied", None, now, note=json.dumps(note, ensure_ascii=False))
    elif answer.action == "draft":
        record(session, ticket, answer, now)
    return answer
