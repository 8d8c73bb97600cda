"""The agent console at ``/console``: server-rendered pages (Jinja2, ``serving/pages/
console``) with a little JavaScript (``serving/static``), in English or Chinese.

Every page and action calls the API's own route functions with the signed-in key's
principal, so the console follows the same rules, leases and validation as the API
(an API refusal becomes a message on the page). Sign-in: ``serving.console``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import TypeAdapter

from serving.auth import Principal
from serving.console import (
    COOKIE,
    LANG_COOKIE,
    SESSION_HOURS,
    ConsoleSession,
    SignInError,
    csrf_ok,
    first,
    form_of,
    session_of,
    sign_in,
)
from serving.db import retry_read
from serving.deps import Services, Svc, language_of
from serving.fields import MAX_ROW_ID, RowId, TemplateName
from serving.routes import customers as customer_routes
from serving.routes import messages as message_routes
from serving.routes import reviews as review_routes
from serving.routes import templates as template_routes
from serving.routes import tickets as ticket_routes
from serving.routes.pages import page
from serving.signals import alert_view, recent_alerts
from serving.snapshots import Snapshot
from serving.templates import PLACEHOLDERS

router = APIRouter(prefix="/console", include_in_schema=False)
root_router = APIRouter(include_in_schema=False)
TemplateNameCheck = TypeAdapter(TemplateName)
REVIEWS_PAGE = QUEUE_PAGE = 100  # rows a list page shows

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "console": "carelens console",
        "queues": "Queues",
        "reviews": "Reviews",
        "products": "Products",
        "team": "Team",
        "admin": "Admin",
        "returns": "Returns",
        "open_returns": "Open returns, oldest first.",
        "no_returns": "No open returns.",
        "age": "Age",
        "reasons": "Reasons",
        "templates": "Reply templates",
        "issue_type": "Issue type",
        "language": "Language",
        "title": "Title",
        "source": "Source",
        "edit": "Edit",
        "save": "Save",
        "delete": "Delete",
        "body": "Text",
        "placeholders": "Placeholders",
        "new_template": "New template",
        "frozen_score": "Frozen set",
        "new_tickets_score": "New tickets",
        "score_help": "Mean headline score over tasks (and sources) on the frozen evaluation "
        "set and on the newest labelled tickets held out of training",
        "open_return": "Open a return",
        "move_to": "Move to",
        "sent_mail": "Replies by e-mail",
        "survey": "Satisfaction survey",
        "survey_link": "Survey link (put {survey_link} in a reply)",
        "admin_only": "This page needs an admin key.",
        "api_keys": "API keys",
        "name": "Name",
        "role": "Role",
        "created": "Created",
        "revoked": "Revoked",
        "revoke": "Revoke",
        "new_key": "New key",
        "create": "Create",
        "key_once": "The new key, shown this once (it is stored only hashed): copy it now.",
        "models": "Model versions",
        "serving": "Serving",
        "version": "Version",
        "status": "Status",
        "decision": "Gate decision",
        "promote": "Promote",
        "rollback": "Roll back",
        "retrain": "Retrain on the agents' labels",
        "jobs": "Retraining jobs",
        "progress": "Progress",
        "no_registry": "No model registry is configured.",
        "next_page": "Next page",
        "worst_first": "Products with the largest share of negative messages first; spikes flagged.",
        "counted_at": "Figures counted at",
        "spikes": "Spikes",
        "negative": "Negative",
        "mean_stars": "Mean ★",
        "top_issues": "Top issues",
        "no_products": "No messages with a product id yet.",
        "alerts": "Alerts sent",
        "alerts_intro": "Spikes and shifts the service alerted on (webhook and the queues' owners), newest first.",
        "no_alerts": "No alert yet.",
        "alert_kind": "Alert",
        "alert_subject": "About",
        "alert_window": "Window",
        "alert_figures": "Figures",
        "kind_issue_spike": "Issue spike",
        "kind_sentiment_shift": "More negative messages",
        "kind_urgency_shift": "More urgent messages",
        "kind_label_drift": "Model labels drifted",
        "agents": "Agents",
        "handled_tickets": "Handled",
        "first_response": "First response h (median / p90)",
        "resolution": "Resolution h (median)",
        "sla_met": "SLA met",
        "reopened": "Reopened",
        "csat": "CSAT (answered, mean ★)",
        "late_rate": "Late responses 7 / 30 / 90 d",
        "buyer_late": "Buyer messages answered late (as Amazon counts them)",
        "shop": "Shop",
        "period_30": "The last 30 days.",
        "expected": "expected",
        "sign_in": "Sign in",
        "sign_out": "Sign out",
        "key": "API key (agent or admin)",
        "signed_in_as": "Signed in as",
        "queue": "Queue",
        "depth": "Open",
        "unclaimed": "Unclaimed",
        "oldest": "Oldest unclaimed",
        "due_soon": "Due soon",
        "breached": "Late",
        "waiting": "Waiting on customer",
        "claim_next": "Claim next",
        "claim": "Claim",
        "release": "Release",
        "open": "Open",
        "ticket": "Ticket",
        "state": "State",
        "priority": "Priority",
        "due": "Due",
        "labels": "Labels",
        "message": "Message",
        "subject": "Subject",
        "received": "Received",
        "from": "From",
        "customer_id": "Customer",
        "in_reply_to": "Answers (In-Reply-To, References)",
        "order": "Order",
        "product": "Product",
        "rating": "Stars",
        "attachments": "Attachments",
        "rule_hits": "Rules",
        "needs_review": "Needs review",
        "confidence": "confidence",
        "customer": "Customer history",
        "no_customer": "No customer id on this message.",
        "suggested": "Suggested replies",
        "no_suggestions": "No template fits this ticket.",
        "reply": "Reply",
        "send": "Send reply",
        "wait": "Wait for the customer's answer",
        "resolve": "Resolve",
        "no_response": "No response needed",
        "draft": "Automatic draft",
        "send_draft": "Send the draft",
        "correct": "Correct the labels",
        "save_labels": "Save labels",
        "history": "History",
        "empty_queue": "Nothing to do in this queue.",
        "nothing_to_claim": "Nothing to claim in this queue.",
        "handled": "Handled",
        "mark_handled": "Mark handled",
        "note": "Note",
        "unhandled_first": "Unhandled negative reviews first.",
        "filter": "Filter",
        "stars": "Stars",
        "all": "all",
        "no_reviews": "No reviews.",
        "not_found": "Not found.",
        "forbidden": "Forbidden.",
        "expired_form": "The form expired: reload the page and try again.",
        "done": "Done.",
        "late": "late",
        "keys_help": "Keys: j/k move, Enter opens, c claims, r replies.",
        "by": "by",
        "model": "model",
        "rule": "rule",
        "agent": "agent",
        "messages": "Messages",
        "open_tickets": "open tickets",
    },
    "zh": {
        "console": "carelens 客服台",
        "queues": "队列",
        "reviews": "评价",
        "products": "商品",
        "team": "团队",
        "admin": "管理",
        "returns": "退货",
        "open_returns": "未完成的退货，最早的在前。",
        "no_returns": "没有未完成的退货。",
        "age": "时长",
        "reasons": "原因",
        "templates": "回复模板",
        "issue_type": "问题类型",
        "language": "语言",
        "title": "标题",
        "source": "来源",
        "edit": "编辑",
        "save": "保存",
        "delete": "删除",
        "body": "正文",
        "placeholders": "占位符",
        "new_template": "新建模板",
        "frozen_score": "固定评估集",
        "new_tickets_score": "新工单",
        "score_help": "各任务（及来源）主要指标的平均值：固定评估集，以及未参与训练的最新已标注工单",
        "open_return": "发起退货",
        "move_to": "改为",
        "sent_mail": "邮件回复",
        "survey": "满意度调查",
        "survey_link": "调查链接（在回复中写 {survey_link}）",
        "admin_only": "此页面需要管理员密钥。",
        "api_keys": "API 密钥",
        "name": "名称",
        "role": "角色",
        "created": "创建时间",
        "revoked": "已吊销",
        "revoke": "吊销",
        "new_key": "新密钥",
        "create": "创建",
        "key_once": "新密钥只显示这一次（只保存其哈希）：请立即复制。",
        "models": "模型版本",
        "serving": "当前服务",
        "version": "版本",
        "status": "状态",
        "decision": "门控结论",
        "promote": "上线",
        "rollback": "回滚",
        "retrain": "用客服标注重新训练",
        "jobs": "重新训练任务",
        "progress": "进度",
        "no_registry": "未配置模型仓库。",
        "next_page": "下一页",
        "worst_first": "负面消息占比最高的商品排在最前；标出异常上升。",
        "counted_at": "数据统计于",
        "spikes": "异常上升",
        "negative": "负面",
        "mean_stars": "平均星级",
        "top_issues": "主要问题",
        "no_products": "还没有带商品编号的消息。",
        "alerts": "已发出的预警",
        "alerts_intro": "服务已预警的异常上升和变化（Webhook 及队列负责人），最新在前。",
        "no_alerts": "还没有预警。",
        "alert_kind": "预警",
        "alert_subject": "对象",
        "alert_window": "时间窗口",
        "alert_figures": "数据",
        "kind_issue_spike": "问题异常上升",
        "kind_sentiment_shift": "负面消息增多",
        "kind_urgency_shift": "紧急消息增多",
        "kind_label_drift": "模型标签漂移",
        "agents": "客服",
        "handled_tickets": "处理数",
        "first_response": "首次响应小时（中位数 / p90）",
        "resolution": "解决小时（中位数）",
        "sla_met": "按时响应",
        "reopened": "重新打开",
        "csat": "满意度（回复数，平均星级）",
        "late_rate": "迟复率 7 / 30 / 90 天",
        "buyer_late": "买家消息迟复率（亚马逊口径）",
        "shop": "全店",
        "period_30": "最近 30 天。",
        "expected": "预期",
        "sign_in": "登录",
        "sign_out": "退出",
        "key": "API 密钥（客服或管理员）",
        "signed_in_as": "当前用户",
        "queue": "队列",
        "depth": "未结",
        "unclaimed": "未认领",
        "oldest": "最早未认领",
        "due_soon": "即将超时",
        "breached": "已超时",
        "waiting": "等待顾客回复",
        "claim_next": "认领下一个",
        "claim": "认领",
        "release": "释放",
        "open": "打开",
        "ticket": "工单",
        "state": "状态",
        "priority": "优先级",
        "due": "截止",
        "labels": "标签",
        "message": "消息",
        "subject": "主题",
        "received": "收到时间",
        "from": "发件人",
        "customer_id": "顾客",
        "in_reply_to": "回复的邮件（In-Reply-To、References）",
        "order": "订单",
        "product": "商品",
        "rating": "星级",
        "attachments": "附件",
        "rule_hits": "规则",
        "needs_review": "需要复核",
        "confidence": "置信度",
        "customer": "顾客历史",
        "no_customer": "此消息没有顾客编号。",
        "suggested": "推荐回复",
        "no_suggestions": "没有适合此工单的模板。",
        "reply": "回复",
        "send": "发送回复",
        "wait": "等待顾客回复",
        "resolve": "解决",
        "no_response": "无需回复",
        "draft": "自动草稿",
        "send_draft": "发送草稿",
        "correct": "修正标签",
        "save_labels": "保存标签",
        "history": "记录",
        "empty_queue": "此队列暂无待办。",
        "nothing_to_claim": "此队列没有可认领的工单。",
        "handled": "已处理",
        "mark_handled": "标记为已处理",
        "note": "备注",
        "unhandled_first": "未处理的差评排在最前。",
        "filter": "筛选",
        "stars": "星级",
        "all": "全部",
        "no_reviews": "没有评价。",
        "not_found": "未找到。",
        "forbidden": "无权访问。",
        "expired_form": "表单已过期：请刷新页面后重试。",
        "done": "已完成。",
        "late": "已超时",
        "keys_help": "快捷键：j/k 移动，Enter 打开，c 认领，r 回复。",
        "by": "由",
        "model": "模型",
        "rule": "规则",
        "agent": "客服",
        "messages": "消息数",
        "open_tickets": "未结工单",
    },
}
STATE_NAMES = {
    "en": {
        "open": "open",
        "claimed": "claimed",
        "waiting_on_customer": "waiting on customer",
        "resolved": "resolved",
        "no_response_needed": "no response needed",
    },
    "zh": {
        "open": "待处理",
        "claimed": "处理中",
        "waiting_on_customer": "等待顾客",
        "resolved": "已解决",
        "no_response_needed": "无需回复",
    },
}


def _lang(request: Request) -> str:
    chosen = request.cookies.get(LANG_COOKIE)
    return chosen if chosen in TEXTS else language_of(request.headers.get("accept-language"))


def _signed_in(request: Request, svc: Services) -> ConsoleSession | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None

    def lookup():
        with svc.sessions() as s:
            return session_of(s, svc.link_secret, token, svc.clock())

    return retry_read(lookup)


def _render(
    request: Request,
    svc: Services,
    console: ConsoleSession | None,
    name: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    lang = _lang(request)
    taxonomy = svc.taxonomy
    return page(
        f"console/{name}",
        status,
        lang=lang,
        t=TEXTS[lang],
        states=STATE_NAMES[lang],
        tasks={task.name: task for task in taxonomy},
        names={task.name: task.label_display(lang) for task in taxonomy},
        task_names={task.name: task.display_name(lang) for task in taxonomy},
        who=console.principal if console else None,
        csrf=console.csrf(svc.link_secret) if console else "",
        path=request.url.path,
        note=request.query_params.get("note"),
        error=request.query_params.get("error"),
        now=svc.clock(),
        **context,
    )


def _back(path: str, error: str | None = None, note: str | None = None) -> RedirectResponse:
    """See other: ``path`` with the message to show (an error, or a note)."""
    sep = "&" if "?" in path else "?"
    query = f"{sep}error={quote(error)}" if error else (f"{sep}note={quote(note)}" if note else "")
    return RedirectResponse(path + query, status_code=303)


def _detail(exc: HTTPException) -> str:
    detail = exc.detail
    return detail if isinstance(detail, str) else str(detail)


def _sign_in_page(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/console/login?next={quote(request.url.path)}", status_code=303)


async def _posted(
    request: Request, svc: Services, back: str | Callable[[dict], str]
) -> tuple[ConsoleSession, dict[str, list[str]]] | Response:
    """A form posted by a signed-in session with its CSRF token: (the session, the
    form); else the answer to give (the sign-in page, or ``back`` with the error)."""
    console = _signed_in(request, svc)
    if console is None:
        return _sign_in_page(request)
    form = await form_of(request)
    if not csrf_ok(svc.link_secret, console, first(form, "csrf")):
        target = back(form) if callable(back) else back
        return _back(target, error=TEXTS[_lang(request)]["expired_form"])
    return console, form


def _is_row_id(value: str) -> bool:
    return value.isdigit() and 1 <= int(value) <= MAX_ROW_ID


def _safe_next(value: str) -> str:
    return value if value.startswith("/console") and "//" not in value else "/console"


# -- sign in and out, language -----------------------------------------------------------


@root_router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=307)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, svc: Svc) -> HTMLResponse:
    return _render(
        request, svc, None, "login.html", next=_safe_next(request.query_params.get("next", ""))
    )


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, svc: Svc) -> Response:
    form = await form_of(request)
    target = _safe_next(first(form, "next"))
    try:
        with svc.sessions() as s:
            _, token = sign_in(s, svc.link_secret, first(form, "key"), svc.clock())
    except SignInError as exc:
        status = 403 if "role" in str(exc) else 401
        return _render(request, svc, None, "login.html", status, next=target, failed=str(exc))
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_HOURS * 3600,
        httponly=True,
        samesite="strict",
        secure=svc.settings.public_url.startswith("https://"),
        path="/console",
    )
    return response


@router.post("/logout")
async def logout(request: Request, svc: Svc) -> Response:
    console = _signed_in(request, svc)
    form = await form_of(request)
    if console is not None and not csrf_ok(svc.link_secret, console, first(form, "csrf")):
        return _back("/console", error=TEXTS[_lang(request)]["expired_form"])
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/lang/{lang}")
def set_lang(lang: str, request: Request) -> Response:
    target = _safe_next(request.query_params.get("next", "/console"))
    response = RedirectResponse(target, status_code=303)
    if lang in TEXTS:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax", path="/console")
    return response


# -- queues and tickets ------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def queues_page(request: Request, svc: Svc) -> Response:
    console = _signed_in(request, svc)
    if console is None:
        return _sign_in_page(request)
    queues = ticket_routes.list_queues(svc=svc, _=console.principal)
    return _render(request, svc, console, "queues.html", queues=queues)


@router.get("/queues/{queue}", response_class=HTMLResponse)
def queue_page(queue: str, request: Request, svc: Svc) -> Response:
    console = _signed_in(request, svc)
    if console is None:
        return _sign_in_page(request)
    try:
        rows = ticket_routes.list_queue_tickets(
            queue=queue,
            include_claimed=True,
            state=None,
            limit=QUEUE_PAGE,
            after=(request.query_params.get("after") or "")[:80] or None,
            lang=_lang(request),
            svc=svc,
            _=console.principal,
        )
    except HTTPException as exc:
        return _render(request, svc, console, "error.html", exc.status_code, message=_detail(exc))
    info = next(
        q for q in ticket_routes.list_queues(svc=svc, _=console.principal) if q.queue == queue
    )
    next_page = urlencode({"after": rows[-1].cursor}) if len(rows) == QUEUE_PAGE else None
    return _render(
        request, svc, console, "queue.html", queue=info, tickets=rows, next_page=next_page
    )


@router.post("/queues/{queue}/claim")
async def claim_next(queue: str, request: Request, svc: Svc) -> Response:
    back = f"/console/queues/{quote(queue)}"
    got = await _posted(request, svc, back)
    if isinstance(got, Response):
        return got
    console, _ = got
    try:
        got = ticket_routes.claim(queue=queue, lang=_lang(request), svc=svc, who=console.principal)
    except HTTPException as exc:
        return _back(back, error=_detail(exc))
    if got.ticket is None:
        return _back(back, note=TEXTS[_lang(request)]["nothing_to_claim"])
    return _back(f"/console/tickets/{got.ticket.id}")


def _prediction(svc: Services, message_id: int) -> dict[str, Any] | None:
    from serving.store import Prediction

    with svc.sessions() as s:
        row = s.query(Prediction).filter_by(message_id=message_id).one_or_none()
        return dict(row.output) if row is not None else None


def _highlighted(
    message: ticket_routes.MessageOut | None,
    prediction: dict[str, Any] | None,
    rule_hits: list[message_routes.RuleHitOut],
) -> list[tuple[str, str | None]]:
    """The message's text cut into (piece, label or None): the rules' phrases and the
    evidence of the predicted labels marked (offsets are into what the model read: the
    subject line, a newline, the text)."""
    text, subject = (message.text, message.subject) if message is not None else ("", None)
    shift = len(subject) + 1 if subject else 0
    wanted = [(0, h.start, h.end, h.rule) for h in rule_hits]
    for task in (prediction or {}).get("tasks", {}).values():
        wanted += [(1, e["start"], e["end"], e["label"]) for e in task.get("evidence") or []]
    spans: list[tuple[int, int, str]] = []
    for _, start, end, label in sorted(wanted):  # rules first, then by position
        start, end = start - shift, end - shift
        if 0 <= start < end <= len(text) and all(end <= a or start >= b for a, b, _ in spans):
            spans.append((start, end, label))
    out, at = [], 0
    for start, end, label in sorted(spans):
        if start > at:
            out.append((text[at:start], None))
        out.append((text[start:end], label))
        at = end
    if at < len(text):
        out.append((text[at:], None))
    return out


@router.get("/tickets/{ticket_id}", response_class=HTMLResponse)
def ticket_page(ticket_id: RowId, request: Request, svc: Svc) -> Response:
    console = _signed_in(request, svc)
    if console is None:
        return _sign_in_page(request)
    who, lang = console.principal, _lang(request)
    try:
        ticket = ticket_routes.show_ticket(ticket_id=ticket_id, lang=lang, svc=svc, _=who)
    except HTTPException as exc:
        return _render(request, svc, console, "error.html", exc.status_code, message=_detail(exc))
    message = ticket.message
    prediction = _prediction(svc, ticket.message_id)
    history = None
    if message is not None and message.customer_id:
        try:
            history = customer_routes.customer_history(
                customer_id=message.customer_id, svc=svc, _=who
            )
        except HTTPException:
            history = None
    try:
        suggestions = template_routes.suggested_replies(
            ticket_id=ticket_id, customer_name=None, product=None, limit=5, svc=svc, who=who
        )
    except HTTPException:
        suggestions = []
    returns = _returns_of(svc, ticket_id)
    return _render(
        request,
        svc,
        console,
        "ticket.html",
        returns=returns,
        ticket=ticket,
        message=message,
        prediction=prediction,
        pieces=_highlighted(message, prediction, ticket.rule_hits),
        history=history,
        suggestions=suggestions,
        mine=ticket.claimed_by_key_id == who.key_id,
    )


def _returns_of(svc: Services, ticket_id: int) -> list[dict[str, Any]]:
    """The ticket's returns as ``GET /v1/returns/{id}`` shows them."""
    from serving.returns import return_view, returns_of_ticket

    with svc.sessions() as s:
        return [return_view(r, svc.clock()) for r in returns_of_ticket(s, ticket_id)]


@router.get("/tickets/{ticket_id}/attachments/{attachment_id}")
def attachment(ticket_id: RowId, attachment_id: RowId, request: Request, svc: Svc) -> Response:
    console = _signed_in(request, svc)
    if console is None:
        return _sign_in_page(request)
    try:
        return ticket_routes.download_attachment(
            ticket_id=ticket_id, attachment_id=attachment_id, svc=svc, _=console.principal
        )
    except HTTPException as exc:
        return _render(request, svc, console, "error.html", exc.status_code, message=_detail(exc))


ACTIONS = (
    "claim",
    "release",
    "reply",
    "resolve",
    "no-response-needed",
    "labels",
    "send-draft",
    "return",
    "return-state",
)


@router.post("/tickets/{ticket_id}/{action}")
async def ticket_action(ticket_id: RowId, action: str, request: Request, svc: Svc) -> Response:
    back = f"/console/tickets/{ticket_id}"
    got = await _posted(request, svc, back)
    if isinstance(got, Response):
        return got
    console, form = got
    t = TEXTS[_lang(request)]
    if action not in ACTIONS:
        return _render(request, svc, console, "error.html", 404, message=t["not_found"])
    who, lang = console.principal, _lang(request)
    kw = {"ticket_id": ticket_id, "lang": lang, "svc": svc}
    try:
        if action == "claim":
            ticket_routes.claim_one(**kw, who=who)
        elif action == "release":
            ticket_routes.release_ticket(**kw, who=who)
        elif action == "reply":
            body = ticket_routes.ReplyIn(
                text=first(form, "text"), wait_for_customer=first(form, "wait") == "on"
            )
            ticket_routes.reply_ticket(**kw, body=body, who=who)
        elif action == "send-draft":
            ticket_routes.send_draft(**kw, body=None, who=who)
        elif action == "return":
            from serving.routes import returns as return_routes

            note = first(form, "note").strip() or None
            return_routes.create_return(
                ticket_id=ticket_id, body=return_routes.ReturnIn(note=note), svc=svc, who=who
            )
        elif action == "return-state":
            from serving.routes import returns as return_routes

            return_id = first(form, "return_id")
            if not _is_row_id(return_id):
                return _back(back, error="return_id: give a return's id")
            return_routes.move_return(
                return_id=int(return_id),
                body=return_routes.MoveIn(state=first(form, "state")),
                svc=svc,
                who=who,
            )
        elif action in ("resolve", "no-response-needed"):
            note = first(form, "note").strip() or None
            body = ticket_routes.CloseIn(note=note)
            fn = (
                ticket_routes.resolve_ticket
                if action == "resolve"
                else ticket_routes.no_response_needed
            )
            fn(**kw, body=body, who=who)
        else:  # labels
            labels: dict[str, str | list[str]] = {}
            for task in svc.taxonomy:
                values = [v for v in form.get(task.name, []) if v]
                if task.is_multilabel:
                    labels[task.name] = values
                elif values:
                    labels[task.name] = values[0]
            body = ticket_routes.LabelsIn(labels=labels)
            ticket_routes.post_labels(**kw, body=body, who=who)
    except HTTPException as exc:
        return _back(back, error=_detail(exc))
    except ValueError as exc:  # a form the API's request model refuses
        return _back(back, error=str(exc).splitlines()[-1] if str(exc) else "invalid form")
    if action in ("resolve", "no-response-needed", "release"):
        queue = _queue_of(svc, ticket_id)
        return _back(f"/console/queues/{quote(queue)}" if queue else "/console", note=t["done"])
    return _back(back, note=t["done"])


def _queue_of(svc: Services, ticket_id: int) -> str | None:
    from serving.store import Ticket

    with svc.sessions() as s:
        row = s.get(Ticket, ticket_id)
        return row.queue if row else None


# -- reviews -----------------------------------------------------------------------------


@router.get("/reviews", response_class=HTMLResponse)
def reviews_page(request: Request, svc: Svc) -> Response:
    console = _signed_in(request, svc)
    if console is None:
        return _sign_in_page(request)
    q = request.query_params
    product = (q.get("product") or "").strip()[:100] or None
    stars = [int(s) for s in q.getlist("stars") if s.isdigit() and 1 <= int(s) <= 5]
    try:
        rows = review_routes.list_reviews(
            product_id=product,
            customer_id=None,
            stars=stars or None,
            sentiment=None,
            issue_type=None,
            handled=None,
            since=None,
            until=None,
            limit=REVIEWS_PAGE,
            after=(q.get("after") or "")[:80] or None,
            svc=svc,
            _=console.principal,
        )
    except HTTPException as exc:
        return _render(request, svc, console, "error.html", exc.status_code, message=_detail(exc))
    filters = [("product", product)] if product else []
    filters += [("stars", str(n)) for n in stars]
    return _render(
        request,
        svc,
        console,
        "reviews.html",
        reviews=rows,
        product=product or "",
        stars=stars,
        next_page=urlencode([*filters, ("after", rows[-1].cursor)])
        if len(rows) == REVIEWS_PAGE
        else None,
    )


@router.post("/reviews/{review_id}/handled")
async def review_handled(review_id: RowId, request: Request, svc: Svc) -> Response:
    def back_of(form: dict) -> str:
        return _safe_next(first(form, "next", "/console/reviews"))

    got = await _posted(request, svc, back_of)
    if isinstance(got, Response):
        return got
    console, form = got
    back = back_of(form)
    note = first(form, "note").strip()[:10_000] or None
    try:
        review_routes.mark_handled(
            review_id=review_id,
            body=review_routes.HandledIn(note=note),
            svc=svc,
            who=console.principal,
        )
    except HTTPException as exc:
        return _back(back, error=_detail(exc))
    return _back(back, note=TEXTS[_lang(request)]["done"])


# -- returns -----------------------------------------------------------------------------


@router.get("/returns", response_class=HTMLResponse)
def returns_page(request: Request, svc: Svc) -> Response:
    from serving.routes import returns as return_routes

    console = _signed_in(request, svc)
    if console is None:
        return _sign_in_page(request)
    rows = return_routes.returns_list(
        state=None,
        open=True,
        product_id=None,
        customer_id=None,
        limit=200,
        after_id=None,
        svc=svc,
        _=console.principal,
    )
    return _render(request, svc, console, "returns.html", returns=rows)


# -- products and team ---------------------------------------------------------------------


def _png(fig) -> Response:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"})


def _products(svc: Services, who, series: bool = False) -> Snapshot:
    """The products' figures of ``GET /v1/products/insights`` (worst first), from the
    snapshots (``serving.snapshots``); ``series``: with the weekly series the charts draw."""
    from serving.routes import products as product_routes

    return svc.snapshots.get(
        f"products{'-series' if series else ''}",
        lambda: product_routes.products_insights(
            since=None,
            until=None,
            sort="negative_share",
            order="desc",
            min_messages=1,
            series=series,
            bucket="week",
            limit=50,
            offset=0,
            spike=product_routes.SpikeParams(None, None, None, None, None),
            svc=svc,
            _=who,
        ),
    )


@router.get("/products", response_class=HTMLResponse)
def products_page(request: Request, svc: Svc) -> Response:
    console = _signed_in(request, svc)
    if console is None:
        return _sign_in_page(request)
    snapshot = _products(svc, console.principal)
    data = snapshot.value
    rows = sorted(data["products"], key=lambda p: not p["spikes"])  # spiking first
    with svc.sessions() as s:
        alerts = [alert_view(a) for a in recent_alerts(s, 20)]
    return _render(
        request,
        svc,
        console,
        "products.html",
        data=data,
        products=rows,
        alerts=alerts,
        counted_at=snapshot.counted_at,
    )


@router.get("/products/{kind}.png")
def products_chart(kind: str, request: Request, svc: Svc) -> Response:
    from model.charts import chart_fonts, chart_lang
    from serving.reports import issue_mix_figure, product_texts, trends_figure

    console = _signed_in(request, svc)
    if console is None or kind not in ("mix", "trends"):
        return Response(status_code=404)
    data = _products(svc, console.principal, series=True).value
    if not data["products"]:
        return Response(status_code=404)
    lang = chart_lang(_lang(request))
    t = product_texts(svc.taxonomy, lang)
    spikes = [s for p in data["products"] for s in p["spikes"]]
    with chart_fonts(lang):
        if kind == "mix":
            fig = issue_mix_figure(data["products"][:12], t["mix_title"], t)
        else:
            fig = trends_figure(data["products"][:6], spikes, t["trends_title"], t)
        return _png(fig)


def _team(svc: Services) -> Snapshot:
    """The last 30 days' agent figures and queue KPIs (``GET /v1/stats/agents`` and
    ``/kpis``, read once), from the snapshots (``serving.snapshots``)."""
    from serving.routes import stats as stats_routes

    return svc.snapshots.get(
        "team", lambda: stats_routes.figures(svc, None, None, agents=True, queues=True)
    )


@router.get("/team", response_class=HTMLResponse)
def team_page(request: Request, svc: Svc) -> Response:
    console = _signed_in(request, svc)
    if console is None:
        return _sign_in_page(request)
    snapshot = _team(svc)
    return _render(
        request, svc, console, "team.html", team=snapshot.value, counted_at=snapshot.counted_at
    )


@router.get("/team/{kind}.png")
def team_chart(kind: str, request: Request, svc: Svc) -> Response:
    from serving.reports import kpi_figure

    console = _signed_in(request, svc)
    if console is None or kind not in ("first_response", "sla_met"):
        return Response(status_code=404)
    team = _team(svc).value
    queues = [q for q in team["queues"] if q["tickets_handled"]]
    if not team["agents"] and not queues:
        return Response(status_code=404)
    from model.charts import chart_fonts, chart_lang

    period = f"{team['since']:%Y-%m-%d} – {team['until']:%Y-%m-%d}"
    lang = chart_lang(_lang(request))
    with chart_fonts(lang):
        return _png(kpi_figure(kind, team["agents"], queues, period, lang))


# -- admin -------------------------------------------------------------------------------


def _admin_page(
    request: Request, svc: Services, console: ConsoleSession, status: int = 200, **extra
) -> HTMLResponse:
    from serving.routes import admin as admin_routes
    from serving.routes import models as model_routes

    who = console.principal
    keys = admin_routes.list_keys(svc=svc, _=who)
    from serving.routes import templates as template_routes

    templates = template_routes.list_templates(svc=svc, _=who)
    try:
        models = model_routes.list_models(request=request, svc=svc, _=who)
        jobs = model_routes.list_jobs(request=request, _=who)
    except HTTPException as exc:
        models, jobs = {"error": _detail(exc), "versions": []}, []
    running = any(j.get("status") == "running" for j in jobs)
    return _render(
        request,
        svc,
        console,
        "admin.html",
        status,
        keys=keys,
        models=models,
        jobs=jobs[:10],
        templates=templates,
        placeholders=PLACEHOLDERS,
        refresh=running,
        **extra,
    )


def _save_template(svc: Services, form: dict[str, list[str]], who: Principal) -> None:
    """Add or replace a template (``PUT /v1/templates/{name}``), keeping the fallbacks
    a template of that name has for the placeholders its new text uses."""
    from serving.templates import effective_templates

    name = first(form, "name").strip()
    TemplateNameCheck.validate_python(name)  # the API's rules for a template's name
    with svc.sessions() as s:
        current = effective_templates(s, svc.settings.templates_dir).get(name)
    text = first(form, "body")
    body = template_routes.TemplateIn(
        issue_type=first(form, "issue_type"),
        lang=first(form, "lang"),
        title=first(form, "title"),
        body=text,
        # the fallbacks of the placeholders the new text still uses
        fallbacks={
            k: v for k, v in (current.fallbacks if current else {}).items() if f"{{{k}}}" in text
        },
    )
    template_routes.put_template(template_name=name, body=body, svc=svc, who=who)


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request, svc: Svc) -> Response:
    console = _signed_in(request, svc)
    if console is None:
        return _sign_in_page(request)
    if console.principal.role != "admin":
        t = TEXTS[_lang(request)]
        return _render(request, svc, console, "error.html", 403, message=t["admin_only"])
    return _admin_page(request, svc, console)


@router.post("/admin/{action}", response_class=HTMLResponse)
async def admin_action(action: str, request: Request, svc: Svc) -> Response:
    from serving.routes import admin as admin_routes
    from serving.routes import models as model_routes

    got = await _posted(request, svc, "/console/admin")
    if isinstance(got, Response):
        return got
    console, form = got
    t = TEXTS[_lang(request)]
    if console.principal.role != "admin":
        return _render(request, svc, console, "error.html", 403, message=t["admin_only"])
    who = console.principal
    try:
        if action == "keys":
            body = admin_routes.KeyIn(name=first(form, "name"), role=first(form, "role"))
            created = admin_routes.new_key(body=body, svc=svc, _=who)
            # the key is shown on this answer only, never in a URL
            return _admin_page(request, svc, console, 201, new_key=created)
        if action == "revoke":
            key_id = first(form, "key_id")
            if not _is_row_id(key_id):
                return _back("/console/admin", error="key_id: give a key's id")
            admin_routes.revoke_key(key_id=int(key_id), svc=svc, _=who)
        elif action == "template":
            _save_template(svc, form, who)
        elif action == "template-delete":
            template_routes.remove_template(template_name=first(form, "name"), svc=svc, who=who)
        elif action == "promote":
            await model_routes.promote(version=first(form, "version"), request=request, who=who)
        elif action == "rollback":
            await model_routes.rollback(request=request, who=who)
        elif action == "retrain":
            model_routes.retrain(body=model_routes.RetrainIn(), request=request, svc=svc, who=who)
        else:
            return _render(request, svc, console, "error.html", 404, message=t["not_found"])
    except HTTPException as exc:
        return _back("/console/admin", error=_detail(exc))
    except ValueError as exc:  # a form the API's request model refuses
        return _back("/console/admin", error=str(exc).splitlines()[-1] if str(exc) else "invalid")
    return _back("/console/admin", note=t["done"])
