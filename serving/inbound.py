"""What comes in: language detection and raw e-mail (RFC 822) parsing, standard
library only.

E-mail: the text the customer wrote (plain, else HTML; quoted replies, signatures and
the marketplace relay's frames removed), the ids it carries (order id, ASIN), where an
answer goes (Reply-To, else From), the Message-IDs it answers (In-Reply-To,
References) and its attachments. Chinese mail declared ``gb2312`` or ``gbk`` is read
as ``gb18030`` (its superset: senders often declare the smaller set), and bytes no
charset can read are replaced, never refused.

Language: carelens serves English and Chinese, so the language is decided by script:
``zh`` when CJK ideographs make up at least 20% of the letters, ``en`` when Latin
letters are there, else ``und``. (A statistical detector would add nothing for two
languages with disjoint scripts and would be slower and non-deterministic.)
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
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
# ASINs: "ASIN: B07XJ8C8F5" or a product link ".../dp/B07XJ8C8F5"
_ASIN = re.compile(r"(?:\bASIN\s*[:#：]?\s*|/dp/|/gp/product/)([A-Z0-9]{10})\b")
# Amazon buyer-seller messaging: the buyer's words sit between a "Begin message" and an
# "End message" line, and the relay adds lines that are no one's words. Both are read
# line by line on lines of at most RELAY_LINE_MAX characters (boilerplate is short), so
# a long text costs linear time.
RELAY_LINE_MAX = 300
_RELAY_BEGIN = re.compile(r"[-=\s]*Begin message[-=\s]*", re.IGNORECASE)
_RELAY_END = re.compile(r"[-=\s]*End message[-=\s]*", re.IGNORECASE)
_RELAY_LINE = re.compile(
    r"\[?\s*(?:Important:\s*)?Please (?:do not reply|type your reply) above this line"
    r"|#+\s*-?\s*(?:Please )?type your (?:reply|response) above this line"
    r"|Was this (?:e-?mail|information) helpful\?"
    r"|(?:©|\(c\)|Copyright)\s*[\d\s,–-]*Amazon"
    r"|To respond to this customer, (?:please )?reply to this e-?mail"
    r"|For Your Information: To help arbitrate disputes"
    r"|We retain all messages buyers and sellers send"
    r"|Please note: This e-?mail was sent from a notification-only address",
    re.IGNORECASE,
)
_RELAY_AFFILIATES = "amazon.com, inc. or its affiliates"
# charsets senders declare for a larger one (read as the larger one)
_CHARSET_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ascii": "utf-8",
    "us-ascii": "utf-8",
    "iso-8859-1": "cp1252",
    "latin-1": "cp1252",
}
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


def strip_relay_frame(text: str) -> str:
    """The buyer's words of a marketplace-relayed e-mail: what lies between the relay's
    "Begin message" and "End message" lines when it has them, without the relay's own
    lines (reply-above-this-line markers, "Was this email helpful?", copyright)."""
    lines = text.splitlines()

    def short(i: int) -> str | None:
        line = lines[i].strip()
        return line if len(line) <= RELAY_LINE_MAX else None

    begin = next(
        (i for i in range(len(lines)) if (ln := short(i)) and _RELAY_BEGIN.fullmatch(ln)), None
    )
    if begin is not None:
        end = next(
            (
                i
                for i in range(begin + 1, len(lines))
                if (ln := short(i)) and _RELAY_END.fullmatch(ln)
            ),
            len(lines),
        )
        lines = lines[begin + 1 : end]
    kept = []
    for line in lines:
        bare = line.strip()
        if len(bare) <= RELAY_LINE_MAX and (
            _RELAY_LINE.match(bare) or _RELAY_AFFILIATES in bare.lower()
        ):
            continue
        kept.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


def find_asin(*texts: str | None) -> str | None:
    for text in texts:
        if text and (m := _ASIN.search(text)):
            return m.group(1)
    return None


def part_text(part: EmailMessage) -> str:
    """A text part's content: its declared charset, or a superset senders mean by it
    (``gb2312`` -> ``gb18030``), unknown charsets as UTF-8; what cannot be read is
    replaced (U+FFFD), never refused."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        payload = str(part.get_payload()).encode("utf-8", "replace")
    charset = (part.get_content_charset() or "utf-8").lower()
    charset = _CHARSET_SUPERSETS.get(charset, charset)
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class EmailAttachment:
    filename: str
    content_type: str
    content: bytes


def attachments_of(msg: EmailMessage, body: EmailMessage | None) -> list[EmailAttachment]:
    """The parts that are files (named, declared attachments, or not text), in order;
    the body and the alternative text of a multipart/alternative are not."""
    out: list[EmailAttachment] = []
    for part in msg.walk():
        if part is body or part.is_multipart() or part.get_content_maintype() == "message":
            continue
        disposition = part.get_content_disposition()
        filename = part.get_filename()
        if part.get_content_maintype() == "text" and not filename and disposition != "attachment":
            continue  # another rendering of the text (plain beside HTML)
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        name = clean_filename(filename) or f"attachment-{len(out) + 1}"
        out.append(EmailAttachment(name, part.get_content_type(), payload))
    return out


def clean_filename(name: str | None) -> str | None:
    """A file name safe to show and to send back: no path, no control characters, at
    most 200 characters."""
    if not name:
        return None
    name = re.sub(r"[\x00-\x1f\x7f/\\]", "_", str(name)).strip().lstrip(".")
    return name[:200] or None


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
    product_id: str | None = None
    reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    attachments: list[EmailAttachment] = field(default_factory=list)
    sender_name: str | None = None


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
    raw = _obsolete_header_names(raw)
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
    attachments = attachments_of(msg, body)
    content = "" if body is None else _body_text(body)
    if body is not None and not content.strip() and body.get_content_subtype() == "plain":
        # an empty plain part beside the HTML one that holds the words
        html = msg.get_body(preferencelist=("html",))
        if html is not None:
            content = _body_text(html)
            attachments = attachments_of(msg, html)
    subject = _header(msg, "subject")
    text = strip_quotes_and_signature(strip_relay_frame(content))
    if not text:
        if not attachments:
            raise EmailError(
                "the e-mail has no text/plain or text/html part"
                if body is None
                else "the e-mail has no text once quotes and signature are removed"
            )
        # a photo sent without words: the ticket shows what came
        names = ", ".join(a.filename for a in attachments[:5])
        text = f"[{len(attachments)} attachment{'s' if len(attachments) > 1 else ''}: {names}]"
    received = None
    if msg.get("date"):
        try:
            received = parsedate_to_datetime(str(msg["date"]))
        except (TypeError, ValueError):
            received = None
    sender_name, sender = parseaddr(_header(msg, "from") or "")
    sender = sender or None
    reply_to = parseaddr(_header(msg, "reply-to") or "")[1] or sender
    message_id = _header(msg, "message-id")
    references = []
    for name in ("references", "in-reply-to"):
        for ref in _MSG_ID.findall(_header(msg, name) or ""):
            if ref not in references:
                references.append(ref)
    return ParsedEmail(
        text=text,
        subject=subject,
        sender=sender,
        message_id=message_id,
        received_at=received,
        order_id=find_order_id(subject, text, content),
        product_id=find_asin(subject, content),
        reply_to=reply_to if reply_to and "@" in reply_to else None,
        references=references,
        attachments=attachments,
        sender_name=buyer_name(sender_name),
    )


# the relay's suffix to a buyer's name: "Ann - Amazon Marketplace", "Ann - Marketplace"
_RELAY_NAME = re.compile(r"\s*[-–—]\s*(?:Amazon\s*)?Marketplace\s*$", re.IGNORECASE)


def buyer_name(display: str | None) -> str | None:
    """The buyer's name from an e-mail's display name, without a relay's suffix; None
    when it is an address or empty."""
    name = _RELAY_NAME.sub("", (display or "").strip()).strip().strip('"').strip()
    if not name or "@" in name or len(name) > 200:
        return None
    return name


def _body_text(part: EmailMessage) -> str:
    text = part_text(part)
    return html_to_text(text) if part.get_content_subtype() == "html" else text


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_OBS_NAME = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)


def _obsolete_header_names(raw: bytes) -> bytes:
    """RFC 5322's obsolete syntax allows blanks between a header's name and its colon
    ("Subject  : hello"); the standard parser does not, so they are removed from the
    header block."""
    end = _HEADER_END.search(raw)
    head, rest = (raw[: end.start()], raw[end.start() :]) if end else (raw, b"")
    fixed = _OBS_NAME.sub(rb"\1:", head)
    return raw if fixed == head else fixed + rest


_MSG_ID = re.compile(r"<[^<>\s]{1,250}>")


def _header(msg: EmailMessage, name: str) -> str | None:
    """A header as text (a header that does not parse is read raw), or None."""
    try:
        value = msg.get(name)
    except (TypeError, ValueError, IndexError, AttributeError):
        raw = [v for k, v in msg.raw_items() if k.lower() == name]
        value = raw[0] if raw else None
    value = str(value or "").strip()
    return value or None
