"""The pages a customer opens from our links (the satisfaction survey, the unsubscribe
link): Jinja2 templates from ``serving/pages``, escaped, never cached, sent with no
referrer."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

PAGES = Path(__file__).resolve().parent.parent / "pages"


@cache
def _env() -> Environment:
    return Environment(loader=FileSystemLoader(PAGES), autoescape=select_autoescape(["html"]))


def page(name: str, status: int, **context) -> HTMLResponse:
    return HTMLResponse(
        _env().get_template(name).render(**context),
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )
