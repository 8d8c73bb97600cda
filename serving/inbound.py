"""What comes in: language detection and raw e-mail (RFC 822) parsing, standard
library only.

Language: carelens serves English and Chinese, so the language is decided by script:
``zh`` when CJK ideographs make up at least 20% of the letters, ``en`` when Latin
letters are there, else ``und``. (A statistical detector would add nothing for two
languages with disjoint scripts and would be slower and non-deterministic.)
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime
from html.parser import HTMLParser

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")

# Amazon order ids: 3-7-7 digits (e.g. 112-1234567-1234567); otherwise "order #X123".
_AMAZON_ORDER = re.compile(r"\b(\d{3}-\d{7}-\d{7})\b")
_ORDER_WORD = re.compile(
    r"(?:order|订单)\s*(?:id|number|no\.?|号|编号)?\s*[:#：]?\s*([A-Z0-9][A-Z0-9-]{5,39})",
    re.IGNORECASE,
)
# Where an earlier message quoted below a reply starts.
_QUOTE_HEADERS = [
    re.compile(r"^\s*On .{0,200}wrote:\s*$", re.IGNORECASE | re.MULTILINE),
    re.compile(r"^\s*-{2,}\s*Original Message\s*-{2,}", re.IGNORECASE | re.MULTILINE),
    re.compile(r"^\s*-{2,}\s*Forwarded message\s*-{2,}", re.IGNORECASE | re.MULTILINE),
    re.compile(r"^\s*From:\s.+\n\s*(Sent|Date):\s", re.IGNORECASE | re.MULTILINE),
    re.compile(r"^\s*在.{0,100}写道[:：]\s*$", re.MULTILINE),
    re.compile(r"^\s*-{2,}\s*原始邮件\s*-{2,}", re.MULTILINE),
]
_SIGNATURE = re.compile(r"^-- ?$", re.MULTILINE)
_SIGNOFF = re.compile(
    r"^\s*(Sent from my \w+.*|Get Outlook for \w+.*|发自我的\w+.*)$", re.IGNORECASE | re.MULTILINE
)


def detect_language(text: str) -> str:
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    if cjk and cjk >= 0.2 * (cjk + latin):
        return "zh"
    if latin:
        return "en"
    return "zh" if cjk else "und"


class EmailError(ValueError):
    """The e-mail cannot be used; the message says why."""


class EmailTooLarge(EmailError):
    """The e-mail is over one of ``EmailLimits``; ``limit`` names which (the field of
    ``EmailLimits``)."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class EmailLimits:
    """Bounds on the work one e-mail may cause: MIME parts (at every level), nesting
    depth (the message itself is depth 1) and the decoded size of all its parts."""

    max_parts: int = 100
    max_depth: int = 10
    max_decoded_bytes: int = 5_000_000


# The boundary parameter of a multipart Content-Type (quoted or not; RFC 2231 forms
# such as boundary*0= are only detected, see _entities_upper_bound).
_BOUNDARY_PARAM = re.compile(rb'\bboundary\s*=\s*(?:"([^"\r\n]*)"|([^\s;"]+))', re.IGNORECASE)
_DASH_LINE = re.compile(rb"^--([^\r\n]*)", re.MULTILINE)
_NESTED_MESSAGE = re.compile(rb"^content-type:\s*message/", re.IGNORECASE | re.MULTILINE)


def _entities_upper_bound(raw: bytes) -> int:
    """At least as many MIME entities as ``raw`` holds, counted without parsing: one
    for the message, one per delimiter line of a declared boundary, one per
    message/* part. The standard parser needs seconds for tens of thousands of parts,
    so a part-count bomb must be refused before it is parsed."""
    boundaries = {
        (m.group(1) if m.group(1) is not None else m.group(2)).rstrip()
        for m in _BOUNDARY_PARAM.finditer(raw)
    }
    # an RFC 2231 boundary (boundary*0="...") is not read here: then every line that
    # starts with "--" counts
    rfc2231 = re.search(rb"boundary\*", raw, re.IGNORECASE) is not None
    n = 1 + len(_NESTED_MESSAGE.findall(raw))
    for m in _DASH_LINE.finditer(raw):
        rest = m.group(1).rstrip()
        if rfc2231 or rest in boundaries:
            n += 1  # a delimiter (a close-delimiter, "--BOUNDARY--", is not counted)
    return n


def check_structure(msg: EmailMessage, limits: EmailLimits) -> None:
    """Count the parsed message's parts, depth and decoded size (iteratively: no
    recursion on attacker-chosen depth); raise ``EmailTooLarge`` past a limit."""
    stack: list[tuple[EmailMessage, int]] = [(msg, 1)]
    parts = decoded = 0
    while stack:
        part, depth = stack.pop()
        parts += 1
        if parts > limits.max_parts:
            raise EmailTooLarge(
                f"more than {limits.max_parts} MIME parts, the limit is {limits.max_parts}",
                "max_parts",
            )
        if depth > limits.max_depth:
            raise EmailTooLarge(
                f"MIME parts nested deeper than {limits.max_depth} levels, "
                f"the limit is {limits.max_depth}",
                "max_depth",
            )
        if part.is_multipart():
            payload = part.get_payload()
            stack.extend((p, depth + 1) for p in payload if isinstance(p, EmailMessage))
            continue
        body = part.get_payload(decode=True)
        decoded += len(body) if isinstance(body, bytes) else 0
        if decoded > limits.max_decoded_bytes:
            raise EmailTooLarge(
                f"the parts decode to more than {limits.max_decoded_bytes} bytes, "
                f"the limit is {limits.max_decoded_bytes}",
                "max_decoded_bytes",
            )


class _HTMLText(HTMLParser):
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "blockquote", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.quote = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head"):
            self.skip += 1
        if tag == "blockquote":  # quoted earlier message
            self.quote += 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head") and self.skip:
            self.skip -= 1
        if tag == "blockquote" and self.quote:
            self.quote -= 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip and not self.quote:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def strip_quotes_and_signature(text: str) -> str:
    """Drop quoted earlier replies (``>`` lines, "On ... wrote:" and what follows) and
    the signature (after a ``-- `` line, or "Sent from my phone")."""
    cut = len(text)
    for pattern in (*_QUOTE_HEADERS, _SIGNATURE):
        m = pattern.search(text)
        if m:
            cut = min(cut, m.start())
    text = text[:cut]
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith(">")]
    text = _SIGNOFF.sub("", "\n".join(lines))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def find_order_id(*texts: str | None) -> str | None:
    for text in texts:
        if not text:
            continue
        m = _AMAZON_ORDER.search(text)
        if m:
            return m.group(1)
    for text in texts:
        if not text:
            continue
        m = _ORDER_WORD.search(text)
        if m and any(ch.isdigit() for ch in m.group(1)):
            return m.group(1)
    return None


@dataclass
class ParsedEmail:
    text: str
    subject: str | None
    sender: str | None
    message_id: str | None
    received_at: datetime | None
    order_id: str | None


def parse_email(raw: bytes, limits: EmailLimits | None = None) -> ParsedEmail:
    """Parse one raw RFC 822 message into the text a customer wrote. CPU-bound (run it
    off the event loop); ``limits`` bound its work (``EmailTooLarge`` past one)."""
    limits = limits or EmailLimits()
    if not raw or not raw.strip():
        raise EmailError("the e-mail is empty")
    entities = _entities_upper_bound(raw)
    if entities > limits.max_parts:
        raise EmailTooLarge(
            f"up to {entities} MIME parts, the limit is {limits.max_parts}", "max_parts"
        )
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception as exc:  # the parser is lenient; anything raised here is fatal
        raise EmailError(f"not an RFC 822 message: {exc}") from exc
    if isinstance(msg, EmailMessage):
        check_structure(msg, limits)
    if not isinstance(msg, EmailMessage) or not (msg.keys()):
        raise EmailError("not an RFC 822 message: no headers found")
    if not any(k.lower() in ("from", "subject", "date", "message-id", "to") for k in msg):
        raise EmailError("not an RFC 822 message: none of From, To, Subject, Date, Message-ID")
    body = msg.get_body(preferencelist=("plain", "html"))
    if body is None:
        raise EmailError("the e-mail has no text/plain or text/html part")
    try:
        content = body.get_content()
    except (LookupError, ValueError) as exc:
        raise EmailError(f"the e-mail body cannot be decoded: {exc}") from exc
    if body.get_content_subtype() == "html":
        content = html_to_text(content)
    text = strip_quotes_and_signature(content)
    subject = str(msg.get("subject", "") or "").strip() or None
    if not text:
        raise EmailError("the e-mail has no text once quotes and signature are removed")
    received = None
    if msg.get("date"):
        try:
            received = parsedate_to_datetime(str(msg["date"]))
        except (TypeError, ValueError):
            received = None
    sender = parseaddr(str(msg.get("from", "")))[1] or None
    message_id = str(msg.get("message-id", "")).strip() or None
    return ParsedEmail(
        text=text,
        subject=subject,
        sender=sender,
        message_id=message_id,
        received_at=received,
        order_id=find_order_id(subject, text),
    )
