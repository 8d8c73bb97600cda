"""The unsubscribe link of a marketing e-mail (``serving.campaigns.unsubscribe_url``):
no key, no login; the signed link is the permission.

``GET`` asks the customer to confirm (a link scanner that opens it changes nothing);
``POST`` (the page's button, or a mail client's one-click ``List-Unsubscribe-Post``,
RFC 8058) records the opt-out, after which every campaign run leaves the customer out.
Pages in English or Chinese (``?lang=``, else Accept-Language); a link that is not ours
gets a 404 page. Never a 500.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from serving.campaigns import consent_states, customer_of_unsubscribe, record_consent
from serving.db import transaction
from serving.deps import Svc, language_of
from serving.routes.pages import page

router = APIRouter(prefix="/unsubscribe", tags=["unsubscribe"], include_in_schema=False)

TEXTS = {
    "en": {
        "title": "Unsubscribe",
        "ask": "Stop receiving our marketing e-mails?",
        "button": "Unsubscribe",
        "done": "You are unsubscribed: you will not receive our marketing e-mails again.",
        "already": "You are already unsubscribed.",
        "invalid": "This unsubscribe link is not valid.",
    },
    "zh": {
        "title": "退订",
        "ask": "不再接收我们的营销邮件？",
        "button": "退订",
        "done": "您已成功退订，今后不会再收到我们的营销邮件。",
        "already": "您已经退订过了。",
        "invalid": "该退订链接无效。",
    },
}
STATUS = {"confirm": 200, "done": 200, "already": 200, "invalid": 404}
Lang = Literal["en", "zh"]


def _lang(request: Request, lang: str | None) -> str:
    return lang or language_of(request.headers.get("accept-language"))


def _page(state: str, lang: str) -> HTMLResponse:
    return page("unsubscribe.html", STATUS[state], state=state, lang=lang, t=TEXTS[lang])


def _opted_out(session, customer_id: str) -> bool:
    state = consent_states(session, [customer_id]).get(customer_id)
    return state is not None and state.opted_out


@router.get("/{token}", response_class=HTMLResponse)
def unsubscribe_form(
    *,
    token: str,
    request: Request,
    lang: Lang | None = Query(None),
    svc: Svc,
) -> HTMLResponse:
    shown = _lang(request, lang)
    customer = customer_of_unsubscribe(svc.link_secret, token)
    if customer is None:
        return _page("invalid", shown)
    with svc.sessions() as s:
        return _page("already" if _opted_out(s, customer) else "confirm", shown)


@router.post("/{token}", response_class=HTMLResponse)
def unsubscribe(
    *,
    token: str,
    request: Request,
    lang: Lang | None = Query(None),
    svc: Svc,
) -> HTMLResponse:
    shown = _lang(request, lang)
    customer = customer_of_unsubscribe(svc.link_secret, token)
    if customer is None:
        return _page("invalid", shown)
    with transaction(svc.sessions) as s:
        if _opted_out(s, customer):
            return _page("already", shown)
        record_consent(s, customer, "opt_out", "customer", svc.clock(), source="unsubscribe link")
    return _page("done", shown)
