"""Reply templates: file defaults (``data/templates/*.yaml``) merged with the admins'
templates in the store, placeholder checks, and suggested replies for a ticket.

A template is keyed by an issue type (a label of the served taxonomy's ``issue_type``
task) and a language. Its body may use the placeholders in ``PLACEHOLDERS``; any other
``{name}`` is refused (write ``{{`` and ``}}`` for literal braces). Every placeholder
is a required field unless the template gives it a fallback (``fallbacks:
{customer_name: there}``). A template whose required fields the ticket cannot fill is
still suggested, after the complete ones, with ``ready: false``, the missing fields
listed and their placeholders left in the text for the agent to fill.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from model.taxonomy import Taxonomy
from serving.store import LabelCorrection, ReplyTemplate, Ticket

DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "data" / "templates"
ISSUE_TASK = "issue_type"
FALLBACK_LANG = "en"

PLACEHOLDERS: dict[str, str] = {
    "customer_name": "the buyer's name (query parameter customer_name), else the name "
    "the message was signed with",
    "order_id": "the order id of the ticket's message",
    "product": "the product's name (query parameter product), else its product id",
    "product_id": "the product id of the ticket's message",
    "marketplace": "the marketplace of the ticket's message",
    "ticket_id": "the ticket's number",
    "agent_name": "the name of the API key that asks",
    "survey_link": "the ticket's satisfaction survey link (not for reviews)",
}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,4})?$")


class TemplateError(ValueError):
    """A template (file or API) that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Template:
    name: str
    issue_type: str
    lang: str
    title: str
    body: str
    fallbacks: dict[str, str] = field(default_factory=dict)
    source: str = "file"  # file | store (an admin's, possibly overriding a file default)
    updated_by: str | None = None
    updated_by_key_id: int | None = None
    updated_at: datetime | None = None

    @property
    def fields(self) -> list[str]:
        return placeholders(self.body)

    @property
    def required(self) -> list[str]:
        return [f for f in self.fields if f not in self.fallbacks]

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "issue_type": self.issue_type,
            "lang": self.lang,
            "title": self.title,
            "body": self.body,
            "fallbacks": dict(self.fallbacks),
            "fields": self.fields,
            "required": self.required,
            "source": self.source,
            "updated_by": self.updated_by,
            "updated_by_key_id": self.updated_by_key_id,
            "updated_at": self.updated_at,
        }


def placeholders(text: str, known: dict[str, str] | None = None, where: str = "body") -> list[str]:
    """The ``{name}`` fields of ``text`` in order of first use; refuses names not in
    ``known`` (default ``PLACEHOLDERS``), positional fields, attribute/index access,
    conversions and format specs."""
    known = PLACEHOLDERS if known is None else known
    out: list[str] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"{where}: {exc} (write {{{{ and }}}} for literal braces)") from exc
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise TemplateError(f"{where}: empty or positional placeholder {{}} (name a field)")
        if spec or conversion or not name.isidentifier():
            raise TemplateError(
                f"{where}: placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} takes no conversion, format or attribute"
            )
        if name not in known:
            raise TemplateError(
                f"{where}: unknown placeholder {{{name}}} (known: "
                + ", ".join("{" + p + "}" for p in known)
                + ")"
            )
        if name not in out:
            out.append(name)
    return out


def fill(body: str, values: dict[str, str | None]) -> tuple[str, list[str]]:
    """``body`` with every placeholder that has a value filled; the others stay as
    ``{name}`` and are returned as missing."""
    parts: list[str] = []
    missing: list[str] = []
    for literal, name, _spec, _conv in string.Formatter().parse(body):
        parts.append(literal)
        if name is None:
            continue
        value = values.get(name)
        if value:
            parts.append(str(value))
        else:
            parts.append("{" + name + "}")
            if name not in missing:
                missing.append(name)
    return "".join(parts), missing


def check(
    name: str,
    issue_type: str,
    lang: str,
    title: str,
    body: str,
    fallbacks: dict[str, str],
    taxonomy: Taxonomy | None = None,
) -> None:
    """Raise ``TemplateError`` naming the first problem of a template."""
    if not NAME_RE.match(name or ""):
        raise TemplateError(
            f"name {name!r}: use 1-100 lowercase letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    if not LANG_RE.match(lang or ""):
        raise TemplateError(f"lang {lang!r}: use a language code such as en or zh")
    if not title or not title.strip():
        raise TemplateError("title: give a short title")
    if not body or not body.strip():
        raise TemplateError("body: give the reply text")
    fields = placeholders(body)
    for key, value in (fallbacks or {}).items():
        if key not in PLACEHOLDERS:
            raise TemplateError(f"fallbacks: unknown placeholder {{{key}}}")
        if not isinstance(value, str) or not value.strip():
            raise TemplateError(f"fallbacks.{key}: give a non-empty text")
        if key not in fields:
            raise TemplateError(f"fallbacks.{key}: the body does not use {{{key}}}")
    if taxonomy is not None:
        problem = issue_type_problem(issue_type, taxonomy)
        if problem:
            raise TemplateError(problem)


def issue_type_problem(issue_type: str, taxonomy: Taxonomy) -> str | None:
    if ISSUE_TASK not in taxonomy:
        return (
            f"the served taxonomy {taxonomy.name!r} has no {ISSUE_TASK!r} task, "
            "so no template can be keyed by issue type"
        )
    labels = taxonomy[ISSUE_TASK].label_names
    if issue_type not in labels:
        return (
            f"issue_type {issue_type!r} is not a label of the served taxonomy "
            f"(labels: {', '.join(labels)})"
        )
    return None


# -- the defaults in files ---------------------------------------------------------------


def load_file_templates(directory: Path | str = DEFAULT_TEMPLATES_DIR) -> dict[str, Template]:
    """Every ``*.yaml`` in ``directory`` (checked; an error names file and template)."""
    directory = Path(directory)
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(directory.glob("*.yaml")))
    return dict(_load_cached(str(directory), stamp))


@lru_cache(maxsize=8)
def _load_cached(directory: str, stamp: tuple) -> tuple[tuple[str, Template], ...]:
    out: dict[str, Template] = {}
    for file_name, _ in stamp:
        path = Path(directory) / file_name
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise TemplateError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("templates"), list):
            raise TemplateError(f"{path}: expected a mapping with a `templates:` list")
        file_lang = data.get("lang")
        for i, item in enumerate(data["templates"]):
            where = f"{path} templates[{i}]"
            if not isinstance(item, dict):
                raise TemplateError(f"{where}: expected a mapping")
            t = Template(
                name=str(item.get("name", "")),
                issue_type=str(item.get("issue_type", "")),
                lang=str(item.get("lang", file_lang or "")),
                title=str(item.get("title", "")),
                body=str(item.get("body", "")).strip(),
                fallbacks=dict(item.get("fallbacks") or {}),
            )
            try:
                check(t.name, t.issue_type, t.lang, t.title, t.body, t.fallbacks)
            except TemplateError as exc:
                raise TemplateError(f"{where} ({t.name or 'no name'}): {exc}") from exc
            if t.name in out:
                raise TemplateError(f"{where}: template name {t.name!r} is used twice")
            out[t.name] = t
    return tuple(out.items())


# -- defaults + the store ------------------------------------------------------------------


def effective_templates(session: Session, directory: Path | str) -> dict[str, Template]:
    """File defaults, overridden (or hidden, when deleted) by the store's rows."""
    templates = load_file_templates(directory)
    for row in session.scalars(select(ReplyTemplate)):
        if row.deleted:
            templates.pop(row.name, None)
            continue
        templates[row.name] = Template(
            name=row.name,
            issue_type=row.issue_type or "",
            lang=row.lang or "",
            title=row.title or "",
            body=row.body or "",
            fallbacks=dict(row.fallbacks or {}),
            source="store",
            updated_by=row.updated_by,
            updated_by_key_id=row.updated_by_key_id,
            updated_at=row.updated_at,
        )
    return dict(sorted(templates.items()))


def save_template(
    session: Session,
    template: Template,
    actor: str,
    now: datetime,
    actor_key_id: int | None = None,
) -> Template:
    """Insert or replace the store's row of ``template.name`` (no commit)."""
    row = session.scalar(select(ReplyTemplate).where(ReplyTemplate.name == template.name))
    if row is None:
        row = ReplyTemplate(name=template.name, created_at=now, updated_by=actor)
        session.add(row)
    row.issue_type, row.lang, row.title = template.issue_type, template.lang, template.title
    row.body, row.fallbacks, row.deleted = template.body, dict(template.fallbacks), False
    row.updated_by, row.updated_by_key_id, row.updated_at = actor, actor_key_id, now
    session.flush()
    return Template(
        **{
            **template.__dict__,
            "source": "store",
            "updated_by": actor,
            "updated_by_key_id": actor_key_id,
            "updated_at": now,
        }
    )


def delete_template(
    session: Session,
    name: str,
    directory: Path | str,
    actor: str,
    now: datetime,
    actor_key_id: int | None = None,
) -> bool:
    """Remove an admin's template; a file default is hidden by a tombstone row.
    False when no such template is in force."""
    if name not in effective_templates(session, directory):
        return False
    row = session.scalar(select(ReplyTemplate).where(ReplyTemplate.name == name))
    if name in load_file_templates(directory):
        if row is None:
            row = ReplyTemplate(name=name, created_at=now, updated_by=actor)
            session.add(row)
        row.deleted, row.body, row.updated_at = True, None, now
        row.updated_by, row.updated_by_key_id = actor, actor_key_id
    elif row is not None:
        session.delete(row)
    session.flush()
    return True


# -- suggestions ---------------------------------------------------------------------------


def label_scores(session: Session, ticket: Ticket) -> dict[str, tuple[float, str]]:
    """Issue type -> (score, source) for the ticket's effective issue types: an
    agent's correction or a critical rule counts 1.0, else the model's probability."""
    labels = (ticket.labels or {}).get(ISSUE_TASK) or []
    corrected = any(
        ISSUE_TASK in (c.labels or {})
        for c in session.scalars(
            select(LabelCorrection).where(LabelCorrection.ticket_id == ticket.id)
        )
    )
    prediction = ticket.message.prediction if ticket.message is not None else None
    output = (prediction.output or {}) if prediction is not None else {}
    task = (output.get("tasks") or {}).get(ISSUE_TASK) or {}
    probs = task.get("probabilities") or {}
    predicted = set((prediction.labels or {}).get(ISSUE_TASK) or []) if prediction else set()
    out: dict[str, tuple[float, str]] = {}
    for label in labels:
        if corrected:
            out[label] = (1.0, "agent")
        elif label not in predicted:
            out[label] = (1.0, "rule")
        else:
            out[label] = (round(float(probs.get(label, 0.0)), 4), "model")
    return out


def suggest(
    session: Session,
    ticket: Ticket,
    templates: dict[str, Template],
    taxonomy: Taxonomy,
    values: dict[str, str | None],
    limit: int = 10,
) -> list[dict[str, Any]]:
    """Templates that fit the ticket's effective issue types and language, filled in.

    Order: complete ones before those missing a field, the ticket's own language
    before the English fallback, higher label score first, then by name."""
    lang = ticket.message.lang if ticket.message is not None else "und"
    scores = label_scores(session, ticket)
    out = []
    for t in templates.values():
        if t.issue_type not in scores or issue_type_problem(t.issue_type, taxonomy):
            continue
        if t.lang == lang:
            lang_match = "exact"
        elif t.lang == FALLBACK_LANG:
            lang_match = "fallback"
        else:
            continue
        merged = {**t.fallbacks, **{k: v for k, v in values.items() if v}}
        text, missing = fill(t.body, merged)
        score, source = scores[t.issue_type]
        out.append(
            {
                "name": t.name,
                "title": t.title,
                "issue_type": t.issue_type,
                "lang": t.lang,
                "lang_match": lang_match,
                "label_score": score,
                "label_source": source,
                "ready": not missing,
                "missing": missing,
                "text": text,
                "source": t.source,
            }
        )
    out.sort(
        key=lambda s: (
            not s["ready"],
            s["lang_match"] != "exact",
            -s["label_score"],
            s["name"],
        )
    )
    return out[:limit]


def ticket_values(
    ticket: Ticket,
    agent_name: str | None,
    customer_name: str | None = None,
    product: str | None = None,
    survey_link: str | None = None,
) -> dict[str, str | None]:
    msg = ticket.message
    return {
        "customer_name": customer_name or (msg.customer_name if msg else None),
        "order_id": msg.order_id if msg else None,
        "product": product or (msg.product_id if msg else None),
        "product_id": msg.product_id if msg else None,
        "marketplace": msg.marketplace if msg else None,
        "ticket_id": str(ticket.id),
        "agent_name": agent_name,
        "survey_link": survey_link if msg is not None and msg.channel != "review" else None,
    }
