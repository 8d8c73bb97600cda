"""The carelens API's request and response shapes (JSON: times are ISO 8601 strings),
generated from the service's OpenAPI schema by ``client/generate_types.py``: do not
edit."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypeAlias, TypedDict


class AttachmentOut(TypedDict):
    id: int
    message_id: int
    filename: str
    content_type: str
    size: int
    """
    Bytes.
    """


class BuyerLateRates(TypedDict):
    shop: dict[str, float | None]
    marketplaces: dict[str, dict[str, float | None]]


class CampaignIn(TypedDict):
    name: str
    kind: Literal['marketing', 'review_request']
    channel: Literal['marketplace_messaging', 'own_email']
    audience: NotRequired[dict[str, Any]]
    """
    marketing: min_messages, min_positive_share, no_open_ticket, no_negative_days; review_request: min_days_after_delivery, max_days_after_delivery, marketplace, product_ids.
    """
    subject: NotRequired[str | None]
    body: str
    fallbacks: NotRequired[dict[str, str]]
    """
    What a placeholder says for a customer without a value, e.g. {"customer_name": "there"}; without one the message lists it in "missing".
    """


class CampaignOut(TypedDict):
    id: int
    name: str
    kind: str
    channel: str
    audience: dict[str, Any]
    subject: str | None
    body: str
    fallbacks: dict[str, str]
    created_by: str
    created_by_key_id: int | None
    """
    The id of the key that created it.
    """
    created_at: str


Text: TypeAlias = str


class ClassifyRequest(TypedDict):
    texts: list[Text]
    """
    Texts to classify (not stored); control characters are read as spaces and lone surrogates as U+FFFD, and a text must hold more than that and whitespace.
    """
    ratings: NotRequired[list[int | None] | None]
    """
    Optional star rating (1-5, or null) per text, in the same order: a review's rating is read with its text.
    """
    evidence: NotRequired[bool | None]
    """
    Attach supporting spans (default: the service setting).
    """


class CloseIn(TypedDict):
    note: NotRequired[str | None]


class ConsentIn(TypedDict):
    email: NotRequired[str | None]
    """
    Address for the own list.
    """
    source: str
    """
    Where the consent was given (e.g. 'shop checkout checkbox 2026-11').
    """
    at: NotRequired[str | None]
    """
    When it was given (default: now).
    """


class ConsentOut(TypedDict):
    customer_id: str
    consented: bool
    opted_out: bool
    email: str | None
    since: str | None
    events: list[dict[str, Any]]


class Csat(TypedDict):
    surveys_sent: int
    answered: int
    response_rate: float | None
    mean_stars: float | None
    satisfied_share: float | None
    """
    Share of answers with 4 or 5 stars.
    """


class CsatFigures(TypedDict):
    overall: Csat
    issue_types: dict[str, Csat]
    weeks: dict[str, Csat]
    """
    Per ISO week of the resolution (2026-W47).
    """


class CustomerEvent(TypedDict):
    at: str
    kind: str
    """
    message, review, ticket_* event, label_correction, consent, opt_out or campaign_contact
    """
    message_id: NotRequired[int | None]
    ticket_id: NotRequired[int | None]
    detail: dict[str, Any]


class CustomerHistory(TypedDict):
    customer_id: str
    messages: int
    first_contact_at: str | None
    last_contact_at: str | None
    open_tickets: list[int]
    sentiment_trend: list[dict[str, Any]]
    """
    Per message in time order: sentiment and its score (-1, 0, 1).
    """
    sentiment_mean_last_5: float | None
    sentiment_mean_before: float | None
    consent: NotRequired[dict[str, Any] | None]
    """
    Marketing consent in force (consented, opted_out, since), if recorded.
    """
    timeline: list[CustomerEvent]


class Delivery(TypedDict):
    state: Literal['queued', 'not_sent']
    """
    queued: in the outbox, sent by SMTP with retries (see outbound); not_sent: recorded only, and why.
    """
    reason: NotRequired[str | None]
    outbound_id: NotRequired[int | None]


class DraftIn(TypedDict):
    wait_for_customer: NotRequired[bool]
    """
    Set the ticket to waiting_on_customer (and release the claim).
    """


class EvidenceOut(TypedDict):
    label: str
    start: int
    end: int
    text: str
    score: float


class FieldError(TypedDict):
    loc: list[str | int]
    """
    Where: body, query, path or header, then the field's path.
    """
    msg: str
    """
    What is wrong, and what to send instead.
    """
    type: str
    """
    The kind of problem (missing, string_too_long, ...).
    """


class HandledIn(TypedDict):
    note: NotRequired[str | None]


class HandledOut(TypedDict):
    id: int
    """
    The review's message id.
    """
    handled: bool
    handled_at: str | None
    """
    The first handling.
    """
    handled_by: str | None
    handled_by_key_id: int | None
    handled_note: str | None
    first: bool
    """
    False: handled before; this one joined the history.
    """
    ticket_id: int | None
    ticket_state: str | None


class JobOut(TypedDict):
    id: str
    kind: str
    status: Literal['running', 'succeeded', 'failed', 'lost']
    """
    lost: the service restarted while it ran.
    """
    pid: int
    started_at: str
    finished_at: str | None
    returncode: int | None
    by: str
    """
    Who started it.
    """
    options: dict[str, Any]
    """
    The settings given for this run.
    """
    labelled_tickets: int
    progress: NotRequired[dict[str, Any] | None]
    """
    stage, fraction (0-1) and message, while it runs.
    """
    result: NotRequired[dict[str, Any] | None]
    """
    Once finished: version, decision, reason, active (and, for one job, both sets of metrics).
    """
    log_tail: NotRequired[list[str] | None]
    """
    The log's last lines (one job).
    """


class KeyIn(TypedDict):
    name: str
    role: Literal['service', 'agent', 'admin']


class KeyOut(TypedDict):
    id: int
    name: str
    role: str
    prefix: str
    """
    The key's first characters, to tell keys apart.
    """
    created_at: str
    revoked_at: str | None


class LabelsIn(TypedDict):
    labels: dict[str, str | list[str]]
    """
    Task -> label(s), e.g. {"issue_type": ["refund_return"], "urgency": "high"}
    """


class MessageIn(TypedDict):
    channel: Literal['email', 'review', 'chat', 'social']
    """
    Where the message came from.
    """
    text: str
    """
    What the customer wrote: more than whitespace and control characters (read as spaces).
    """
    subject: NotRequired[str | None]
    """
    E-mail subject or review title.
    """
    external_id: NotRequired[str | None]
    """
    Idempotency key: a retry with it never stores twice.
    """
    customer_id: NotRequired[str | None]
    """
    Marketplace buyer id.
    """
    customer_name: NotRequired[str | None]
    """
    The buyer's name, as they signed: fills {customer_name} in replies.
    """
    order_id: NotRequired[str | None]
    product_id: NotRequired[str | None]
    """
    ASIN or SKU.
    """
    marketplace: NotRequired[str | None]
    """
    e.g. amazon.com, amazon.de
    """
    rating: NotRequired[int | None]
    """
    Star rating (reviews).
    """
    received_at: NotRequired[str | None]
    """
    When it was received (default: now); at most a day after the service's clock.
    """


class MessageOut(TypedDict):
    id: int
    external_id: str | None
    channel: Literal['email', 'review', 'chat', 'social']
    subject: str | None
    text: str
    lang: str
    customer_id: str | None
    customer_name: str | None
    order_id: str | None
    product_id: str | None
    marketplace: str | None
    rating: int | None
    received_at: str
    reply_to: str | None
    """
    E-mail: where an answer goes.
    """
    references: str | None
    """
    E-mail: the Message-IDs it answers.
    """


class ModelVersionOut(TypedDict):
    version: str
    created_at: NotRequired[str | None]
    status: NotRequired[str | None]
    parent: NotRequired[str | None]
    gate: NotRequired[dict[str, Any] | None]
    metrics: NotRequired[dict[str, Any] | None]
    active: bool


class MoveIn(TypedDict):
    state: Literal[
        'requested', 'approved', 'label_sent', 'received', 'refunded', 'rejected'
    ]
    """
    The next state (see next_states).
    """
    note: NotRequired[str | None]


class NewKeyOut(TypedDict):
    id: int
    name: str
    role: str
    prefix: str
    """
    The key's first characters, to tell keys apart.
    """
    created_at: str
    revoked_at: str | None
    key: str
    """
    The key itself: shown this once, stored only hashed.
    """


class NewTemplateIn(TypedDict):
    issue_type: str
    """
    A label of the served taxonomy's issue_type task.
    """
    lang: str
    """
    Language code, e.g. en or zh.
    """
    title: str
    body: str
    """
    Reply text; placeholders: {customer_name}, {order_id}, {product}, {product_id}, {marketplace}, {ticket_id}, {agent_name}, {survey_link}. {{ and }} are literal braces.
    """
    fallbacks: NotRequired[dict[str, str]]
    """
    Placeholder -> default text; placeholders without one are required.
    """
    name: str
    """
    Unique name, e.g. en.shipping_delivery.late
    """


class OptOutIn(TypedDict):
    source: NotRequired[str | None]
    """
    e.g. 'ticket 42', 'unsubscribe link'
    """


class OrderIn(TypedDict):
    order_id: str
    customer_id: str
    product_id: NotRequired[str | None]
    marketplace: NotRequired[str | None]
    delivered_at: NotRequired[str | None]
    """
    When the order was delivered (review requests count from it).
    """
    customer_name: NotRequired[str | None]
    """
    The buyer's name ({customer_name} in campaigns).
    """
    product_name: NotRequired[str | None]
    """
    The product's name ({product} in campaigns).
    """


class OrdersIn(TypedDict):
    orders: list[OrderIn]


class OutboundOut(TypedDict):
    id: int
    message_id: str
    """
    The reply's Message-ID.
    """
    to: str
    subject: str
    automatic: bool
    """
    An automatic answer, not an agent's.
    """
    state: Literal['queued', 'sending', 'sent', 'failed']
    attempts: int
    next_attempt_at: str | None
    """
    While queued: the next try.
    """
    last_error: str | None
    created_at: str
    sent_at: str | None


class QueueFigures(TypedDict):
    tickets_handled: int
    first_response_hours_median: float | None
    first_response_hours_p90: float | None
    resolution_hours_median: float | None
    sla_met_pct: float | None
    reopened: int
    csat: Csat
    queue: str
    late_response_rate: dict[str, float | None]


class QueueInfo(TypedDict):
    queue: str
    description: str
    depth: int
    """
    Tickets not closed (open, claimed, waiting on customer).
    """
    unclaimed: int
    oldest_unclaimed_at: str | None
    waiting_on_customer: int
    """
    Tickets answered and waiting on the customer.
    """
    breached: int
    """
    Active tickets past their deadline with no response.
    """
    due_soon: NotRequired[int]
    """
    Active tickets with no response due within CARELENS_SLA_ALERT_LEAD_HOURS.
    """
    late_response_rate: dict[str, float | None]
    """
    Share of tickets due in the last 7/30/90 days answered late or not at all.
    """


class ReplyIn(TypedDict):
    text: str
    """
    The reply sent.
    """
    wait_for_customer: NotRequired[bool]
    """
    Set the ticket to waiting_on_customer (and release the claim).
    """


class RetrainIn(TypedDict):
    holdout_fraction: NotRequired[float | None]
    """
    Newest share of the labelled tickets held out to judge the candidate. Default 0.2.
    """
    min_holdout: NotRequired[int | None]
    """
    Fewest tickets held out. Default 10.
    """
    min_labelled: NotRequired[int | None]
    """
    Fewest labelled tickets to retrain on. Default 20.
    """
    ticket_weight: NotRequired[float | None]
    """
    Each training ticket this many times per epoch. Default 2.0.
    """
    exclude_flagged: NotRequired[bool | None]
    """
    Mask the labels the cleanlab audit flags. Default false.
    """
    public_rows_per_source: NotRequired[int | None]
    """
    Replayed training rows per public source. Default 50.
    """
    from_backbone: NotRequired[bool | None]
    """
    Start from the backbone, not the active model. Default false.
    """
    epochs: NotRequired[int | None]
    """
    Passes over the training rows. Default 1.
    """
    learning_rate: NotRequired[float | None]
    """
    Encoder step size. Default 3e-05.
    """
    head_learning_rate: NotRequired[float | None]
    """
    Heads' step size. Default 0.001.
    """
    ngram_learning_rate: NotRequired[float | None]
    """
    N-gram table's step size. Default 0.01.
    """
    seed: NotRequired[int | None]
    """
    Random seed. Default 0.
    """
    threads: NotRequired[int | None]
    """
    CPU threads; None: all. Default null.
    """
    tolerance: NotRequired[float | None]
    """
    Allowed drop on the frozen set (mean over source/task cells). Default 0.01.
    """
    max_cell_drop: NotRequired[float | None]
    """
    Allowed drop of any one frozen (source, task) cell with 50 rows or more. Default 0.05.
    """
    min_gain: NotRequired[float | None]
    """
    Required gain on the held-out tickets: the lower bound of its paired bootstrap interval must be above it. Default 0.0.
    """
    confidence: NotRequired[float | None]
    """
    One-sided confidence of that lower bound. Default 0.95.
    """
    min_judged: NotRequired[int | None]
    """
    Fewest held-out tickets the gate judges a candidate on (fewer: never promoted). Default 30.
    """
    promote: NotRequired[bool | None]
    """
    Promote when the gate passes (false: only record the decision). Default true.
    """


class ReturnIn(TypedDict):
    note: NotRequired[str | None]
    """
    What was agreed, e.g. the condition.
    """


class ReturnOut(TypedDict):
    id: int
    ticket_id: int
    order_id: str | None
    product_id: str | None
    customer_id: str | None
    reasons: list[str]
    """
    The ticket's issue types (why it comes back).
    """
    note: str | None
    state: str
    open: bool
    age_hours: float | None
    """
    Hours since the request, while open.
    """
    created_by: str
    created_at: str
    updated_at: str
    closed_at: str | None
    next_states: list[str]
    history: NotRequired[list[dict[str, Any]]]


class ReviewOut(TypedDict):
    id: int
    """
    The review's message id.
    """
    product_id: str | None
    customer_id: str | None
    rating: int | None
    subject: str | None
    text: str
    lang: str
    received_at: str
    labels: dict[str, list[str]]
    ticket_id: int | None
    ticket_state: str | None
    handled: bool
    handled_at: str | None
    handled_by: str | None
    handled_by_key_id: int | None
    handled_note: str | None
    other_messages_of_customer: int
    """
    The buyer's other messages (any channel), linked by customer id.
    """
    cursor: str
    """
    Pass as `after` for the page that follows this review.
    """


class RuleHitOut(TypedDict):
    rule: str
    """
    safety, legal, regulator, chargeback or fraud.
    """
    phrase: str
    start: int
    """
    Offset into what the model read (subject line, newline, text).
    """
    end: int


class RunDetail(TypedDict):
    id: int
    campaign_id: int
    actor: str
    """
    The name of the key that ran it.
    """
    actor_key_id: int | None
    """
    The id of the key that ran it.
    """
    at: str
    considered: int
    included: int
    excluded: int
    webhook_status: str | None
    excluded_by_reason: dict[str, int]
    contacts: list[dict[str, Any]]
    """
    The audit: every customer (or order) considered, in or out and why.
    """


class RunOut(TypedDict):
    id: int
    campaign_id: int
    actor: str
    """
    The name of the key that ran it.
    """
    actor_key_id: int | None
    """
    The id of the key that ran it.
    """
    at: str
    considered: int
    included: int
    excluded: int
    webhook_status: str | None


class SuggestedReply(TypedDict):
    name: str
    title: str
    issue_type: str
    lang: str
    lang_match: str
    """
    exact, or fallback (English for another language)
    """
    label_score: float
    """
    The model's probability of the issue type; 1.0 when an agent or a critical rule set it.
    """
    label_source: str
    """
    model, rule or agent
    """
    ready: bool
    """
    Every required field is filled.
    """
    missing: list[str]
    """
    Required fields the ticket could not fill.
    """
    text: str
    source: str


class SurveyOut(TypedDict):
    stars: int
    comment: str | None
    lang: str
    answered_at: str


class Switched(TypedDict):
    active: str
    """
    The active version now.
    """
    serving: str | None
    """
    The version answering now.
    """


class TaskPredictionOut(TypedDict):
    task: str
    kind: str
    """
    multiclass, multilabel or ordinal.
    """
    labels: list[str]
    probabilities: dict[str, float]
    confidence: float
    needs_review: bool
    evidence: NotRequired[list[EvidenceOut]]
    display: NotRequired[str | None]
    """
    /v1/classify: the task's display name.
    """
    label_display: NotRequired[dict[str, str] | None]
    """
    /v1/classify: each label's display name.
    """


class TemplateIn(TypedDict):
    issue_type: str
    """
    A label of the served taxonomy's issue_type task.
    """
    lang: str
    """
    Language code, e.g. en or zh.
    """
    title: str
    body: str
    """
    Reply text; placeholders: {customer_name}, {order_id}, {product}, {product_id}, {marketplace}, {ticket_id}, {agent_name}, {survey_link}. {{ and }} are literal braces.
    """
    fallbacks: NotRequired[dict[str, str]]
    """
    Placeholder -> default text; placeholders without one are required.
    """


class TemplateOut(TypedDict):
    name: str
    issue_type: str
    lang: str
    title: str
    body: str
    fallbacks: dict[str, str]
    fields: list[str]
    required: list[str]
    source: str
    """
    file (a default) or store (an admin's)
    """
    updated_by: str | None
    updated_by_key_id: int | None
    updated_at: str | None
    active: bool
    """
    False when the issue type is not in the served taxonomy.
    """
    problem: str | None


class TicketOut(TypedDict):
    id: int
    message_id: int
    queue: str
    state: str
    priority: float
    base_priority: float
    labels: dict[str, list[str]]
    label_display: NotRequired[dict[str, dict[str, str]]]
    """
    Each task's labels with their display names, in English or Chinese (lang, else Accept-Language).
    """
    rule_hits: list[RuleHitOut]
    sla_hours: float
    sla_due_at: str
    sla_breached: bool
    first_response_at: str | None
    resolved_at: str | None
    claimed_by: str | None
    """
    The name of the key holding the claim.
    """
    claimed_by_key_id: int | None
    """
    The id of the key holding the claim: only that key (or an admin) may reply, release or close the ticket while the lease runs.
    """
    lease_expires_at: str | None
    created_at: str
    reply_due_at: NotRequired[str | None]
    """
    The customer answered after our last reply: answer them by then.
    """
    waiting_since: NotRequired[str | None]
    """
    Waiting on the customer since (the last reply).
    """
    waiting_hours: NotRequired[float | None]
    cursor: NotRequired[str | None]
    """
    In a queue's list: pass as `after` for the page after this ticket.
    """
    message: MessageOut | None
    answers: NotRequired[list[MessageOut]]
    """
    The customer's later messages that joined this ticket, oldest first.
    """
    attachments: NotRequired[list[AttachmentOut]]
    """
    Files that came with the messages (GET .../attachments/{id}).
    """
    outbound: NotRequired[list[OutboundOut]]
    """
    Replies sent by e-mail and their delivery (queued, sent, failed).
    """
    survey_url: NotRequired[str | None]
    """
    The satisfaction survey link to give the customer (put {survey_link} in a reply template); it opens once the ticket is resolved. Not for reviews.
    """
    survey: NotRequired[SurveyOut | None]
    draft: NotRequired[dict[str, Any] | None]
    """
    An automatic answer waiting for an agent (template, text, missing fields): POST .../draft/send sends it.
    """


class ToLabel(TypedDict):
    message_id: int
    ticket_id: int
    score: float
    """
    uncertainty + disagreement: higher first.
    """
    uncertainty: float
    """
    How unsure the model is (0-1).
    """
    disagreement: float
    """
    How much the prediction contradicts itself, the stars or the rules.
    """
    reasons: list[str]
    lang: str
    channel: Literal['email', 'review', 'chat', 'social']
    product_id: str | None
    rating: int | None
    subject: str | None
    text: str
    predicted: dict[str, list[str]]
    """
    The model's labels per task.
    """
    confidence: dict[str, float | None]
    model_version: str | None
    received_at: str


class VersionSummary(TypedDict):
    version: str
    active: bool
    status: str
    """
    imported, candidate, promoted or rejected.
    """
    created_at: str | None
    parent: str | None
    """
    The version it was fine-tuned from.
    """
    decision: str | None
    """
    The gate's decision: promoted, passed (not promoted) or rejected.
    """
    reason: str | None
    frozen_mean: float | None
    """
    Mean figure over the (source, task) cells of the frozen set.
    """
    new_tickets_mean: float | None
    """
    Mean figure on the newest labelled tickets held out of its training.
    """


class AgentFigures(TypedDict):
    tickets_handled: int
    first_response_hours_median: float | None
    first_response_hours_p90: float | None
    resolution_hours_median: float | None
    sla_met_pct: float | None
    reopened: int
    csat: Csat
    agent: str
    key_id: int | None
    labels_corrected: int


class AgentStats(TypedDict):
    since: str
    until: str
    agents: list[AgentFigures]


class ClaimOut(TypedDict):
    ticket: TicketOut | None
    """
    None when the queue has nothing to claim.
    """


class Error(TypedDict):
    detail: str | list[FieldError]
    """
    What to fix: a sentence, or one entry per problem when the request does not fit the schema (a 422 has either form).
    """


class Kpis(TypedDict):
    since: str
    until: str
    queues: list[QueueFigures]
    buyer_messages_late_response: BuyerLateRates
    """
    The late-response rate as Amazon counts it: buyer e-mails only.
    """
    csat: CsatFigures


class MessageBatch(TypedDict):
    messages: list[MessageIn]


class ModelsOut(TypedDict):
    serving: str | None
    """
    The model version answering now.
    """
    loaded_at: str | None
    error: str | None
    """
    The last reload or registry error, if any.
    """
    failed_version: str | None
    switches: list[dict[str, Any]]
    """
    The last model switches: at, from, to, reason.
    """
    registry: str | None
    """
    The registry folder (None: no registry).
    """
    active: str | None
    rollback_to: NotRequired[str | None]
    versions: list[VersionSummary]
    """
    Oldest first.
    """


class PredictionOut(TypedDict):
    model_version: str | None
    truncated: bool
    """
    The text was longer than the model reads.
    """
    needs_review: bool
    tasks: dict[str, TaskPredictionOut]
    rule_hits: list[RuleHitOut]


class ReplyOut(TypedDict):
    id: int
    message_id: int
    queue: str
    state: str
    priority: float
    base_priority: float
    labels: dict[str, list[str]]
    label_display: NotRequired[dict[str, dict[str, str]]]
    """
    Each task's labels with their display names, in English or Chinese (lang, else Accept-Language).
    """
    rule_hits: list[RuleHitOut]
    sla_hours: float
    sla_due_at: str
    sla_breached: bool
    first_response_at: str | None
    resolved_at: str | None
    claimed_by: str | None
    """
    The name of the key holding the claim.
    """
    claimed_by_key_id: int | None
    """
    The id of the key holding the claim: only that key (or an admin) may reply, release or close the ticket while the lease runs.
    """
    lease_expires_at: str | None
    created_at: str
    reply_due_at: NotRequired[str | None]
    """
    The customer answered after our last reply: answer them by then.
    """
    waiting_since: NotRequired[str | None]
    """
    Waiting on the customer since (the last reply).
    """
    waiting_hours: NotRequired[float | None]
    cursor: NotRequired[str | None]
    """
    In a queue's list: pass as `after` for the page after this ticket.
    """
    message: MessageOut | None
    answers: NotRequired[list[MessageOut]]
    """
    The customer's later messages that joined this ticket, oldest first.
    """
    attachments: NotRequired[list[AttachmentOut]]
    """
    Files that came with the messages (GET .../attachments/{id}).
    """
    outbound: NotRequired[list[OutboundOut]]
    """
    Replies sent by e-mail and their delivery (queued, sent, failed).
    """
    survey_url: NotRequired[str | None]
    """
    The satisfaction survey link to give the customer (put {survey_link} in a reply template); it opens once the ticket is resolved. Not for reviews.
    """
    survey: NotRequired[SurveyOut | None]
    draft: NotRequired[dict[str, Any] | None]
    """
    An automatic answer waiting for an agent (template, text, missing fields): POST .../draft/send sends it.
    """
    delivery: Delivery


class StoredMessage(TypedDict):
    message_id: int
    ticket_id: int
    answered: NotRequired[bool]
    """
    True when the message is a customer's answer that joined the ticket it answers (ticket_id) instead of opening one.
    """
    created: bool
    """
    False when the external_id was already stored.
    """
    lang: str
    queue: str
    state: str
    labels: dict[str, list[str]]
    rule_hits: list[RuleHitOut]
    priority: float
    sla_due_at: str
    model_version: str
    prediction: PredictionOut


class StoredMessages(TypedDict):
    messages: list[StoredMessage]


class ClassifyResponse(TypedDict):
    model_version: str | None
    predictions: list[PredictionOut]
