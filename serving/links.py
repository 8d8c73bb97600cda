"""Signed links a customer opens without a login (the satisfaction survey, the
unsubscribe link): the signature is the permission.

The secret is ``CARELENS_SECRET_KEY``, else a key generated once in
``$CARELENS_HOME/secret_key``. Each link signs its purpose with its value, so a link of
one kind can never be used as another, and a value cannot be changed without the
secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

SIG_CHARS = 22  # 16 bytes of the HMAC, base64url


def load_secret(configured: str | None, home: Path) -> bytes:
    """The configured secret, else the one kept in ``home/secret_key`` (created with
    mode 0600 on first use)."""
    if configured:
        return configured.encode()
    path = home / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip().encode()


def sign(secret: bytes, purpose: str, value: str) -> str:
    mac = hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:16]).decode().rstrip("=")


def wrap(secret: bytes, purpose: str, value: str) -> str:
    """A token carrying ``value`` (any text, base64url-encoded) and its signature."""
    encoded = base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")
    return f"{encoded}.{sign(secret, purpose, value)}"


def unwrap(secret: bytes, purpose: str, token: str, max_chars: int = 2000) -> str | None:
    """The value a ``wrap`` token carries, or None when it is not one of ours."""
    encoded, _, sig = token.partition(".")
    if len(sig) != SIG_CHARS or not encoded or len(encoded) > max_chars:
        return None
    try:
        value = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, ValueError):
        return None
    return value if hmac.compare_digest(sig, sign(secret, purpose, value)) else None
