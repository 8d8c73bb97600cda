"""The console's sign-in: an agent or admin key exchanged for a session cookie, and the
CSRF token of its forms.

The cookie (``carelens_session``: HttpOnly, SameSite=Strict, Secure when the public
URL is https) carries the key's id, a piece of its hash and an expiry, signed with the
service's secret (``serving.links``); the key itself is never stored in it. Every
request checks the key again: a revoked key signs its sessions out. Each form carries
``csrf``, a signature of the session token that a page of another site cannot know.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs

from fastapi import Request
from sqlalchemy.orm import Session

from serving.auth import Principal, authenticate
from serving.links import sign, unwrap, wrap
from serving.store import ApiKey

COOKIE = "carelens_session"
LANG_COOKIE = "carelens_lang"
SESSION_HOURS = 12
CONSOLE_ROLES = ("agent", "admin")
MAX_FORM_BYTES = 256_000


class SignInError(ValueError):
    """The key cannot sign in to the console; the message says why."""


@dataclass(frozen=True)
class ConsoleSession:
    principal: Principal
    token: str

    def csrf(self, secret: bytes) -> str:
        return sign(secret, "csrf", self.token)


def sign_in(session: Session, secret: bytes, key: str, now: datetime) -> tuple[Principal, str]:
    """The key's principal and a session token, or ``SignInError``."""
    principal = authenticate(session, key.strip()) if key.strip() else None
    if principal is None:
        raise SignInError("unknown or revoked key")
    if principal.role not in CONSOLE_ROLES:
        raise SignInError(
            f"this key has role {principal.role}; the console needs an agent or admin key"
        )
    row = session.get(ApiKey, principal.key_id)
    expires = int((now + timedelta(hours=SESSION_HOURS)).timestamp())
    return principal, wrap(secret, "console", f"{row.id}:{row.key_hash[:16]}:{expires}")


def session_of(
    session: Session, secret: bytes, token: str | None, now: datetime
) -> ConsoleSession | None:
    """The signed-in principal of a session token still valid (key active, not
    expired), or None."""
    value = unwrap(secret, "console", token or "", max_chars=200)
    if value is None:
        return None
    key_id, _, rest = value.partition(":")
    piece, _, expires = rest.partition(":")
    if not key_id.isdigit() or not expires.isdigit() or int(expires) < now.timestamp():
        return None
    row = session.get(ApiKey, int(key_id))
    if row is None or row.revoked_at is not None or not row.key_hash.startswith(piece):
        return None
    return ConsoleSession(Principal(row.id, row.name, row.role), token)


def csrf_ok(secret: bytes, console: ConsoleSession, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(sent, console.csrf(secret))


async def form_of(request: Request) -> dict[str, list[str]]:
    """An urlencoded form (read up to ``MAX_FORM_BYTES``), every field's values."""
    raw = await request.body()
    return parse_qs(raw[:MAX_FORM_BYTES].decode("utf-8", errors="replace"))


def first(form: dict[str, list[str]], name: str, default: str = "") -> str:
    return (form.get(name) or [default])[0]
