"""Service settings from the environment (prefix ``CARELENS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.paths import carelens_home, default_model_dir
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
        DEFAULT_ROUTING_PATH, description="Queues, routes, SLA hours, priority, critical rules."
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
        5_000_000, ge=1024, description="Largest accepted request body (bytes)."
    )
    evidence: bool = True
    lease_seconds: int = Field(
        900, ge=1, description="How long a claim holds a ticket before it returns to its queue."
    )
    sla_hours: float | None = Field(
        None, gt=0, description="Overrides the routing file's default first-response hours."
    )
