"""What the API accepts in ids, identifiers, free text and times: one set of request
types, so every route refuses or cleans the same input the same way (a 4xx that says
what to fix, never a database error).

- Row ids (``{ticket_id}``, ``{campaign_id}``, ...) run from 1 to 2^31-1, the range of
  the INTEGER columns on PostgreSQL; anything else cannot name a row (422).
- Identifiers (external, customer, order and product ids, marketplaces, names used as
  keys) are stored and matched verbatim, so a character the database cannot store is
  refused with a 422 naming the field, never altered: NUL (U+0000, refused by
  PostgreSQL) and lone UTF-16 surrogates (U+D800 to U+DFFF, not encodable in UTF-8).
  Their length limit is the store column's (``serving.store``).
- Free text (message text and subject, notes, replies, campaign and template text) is
  kept, cleaned the way the model cleans what it reads (``model.predictor.clean_text``):
  control characters, NUL included, become spaces and lone surrogates become U+FFFD.
  The length is preserved, so evidence offsets stay valid. A customer's message is
  never refused for a stray byte.
- Times are ISO 8601 strings (a number, which pydantic would read as seconds since
  1970, is refused) between 1970-01-01 and 2999-12-31 (UTC; a time without a zone is
  UTC), so date arithmetic (SLA deadlines, windows of days) cannot overflow. When a
  message was received is also at most a day after the service clock (``received_problem``).
- Request bodies (``RequestBody``) refuse keys they do not declare (422 naming the
  key), so a misspelt field is never ignored in silence.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from sqlalchemy.orm import InstrumentedAttribute

from serving.store import ConsentEvent, Message, ReplyTemplate

MAX_ROW_ID = 2**31 - 1


class RequestBody(BaseModel):
    """The base of every JSON request body: an undeclared key is refused (422)."""

    model_config = ConfigDict(extra="forbid")


RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description=f"A row id (1 to {MAX_ROW_ID}).")]

_SURROGATE = re.compile("[\ud800-\udfff]")


def column_length(column: InstrumentedAttribute) -> int:
    """The length of a String column of the store (what PostgreSQL enforces)."""
    length = column.property.columns[0].type.length
    if not length:
        raise ValueError(f"{column} has no length limit")
    return length


def identifier_problem(value: str, limit: int | None = None) -> str | None:
    """Why ``value`` cannot be stored as an identifier, or None."""
    if limit is not None and len(value) > limit:
        return f"is {len(value)} characters long, the limit is {limit}"
    if "\x00" in value:
        return "contains a NUL character (U+0000): remove it"
    m = _SURROGATE.search(value)
    if m:
        return (
            f"contains a lone surrogate (U+{ord(m.group()):04X}) at position {m.start()}: "
            "send valid Unicode (UTF-8)"
        )
    return None


# Both run before pydantic's own string checks, which cannot measure a string holding
# a lone surrogate (they would refuse it as "not a valid string", saying nothing of why).


def _check_identifier(value: Any) -> Any:
    problem = identifier_problem(value) if isinstance(value, str) else None
    if problem:
        raise ValueError(problem)
    return value


def _control_characters(planes: tuple[int, ...] = (0, 1, 14)) -> re.Pattern[str]:
    """One character class of what ``clean_text`` turns into a space: control and format
    characters (Cc, Cf) but newline, tab, carriage return and the zero-width joiner.
    Unicode has them in planes 0, 1 and 14 only (a test checks all planes)."""
    found = [
        cp
        for plane in planes
        for cp in range(plane << 16, (plane + 1) << 16)
        if unicodedata.category(chr(cp)) in ("Cc", "Cf") and chr(cp) not in "\n\t\r\u200d"
    ]
    runs: list[list[int]] = []  # consecutive code points as ranges: a far faster class
    for cp in found:
        if runs and runs[-1][1] == cp - 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp])
    return re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in runs) + "]")


_CONTROL = _control_characters()


def _clean_free_text(value: Any) -> Any:
    """``clean_text`` at the speed of two regex scans (its loop over characters takes
    ~0.3 s a million characters, and request bodies are validated on the event loop,
    where that would stall every other request). The same result, character for
    character (tests/serving/test_limits_and_logs.py)."""
    if not isinstance(value, str):
        return value
    return _CONTROL.sub(" ", _SURROGATE.sub("\ufffd", value))


# Length limits belong inside these types (not in a Field() beside them), so a string
# that is too long or too short is reported as such, in characters.


def identifier(column: InstrumentedAttribute, min_length: int | None = None) -> Any:
    """The request type of an identifier stored in ``column`` (its length limit, no NUL,
    no lone surrogates)."""
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=column_length(column)),
        BeforeValidator(_check_identifier),
    ]


# an empty idempotency key would name no message to find again, yet be stored as one
ExternalId = identifier(Message.external_id, min_length=1)
CustomerId = identifier(Message.customer_id)
OrderId = identifier(Message.order_id)
ProductId = identifier(Message.product_id)
Marketplace = identifier(Message.marketplace)
TemplateName = identifier(ReplyTemplate.name)
Email = identifier(ConsentEvent.email)


def free_text(max_length: int | None = None, min_length: int | None = None) -> Any:
    """The request type of free text: control characters become spaces, lone
    surrogates U+FFFD; then the length limits apply."""
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=max_length),
        BeforeValidator(_clean_free_text),
    ]


FreeText = free_text()

# Text the service reads (a message, a text to classify) must hold more than whitespace
# and control characters (read as spaces): the schema says so with a pattern, the route
# refuses such text with a message naming the item.
TextToRead = Annotated[FreeText, Field(json_schema_extra={"pattern": r"\S"})]


def bounded_text(column: InstrumentedAttribute, min_length: int | None = None) -> Any:
    """Free text stored in a String column: cleaned, and at most the column's length."""
    return free_text(column_length(column), min_length)


# -- times -------------------------------------------------------------------------------

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC)
RECEIVED_AHEAD = timedelta(days=1)


def time_problem(value: datetime) -> str | None:
    """Why ``value`` is outside the times the service handles, or None."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EARLIEST <= aware <= LATEST:
        return "must be between 1970-01-01 and 2999-12-31 (UTC)"
    return None


def _check_time(value: datetime) -> datetime:
    problem = time_problem(value)
    if problem:
        raise ValueError(problem)
    return value


_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _refuse_numbers(value: Any) -> Any:
    """A number (or a string of one) is not a time here, though pydantic would read it
    as seconds (or milliseconds) since 1970."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError(
            "expected an ISO 8601 date-time such as 2026-11-20T18:00:00Z, not a number"
        )
    return value


Timestamp = Annotated[datetime, BeforeValidator(_refuse_numbers), AfterValidator(_check_time)]


def received_problem(value: datetime, now: datetime) -> str | None:
    """Why ``value`` cannot be when a message was received (``now``: the service
    clock), or None: within the time window and at most a day after ``now`` (a clock a
    little ahead is tolerated; a message from the future would get an SLA deadline
    that never comes due)."""
    problem = time_problem(value)
    if problem:
        return problem
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if aware > now + RECEIVED_AHEAD:
        return f"is more than a day after the service's clock ({now.isoformat()})"
    return None


# a person's name as they signed: free text within its column
CustomerName = bounded_text(Message.customer_name)
