"""Errors as answers, not crashes.

- A transient database fault (connection lost, server restarting, pool exhausted,
  SQLite busy) is a 503 with ``Retry-After`` and a JSON ``detail``: the client may
  send the same request again. Read-only routes (GET) are first run a second time
  within the request (``RetryReads``); ingestion retries itself (by external id, or in
  a fresh transaction when nothing can have been committed; see
  ``serving.routes.messages.ingest``).
- A value the database refuses (``DataError``: out of range, too long, a character it
  cannot store) is a 422. The request types of ``serving.fields`` refuse such values
  first, with the field and the fix; this is the net under them.
- Validation errors echo the offending input, and some 4xx details quote it: lone
  surrogates in it are replaced with U+FFFD, NaN and the infinities spelled as
  strings, and nesting deeper than ``ECHO_DEPTH`` cut, so the answer itself can be
  encoded as JSON in UTF-8.

Neither the answer nor the log carries the SQL statement, its bound parameters or
the database's message text (they may hold personal data).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.db import describe, is_transient

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2
ECHO_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def _where(request: Request) -> str:
    """The route template (``/v1/tickets/{ticket_id}``), never the path itself (it may
    hold a customer id)."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', 'unmatched route')}"


def unavailable() -> JSONResponse:
    return JSONResponse(
        status_code=503,
        content={
            "detail": "the database is unavailable for a moment (connection lost or busy); "
            f"nothing was changed unless said otherwise: retry in {RETRY_AFTER_SECONDS} s"
        },
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _database_error(request: Request, error: Exception) -> Response:
    if is_transient(error):
        log.warning("database fault on %s, answered 503: %s", _where(request), describe(error))
        return unavailable()
    if isinstance(error, exc.DataError):
        log.warning(
            "database refused a value on %s, answered 422: %s", _where(request), describe(error)
        )
        return JSONResponse(
            status_code=422,
            content={
                "detail": "the database refused a value of this request (out of range, too "
                "long, or a character it cannot store): check the request's fields"
            },
        )
    raise error  # a bug: the server error middleware answers 500 and logs it


def _echo(value: Any, depth: int = 0) -> Any:
    """What an answer may quote of the request, as JSON can carry it: lone surrogates
    become U+FFFD, NaN and the infinities their JSON spelling as strings, and what is
    nested deeper than ``ECHO_DEPTH`` levels a placeholder (a body 900 levels deep
    parses, and would otherwise exhaust the recursion limit of the encoder)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict | list | tuple) and depth >= ECHO_DEPTH:
        return f"(nested deeper than {ECHO_DEPTH} levels)"
    if isinstance(value, dict):
        return {_echo(k, depth + 1): _echo(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_echo(v, depth + 1) for v in value]
    return value


async def _validation_error(request: Request, error: RequestValidationError) -> Response:
    errors = [_echo(e) for e in error.errors()]  # bounded before jsonable_encoder recurses
    return JSONResponse(status_code=422, content={"detail": _echo(jsonable_encoder(errors))})


async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
    """FastAPI's answer, with a detail that quotes the request (an unknown label or
    placeholder name) made encodable first."""
    error.detail = _echo(error.detail)
    return await http_exception_handler(request, error)


def install(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error_class in (exc.DBAPIError, exc.TimeoutError, exc.DisconnectionError):
        app.add_exception_handler(error_class, _database_error)


class RetryReads(APIRoute):
    """A route that runs a GET (read-only) request once more when the first run hits
    a transient database fault; a second fault is answered 503 (``install``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not self.methods or not self.methods <= {"GET", "HEAD"}:
            return handler

        async def retrying(request: Request) -> Response:
            try:
                return await handler(request)
            except exc.SQLAlchemyError as error:
                if not is_transient(error):
                    raise
                log.warning(
                    "database fault on %s, retrying once: %s", _where(request), describe(error)
                )
            return await handler(request)

        return retrying
