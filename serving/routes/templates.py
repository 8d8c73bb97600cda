"""Reply templates: the admins' list/add/edit/delete, and suggested replies for a
ticket (agents)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from serving.db import transaction
from serving.deps import AdminKey, AgentKey, Services, Svc
from serving.errors import ApiRoute
from serving.fields import FreeText, RequestBody, RowId, TemplateName, bounded_text, free_text
from serving.store import ReplyTemplate
from serving.templates import (
    PLACEHOLDERS,
    Template,
    TemplateError,
    check,
    delete_template,
    effective_templates,
    issue_type_problem,
    save_template,
    suggest,
    ticket_values,
)
from serving.tickets import NotFound, get_ticket

TemplateTitle = bounded_text(ReplyTemplate.title, min_length=1)
TemplateBody = free_text(min_length=1, max_length=20_000)
router = APIRouter(prefix="/v1/templates", tags=["reply templates"], route_class=ApiRoute)
ticket_router = APIRouter(prefix="/v1/tickets", tags=["reply templates"], route_class=ApiRoute)


class TemplateIn(RequestBody):
    issue_type: str = Field(..., description="A label of the served taxonomy's issue_type task.")
    lang: str = Field(..., description="Language code, e.g. en or zh.")
    title: TemplateTitle
    body: TemplateBody = Field(
        ...,
        description="Reply text; placeholders: "
        + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        + ". {{ and }} are literal braces.",
    )
    fallbacks: dict[str, FreeText] = Field(
        default_factory=dict,
        description="Placeholder -> default text; placeholders without one are required.",
    )


class NewTemplateIn(TemplateIn):
    name: TemplateName = Field(..., description="Unique name, e.g. en.shipping_delivery.late")


class TemplateOut(BaseModel):
    name: str
    issue_type: str
    lang: str
    title: str
    body: str
    fallbacks: dict[str, str]
    fields: list[str]
    required: list[str]
    source: str = Field(description="file (a default) or store (an admin's)")
    updated_by: str | None
    updated_by_key_id: int | None
    updated_at: datetime | None
    active: bool = Field(description="False when the issue type is not in the served taxonomy.")
    problem: str | None


class SuggestedReply(BaseModel):
    name: str
    title: str
    issue_type: str
    lang: str
    lang_match: str = Field(description="exact, or fallback (English for another language)")
    label_score: float = Field(
        description="The model's probability of the issue type; 1.0 when an agent or a "
        "critical rule set it."
    )
    label_source: str = Field(description="model, rule or agent")
    ready: bool = Field(description="Every required field is filled.")
    missing: list[str] = Field(description="Required fields the ticket could not fill.")
    text: str
    source: str


def _out(t: Template, svc: Services) -> TemplateOut:
    problem = issue_type_problem(t.issue_type, svc.require_predictor().taxonomy)
    return TemplateOut(**t.view(), active=problem is None, problem=problem)


def _checked(svc: Services, name: str, body: TemplateIn) -> Template:
    taxonomy = svc.require_predictor().taxonomy
    try:
        check(name, body.issue_type, body.lang, body.title, body.body, body.fallbacks, taxonomy)
    except TemplateError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return Template(
        name=name,
        issue_type=body.issue_type,
        lang=body.lang,
        title=body.title.strip(),
        body=body.body.strip(),
        fallbacks=dict(body.fallbacks),
    )


@router.get("", response_model=list[TemplateOut])
def list_templates(svc: Svc, _: AdminKey) -> list[TemplateOut]:
    """Templates in force: the file defaults, overridden or hidden by admins' edits."""
    with svc.sessions() as s:
        templates = effective_templates(s, svc.settings.templates_dir)
    return [_out(t, svc) for t in templates.values()]


@router.post(
    "",
    response_model=TemplateOut,
    status_code=201,
    responses={409: {"description": "A template has the name (PUT replaces it)."}},
)
def add_template(body: NewTemplateIn, svc: Svc, who: AdminKey) -> TemplateOut:
    """Add a template (409 if the name is taken: use PUT to replace one)."""
    template = _checked(svc, body.name, body)
    with transaction(svc.sessions) as s:
        if body.name in effective_templates(s, svc.settings.templates_dir):
            raise HTTPException(
                409,
                detail=f"template {body.name!r} exists: PUT /v1/templates/{body.name} replaces it",
            )
        saved = save_template(s, template, who.actor, svc.clock(), who.key_id)
    return _out(saved, svc)


@router.put("/{template_name}", response_model=TemplateOut)
def put_template(
    template_name: TemplateName,
    body: TemplateIn,
    svc: Svc,
    who: AdminKey,
) -> TemplateOut:
    """Add or replace a template; a file default of that name is overridden."""
    template = _checked(svc, template_name, body)
    with transaction(svc.sessions) as s:
        saved = save_template(s, template, who.actor, svc.clock(), who.key_id)
    return _out(saved, svc)


@router.delete("/{template_name}", status_code=204)
def remove_template(
    template_name: TemplateName,
    svc: Svc,
    who: AdminKey,
) -> None:
    """Delete an admin's template, or hide a file default."""
    with transaction(svc.sessions) as s:
        if not delete_template(
            s, template_name, svc.settings.templates_dir, who.actor, svc.clock(), who.key_id
        ):
            raise HTTPException(404, detail=f"no template {template_name!r}")


@ticket_router.get("/{ticket_id}/suggested-replies", response_model=list[SuggestedReply])
def suggested_replies(
    *,
    ticket_id: RowId,
    customer_name: str | None = Query(None, max_length=200, description="Fills {customer_name}."),
    product: str | None = Query(
        None, max_length=300, description="Fills {product} (else the product id)."
    ),
    limit: int = Query(10, ge=1, le=50),
    svc: Svc,
    who: AgentKey,
) -> list[SuggestedReply]:
    """Templates that fit the ticket's issue types (agent-corrected where corrected,
    else predicted, with critical rules applied) and its language, filled in, best
    first: complete before incomplete, exact language before the English fallback,
    higher label probability first."""
    taxonomy = svc.require_predictor().taxonomy
    with svc.sessions() as s:
        try:
            ticket = get_ticket(s, ticket_id)
        except NotFound as exc:
            raise HTTPException(404, detail=str(exc)) from exc
        templates = effective_templates(s, svc.settings.templates_dir)
        values = ticket_values(
            ticket, who.actor, customer_name, product, survey_link=svc.survey_url(ticket.id)
        )
        rows = suggest(s, ticket, templates, taxonomy, values, limit=limit)
    return [SuggestedReply(**r) for r in rows]
