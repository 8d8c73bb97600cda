"""The PostgreSQL the storage tests use (``CARELENS_TEST_PG_URL``, default the local
server's ``test`` database); the fixtures ``pg_ready`` and ``pg_url`` are in
``tests/conftest.py``."""

from __future__ import annotations

import os

PG_URL = os.environ.get("CARELENS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable() -> str | None:
    """None when the server answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except Exception as exc:  # no server here
        return str(exc).strip().splitlines()[0]
