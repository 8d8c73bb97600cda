"""Real mail servers for the mailbox tests: Dovecot (IMAP) started from a throwaway
configuration under the test's directory, and aiosmtpd (SMTP) in the test process."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

IMAP_USER, IMAP_PASSWORD = "support@shop.example", "not-a-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def dovecot_binary() -> str:
    found = shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None
    )
    if found is None:
        why = "no dovecot (Debian: apt-get install dovecot-imapd)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"the IMAP tests must run in CI: {why}")
        pytest.skip(f"{why}; CI=true makes this a failure")
    return found


@dataclass
class Dovecot:
    port: int
    root: Path
    user: str = IMAP_USER
    password: str = IMAP_PASSWORD

    def connect(self):
        import imaplib

        conn = imaplib.IMAP4("127.0.0.1", self.port)
        conn.login(self.user, self.password)
        conn.select("INBOX")
        return conn

    def append(self, raw: bytes) -> None:
        conn = self.connect()
        try:
            typ, data = conn.append("INBOX", None, None, raw)
            assert typ == "OK", data
        finally:
            conn.logout()

    def flags(self) -> list[set[str]]:
        """Each message's flags, in order."""
        conn = self.connect()
        try:
            typ, data = conn.fetch("1:*", "(FLAGS)")
            if data == [None]:
                return []
            out = []
            for line in data:
                text = line.decode()
                inner = text[text.index("FLAGS (") + 7 : text.rindex(")")].rstrip(")")
                out.append(set(inner.split()))
            return out
        finally:
            conn.logout()


def start_dovecot(root: Path) -> tuple[Dovecot, subprocess.Popen]:
    binary = dovecot_binary()
    port = free_port()
    for sub in ("run", "state", "home"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "home").chmod(0o777)
    # mail is stored as an unprivileged user: the tests' own, or nobody when run as root
    uid = os.getuid() or 65534
    gid = os.getgid() if os.getuid() else 65534
    (root / "users").write_text(f"{IMAP_USER}:{{PLAIN}}{IMAP_PASSWORD}\n")
    conf = root / "dovecot.conf"
    conf.write_text(
        f"""protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {min(uid, 1000)}
mail_location = maildir:{root}/home/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"""
    )
    proc = subprocess.Popen(
        [binary, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_for_port(port)
    except RuntimeError:
        proc.kill()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
        raise RuntimeError(f"dovecot did not start: {err} {log}") from None
    return Dovecot(port, root), proc


@dataclass
class Received:
    """What the SMTP server accepted: envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage


@dataclass
class SmtpServer:
    port: int
    received: list[Received] = field(default_factory=list)
    # replies to give to the next DATA commands instead of accepting (e.g. "451 ...")
    refusals: list[str] = field(default_factory=list)


class _Handler:
    def __init__(self, server: SmtpServer):
        self.server = server

    async def handle_DATA(self, server, session, envelope):
        if self.server.refusals:
            return self.server.refusals.pop(0)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.server.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), msg)  # type: ignore[arg-type]
        )
        return "250 OK"


def start_smtp():
    from aiosmtpd.controller import Controller

    port = free_port()
    server = SmtpServer(port)
    controller = Controller(_Handler(server), hostname="127.0.0.1", port=port)
    controller.start()
    return server, controller
