"""Database engine, sessions and migrations.

SQLite (the default, a file under ``$CARELENS_HOME``) or PostgreSQL by URL. On SQLite
every transaction starts with ``BEGIN IMMEDIATE``, so writers are serialised (two agents
claiming at once queue behind each other instead of reading the same free ticket); on
PostgreSQL claims use ``FOR UPDATE SKIP LOCKED`` (see ``serving.tickets``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

log = logging.getLogger(__name__)
T = TypeVar("T")


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the driver we install)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, **kwargs) -> Engine:
    # statement errors name no bound parameters (message text, customer ids, key
    # hashes): they end up in exception text and logs
    kwargs.setdefault("hide_parameters", True)
    url = normalise_url(url)
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(
                parents=True, exist_ok=True
            )
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # let SQLAlchemy, not pysqlite, decide when transactions begin
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back on any error."""
    with factory() as session, session.begin():
        yield session


def is_transient(error: BaseException) -> bool:
    """A fault of the database or of the way to it (connection lost or refused,
    server shutting down, pool exhausted, SQLite busy), not of the request: the same
    work may succeed a moment later."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error,
        (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, exc.DisconnectionError),
    )


def describe(error: BaseException) -> str:
    """A database error for the log: its classes and SQLSTATE, never the statement,
    its bound parameters or the server's message (they may hold personal data)."""
    orig = getattr(error, "orig", None)
    if orig is None:
        return type(error).__name__
    state = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    return f"{type(error).__name__} ({type(orig).__name__}{f', {state}' if state else ''})"


def retry_read(fn: Callable[[], T]) -> T:
    """Run ``fn`` (read-only work in its own session) once more after a transient
    database fault: the broken connection is discarded, and the pool (pre-ping on
    PostgreSQL) hands the second try a live one."""
    try:
        return fn()
    except exc.SQLAlchemyError as error:
        if not is_transient(error):
            raise
        log.warning("database fault, retrying a read once: %s", describe(error))
    return fn()


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def lock_key(name: str) -> int:
    """A PostgreSQL advisory lock key (a signed 64-bit integer) for ``name``."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), signed=True)


@contextmanager
def one_at_a_time(engine: Engine, name: str) -> Iterator[bool]:
    """Whether this process may run the block named ``name`` now: on PostgreSQL, True
    while it holds the session advisory lock of that name and False when another
    process (a worker of ``carelens serve --workers``, another host) holds it, so that
    a background round runs in one process at a time; elsewhere always True."""
    if not is_postgres(engine):
        yield True
        return
    key = lock_key(name)
    with engine.connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


def upgrade(url: str, revision: str = "head", engine: Engine | None = None) -> None:
    """Apply the Alembic migrations up to ``revision`` (idempotent). On PostgreSQL the
    run holds an advisory lock for its transaction: when several processes start at once
    (``carelens serve --workers``, or several hosts over one database), one migrates and
    the others wait for it, then find nothing left to do."""
    from alembic import command

    cfg = alembic_config(url)
    own = engine is None
    engine = engine or make_engine(url)
    try:
        with engine.begin() as conn:
            if is_postgres(engine):
                key = lock_key("carelens migrations")
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if own:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
