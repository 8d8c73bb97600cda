"""The satisfaction survey page a customer opens from the link in our reply: no key,
no login; the signed link is the permission (``serving.surveys``). Every state of a
link has its page in the message's language: the form, thanks, already answered,
expired, not valid. Never a 500."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.exc import IntegrityError

from serving.db import transaction
from serving.deps import Svc, language_of
from serving.routes.pages import page
from serving.surveys import record_answer, survey_state

router = APIRouter(prefix="/survey", tags=["satisfaction survey"], include_in_schema=False)

TEXTS = {
    "en": {
        "title": "How did we do?",
        "ask": "Please rate the help you received.",
        "stars": "Your rating (5 is best)",
        "comment": "Anything you would like to tell us (optional)",
        "send": "Send",
        "thanks": "Thank you for your answer.",
        "answered": "This survey has already been answered. Thank you!",
        "expired": "This survey link has expired.",
        "invalid": "This survey link is not valid.",
        "no_stars": "Please choose 1 to 5 stars.",
    },
    "zh": {
        "title": "您对我们的服务满意吗？",
        "ask": "请为您获得的帮助打分。",
        "stars": "您的评分（5 分最好）",
        "comment": "您想告诉我们的话（可选）",
        "send": "提交",
        "thanks": "感谢您的反馈。",
        "answered": "该问卷已经提交过了，谢谢！",
        "expired": "该问卷链接已过期。",
        "invalid": "该问卷链接无效。",
        "no_stars": "请选择 1 到 5 星。",
    },
}
STATUS = {"form": 200, "thanks": 200, "answered": 200, "expired": 410, "invalid": 404}
MAX_COMMENT = 5000
MAX_FORM_BYTES = 64_000


def _page(state: str, lang: str, error: str | None = None, **form) -> HTMLResponse:
    status = 422 if error else STATUS[state]
    return page("survey.html", status, state=state, lang=lang, t=TEXTS[lang], error=error, **form)


@router.get("/{token}", response_class=HTMLResponse)
def survey_form(token: str, request: Request, svc: Svc) -> HTMLResponse:
    with svc.sessions() as s:
        st = survey_state(s, svc.link_secret, token, svc.clock(), svc.settings.survey_days)
        lang = (
            st.lang
            if st.ticket is not None
            else language_of(request.headers.get("accept-language"))
        )
        return _page(st.state, lang, chosen=None, comment=None)


@router.post("/{token}", response_class=HTMLResponse)
async def survey_answer(token: str, request: Request, svc: Svc) -> HTMLResponse:
    raw = await request.body()
    form = parse_qs(raw[:MAX_FORM_BYTES].decode("utf-8", errors="replace"))
    stars_raw = (form.get("stars") or [""])[0].strip()
    comment = (form.get("comment") or [""])[0].strip()[:MAX_COMMENT] or None
    now = svc.clock()
    with transaction(svc.sessions) as s:
        st = survey_state(s, svc.link_secret, token, now, svc.settings.survey_days)
        lang = (
            st.lang
            if st.ticket is not None
            else language_of(request.headers.get("accept-language"))
        )
        if st.state != "form":
            return _page(st.state, lang, chosen=None, comment=None)
        if not (stars_raw.isdigit() and 1 <= int(stars_raw) <= 5):
            return _page("form", lang, TEXTS[lang]["no_stars"], chosen=None, comment=comment)
        try:
            with s.begin_nested():
                record_answer(s, st.ticket, int(stars_raw), comment, lang, now)
        except IntegrityError:  # answered meanwhile, in another request
            return _page("answered", lang, chosen=None, comment=None)
    return _page("thanks", lang, chosen=None, comment=None)
