"""Request dependencies: the app's services, the caller's role."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from model.predictor import Predictor
from model.taxonomy import Taxonomy
from serving.auth import Principal, authenticate
from serving.autoreply import AutoReplyPolicy
from serving.batcher import MicroBatcher
from serving.db import retry_read
from serving.metrics import Metrics
from serving.routing import RoutingConfig
from serving.settings import Settings
from serving.snapshots import Snapshots


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    routing: RoutingConfig
    metrics: Metrics
    clock: Callable[[], datetime]
    snapshots: Snapshots  # the console's month figures (serving/snapshots.py)
    predictor: Predictor | None = None
    model_error: str | None = None
    batcher: MicroBatcher | None = None  # runs every prediction (serving/batcher.py)
    autoreply: AutoReplyPolicy | None = None  # automatic answers (serving/autoreply.py)
    link_secret: bytes = b""  # signs survey and unsubscribe links (serving/links.py)

    def survey_url(self, ticket_id: int) -> str:
        from serving.surveys import survey_url

        return survey_url(self.settings.public_url, self.link_secret, ticket_id)

    @property
    def skip_locked(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def taxonomy(self) -> Taxonomy:
        """The served model's taxonomy; the default one while no model is loaded."""
        return self.predictor.taxonomy if self.predictor is not None else _default_taxonomy()

    def require_predictor(self) -> Predictor:
        if self.predictor is None:
            raise HTTPException(503, detail=f"model not loaded: {self.model_error}")
        return self.predictor


@functools.cache
def _default_taxonomy() -> Taxonomy:
    return Taxonomy.default()


def services(request: Request) -> Services:
    return request.app.state.services


def language_of(accept_language: str | None) -> str:
    """``zh`` when the caller's first language is Chinese, else ``en``."""
    first = (accept_language or "").split(",")[0].strip().lower()
    return "zh" if first.startswith("zh") else "en"


def display_lang(
    request: Request,
    lang: Literal["en", "zh"] | None = Query(
        None,
        description="Language of the display names (default: from Accept-Language; zh for "
        "Chinese, else en).",
    ),
) -> str:
    """The language labels are shown in: ``lang``, else the caller's Accept-Language."""
    return lang or language_of(request.headers.get("accept-language"))


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="or X-API-Key: KEY")


def require(*roles: str) -> Callable[..., Principal]:
    """A dependency that lets in keys of ``roles`` (and admin keys)."""

    def dependency(
        svc: Services = Depends(services),
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
        header_key: str | None = Security(_header),
    ) -> Principal:
        key = header_key or (bearer.credentials if bearer else None)
        if not key:
            raise HTTPException(
                401,
                detail="no API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                headers={"WWW-Authenticate": "Bearer"},
            )

        def lookup() -> Principal | None:
            with svc.sessions() as session:
                return authenticate(session, key)

        principal = retry_read(lookup)  # a read: safe to run again after a lost connection
        if principal is None:
            raise HTTPException(
                401, detail="unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        if principal.role != "admin" and principal.role not in roles:
            raise HTTPException(
                403,
                detail=f"this route needs a key with role {' or '.join(roles + ('admin',))}; "
                f"this key has role {principal.role}",
            )
        return principal

    dependency.roles = roles + ("admin",)  # read by serving.errors.error_statuses
    return dependency


service_role = require("service")
agent_role = require("agent")
admin_role = require("admin")

# The dependencies as typed parameters of a route: ``svc: Svc``, ``who: AgentKey``.
Svc = Annotated[Services, Depends(services)]
ServiceKey = Annotated[Principal, Depends(service_role)]
AgentKey = Annotated[Principal, Depends(agent_role)]
AdminKey = Annotated[Principal, Depends(admin_role)]
DisplayLang = Annotated[str, Depends(display_lang)]
