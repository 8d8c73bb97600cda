"""Masking personal data and key material: for log lines and for redacted exports.

``redact(text)`` replaces, where it can recognise them:

- API keys (``clk_...``), bearer tokens, ``X-API-Key`` values, SHA-256 hex digests
  (key hashes) and passwords in URLs (``scheme://user:PASSWORD@host``);
- e-mail addresses (also URL-encoded, ``jane%40example.com``);
- Amazon-style order ids (``123-1234567-1234567``);
- phone numbers: international (``+49 151 2345 6789``), grouped national
  (``(555) 123-4567``, ``030 1234 5678``) and Chinese mobile numbers (``13812345678``);
- street addresses: an English house number and street (``42 Baker Street``), a German
  street and number (``Hauptstraße 5``), a Chinese road and number (``中山路88号``).

Recognition is by pattern, so it is a net, not a guarantee: the log also never needs
what it masks (database errors are logged without their bound parameters, see
``serving.db.make_engine``). Masked values become ``<email>``, ``<phone>``,
``<order-id>``, ``<address>``, ``<api-key>``, ``<secret>``, ``<hash>``.

``RedactingFilter`` applies it to every record passing a logger or handler it is
installed on; ``install_log_redaction`` puts it on the root and uvicorn loggers, their
handlers and the log record factory (so every record of the process is redacted),
``uvicorn_log_config`` into uvicorn's own logging configuration.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

# (pattern, replacement) in the order they apply: key material first (a token may
# contain what looks like a phone number), then addresses and numbers.
_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = []


def _rule(pattern: str, repl: str | Callable[[re.Match[str]], str], flags: int = 0) -> None:
    _RULES.append((re.compile(pattern, flags), repl))


def _digits_between(low: int, high: int, placeholder: str) -> Callable[[re.Match[str]], str]:
    """Replace a match only when it has ``low`` to ``high`` digits (a phone number has
    7 to 15; fewer or more is something else)."""

    def repl(m: re.Match[str]) -> str:
        n = sum(ch.isdigit() for ch in m.group(0))
        return placeholder if low <= n <= high else m.group(0)

    return repl


# key material
_rule(r"\bclk_[A-Za-z0-9_-]{4,}", "<api-key>")
_rule(r"\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}", r"\1<secret>", re.IGNORECASE)
_rule(r"""\b(x-api-key['"]?\s*[:=]\s*['"]?)[^\s'",;]+""", r"\1<secret>", re.IGNORECASE)
_rule(r"(?<![0-9A-Fa-f])[0-9a-f]{64}(?![0-9A-Fa-f])", "<hash>")
_rule(r"\b([a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s/]+@", r"\1<secret>@", re.IGNORECASE)
# e-mail addresses, plain or URL-encoded (%40)
_rule(
    r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "<email>",
    re.IGNORECASE,
)
# Amazon order ids
_rule(r"(?<![\d-])\d{3}-\d{7}-\d{7}(?![\d-])", "<order-id>")
# phone numbers: "+" (or %2B) and a country code; grouped national numbers; CN mobiles
_rule(
    r"(?:\+|%2B)\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){1,6}(?![\d])",
    _digits_between(7, 15, "<phone>"),
    re.IGNORECASE,
)
_rule(
    r"(?<![\w.+-])(?:\(\d{2,5}\)|\d{2,5})[ .-]?\d{3,4}[ .-]\d{3,5}(?![\w-]|\.\d)",
    _digits_between(9, 13, "<phone>"),
)
_rule(r"(?<!\d)1[3-9]\d{9}(?!\d)", "<phone>")
# street addresses
_STREET = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|"
    r"Place|Pl|Terrace|Parkway|Pkwy|Highway|Hwy|Square|Sq|Close|Crescent)"
)
_rule(
    rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:[A-Z][A-Za-z'-]*\.?\s+){{1,4}}{_STREET}\b\.?",
    "<address>",
)
_rule(
    r"\b[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|weg|gasse|allee|platz|ring|damm)"
    r"\s+\d{1,4}(?:\s?[a-zA-Z]\b)?",
    "<address>",
)
_rule(r"[\u4e00-\u9fff]{1,12}(?:路|街|大道|巷|弄)\d{1,5}号", "<address>")


def redact(text: str) -> str:
    """``text`` with personal data and key material masked (see the module doc)."""
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text


def redact_value(value: Any) -> Any:
    """``redact`` applied to every string in a JSON-like value (dicts, lists)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def pseudonym(value: str | None, kind: str = "id") -> str | None:
    """A stable stand-in for an identifier in a redacted export (the same customer
    gets the same pseudonym, so rows can still be grouped): a truncated SHA-256,
    not reversible in practice for random ids (guessable for e-mail addresses from a
    list of candidates, so it pseudonymises, it does not anonymise)."""
    if value is None or value == "":
        return value
    return f"{kind}-{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


# -- logging -------------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Masks the message, its arguments and any traceback of each record it sees (it
    never drops a record). Arguments stay a tuple of the same length, since some
    formatters unpack them (uvicorn's access log)."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_carelens_redacted", False):
            return True
        try:
            if isinstance(record.msg, str):
                record.msg = redact(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(_redact_arg(a) for a in record.args)
            elif isinstance(record.args, dict):
                record.args = {k: _redact_arg(v) for k, v in record.args.items()}
            if record.exc_info and not record.exc_text:
                record.exc_text = self._formatter.formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
            if record.stack_info:
                record.stack_info = redact(record.stack_info)
        except Exception:  # a log line is never lost to the filter
            return True
        record._carelens_redacted = True
        return True


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return redact(arg)
    if arg is None or isinstance(arg, bool | int | float):
        return arg
    text = str(arg)
    masked = redact(text)
    return arg if masked == text else masked


LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


def _has_filter(target: logging.Filterer) -> bool:
    return any(isinstance(f, RedactingFilter) for f in target.filters)


def install_log_redaction(loggers: Iterable[str] = LOGGERS) -> None:
    """Redact every log record of the process (idempotent): a ``RedactingFilter`` on
    the named loggers (root: ``""``) and on every handler they have now, and the
    record factory redacts each record as it is made. A filter on a logger sees only
    records logged to that logger and one on a handler only what reaches that handler;
    the factory also covers records of child loggers (``sqlalchemy.engine``,
    ``serving.*``) that end at handlers configured later, or at none (Python's
    last-resort handler). Records are marked, so none is redacted twice."""
    flt = RedactingFilter()
    for name in loggers:
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if not _has_filter(target):
                target.addFilter(flt)
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "_carelens_redacts", False):

        def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = factory(*args, **kwargs)
            flt.filter(record)
            return record

        redacting_factory._carelens_redacts = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(redacting_factory)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration with the redacting filter on each of
    its handlers (for ``uvicorn.run(log_config=...)``)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": "serving.redact.RedactingFilter"}
    for handler in config.get("handlers", {}).values():
        handler["filters"] = [*handler.get("filters", []), "redact"]
    return config
