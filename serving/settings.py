"""Service settings from the environment (prefix ``CARELENS_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.paths import carelens_home, default_model_dir, default_registry_dir
from model.rules import DEFAULT_RULES_PATH
from serving.autoreply import DEFAULT_AUTOREPLY_PATH
from serving.routing import DEFAULT_ROUTING_PATH


def default_database_url() -> str:
    return f"sqlite:///{carelens_home() / 'carelens.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CARELENS_", env_file=None, protected_namespaces=()
    )

    model_dir: Path = Field(
        default_factory=default_model_dir, description="Model directory to serve."
    )
    database_url: str = Field(
        default_factory=default_database_url,
        description="SQLAlchemy URL: sqlite:///PATH (default $CARELENS_HOME/carelens.db) "
        "or postgresql://USER@HOST:PORT/DB.",
    )
    migrate_on_start: bool = Field(True, description="Run `carelens db upgrade` at start.")
    routing_file: Path = Field(
        DEFAULT_ROUTING_PATH, description="Queues, routes, SLA hours, priority."
    )
    rules_file: Path = Field(
        DEFAULT_RULES_PATH,
        description="Critical rules (safety, legal, regulator, chargeback, fraud) applied to "
        "every prediction.",
    )
    bootstrap_admin_key: SecretStr | None = Field(
        None, description="If set, this key is created as an admin key at start (first login)."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = Field(2, ge=1, description="Torch threads for inference.")
    batch_size: int = Field(32, ge=1)
    max_tokens: int | None = Field(None, ge=8)
    max_text_chars: int = Field(100_000, ge=1, description="Longest accepted text (characters).")
    max_batch: int = Field(256, ge=1, description="Most texts or messages in one request.")
    max_body_bytes: int = Field(
        5_000_000,
        ge=1024,
        description="Largest accepted request body (bytes), counted as it is read "
        "(chunked bodies too).",
    )
    email_max_parts: int = Field(
        100, ge=1, description="Most MIME parts (at every level) in one raw e-mail."
    )
    email_max_depth: int = Field(
        10, ge=1, description="Deepest nesting of MIME parts in one raw e-mail."
    )
    email_max_decoded_bytes: int | None = Field(
        None,
        ge=1,
        description="Largest decoded size of one raw e-mail's parts (default: max_body_bytes).",
    )
    redact_logs: bool = Field(
        True,
        description="Mask e-mail addresses, phone numbers, order ids, street addresses and "
        "key material in every log line.",
    )
    evidence: bool = True
    backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "torch",
        description="Inference backend: torch (fp32), onnx (ONNX Runtime fp32) or onnx-int8; "
        "the ONNX ones need `carelens export --model DIR --backend ...` first.",
    )
    batch_max_size: int = Field(
        32, ge=1, description="Micro-batcher: most texts in one model call."
    )
    batch_max_wait_ms: float = Field(
        2.0,
        ge=0,
        description="Micro-batcher: how long the first request of a batch waits for others (ms).",
    )
    batch_queue_size: int = Field(
        512,
        ge=1,
        description="Micro-batcher: texts allowed to wait; beyond it requests get 503 + Retry-After.",
    )
    lease_seconds: int = Field(
        900, ge=1, description="How long a claim holds a ticket before it returns to its queue."
    )
    # product insights: the spike test (serving/insights.py; query parameters override)
    spike_window_days: int = Field(7, ge=1, description="Spike test: the recent window (days).")
    spike_baseline_days: int = Field(
        28, ge=1, description="Spike test: the baseline window just before it (days)."
    )
    spike_min_count: int = Field(
        5, ge=1, description="Spike test: fewest recent messages with the issue to test it."
    )
    spike_alpha: float = Field(
        0.01, gt=0, lt=1, description="Spike test: significance level (Bonferroni-adjusted)."
    )
    spike_prior_weight: float = Field(
        10.0,
        ge=0,
        description="Spike test: pseudo-messages of the shop-wide share in the baseline.",
    )
    build_missing: bool = Field(
        False,
        description="With no model at model_dir: start anyway and build one in the "
        "background (a quick model within minutes, then the starter), serving each as soon "
        "as it is ready; /readyz says how far the build is.",
    )
    registry: Path = Field(
        default_factory=default_registry_dir,
        description="Model registry whose active version is served (hot reload).",
    )
    follow_registry: bool = Field(
        True, description="Serve the registry's active version and follow its pointer."
    )
    registry_poll_seconds: float = Field(
        5.0, ge=0, description="How often the active pointer is checked (0: never)."
    )
    jobs_dir: Path = Field(
        default_factory=lambda: carelens_home() / "jobs",
        description="Where retraining jobs keep their logs and results.",
    )
    sla_hours: float | None = Field(
        None, gt=0, description="Overrides the routing file's default first-response hours."
    )
    templates_dir: Path = Field(
        Path(__file__).resolve().parent.parent / "data" / "templates",
        description="Default reply templates (*.yaml); admins' templates in the store "
        "override them.",
    )
    marketing_cap_contacts: int = Field(
        2, ge=1, description="Most marketing contacts per customer in marketing_cap_days."
    )
    marketing_cap_days: int = Field(30, ge=1, description="Window of the marketing cap (days).")
    campaign_webhook_url: str | None = Field(
        None,
        description="If set, every campaign run's rendered messages are POSTed here as JSON "
        "(the seller's mail tool sends them; carelens sends no mail).",
    )
    # -- the mailbox: mail in over IMAP, replies out over SMTP (docs/mailbox.md) ---------
    imap_host: str | None = Field(
        None, description="IMAP server to read customer mail from (unset: no mail in)."
    )
    imap_port: int = Field(993, ge=1, le=65535)
    imap_security: Literal["ssl", "starttls", "none"] = Field(
        "ssl", description="ssl (port 993), starttls (port 143) or none (loopback only)."
    )
    imap_user: str | None = None
    imap_password: SecretStr | None = Field(None, description="Password or app password.")
    imap_folder: str = "INBOX"
    imap_timeout: float = Field(30.0, gt=0, description="Seconds to wait on the IMAP server.")
    imap_poll_seconds: float = Field(
        0.0,
        ge=0,
        description="How often the service reads the mailbox (0: it does not; run "
        "`carelens mail poll` instead).",
    )
    smtp_host: str | None = Field(
        None, description="SMTP relay that sends replies (unset: replies are recorded only)."
    )
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_security: Literal["starttls", "ssl", "none"] = Field(
        "starttls", description="starttls (port 587), ssl (port 465) or none (loopback only)."
    )
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout: float = Field(30.0, gt=0, description="Seconds to wait on the SMTP relay.")
    mail_from: str | None = Field(
        None, description="The seller's address replies are sent from, e.g. support@shop.example."
    )
    outbox_poll_seconds: float = Field(
        10.0,
        ge=0,
        description="How often the service delivers queued replies (0: it does not; run "
        "`carelens mail send` instead).",
    )
    outbox_max_attempts: int = Field(
        8, ge=1, description="Delivery attempts before a reply is marked failed."
    )
    autoreply_file: Path = Field(
        DEFAULT_AUTOREPLY_PATH,
        description="Automatic answers per issue type and language (send, draft or off).",
    )
    sla_alert_lead_hours: float = Field(
        2.0, ge=0, description="Warn this many hours before a ticket's answer is late."
    )
    sla_alert_webhook_url: str | None = Field(
        None,
        description="If set, SLA alerts (due soon, late) are POSTed here as JSON, once each.",
    )
    sla_alert_poll_seconds: float = Field(
        60.0, ge=0, description="How often the service looks for SLA alerts to send (0: never)."
    )
    console_figures_seconds: float = Field(
        60.0,
        ge=0,
        description="The console's products and team figures are counted again when older "
        "than this (the page shows the last count at once and recounts in the background; "
        "0: count on every request).",
    )
    signal_poll_seconds: float = Field(
        3600.0,
        ge=0,
        description="How often the service looks for spikes, sentiment and urgency shifts "
        "and label drift to alert on (0: never); alerts go where the SLA alerts go.",
    )
    drift_psi: float = Field(
        0.25,
        gt=0,
        description="Label drift: alert when a task's weekly label distribution differs "
        "from the model's training rows by this population stability index or more.",
    )
    drift_min_messages: int = Field(
        50, ge=1, description="Label drift: the fewest predictions a week needs to be judged."
    )
    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="The address customers reach the service at (survey and unsubscribe links).",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Signs survey and unsubscribe links (default: a key generated once in "
        "$CARELENS_HOME/secret_key). Changing it voids the links already sent.",
    )
    survey_days: int = Field(30, ge=1, description="How long a survey link stays open (days).")
