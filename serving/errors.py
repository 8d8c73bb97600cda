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

Every error answer has one shape, ``Error`` (``{"detail": ...}``: a sentence, or one
``FieldError`` per problem when the request does not fit the schema), and every
operation documents the error statuses it can answer (``ApiRoute``, which also
refuses query parameters the operation does not declare).

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
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
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


# -- the documented error answers ----------------------------------------------------------


class FieldError(BaseModel):
    """One thing wrong with the request."""

    model_config = ConfigDict(extra="allow")  # input, ctx: what was sent, the limit

    loc: list[str | int] = Field(
        description="Where: body, query, path or header, then the field's path."
    )
    msg: str = Field(description="What is wrong, and what to send instead.")
    type: str = Field(description="The kind of problem (missing, string_too_long, ...).")


class Error(BaseModel):
    """Every error answer (4xx, 5xx)."""

    detail: str | list[FieldError] = Field(
        description="What to fix: a sentence, or one entry per problem when the request "
        "does not fit the schema (a 422 has either form)."
    )


ERRORS = {
    400: "The body cannot be read as JSON (malformed, or not UTF-8).",
    401: "No API key, or an unknown or revoked one.",
    403: "The key's role may not use this operation.",
    404: "Nothing of that name or id.",
    409: "Not possible in the current state.",
    413: "Over a limit: the body (CARELENS_MAX_BODY_BYTES), a text or a batch.",
    422: "The request does not fit: a missing or refused value, an unknown field or query "
    "parameter, or a value the store cannot keep.",
    503: "Unavailable for a moment: a database fault or a full model queue (retry after "
    "Retry-After seconds), or no model loaded.",
}


def _walk(dependant: Dependant):
    """The dependant and all it depends on."""
    yield dependant
    for sub in dependant.dependencies:
        yield from _walk(sub)


def error_statuses(
    path: str, endpoint: Callable[..., Any], openapi_extra: dict[str, Any] | None
) -> set[int]:
    """The error statuses an operation can answer, from what it takes: 422 always (an
    unknown query parameter); 401, 403 and 503 (the key is looked up in the database)
    when it needs a key; 404 when its path names something; 400 and 413 when it takes
    a body. A route declares the others (409, a 503 of its own) in ``responses``."""
    parts = list(_walk(get_dependant(path=path, call=endpoint)))
    statuses = {422}
    if any(getattr(d.call, "roles", None) for d in parts):
        statuses |= {401, 403, 503}
    if any(d.path_params for d in parts):
        statuses.add(404)
    if any(d.body_params for d in parts):
        statuses |= {400, 413}
    elif (openapi_extra or {}).get("requestBody"):
        statuses.add(413)
    return statuses


class ApiRoute(RetryReads):
    """A route of this API: reads retried (``RetryReads``), every error status it can
    answer documented with the ``Error`` shape (``error_statuses``; a route's own
    ``responses`` entries keep their descriptions and get the shape), and a query
    parameter it does not declare refused with a 422 naming it (checked first, before
    the key): a misspelt filter would otherwise be ignored in silence."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        responses = dict(kwargs.pop("responses", None) or {})
        for status in error_statuses(path, endpoint, kwargs.get("openapi_extra")):
            responses.setdefault(status, {})
        for status, response in list(responses.items()):
            if isinstance(status, int) and status >= 400:
                responses[status] = {
                    "model": Error,
                    "description": ERRORS.get(status, "Error"),
                    **response,
                }
        super().__init__(path, endpoint, responses=responses, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        known = {p.alias for d in _walk(self.dependant) for p in d.query_params}
        takes = ", ".join(sorted(known)) or "none"

        async def checked(request: Request) -> Response:
            unknown = [name for name in request.query_params if name not in known]
            if unknown:
                raise RequestValidationError(
                    [
                        {
                            "type": "extra_forbidden",
                            "loc": ("query", name),
                            "msg": f"unknown query parameter (this operation takes: {takes})",
                            "input": request.query_params[name],
                        }
                        for name in dict.fromkeys(unknown)
                    ]
                )
            return await handler(request)

        return checked
