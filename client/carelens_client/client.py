"""The typed Python client for the carelens HTTP API (httpx). Answers are the JSON
the service sends, typed by ``carelens_client.types``.

    from carelens_client import CarelensClient
    with CarelensClient("http://127.0.0.1:8000", api_key="clk_...") as cl:
        stored = cl.post_message(channel="review", text="Arrived broken", product_id="B0X")
        ticket = cl.claim("reviews")

Pass ``http=`` an existing ``httpx.Client`` (e.g. FastAPI's TestClient) to reuse it.
Any non-2xx answer raises ``CarelensError`` with the status and the server's detail.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, Unpack

import httpx

from carelens_client import types as t

# an answer whose shape the schema leaves open (figures, insights, settings)
JSON = dict[str, Any]


class CarelensError(Exception):
    def __init__(self, status_code: int, detail: Any):
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def _clean(params: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if v is None:
            continue
        out[k] = v.isoformat() if isinstance(v, datetime) else v
    return out


class CarelensClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        http: httpx.Client | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._own = http is None
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self.api_key = api_key

    def __enter__(self) -> CarelensClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self.http.close()

    def with_key(self, api_key: str) -> CarelensClient:
        """The same connection, another key."""
        other = CarelensClient(api_key=api_key, http=self.http)
        other._own = False
        return other

    # -- plumbing -----------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = kwargs.pop("headers", {}) or {}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        response = self.http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise CarelensError(response.status_code, detail)
        return response

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- ops ----------------------------------------------------------------------
    def healthz(self) -> JSON:
        return self._json("GET", "/healthz")

    def readyz(self) -> JSON:
        return self._json("GET", "/readyz")

    def metrics(self) -> str:
        return self._request("GET", "/metrics").text

    # -- messages (service role) ----------------------------------------------------
    def classify(
        self,
        texts: list[str],
        ratings: list[int | None] | None = None,
        evidence: bool | None = None,
    ) -> t.ClassifyResponse:
        """Labels for texts, not stored; ``ratings``: a star rating (or None) per text."""
        body = _clean({"texts": texts, "ratings": ratings, "evidence": evidence})
        return self._json("POST", "/v1/classify", json=body)

    def post_message(self, **message: Unpack[t.MessageIn]) -> t.StoredMessage:
        """Store one message (the fields of ``types.MessageIn``: channel, text, subject,
        external_id, customer_id, customer_name, order_id, product_id, marketplace,
        rating, received_at as ISO 8601 or a datetime); returns its stored view
        (ticket, queue, labels...)."""
        return self._json("POST", "/v1/messages", json=_clean(message))["messages"][0]

    def post_messages(self, messages: list[t.MessageIn]) -> list[t.StoredMessage]:
        body = {"messages": [_clean(m) for m in messages]}
        return self._json("POST", "/v1/messages", json=body)["messages"]

    def post_email(self, raw: bytes, **params: Any) -> t.StoredMessage:
        return self._json(
            "POST",
            "/v1/messages/email",
            content=raw,
            params=_clean(params),
            headers={"Content-Type": "message/rfc822"},
        )["messages"][0]

    # -- queues and tickets (agent role) ----------------------------------------------
    def queues(self) -> list[t.QueueInfo]:
        return self._json("GET", "/v1/queues")

    def queue_tickets(
        self, queue: str, include_claimed: bool = True, limit: int = 50, after: str | None = None
    ) -> list[t.TicketOut]:
        """A page of the queue in claim order; ``after``: the last ticket's ``cursor``."""
        params = _clean({"include_claimed": include_claimed, "limit": limit, "after": after})
        return self._json("GET", f"/v1/queues/{queue}/tickets", params=params)

    def claim(self, queue: str) -> t.TicketOut | None:
        """The highest-priority ticket of ``queue``, leased to this key; None if empty."""
        return self._json("POST", f"/v1/queues/{queue}/claim")["ticket"]

    def ticket(self, ticket_id: int) -> t.TicketOut:
        return self._json("GET", f"/v1/tickets/{ticket_id}")

    def tickets(
        self,
        state: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        after_id: int | None = None,
    ) -> list[t.TicketOut]:
        """Tickets by state and queue, in id order (``after_id``: the previous page's last)."""
        params = _clean({"state": state, "queue": queue, "limit": limit, "after_id": after_id})
        return self._json("GET", "/v1/tickets", params=params)

    def open_return(self, ticket_id: int, note: str | None = None) -> t.ReturnOut:
        """A return for the ticket's order (state ``requested``)."""
        return self._json("POST", f"/v1/tickets/{ticket_id}/return", json={"note": note})

    def move_return(self, return_id: int, state: str, note: str | None = None) -> t.ReturnOut:
        return self._json(
            "POST", f"/v1/returns/{return_id}/state", json={"state": state, "note": note}
        )

    def get_return(self, return_id: int) -> t.ReturnOut:
        return self._json("GET", f"/v1/returns/{return_id}")

    def returns(self, **params: Any) -> list[t.ReturnOut]:
        """Returns by state, open, product_id, customer_id (a page: limit, after_id)."""
        return self._json("GET", "/v1/returns", params=_clean(params))

    def return_stats(self, since: datetime | None = None, until: datetime | None = None) -> JSON:
        return self._json(
            "GET", "/v1/stats/returns", params=_clean({"since": since, "until": until})
        )

    def claim_ticket(self, ticket_id: int) -> t.TicketOut:
        """Lease this ticket to this key (409 when another key holds it)."""
        return self._json("POST", f"/v1/tickets/{ticket_id}/claim")

    def attachment(self, ticket_id: int, attachment_id: int) -> bytes:
        return self._request("GET", f"/v1/tickets/{ticket_id}/attachments/{attachment_id}").content

    def release(self, ticket_id: int) -> t.TicketOut:
        return self._json("POST", f"/v1/tickets/{ticket_id}/release")

    def reply(self, ticket_id: int, text: str, wait_for_customer: bool = False) -> t.ReplyOut:
        """The ticket after the reply, with ``delivery``: queued for SMTP, or not sent
        and why."""
        return self._json(
            "POST",
            f"/v1/tickets/{ticket_id}/reply",
            json={"text": text, "wait_for_customer": wait_for_customer},
        )

    def send_draft(self, ticket_id: int) -> t.ReplyOut:
        """Send the automatic answer drafted for the ticket (409 naming missing fields)."""
        return self._json("POST", f"/v1/tickets/{ticket_id}/draft/send")

    def resolve(self, ticket_id: int, note: str | None = None) -> t.TicketOut:
        return self._json("POST", f"/v1/tickets/{ticket_id}/resolve", json={"note": note})

    def no_response_needed(self, ticket_id: int, note: str | None = None) -> t.TicketOut:
        return self._json(
            "POST", f"/v1/tickets/{ticket_id}/no-response-needed", json={"note": note}
        )

    def set_labels(self, ticket_id: int, labels: dict[str, str | list[str]]) -> t.TicketOut:
        return self._json("POST", f"/v1/tickets/{ticket_id}/labels", json={"labels": labels})

    def export_labels(self, format: Literal["jsonl", "csv"] = "jsonl", redact: bool = False) -> str:
        params = {"format": format, "redact": str(redact).lower()}
        return self._request("GET", "/v1/labels/export", params=params).text

    # -- reviews (agent role) -----------------------------------------------------------
    def reviews(
        self,
        product_id: str | None = None,
        stars: list[int] | None = None,
        customer_id: str | None = None,
        sentiment: str | None = None,
        issue_type: str | None = None,
        handled: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> list[t.ReviewOut]:
        """A page of reviews; ``after``: the last review's ``cursor`` (the next page)."""
        params = _clean(
            {
                "product_id": product_id,
                "customer_id": customer_id,
                "stars": stars,
                "sentiment": sentiment,
                "issue_type": issue_type,
                "handled": handled,
                "since": since,
                "until": until,
                "limit": limit,
                "after": after,
            }
        )
        return self._json("GET", "/v1/reviews", params=params)

    def mark_review_handled(self, review_id: int, note: str | None = None) -> t.HandledOut:
        return self._json("POST", f"/v1/reviews/{review_id}/handled", json={"note": note})

    def customer(self, customer_id: str) -> t.CustomerHistory:
        """One buyer's history: timeline, sentiment trend, open tickets."""
        return self._json("GET", f"/v1/customers/{customer_id}")

    def agent_stats(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> t.AgentStats:
        return self._json(
            "GET", "/v1/stats/agents", params=_clean({"since": since, "until": until})
        )

    def kpis(self, since: datetime | None = None, until: datetime | None = None) -> t.Kpis:
        return self._json("GET", "/v1/stats/kpis", params=_clean({"since": since, "until": until}))

    def signals(self, alerts: int = 50) -> JSON:
        """Issue spikes per product, sentiment and urgency shifts per language, the
        model's label drift, and the ``alerts`` newest alerts sent."""
        return self._json("GET", "/v1/stats/signals", params={"alerts": alerts})

    # -- product insights (agent role) ----------------------------------------------------
    def product_insights(
        self,
        product_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        bucket: Literal["day", "week"] = "week",
        **spike: Any,
    ) -> JSON:
        """One product's issue mix, sentiment, stars, languages, series and spikes.
        ``spike``: window_days, baseline_days, min_count, alpha, prior_weight."""
        params = _clean({"since": since, "until": until, "bucket": bucket, **spike})
        return self._json("GET", f"/v1/products/{product_id}/insights", params=params)

    def products_insights(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        sort: str = "messages",
        order: Literal["asc", "desc"] = "desc",
        min_messages: int = 1,
        series: bool = False,
        bucket: Literal["day", "week"] = "week",
        limit: int = 100,
        offset: int = 0,
        **spike: Any,
    ) -> JSON:
        """Every product, sorted (messages, negative_share, mean_rating, spikes,
        product_id or an issue type's share)."""
        params = _clean(
            {
                "since": since,
                "until": until,
                "sort": sort,
                "order": order,
                "min_messages": min_messages,
                "series": series,
                "bucket": bucket,
                "limit": limit,
                "offset": offset,
                **spike,
            }
        )
        return self._json("GET", "/v1/products/insights", params=params)

    # -- admin --------------------------------------------------------------------------
    def create_key(self, name: str, role: Literal["service", "agent", "admin"]) -> t.NewKeyOut:
        """Returns the new key (``["key"]``) — shown this once."""
        return self._json("POST", "/v1/keys", json={"name": name, "role": role})

    def list_keys(self) -> list[t.KeyOut]:
        return self._json("GET", "/v1/keys")

    def revoke_key(self, key_id: int) -> t.KeyOut:
        return self._json("DELETE", f"/v1/keys/{key_id}")

    def config(self) -> JSON:
        return self._json("GET", "/v1/config")

    # -- reply templates --------------------------------------------------------------
    def suggested_replies(
        self,
        ticket_id: int,
        customer_name: str | None = None,
        product: str | None = None,
        limit: int = 10,
    ) -> list[t.SuggestedReply]:
        """Templates fitting the ticket's issue types and language, filled in, best first."""
        params = _clean({"customer_name": customer_name, "product": product, "limit": limit})
        return self._json("GET", f"/v1/tickets/{ticket_id}/suggested-replies", params=params)

    def templates(self) -> list[t.TemplateOut]:
        return self._json("GET", "/v1/templates")

    def add_template(
        self,
        name: str,
        issue_type: str,
        lang: str,
        title: str,
        body: str,
        fallbacks: dict[str, str] | None = None,
    ) -> t.TemplateOut:
        payload = {"name": name, "issue_type": issue_type, "lang": lang, "title": title}
        payload.update(body=body, fallbacks=fallbacks or {})
        return self._json("POST", "/v1/templates", json=payload)

    def put_template(
        self,
        name: str,
        issue_type: str,
        lang: str,
        title: str,
        body: str,
        fallbacks: dict[str, str] | None = None,
    ) -> t.TemplateOut:
        payload = {"issue_type": issue_type, "lang": lang, "title": title, "body": body}
        payload["fallbacks"] = fallbacks or {}
        return self._json("PUT", f"/v1/templates/{name}", json=payload)

    def delete_template(self, name: str) -> None:
        self._request("DELETE", f"/v1/templates/{name}")

    # -- orders, consent, campaigns ---------------------------------------------------
    def post_orders(self, orders: list[t.OrderIn]) -> dict[str, int]:
        """Upsert orders (order_id, customer_id, product_id, marketplace, delivered_at,
        customer_name, product_name)."""
        return self._json("POST", "/v1/orders", json={"orders": [_clean(o) for o in orders]})

    def record_consent(
        self,
        customer_id: str,
        source: str,
        email: str | None = None,
        at: datetime | None = None,
    ) -> t.ConsentOut:
        body = _clean({"source": source, "email": email, "at": at})
        return self._json("POST", f"/v1/customers/{customer_id}/consent", json=body)

    def opt_out(self, customer_id: str, source: str | None = None) -> t.ConsentOut:
        return self._json(
            "POST", f"/v1/customers/{customer_id}/opt-out", json=_clean({"source": source})
        )

    def create_campaign(
        self,
        name: str,
        kind: Literal["marketing", "review_request"],
        channel: Literal["marketplace_messaging", "own_email"],
        body: str,
        subject: str | None = None,
        audience: JSON | None = None,
        fallbacks: dict[str, str] | None = None,
    ) -> t.CampaignOut:
        """``fallbacks``: what a placeholder says for a customer without a value."""
        payload = _clean(
            {
                "name": name,
                "kind": kind,
                "channel": channel,
                "body": body,
                "subject": subject,
                "audience": audience or {},
                "fallbacks": fallbacks or None,
            }
        )
        return self._json("POST", "/v1/campaigns", json=payload)

    def campaigns(self) -> list[t.CampaignOut]:
        return self._json("GET", "/v1/campaigns")

    def campaign(self, campaign_id: int) -> t.CampaignOut:
        return self._json("GET", f"/v1/campaigns/{campaign_id}")

    def run_campaign(self, campaign_id: int) -> t.RunDetail:
        """Build the audience now; returns the run with its audit rows."""
        return self._json("POST", f"/v1/campaigns/{campaign_id}/runs")

    def campaign_runs(self, campaign_id: int) -> list[t.RunOut]:
        return self._json("GET", f"/v1/campaigns/{campaign_id}/runs")

    def campaign_run(self, campaign_id: int, run_id: int) -> t.RunDetail:
        return self._json("GET", f"/v1/campaigns/{campaign_id}/runs/{run_id}")

    def export_campaign_run(
        self,
        campaign_id: int,
        run_id: int,
        format: Literal["json", "csv"] = "json",
        redact: bool = False,
    ) -> str:
        return self._request(
            "GET",
            f"/v1/campaigns/{campaign_id}/runs/{run_id}/export",
            params={"format": format, "redact": str(redact).lower()},
        ).text

    # -- the learning loop: registry, retraining (admin), active learning (agent) ----
    def models(self) -> t.ModelsOut:
        """Versions, the active one, what is served, any reload error."""
        return self._json("GET", "/v1/models")

    def model(self, version: str) -> t.ModelVersionOut:
        return self._json("GET", f"/v1/models/{version}")

    def promote_model(self, version: str) -> t.Switched:
        """Load ``version``, make it active and serve it (409 if it fails to load)."""
        return self._json("POST", f"/v1/models/{version}/promote")

    def rollback_model(self) -> t.Switched:
        return self._json("POST", "/v1/models/rollback")

    def retrain(self, **options: Unpack[t.RetrainIn]) -> t.JobOut:
        """Start a retraining job (options: epochs, promote, exclude_flagged, tolerance,
        min_gain, ...); poll it with ``job``."""
        return self._json("POST", "/v1/models/retrain", json=_clean(options))

    def jobs(self) -> list[t.JobOut]:
        return self._json("GET", "/v1/models/jobs")

    def job(self, job_id: str) -> t.JobOut:
        """Status, progress, log tail and (when finished) the result."""
        return self._json("GET", f"/v1/models/jobs/{job_id}")

    def labeling_next(self, n: int = 20) -> list[t.ToLabel]:
        """Unlabelled messages whose labels would help the model most."""
        return self._json("GET", "/v1/labeling/next", params={"n": n})
