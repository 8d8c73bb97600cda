"""Service settings from the environment (prefix ``CARELENS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.paths import default_model_dir


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CARELENS_", env_file=None, protected_namespaces=()
    )

    model_dir: Path = Field(
        default_factory=default_model_dir, description="Model directory to serve."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = Field(2, ge=1, description="Torch threads for inference.")
    batch_size: int = Field(32, ge=1)
    max_tokens: int | None = Field(None, ge=8)
    max_text_chars: int = Field(100_000, ge=1, description="Longest accepted text (characters).")
    max_batch: int = Field(256, ge=1, description="Most texts in one classify request.")
    evidence: bool = True
