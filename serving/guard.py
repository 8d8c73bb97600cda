"""What every HTTP request meets before the app (an ASGI middleware): the body limit,
and no body read for a caller without an API key.

- Body limit: ``CARELENS_MAX_BODY_BYTES`` is checked against Content-Length when the
  request declares one (413 before anything is read), and against the running total
  of what is read (a chunked body, or one longer than it declared): the read that
  passes the limit raises ``BodyTooLarge``, a 413 with a JSON ``detail`` and
  ``Connection: close`` (the rest of the body is never read).
- Authentication before the body: a request that carries a body to a path that needs
  a key (every ``/v1/`` route) and sends none is refused 401 at once, with the answer
  the route's dependency (``serving.deps.require``) gives, and ``Connection: close``;
  the body is never read or parsed. Whether a key that is sent is valid is still
  decided by the route (a database read), after at most ``max_body_bytes`` were read.

It touches nothing else: no database, no thread pool, so it adds microseconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fastapi.exceptions import HTTPException
from fastapi.security.utils import get_authorization_scheme_param
from starlette.types import ASGIApp, Message, Receive, Scope, Send

NO_KEY = "no API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`"


class BodyTooLarge(HTTPException):
    """The request body passed the limit while it was read (a 413)."""

    def __init__(self, read: int, limit: int) -> None:
        super().__init__(
            413,
            detail=f"request body: more than {limit} bytes (over {read} read), "
            f"the limit is {limit} (CARELENS_MAX_BODY_BYTES)",
            headers={"Connection": "close"},
        )


def has_key(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the request sends an API key the way ``serving.deps.require`` reads it:
    a non-empty ``X-API-Key`` or ``Authorization: Bearer KEY``."""
    for name, value in headers:
        name = name.lower()
        if name == b"x-api-key" and value:
            return True
        if name == b"authorization":
            scheme, credentials = get_authorization_scheme_param(value.decode("latin-1"))
            if scheme.lower() == "bearer" and credentials:
                return True
    return False


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int, keyed_prefix: str = "/v1/") -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # every route under it needs a key (tests/serving/test_auth.py checks that
        # each one declares its role); the public ones (/healthz, /readyz, /metrics,
        # the docs) are outside it
        self.keyed_prefix = keyed_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        declared = None
        chunked = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length":
                declared = int(value) if value.strip().isdigit() else None
            elif name == b"transfer-encoding":
                chunked = True
        limit = self.max_body_bytes
        if declared is not None and declared > limit:
            await _json(
                send,
                413,
                {
                    "detail": f"request body: {declared} bytes, the limit is {limit} "
                    "(CARELENS_MAX_BODY_BYTES)"
                },
                [(b"connection", b"close")],
            )
            return
        keyed = scope["path"].startswith(self.keyed_prefix)
        if (chunked or declared) and keyed and not has_key(headers):
            await _json(
                send,
                401,
                {"detail": NO_KEY},
                # the body is left unread: close, or the server would read it to the end
                [(b"www-authenticate", b"Bearer"), (b"connection", b"close")],
            )
            return

        read = 0

        async def limited_receive() -> Message:
            nonlocal read
            if read > limit:  # asked again after the limit: still too large
                raise BodyTooLarge(read, limit)
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise BodyTooLarge(read, limit)
            return message

        started = False

        async def watch_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watch_send)
        except BodyTooLarge as exc:
            # raised where nothing turned it into a response (outside the routes)
            if started:
                raise
            await _json(
                send,
                413,
                {"detail": exc.detail},
                [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()],
            )


async def _json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    content = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
