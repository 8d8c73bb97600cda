"""Admin: API keys and the loaded configuration."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from serving.auth import DuplicateKeyName, all_keys, create_key, revoke
from serving.db import transaction
from serving.deps import AdminKey, Svc
from serving.errors import ApiRoute
from serving.fields import RequestBody, RowId, identifier
from serving.store import ApiKey

# stored trimmed: a name of blanks only is refused (the pattern says so)
KeyName = Annotated[
    identifier(ApiKey.name, min_length=1), Field(json_schema_extra={"pattern": r"\S"})
]

router = APIRouter(prefix="/v1/keys", tags=["admin"], route_class=ApiRoute)
config_router = APIRouter(prefix="/v1/config", tags=["admin"], route_class=ApiRoute)


class KeyIn(RequestBody):
    name: KeyName
    role: Literal["service", "agent", "admin"]


class KeyOut(BaseModel):
    id: int
    name: str
    role: str
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    created_at: datetime
    revoked_at: datetime | None


class NewKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only hashed.")


def _out(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "prefix": row.prefix,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
    }


@router.post(
    "",
    response_model=NewKeyOut,
    status_code=201,
    responses={409: {"description": "An active key of the role has the name."}},
)
def new_key(body: KeyIn, svc: Svc, _: AdminKey) -> NewKeyOut:
    """Create a key. Its name must be free among the active keys of its role (409)."""
    try:
        with transaction(svc.sessions) as s:
            row, key = create_key(s, body.name, body.role)
            return NewKeyOut(**_out(row), key=key)
    except DuplicateKeyName as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    except IntegrityError as exc:  # a concurrent request took the name first
        raise HTTPException(
            409, detail=f"an active {body.role} key is already named {body.name!r}"
        ) from exc
    except ValueError as exc:  # a name of blanks only
        raise HTTPException(422, detail=f"name: {exc}") from exc


@router.get("", response_model=list[KeyOut])
def list_keys(svc: Svc, _: AdminKey) -> list[KeyOut]:
    with svc.sessions() as s:
        return [KeyOut(**_out(r)) for r in all_keys(s)]


@router.delete("/{key_id}", response_model=KeyOut)
def revoke_key(key_id: RowId, svc: Svc, _: AdminKey) -> KeyOut:
    with transaction(svc.sessions) as s:
        if not revoke(s, key_id):
            raise HTTPException(404, detail=f"no active key {key_id}")
        return KeyOut(**_out(s.get(ApiKey, key_id)))


@config_router.get("")
def show_config(svc: Svc, _: AdminKey) -> dict[str, Any]:
    """The routing configuration and limits in force (no secrets)."""
    r = svc.routing
    return {
        "routing_file": r.source,
        "queues": r.queues,
        "default_queue": r.default_queue,
        "routes": [{"when": x.when, "queue": x.queue} for x in r.routes],
        "sla_default_hours": r.sla_default_hours,
        "sla_overrides": [o.__dict__ for o in r.sla_overrides],
        "rules_file": str(svc.settings.rules_file),
        "rules": svc.predictor.rules.names if svc.predictor is not None else [],
        "lease_seconds": svc.settings.lease_seconds,
        "limits": {
            "max_text_chars": svc.settings.max_text_chars,
            "max_batch": svc.settings.max_batch,
            "max_body_bytes": svc.settings.max_body_bytes,
        },
        "model_dir": str(svc.settings.model_dir),
        "model_version": svc.predictor.model_version if svc.predictor else None,
        # the served taxonomy: every task and label with its English and Chinese names
        "taxonomy": svc.predictor.taxonomy.to_dict() if svc.predictor else None,
        "database": svc.engine.dialect.name,
    }
