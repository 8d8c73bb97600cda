"""Mail in: read new messages from an IMAP mailbox and hand each to the e-mail ingest.

``poll_once`` logs in, selects the folder and takes the unseen messages one by one
(``BODY.PEEK[]``, which leaves them unseen). A message is flagged ``\\Seen`` only after
its handler returned, that is after its ticket was committed: a crash in between
leaves it unseen, and the next poll stores it once (its Message-ID makes the retry a
no-op). A message the ingest refuses (not an e-mail, over a limit) is flagged
``$CarelensRejected`` and left unseen for a person to look at, the reason logged; the
rest of the mailbox is still read. When the ingest cannot take messages for now (the
model is loading, the database is down) the poll stops and the next one starts again.

Runs from ``carelens mail poll`` (into a running service over HTTP) or inside the
service (``CARELENS_IMAP_POLL_SECONDS``).
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

log = logging.getLogger(__name__)

REJECTED = "$CarelensRejected"


class MailboxError(Exception):
    """The mailbox cannot be read (unreachable, refused login, no such folder)."""


class Rejected(Exception):
    """This message cannot be used: flag it, go on with the next."""


class Deferred(Exception):
    """Messages cannot be stored now: stop this poll, try again at the next."""


@dataclass(frozen=True)
class ImapConfig:
    host: str
    user: str
    password: str
    port: int = 993
    security: str = "ssl"  # ssl | starttls | none
    folder: str = "INBOX"
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings) -> ImapConfig | None:
        if not settings.imap_host:
            return None
        return cls(
            host=settings.imap_host,
            user=settings.imap_user or "",
            password=settings.imap_password.get_secret_value() if settings.imap_password else "",
            port=settings.imap_port,
            security=settings.imap_security,
            folder=settings.imap_folder,
            timeout=settings.imap_timeout,
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port} ({self.security}), folder {self.folder!r}"


@dataclass
class PollReport:
    unseen: int = 0
    stored: int = 0
    already_stored: int = 0
    rejected: list[str] = field(default_factory=list)  # "uid N: reason"
    error: str | None = None  # why the poll stopped early
    at: datetime | None = None

    def to_dict(self) -> dict:
        return {
            "unseen": self.unseen,
            "stored": self.stored,
            "already_stored": self.already_stored,
            "rejected": self.rejected,
            "error": self.error,
            "at": self.at.isoformat() if self.at else None,
        }


def connect(cfg: ImapConfig) -> imaplib.IMAP4:
    """Logged in with the folder selected, or ``MailboxError`` saying what failed."""
    try:
        if cfg.security == "ssl":
            conn = imaplib.IMAP4_SSL(
                cfg.host, cfg.port, ssl_context=ssl.create_default_context(), timeout=cfg.timeout
            )
        else:
            conn = imaplib.IMAP4(cfg.host, cfg.port, timeout=cfg.timeout)
            if cfg.security == "starttls":
                conn.starttls(ssl.create_default_context())
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
        raise MailboxError(f"cannot reach the IMAP server {cfg.where}: {exc}") from exc
    try:
        conn.login(cfg.user, cfg.password)
    except imaplib.IMAP4.error as exc:
        _logout(conn)
        raise MailboxError(
            f"the IMAP server {cfg.where} refused the login "
            f"(check CARELENS_IMAP_USER and CARELENS_IMAP_PASSWORD, or an app password): "
            f"{_text(exc)}"
        ) from exc
    typ, data = conn.select(_quote(cfg.folder))
    if typ != "OK":
        _logout(conn)
        raise MailboxError(f"no folder {cfg.folder!r} on {cfg.host}: {_text(data)}")
    return conn


def poll_once(cfg: ImapConfig, handle: Callable[[bytes], bool]) -> PollReport:
    """Read the unseen messages of the folder into ``handle`` (raw bytes -> whether a
    new ticket was stored; raises ``Rejected`` or ``Deferred``). ``MailboxError`` when
    the mailbox cannot be read at all."""
    report = PollReport(at=datetime.now(UTC))
    conn = connect(cfg)
    try:
        typ, data = conn.uid("search", None, "UNSEEN", "UNKEYWORD", REJECTED)
        if typ != "OK":
            raise MailboxError(f"the IMAP server {cfg.where} refused SEARCH: {_text(data)}")
        uids = [u for u in (data[0] or b"").split() if u]
        report.unseen = len(uids)
        for uid in uids:
            raw = _fetch(conn, uid)
            if raw is None:
                continue  # deleted meanwhile
            try:
                created = handle(raw)
            except Rejected as exc:
                conn.uid("store", uid, "+FLAGS", f"({REJECTED})")
                report.rejected.append(f"uid {uid.decode()}: {exc}")
                log.error("mail uid %s in %s not stored: %s", uid.decode(), cfg.folder, exc)
                continue
            except Deferred as exc:
                report.error = f"stopped: {exc}"
                log.warning("mail poll of %s stopped, next poll retries: %s", cfg.where, exc)
                break
            conn.uid("store", uid, "+FLAGS", "(\\Seen)")
            if created:
                report.stored += 1
            else:
                report.already_stored += 1
    except (OSError, imaplib.IMAP4.abort, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"the IMAP connection to {cfg.where} failed: {exc}") from exc
    finally:
        _logout(conn)
    return report


def _fetch(conn: imaplib.IMAP4, uid: bytes) -> bytes | None:
    typ, data = conn.uid("fetch", uid, "(BODY.PEEK[])")
    if typ != "OK":
        raise MailboxError(f"FETCH of uid {uid.decode()} refused: {_text(data)}")
    for part in data or []:
        if isinstance(part, tuple) and len(part) == 2:
            return part[1]
    return None


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value) -> str:
    if isinstance(value, list | tuple):
        value = b" ".join(v for v in value if isinstance(v, bytes))
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return re.sub(r"\s+", " ", str(value)).strip()


def _logout(conn: imaplib.IMAP4) -> None:
    with contextlib.suppress(OSError, imaplib.IMAP4.error, socket.timeout):
        conn.logout()


class Every:
    """Run ``fn`` every ``seconds`` on a daemon thread until ``stop``; an exception is
    logged and kept in ``error`` (the next round runs anyway), the last result in
    ``last``."""

    def __init__(self, name: str, fn: Callable[[], object], seconds: float):
        self.name, self.fn, self.seconds = name, fn, seconds
        self.last: object = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Every:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = self.fn()
                self.error = None
            except Exception as exc:
                self.error = str(exc)
                log.error("%s: %s", self.name, exc)
            self._stop.wait(self.seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


class MailboxStop(Exception):
    """The service refuses this poller itself (its key): stop, say why."""


def http_handler(client) -> Callable[[bytes], bool]:
    """``poll_once``'s handler for ``carelens mail poll``: each message goes to a running
    service's ``POST /v1/messages/email`` (``client``: a ``CarelensClient`` with a
    service key). 401/403 stop the poller (the key is wrong); another 4xx rejects the
    message; a 5xx or no answer defers it to the next poll."""
    import httpx
    from carelens_client import CarelensError

    def handle(raw: bytes) -> bool:
        try:
            return bool(client.post_email(raw).get("created"))
        except CarelensError as exc:
            if exc.status_code in (401, 403):
                raise MailboxStop(f"the service refused the key: {exc.detail}") from exc
            if 400 <= exc.status_code < 500 and exc.status_code not in (408, 429):
                raise Rejected(str(exc.detail)) from exc
            raise Deferred(f"the service answered {exc.status_code}: {exc.detail}") from exc
        except httpx.HTTPError as exc:
            raise Deferred(f"the service did not answer: {exc}") from exc

    return handle
