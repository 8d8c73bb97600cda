"""Write ``carelens_client/types.py``, the API's request and response shapes as
TypedDicts, from the service's OpenAPI schema (datamodel-code-generator). Run it from
the repository after changing a route's models:

    .venv/bin/python client/generate_types.py

``tests/client/test_types.py`` fails while the file differs from what this writes."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET = Path(__file__).parent / "carelens_client" / "types.py"
HEADER = (
    '"""The carelens API\'s request and response shapes (JSON: times are ISO 8601 strings),\n'
    "generated from the service's OpenAPI schema by ``client/generate_types.py``: do not\n"
    'edit."""\n\n'
)
OPTIONS = [
    "--input-file-type", "openapi",
    "--output-model-type", "typing.TypedDict",
    "--target-python-version", "3.11",
    "--use-standard-collections",
    "--use-union-operator",
    "--use-field-description",
    "--no-use-closed-typed-dict",
    "--disable-timestamp",
    "--formatters", "builtin",
]  # fmt: skip


def openapi() -> dict:
    """The service's OpenAPI schema (its routers, no database or model needed)."""
    from fastapi import FastAPI

    from serving.routes import ROUTERS

    app = FastAPI(title="carelens")
    for router in ROUTERS:
        app.include_router(router)
    return app.openapi()


def render(spec: dict) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "openapi.json", Path(tmp) / "types.py"
        source.write_text(json.dumps(spec), encoding="utf-8")
        subprocess.run(
            [sys.executable, "-m", "datamodel_code_generator", "--input", str(source),
             "--output", str(out), *OPTIONS],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        text = out.read_text(encoding="utf-8")
    body = text.split("\n\n", 1)[1]  # the generator's own comment header goes
    return HEADER + body


def main() -> None:
    TARGET.write_text(render(openapi()), encoding="utf-8")
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
