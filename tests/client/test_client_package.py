"""The typed client as its own distribution (``client/``): it imports only httpx and the
standard library, its TypedDicts are the service's current OpenAPI schema, and it
installs and works in a fresh environment that holds none of the server's packages."""

from __future__ import annotations

import ast
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.serving.factories import ADMIN_KEY, uvicorn_thread

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "client"


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_client_imports_only_httpx_and_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"__future__", "httpx", "carelens_client"}
    offenders = {
        p.name: sorted(_imported(p) - allowed)
        for p in (CLIENT / "carelens_client").glob("*.py")
        if _imported(p) - allowed
    }
    assert offenders == {}


def test_the_client_types_are_the_services_schema():
    generator = runpy.run_path(str(CLIENT / "generate_types.py"))
    written = (CLIENT / "carelens_client" / "types.py").read_text(encoding="utf-8")
    assert generator["render"](generator["openapi"]()) == written, (
        "the API's models changed: run .venv/bin/python client/generate_types.py"
    )


@pytest.mark.slow
def test_the_client_installs_and_works_without_the_servers_packages(tmp_path, tiny_model_dir):
    """``pip install ./client`` into a new virtual environment, then a session against
    a live service from it: post a message, claim it, reply, resolve."""
    from serving.app import create_app
    from serving.settings import Settings

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    source = tmp_path / "client"  # a copy: building writes into the project folder
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    pip = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(source)], capture_output=True, text=True
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    settings = Settings(
        model_dir=tiny_model_dir,
        database_url=f"sqlite:///{tmp_path / 'desk.db'}",
        bootstrap_admin_key=ADMIN_KEY,
        sla_alert_poll_seconds=0,
    )
    script = textwrap.dedent(
        """
        import sys
        from carelens_client import CarelensClient, CarelensError

        with CarelensClient(sys.argv[1], api_key=sys.argv[2]) as admin:
            service = admin.with_key(admin.create_key("shop", "service")["key"])
            agent = admin.with_key(admin.create_key("ann", "agent")["key"])
            stored = service.post_message(channel="email", text="Where is my order?")
            ticket = agent.claim(stored["queue"])
            assert ticket is not None and ticket["id"] == stored["ticket_id"]
            assert agent.reply(ticket["id"], "It left today.")["delivery"]["state"] == "not_sent"
            assert agent.resolve(ticket["id"])["state"] == "resolved"
            try:
                agent.create_key("x", "admin")
            except CarelensError as exc:
                assert exc.status_code == 403
            else:
                raise AssertionError("an agent created a key")
        heavy = {"torch", "transformers", "fastapi", "sqlalchemy", "serving", "model"}
        print(sorted(heavy & set(sys.modules)))
        """
    )
    with uvicorn_thread(create_app(settings)) as port:
        run = subprocess.run(
            [python, "-c", script, f"http://127.0.0.1:{port}", ADMIN_KEY],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,  # not the repository, whose folders would import
        )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
    for missing in ("torch", "fastapi", "serving"):
        probe = subprocess.run(
            [python, "-c", f"import {missing}"], capture_output=True, cwd=tmp_path
        )
        assert probe.returncode != 0, f"{missing} is installed beside the client"
