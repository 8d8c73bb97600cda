"""API keys with roles. Keys are random 256-bit tokens stored as SHA-256 hashes (a
slow hash adds nothing for keys this long); the key itself is shown once and never
logged.

Roles: ``service`` (ingest, classify), ``agent`` (queues, tickets, reviews, labels),
``admin`` (keys, models, config; may also do everything the others can).

A key's id is the caller's identity: claims, ticket history, labels, campaign runs and
the other records of who did what keep it next to the key's name, and whose claim a
ticket is is decided by the id. The name is for display; it is unique among the
active keys of a role (``DuplicateKeyName``; a revoked key's name is free again).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.store import ROLES, ApiKey, utcnow

KEY_PREFIX = "clk_"


class DuplicateKeyName(ValueError):
    """An active key of the role already has the name (HTTP 409)."""


@dataclass(frozen=True)
class Principal:
    key_id: int
    name: str
    role: str

    @property
    def actor(self) -> str:
        """How this caller is shown in ticket history and labels (``key_id`` is who)."""
        return self.name


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(
    session: Session, name: str, role: str, key: str | None = None
) -> tuple[ApiKey, str]:
    """Store a new key (hashed); returns the row and the plain key (show it once)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not name or not name.strip():
        raise ValueError("a key needs a name")
    name = name.strip()
    taken = session.scalar(
        select(ApiKey.id).where(
            ApiKey.name == name, ApiKey.role == role, ApiKey.revoked_at.is_(None)
        )
    )
    if taken is not None:
        raise DuplicateKeyName(
            f"an active {role} key is already named {name!r} (key {taken}): choose another "
            f"name, or revoke key {taken} first to give its name to a new key"
        )
    key = key or new_key()
    row = ApiKey(name=name, role=role, key_hash=hash_key(key), prefix=key[:8])
    session.add(row)
    session.flush()  # the unique index refuses a concurrent twin (IntegrityError)
    return row, key


def ensure_key(session: Session, name: str, role: str, key: str) -> None:
    """Create ``key`` unless a key with the same hash exists (bootstrap admin). When
    another active key has ``name``, the new one is named after its prefix as well.
    Service processes starting together may all try: the ones that lose the race find
    the winner's key and leave it."""
    exists = select(ApiKey.id).where(ApiKey.key_hash == hash_key(key))
    if session.scalar(exists) is not None:
        return
    try:
        with session.begin_nested():  # the unique indexes refuse a concurrent twin here
            try:
                create_key(session, name, role, key)
            except DuplicateKeyName:  # raised before anything is written
                create_key(session, f"{name} {key[:8]}", role, key)
    except IntegrityError:
        if session.scalar(exists) is None:
            raise


def authenticate(session: Session, key: str) -> Principal | None:
    row = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
    if row is None:
        return None
    return Principal(key_id=row.id, name=row.name, role=row.role)


def all_keys(session: Session) -> list[ApiKey]:
    """Every key ever issued (revoked ones too), oldest first."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke(session: Session, key_id: int) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True
